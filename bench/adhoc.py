"""Side-by-side benchmark of ad-hoc commands: provision vs Ansible (vs pyinfra) on real sshd hosts.

    python -m bench.adhoc --hosts 50 --repeat 3

Starts N real OpenSSH daemons with the test harness (tests/lab), then runs each tool in turn,
alternating within every repetition so machine noise hits all alike. Reports per tool: median
wall time, controller CPU (user+sys of the whole process tree, from wait4) and peak RSS, as a table
with ratios against provision, and as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from tabulate import tabulate

from tests.lab.sshd import SshdLab

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Sample:
    tool: str
    wall: float
    cpu: float
    maxrss_mb: float
    rc: int


def measure(tool: str, argv: list[str], env: dict[str, str]) -> Sample:
    """Run one command; wall time, and CPU of it and every descendant it waited for (wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0,):
        print(f"warning: {tool} exited {proc.returncode}: {err.strip()[-300:]}", file=sys.stderr)
    return Sample(
        tool, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode
    )


def tools(inventory: str, n: int) -> dict[str, list[str]]:
    """The commands compared, each the tool's idiomatic way to run `true` on every host."""
    provision = [sys.executable, "-m", "provision", "run", "-i", inventory, "-f", str(n), "true"]
    ansible = shutil.which("ansible")
    cmds = {"provision run true": provision}
    if ansible:
        cmds["ansible -m ping"] = [ansible, "all", "-i", inventory, "-m", "ping", "-f", str(n)]
        cmds["ansible -m command true"] = [
            ansible,
            "all",
            "-i",
            inventory,
            "-m",
            "command",
            "-a",
            "true",
            "-f",
            str(n),
        ]
    return cmds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)

    samples: list[Sample] = []
    with SshdLab(n=args.hosts, prefix="ws") as lab, tempfile.TemporaryDirectory() as tmp:
        inventory = lab.write_inventory(os.path.join(tmp, "hosts.ini"))
        env = {
            **lab.env(),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_LOCAL_TEMP": os.path.join(tmp, "ansible-tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(tmp, "cp"),
            "ANSIBLE_NOCOLOR": "1",
            "PYTHONPATH": os.path.dirname(HERE),
        }
        cmds = tools(inventory, args.hosts)
        for _ in range(args.repeat):
            for tool, cmd in cmds.items():
                samples.append(measure(tool, cmd, env))

    rows, result = [], {"hosts": args.hosts, "repeat": args.repeat, "tools": {}}
    base = None
    for tool in dict.fromkeys(s.tool for s in samples):
        mine = [s for s in samples if s.tool == tool]
        wall = statistics.median(s.wall for s in mine)
        cpu = statistics.median(s.cpu for s in mine)
        rss = max(s.maxrss_mb for s in mine)
        base = base or (wall, cpu)
        ok = all(s.rc == 0 for s in mine)
        result["tools"][tool] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_ms_per_host": cpu * 1000 / args.hosts,
            "peak_rss_mb": rss,
            "all_ok": ok,
            "samples": [asdict(s) for s in mine],
        }
        rows.append(
            [
                tool,
                f"{wall:.2f}",
                f"{wall / base[0]:.1f}x",
                f"{cpu:.2f}",
                f"{cpu / base[1]:.1f}x",
                f"{cpu * 1000 / args.hosts:.1f}",
                f"{rss:.0f}",
                "yes" if ok else "NO",
            ]
        )
    print(
        tabulate(
            rows,
            headers=[
                "tool",
                "wall s",
                "vs provision",
                "CPU s",
                "vs provision",
                "CPU ms/host",
                "peak RSS MB",
                "all ok",
            ],
            disable_numparse=True,
        )
    )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"adhoc-{args.hosts}.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
