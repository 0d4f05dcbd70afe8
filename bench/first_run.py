"""The first (changing) run of the converged 20-task playbook, repeated: provision vs pyinfra
(and Ansible up to 10 hosts), each run on hosts where that tool has changed nothing yet.

    python -m bench.first_run --hosts 50 --repeat 3 [--baseline DIR]

bench/playbook.py times one first run per tool, before its converged runs; this one resets each
tool's per-host folders before every run, so every sample is a first run (14 changes per host),
and the tools alternate within every repetition. ``--baseline DIR``: a folder holding another
copy of the ``provision`` package (say, the last commit's: ``git worktree add DIR HEAD``),
timed in the same rounds. Also records provision's own round-trip count of a first run.
"""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any

from bench import playbook
from bench.common import (
    HERE,
    Prepared,
    Sample,
    compile_package,
    measure,
    prepared_lab,
    report,
    save,
)

BASELINE = "provision apply (baseline)"
FOLDER = {  # each tool's files live under bench_root/<folder>/<host> (bench/converged/)
    playbook.PROVISION: "provision",
    BASELINE: "provision",
    playbook.PYINFRA: "pyinfra",
    playbook.ANSIBLE: "ansible",
}


def first_run_trips(p: Prepared, n: int) -> dict[str, object]:
    """provision's own round-trip count for one first run (bench/trips.py)."""
    shutil.rmtree(os.path.join(p.tmp, "root", "provision"), ignore_errors=True)
    return playbook.provision_trips(p, n)


def run(
    p: Prepared, n: int, repeat: int, baseline: str | None
) -> tuple[list[Sample], dict[str, Any]]:
    cmds = {
        tool: cmd
        for tool, cmd in playbook.tools(p, n).items()
        if tool != playbook.ANSIBLE_DEFAULTS and (tool != playbook.ANSIBLE or n <= 10)
    }
    if baseline is not None:
        compile_package(baseline)
        argv, env = cmds[playbook.PROVISION]
        # -P: not the working directory's provision/ first; PYTHONPATH picks the baseline's
        cmds[BASELINE] = (
            [argv[0], "-P", *argv[1:]],
            {**env, "PYTHONPATH": os.pathsep.join([baseline, env["PYTHONPATH"]])},
        )
    extra: dict[str, Any] = {"workload": "first run of the converged playbook", "repeat": repeat}
    extra["provision_own_count"] = first_run_trips(p, n)
    samples: list[Sample] = []
    changes: dict[str, list[int | None]] = {}
    for _ in range(repeat):
        for tool, (argv, env) in cmds.items():
            shutil.rmtree(os.path.join(p.tmp, "root", FOLDER[tool]), ignore_errors=True)
            sample = measure(tool, argv, env, logs=p.logs, host_cpu=p.host_cpu)
            changes.setdefault(tool, []).append(playbook.changed(tool, sample.output))
            samples.append(sample)
    extra["changed"] = changes
    return samples, extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", help="a folder holding another copy of the provision package")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    with prepared_lab(args.hosts, playbook.EXTRA_VARS) as p:
        samples, extra = run(p, args.hosts, args.repeat, args.baseline)
    table, result = report(samples, args.hosts, extra)
    print(table)
    print(f"provision's own count: {extra['provision_own_count']}")
    print(f"written {save(result, args.out, f'first-run-{args.hosts}')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
