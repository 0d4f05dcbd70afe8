"""Markdown tables of the saved results (bench/results/WORKLOAD-N.json), for docs/performance.md.

python -m bench.tables [--out bench/results]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

from tabulate import tabulate

from bench.common import HERE, ROW_HEADERS, result_rows

ORDER = {"audit": 0, "adhoc": 1, "playbook": 2}


def table(doc: dict) -> str:
    """One workload at one N: medians and ratios against provision (the first tool)."""
    rows = result_rows(doc["tools"], "runs")
    headers = [*ROW_HEADERS, "runs"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def markdown(out: str) -> str:
    """Every saved result under ``out``, by workload then host count, as Markdown."""
    found = []
    for path in glob.glob(os.path.join(out, "*-*.json")):
        m = re.fullmatch(r"(\w+)-(\d+)\.json", os.path.basename(path))
        if m and m.group(1) in ORDER:
            found.append((ORDER[m.group(1)], int(m.group(2)), path))
    parts = []
    for _, n, path in sorted(found):
        with open(path) as fh:
            doc = json.load(fh)
        when = f", {doc['when']}" if "when" in doc else ""
        parts += [
            f"### {doc['workload']}, {n} host{'s' if n != 1 else ''}{when}",
            "",
            table(doc),
            "",
        ]
        if "load_before" in doc:  # the 1-minute load average around the run
            parts += [
                f"Load average: {doc['load_before'][0]:.1f} before, "
                f"{doc['load_after'][0]:.1f} after.",
                "",
            ]
        checks = doc.get("targets", [])
        parts += [f"- {line}" for line in checks] + ([""] if checks else [])
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    print(markdown(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
