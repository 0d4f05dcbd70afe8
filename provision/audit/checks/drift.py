"""The lab-wide check: each host's driver against the lab's majority (needs every host)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from provision.audit.checks.base import CheckResult, Status


def drift_checks(all_facts: Mapping[str, Mapping[str, Any] | None]) -> dict[str, CheckResult]:
    """Driver version against the lab's majority: WARN for hosts that differ."""
    drivers = {
        host: (f.get("nvidia") or {}).get("driver_version")
        for host, f in all_facts.items()
        if f is not None
    }
    counted = Counter(v for v in drivers.values() if v)
    if len(counted) < 2:
        return {}
    majority, _ = counted.most_common(1)[0]
    out = {}
    for host, version in drivers.items():
        if not version:
            continue
        if version != majority:
            out[host] = CheckResult(
                "driver.drift",
                Status.WARN,
                f"driver {version} differs from the lab majority {majority}",
                {"host": version, "majority": majority},
                "align driver versions across the lab",
            )
        else:
            out[host] = CheckResult(
                "driver.drift", Status.OK, f"driver matches lab majority {majority}"
            )
    return out
