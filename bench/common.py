"""What every benchmark here shares: timing a tool's process tree, tool inventories, the table.

Each workload alternates the tools inside every repetition so that machine noise hits all alike.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from tabulate import tabulate

from tests.lab.sshd import SshdLab

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


@dataclass
class Sample:
    tool: str
    wall: float
    cpu: float
    maxrss_mb: float
    rc: int
    ok: bool  # the exit code was one the tool gives on success (audit grades exit 0-3)


def measure(
    tool: str, argv: list[str], env: dict[str, str], ok_codes: tuple[int, ...] = (0,)
) -> Sample:
    """Run one command; wall time, and CPU of it and every descendant it waited for (wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    if rc not in ok_codes:
        bad = [ln for ln in out.splitlines() if any(w in ln for w in ("FAIL", "UNREACH", "rror"))]
        print(
            f"warning: {tool} exited {rc}: " + "\n  ".join(bad[:6] or [out[-300:]]), file=sys.stderr
        )
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(tool, wall, cpu, usage.ru_maxrss / 1024, rc, rc in ok_codes)


def tool_env(lab: SshdLab, tmp: str) -> dict[str, str]:
    """One environment for all tools: the lab's known_hosts, Ansible tuned (pipelining on)."""
    return {
        **lab.env(),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_LOCAL_TEMP": os.path.join(tmp, "ansible-tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(tmp, "cp"),
        "ANSIBLE_NOCOLOR": "1",
        "PYINFRA_PROGRESS": "off",
        "PYTHONPATH": REPO,
    }


def pyinfra_inventory(lab: SshdLab, path: str) -> str:
    """The lab as a pyinfra inventory, with the same keys and strict host key checking."""
    lines = ["hosts = ["]
    for host in lab.hosts:
        v = host.hostvars()
        data = {
            "ssh_hostname": v["ansible_host"],
            "ssh_port": v["ansible_port"],
            "ssh_user": v["ansible_user"],
            "ssh_key": v["ansible_ssh_private_key_file"],
            "ssh_known_hosts_file": lab.known_hosts,
            "ssh_strict_host_key_checking": "yes",
        }
        lines.append(f"    ({host.name!r}, {data!r}),")
    lines.append("]")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def which(name: str) -> str | None:
    """A tool beside this Python first (a venv), then on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    return local if os.path.exists(local) else shutil.which(name)


def report(samples: list[Sample], hosts: int, extra: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Median per tool, ratios against the first tool (provision), as a table and as JSON."""
    rows, result = [], {"hosts": hosts, **extra, "tools": {}}
    base: tuple[float, float] | None = None
    for tool in dict.fromkeys(s.tool for s in samples):
        mine = [s for s in samples if s.tool == tool]
        wall = statistics.median(s.wall for s in mine)
        cpu = statistics.median(s.cpu for s in mine)
        rss = max(s.maxrss_mb for s in mine)
        base = base or (wall, cpu)
        ok = all(s.ok for s in mine)
        result["tools"][tool] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_ms_per_host": cpu * 1000 / hosts,
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
                f"{cpu * 1000 / hosts:.1f}",
                f"{rss:.0f}",
                "yes" if ok else "NO",
            ]
        )
    table = tabulate(
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
    return table, result


def parse_args(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The options every benchmark takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    return ap.parse_args(argv)


@dataclass
class Prepared:
    lab: SshdLab
    inventory: str  # INI, for provision and Ansible
    py_inventory: str  # the same hosts for pyinfra
    env: dict[str, str]


@contextmanager
def prepared_lab(hosts: int, extra_vars: dict[str, str] | None = None) -> Iterator[Prepared]:
    """N sshd hosts with an inventory for each tool and one environment for all of them."""
    with SshdLab(n=hosts, prefix="ws") as lab, tempfile.TemporaryDirectory() as tmp:
        vars_ = {k: v.format(tmp=tmp) for k, v in (extra_vars or {}).items()}
        yield Prepared(
            lab,
            lab.write_inventory(os.path.join(tmp, "hosts.ini"), extra_vars=vars_),
            pyinfra_inventory(lab, os.path.join(tmp, "pyinfra_inventory.py")),
            tool_env(lab, tmp),
        )


def save(result: dict[str, Any], out: str, name: str) -> str:
    """The JSON of one benchmark run under ``out``; returns its path."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)
    return path
