"""Side-by-side benchmark of an ad-hoc command: provision vs Ansible vs pyinfra on real sshd hosts.

    python -m bench.adhoc --hosts 50 --repeat 3

Starts N real OpenSSH daemons with the test harness (tests/lab), then runs `true` on every host
with each tool in turn, alternating within every repetition. Reports per tool: median wall time,
controller CPU (user+sys of the whole process tree, from wait4) and peak RSS, as a table with ratios
against provision, and as JSON under bench/results/.
"""

from __future__ import annotations

import sys

from bench.common import measure, parse_args, prepared_lab, report, save, which


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
    args = parse_args(__doc__.splitlines()[0], argv)
    samples = []
    with prepared_lab(args.hosts) as lab:
        cmds = tools(lab.inventory, lab.py_inventory, args.hosts)
        for _ in range(args.repeat):
            for tool, cmd in cmds.items():
                samples.append(measure(tool, cmd, lab.env))

    table, result = report(samples, args.hosts, {"workload": "adhoc true", "repeat": args.repeat})
    print(table)
    print(f"written {save(result, args.out, f'adhoc-{args.hosts}')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
