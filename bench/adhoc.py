"""Side-by-side benchmark of an ad-hoc command: provision vs Ansible vs pyinfra on real sshd hosts.

    python -m bench.adhoc --hosts 50 --repeat 3

Starts N real OpenSSH daemons with the test harness (tests/lab), then runs `true` on every host
with each tool in turn, alternating within every repetition. Reports per tool: median wall time,
controller CPU (user+sys of the whole process tree, from wait4) and peak RSS, as a table with ratios
against provision, and as JSON under bench/results/.
"""

from __future__ import annotations

import sys

from bench.common import (
    Prepared,
    Sample,
    floor_tool,
    parse_args,
    pick,
    prepared_lab,
    report,
    save,
    which,
)


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


def run(
    p: Prepared, n: int, repeat: int, only: tuple[str, ...] = ()
) -> tuple[list[Sample], dict[str, object]]:
    """``repeat`` rounds of every tool, alternating."""
    samples = []
    cmds = tools(p.inventory, p.py_inventory, n)
    cmds = pick(cmds, only) | floor_tool(p)
    for _ in range(repeat):
        for tool, cmd in cmds.items():
            sample = p.timed(tool, cmd, p.env)
            if sample is not None:
                samples.append(sample)
    return samples, {"workload": "adhoc true", "repeat": repeat}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    with prepared_lab(args.hosts) as p:
        samples, extra = run(p, args.hosts, args.repeat)
    table, result = report(samples, args.hosts, extra)
    print(table)
    print(f"written {save(result, args.out, f'adhoc-{args.hosts}')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
