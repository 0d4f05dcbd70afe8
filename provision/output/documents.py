"""The JSON documents of ``ping``, ``run`` and ``apply`` (``--format json``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from provision import __version__
from provision.output.reports import AdhocReport, ApplyReport

SCHEMA_VERSION = 1


def _stamp() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "provision_version": __version__,
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def outcomes_document(report: AdhocReport) -> dict[str, Any]:
    """``ping`` / ``run``: per host its state, reason, exit code and (run) output."""
    from provision.ssh import CommandResult  # ssh imports paramiko: only once a document is built

    hosts = []
    for o in report.outcomes.values():
        result = o.value if isinstance(o.value, CommandResult) else None
        hosts.append(
            {
                "host": o.host,
                "state": o.state.value,
                "reason": o.reason,
                "exit_code": result.exit_code if result is not None else o.exit_code,
                "stdout": result.stdout if result is not None else None,
                "stderr": result.stderr if result is not None else o.stderr_tail or None,
                "duration_s": _rounded(o.duration),
                "round_trips": o.round_trips,
            }
        )
    return {
        **_stamp(),
        "command": report.command,
        "duration_s": _rounded(report.elapsed),
        "exit_code": report.exit_code,
        "hosts": hosts,
    }


def apply_document(report: ApplyReport) -> dict[str, Any]:
    """``apply``: the recap per host and every task result in order. A result's registered data
    is left out: a no_log task's data keeps what its message hides."""
    result = report.result
    return {
        **_stamp(),
        "command": "apply",
        "check_mode": report.check,
        "duration_s": _rounded(report.elapsed),
        "exit_code": result.exit_code,
        "aborted": result.aborted or None,
        "recap": {h: dataclasses.asdict(s) for h, s in result.stats.items()},
        "host_reasons": result.host_reasons,
        "warnings": result.warnings,
        "results": [
            {
                "host": r.host,
                "play": r.play,
                "task": r.task,
                "status": r.status,
                "msg": r.msg,
                "changes": r.changes,
                "ignored": r.ignored,
                "diff": r.diff,
            }
            for r in result.results
        ],
    }


def render_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, default=str) + "\n"
