"""Side-by-side benchmark of fact gathering: `provision audit` vs `ansible -m setup` vs pyinfra.

    python -m bench.audit --hosts 50 --repeat 3

Starts N real OpenSSH daemons with the test harness, then gathers facts on every host with each
tool in turn, alternating within every repetition. provision's first (cold) run ships and caches
the probe and is reported apart; the repetitions that follow are warm, as on every later audit.
Round trips per host come from provision's own JSON report (counted by its SSH layer); the sshd
logs give the number of SSH connections each host accepted during one warm run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.common import (
    Prepared,
    Sample,
    compile_package,
    floor_tool,
    measure,
    parse_args,
    pick,
    prepared_lab,
    report,
    save,
    which,
)
from provision.audit.bundle import PYTHON_FLAGS
from tests.lab.sshd import SshdLab

# The nine facts of field notes section 8, as pyinfra names them.
PYINFRA_FACTS = [
    "server.Hostname",
    "server.Kernel",
    "server.OsRelease",
    "server.Uptime",
    "server.Mounts",
    "server.KernelModules",
    "server.RebootRequired",
    "server.Which",
    "command=nvidia-smi",
]
# The floor's client starting the probe's interpreter and nothing else on every host: what
# any probe written in Python costs at the least, the row that splits the audit's distance to
# the floor into the interpreter's share and the probe's own.
PYTHON_START = f"python3 {PYTHON_FLAGS} -c pass"
PYTHON_FLOOR = f"floor, {PYTHON_START}"
AUDIT_CODES = (0, 1, 2, 3)  # graded results; the hosts here have no GPU and no Docker daemon


def tools(inventory: str, py_inventory: str, n: int) -> dict[str, list[str]]:
    cmds = {
        "provision audit (warm)": [
            sys.executable,
            "-m",
            "provision",
            "audit",
            inventory,
            "-f",
            str(n),
            "--format",
            "json",
        ],
    }
    ansible, pyinfra = which("ansible"), which("pyinfra")
    if ansible:
        cmds["ansible -m setup"] = [ansible, "all", "-i", inventory, "-m", "setup", "-f", str(n)]
    if pyinfra:
        cmds["pyinfra fact (9 facts)"] = [
            pyinfra,
            py_inventory,
            "-y",
            "--parallel",
            str(n),
            "fact",
            *PYINFRA_FACTS,
        ]
    return cmds


def accepted_connections(lab: SshdLab) -> dict[str, int]:
    """Per host, how many SSH logins its sshd accepted (from the daemon's own log)."""
    out = {}
    for host in lab.hosts:
        try:
            with open(os.path.join(host.dir, "sshd.log"), errors="replace") as fh:
                out[host.name] = sum(1 for line in fh if "Accepted publickey" in line)
        except OSError:
            out[host.name] = -1
    return out


BASELINE = "provision audit (baseline)"


def run(
    p: Prepared, n: int, repeat: int, only: tuple[str, ...] = (), baseline: str | None = None
) -> tuple[list[Sample], dict[str, object]]:
    """A cold provision audit (ships the probe), then ``repeat`` rounds of every tool.

    ``baseline``: a folder holding another copy of the ``provision`` package (say, the last
    commit's: ``git archive HEAD provision | tar -x -C DIR``), measured as one more tool in the
    same rounds, so that a change reads as before/after on the same machine at the same time.
    """
    lab, env = p.lab, p.env
    extra: dict[str, object] = {"workload": "audit / fact gathering", "repeat": repeat}
    cmds = tools(p.inventory, p.py_inventory, n)
    cmds = pick(cmds, only) | floor_tool(p)
    cmds |= floor_tool(p, PYTHON_FLOOR, PYTHON_START)
    provision = cmds["provision audit (warm)"]
    envs = {tool: env for tool in cmds}
    if baseline is not None:
        compile_package(baseline)
        # -P: not the working directory's provision/ first; PYTHONPATH picks the baseline's
        cmds[BASELINE] = [provision[0], "-P", *provision[1:]]
        envs[BASELINE] = {**env, "PYTHONPATH": os.pathsep.join([baseline, env["PYTHONPATH"]])}
        measure("baseline (cold)", cmds[BASELINE], envs[BASELINE], AUDIT_CODES)
    cold = measure("provision audit (cold)", provision, env, AUDIT_CODES)
    before = accepted_connections(lab)
    warm = subprocess.run(provision, env=env, capture_output=True, text=True, check=False)
    after = accepted_connections(lab)
    doc = json.loads(warm.stdout)
    extra |= {
        "cold_wall_s": cold.wall,
        "cold_cpu_s": cold.cpu,
        "warm_round_trips_per_host": sorted({h["round_trips"] for h in doc["hosts"]}),
        "warm_connections_per_host_from_sshd_logs": sorted({after[h] - before[h] for h in after}),
        "statuses": doc["summary"]["by_status"],
    }
    samples = []
    for _ in range(repeat):
        for tool, cmd in cmds.items():
            codes = AUDIT_CODES if "provision" in tool else (0,)
            sample = p.timed(tool, cmd, envs[tool], codes)
            if sample is not None:
                samples.append(sample)
    return samples, extra


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    with prepared_lab(args.hosts, {"audit_cache_dir": "{tmp}/probe-cache"}) as p:
        samples, extra = run(p, args.hosts, args.repeat)
    table, result = report(samples, args.hosts, extra)
    print(table)
    print(
        f"provision cold run: {extra['cold_wall_s']:.2f} s wall, {extra['cold_cpu_s']:.2f} s CPU;"
        f" warm round trips per host: {extra['warm_round_trips_per_host']}; SSH connections per"
        f" host (sshd logs): {extra['warm_connections_per_host_from_sshd_logs']}"
    )
    print(f"written {save(result, args.out, f'audit-{args.hosts}')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
