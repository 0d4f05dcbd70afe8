"""provision's own round-trip count for one playbook run (its SSH layer counts every command).

    python -m bench.trips INVENTORY PLAYBOOK FORKS

Runs the engine in this process (the CLI does not print the count) and prints JSON:
``{"round_trips": {host: n}, "changed": n, "exit_code": n}``.
"""

from __future__ import annotations

import json
import sys

from provision import engine
from provision.inventory import load_inventory


def main(argv: list[str]) -> int:
    inventory, playbook, forks = argv
    result = engine.run_playbook(
        load_inventory(inventory), playbook, engine.ApplyOptions(forks=int(forks))
    )
    doc = {
        "round_trips": result.round_trips,
        "changed": sum(s.changed for s in result.stats.values()),
        "exit_code": result.exit_code,
    }
    sys.stdout.write(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
