"""Side-by-side benchmark of an ad-hoc command: provision vs Ansible vs pyinfra on real sshd hosts.

    python -m bench.adhoc --hosts 50 --repeat 3

Starts N real OpenSSH daemons with the test harness (tests/lab), then runs `true` on every host
with each tool in turn, alternating within every repetition. Reports per tool: median wall time,
controller CPU (user+sys of the whole process tree, from wait4) and peak RSS, as a table with ratios
against provision, and as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from bench.common import HERE, measure, pyinfra_inventory, report, tool_env, which
from tests.lab.sshd import SshdLab


def tools(inventory: str, py_inventory: str, n: int) -> dict[str, list[str]]:
    """The commands compared, each the tool's idiomatic way to run `true` on every host."""
    cmds = {
        "provision run true": [
            sys.executable,
            "-m",
            "provision",
            "run",
            "-i",
            inventory,
            "-f",
            str(n),
            "true",
        ],
    }
    ansible, pyinfra = which("ansible"), which("pyinfra")
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
    if pyinfra:
        cmds["pyinfra exec true"] = [
            pyinfra,
            py_inventory,
            "-y",
            "--parallel",
            str(n),
            "exec",
            "--",
            "true",
        ]
    return cmds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)

    samples = []
    with SshdLab(n=args.hosts, prefix="ws") as lab, tempfile.TemporaryDirectory() as tmp:
        inventory = lab.write_inventory(os.path.join(tmp, "hosts.ini"))
        py_inventory = pyinfra_inventory(lab, os.path.join(tmp, "pyinfra_inventory.py"))
        env = tool_env(lab, tmp)
        cmds = tools(inventory, py_inventory, args.hosts)
        for _ in range(args.repeat):
            for tool, cmd in cmds.items():
                samples.append(measure(tool, cmd, env))

    table, result = report(samples, args.hosts, {"workload": "adhoc true", "repeat": args.repeat})
    print(table)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"adhoc-{args.hosts}.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
