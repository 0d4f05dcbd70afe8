"""Side-by-side benchmark of a converged 20-task playbook: provision vs Ansible vs pyinfra.

    python -m bench.playbook --hosts 50 --repeat 3

Starts N real OpenSSH daemons with the test harness, runs the same 20 tasks written for each tool
(bench/converged/: playbook.yml, ansible.yml, deploy.py) once to converge, then measures the
second and later runs, where nothing changes (the common case), alternating the tools within every
repetition. Ansible runs tuned (forks = N, pipelining) and, once per benchmark, with its defaults.
Every file lives under a per-tool, per-host folder: the lab hosts share this machine's filesystem.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from bench.common import (
    FLOOR,
    Prepared,
    Sample,
    floor_tool,
    measure,
    parse_args,
    pick,
    prepared_lab,
    report,
    save,
    which,
)

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "converged")
PROVISION = "provision apply"
ANSIBLE = "ansible-playbook"
ANSIBLE_DEFAULTS = "ansible-playbook (defaults)"
PYINFRA = "pyinfra deploy"
EXTRA_VARS = {"bench_root": "{tmp}/root"}


def tools(p: Prepared, n: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each tool's command line and environment for the converged playbook on every host."""
    cmds = {
        PROVISION: (
            [
                sys.executable,
                "-m",
                "provision",
                "apply",
                "-i",
                p.inventory,
                "-p",
                os.path.join(HERE, "playbook.yml"),
                "-f",
                str(n),
            ],
            p.env,
        ),
    }
    ansible, pyinfra = which("ansible-playbook"), which("pyinfra")
    if ansible:
        book = os.path.join(HERE, "ansible.yml")
        cmds[ANSIBLE] = ([ansible, "-i", p.inventory, book, "-f", str(n)], p.env)
        cmds[ANSIBLE_DEFAULTS] = ([ansible, "-i", p.inventory, book], p.ansible_defaults_env())
    if pyinfra:
        deploy = os.path.join(HERE, "deploy.py")
        cmds[PYINFRA] = (
            [pyinfra, p.py_inventory, deploy, "-y", "--parallel", str(n)],
            p.env,
        )
    return cmds


def changed(tool: str, output: str) -> int | None:
    """How many changes the run reported (None when the output could not be read)."""
    if tool == PYINFRA:  # "Grand total  HOSTS  SUCCESS  ERROR  NO-CHANGE"; "-" is zero
        m = re.search(r"Grand total\s+\S+\s+(\S+)", output)
        return None if m is None else int(m.group(1).replace("-", "0"))
    # ansible-playbook's PLAY RECAP lines, which provision prints the same way
    found = re.findall(r"\bchanged=(\d+)", output)
    return sum(int(x) for x in found) if found else None


def provision_trips(p: Prepared, n: int) -> dict[str, object]:
    """provision's own count of round trips per host for one run (converged, or a first run
    on hosts where it has changed nothing yet: bench/first_run.py)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.trips",
            p.inventory,
            os.path.join(HERE, "playbook.yml"),
            str(n),
        ],
        env=p.env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return {"error": (proc.stderr or proc.stdout)[-500:]}
    trips = sorted(set(doc["round_trips"].values()))
    return {"round_trips_per_host": trips, "changed": doc["changed"]}


def run(
    p: Prepared, n: int, repeat: int, defaults_repeat: int = 1, only: tuple[str, ...] = ()
) -> tuple[list[Sample], dict[str, object]]:
    """Converge once, then ``repeat`` measured no-change runs of every tool (Ansible with its
    defaults only ``defaults_repeat`` times: it is by far the slowest)."""
    cmds = tools(p, n)
    cmds = pick(cmds, only) | {tool: (cmd, p.env) for tool, cmd in floor_tool(p).items()}
    extra: dict[str, object] = {"workload": "converged 20-task playbook", "repeat": repeat}
    converge = {}
    for tool, (cmd, env) in cmds.items():
        if tool in (ANSIBLE_DEFAULTS, FLOOR):
            continue  # shares ansible.yml's files with the tuned run; the floor changes nothing
        first = measure(f"{tool} (first run)", cmd, env, cap=p.cap_for(tool), host_cpu=p.host_cpu)
        converge[tool] = {
            "wall_s": first.wall,
            "cpu_s": first.cpu,
            "host_cpu_s": first.host_cpu if first.host_cpu >= 0 else None,
            "changed": changed(tool, first.output),
            "capped": first.capped,
        }
    extra["first_run"] = converge
    extra["provision_own_count"] = provision_trips(p, n)
    samples: list[Sample] = []
    nochange: dict[str, list[int | None]] = {}
    for rep in range(repeat):
        for tool, (cmd, env) in cmds.items():
            if tool == ANSIBLE_DEFAULTS and rep >= defaults_repeat:
                continue
            sample = p.timed(tool, cmd, env)
            if sample is None:
                continue
            if tool == FLOOR:  # one command, no playbook: nothing to count
                samples.append(sample)
                continue
            nochange.setdefault(tool, []).append(changed(tool, sample.output))
            sample.ok = sample.ok and nochange[tool][-1] == 0
            samples.append(sample)
    extra["changed_in_measured_runs"] = nochange
    return samples, extra


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    with prepared_lab(args.hosts, EXTRA_VARS) as p:
        samples, extra = run(p, args.hosts, args.repeat)
    table, result = report(samples, args.hosts, extra)
    print(table)
    print(f"provision's own count: {extra['provision_own_count']}")
    print(f"written {save(result, args.out, f'playbook-{args.hosts}')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
