"""The one place that picks the audit's renderer by format (pure: a string out).

The environment (width, colour) comes in from the CLI; nothing here reads a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from provision.audit import html, prometheus, table
from provision.audit.report import (
    AuditRun,
    HostReport,
    render_csv,
    render_json,
    render_markdown,
)

if TYPE_CHECKING:  # the history (and sqlite3) is imported only by an audit that keeps one
    from provision.audit.history import Delta

FORMATS = ("table", "json", "csv", "markdown", "html", "prometheus")


def render(
    reports: Sequence[HostReport],
    fmt: str = "table",
    *,
    details: bool = False,
    all_checks: bool = False,
    gpus: bool = False,
    colour: bool = False,
    width: int = 100,
    fail_on: str = "warn",
    run: AuditRun | None = None,
    history: Delta | None = None,
    changes_only: bool = False,
) -> str:
    """``details``: problems only, no table; ``all_checks``: every check; ``gpus``: one line per
    GPU; ``changes_only``: only what changed since the previous audit (needs ``history``).
    ``run`` stamps the time of the audit (now when not given)."""
    run = run or AuditRun(time.time())
    if fmt == "table":
        if changes_only and history is not None:
            return "\n".join(table.change_lines(history, width)) + "\n"
        if gpus:
            return table.render_gpus(reports, width, colour)
        return table.render_table(reports, width, colour, details, all_checks, history)
    if fmt == "json":
        return render_json(reports, fail_on, run, history.to_dict() if history else None)
    if fmt == "csv":
        return render_csv(reports)
    if fmt == "markdown":
        return render_markdown(reports, details or all_checks)
    if fmt == "html":
        return html.render_html(reports, run, html.history_extras(history) if history else None)
    if fmt == "prometheus":
        return prometheus.render_prometheus(reports, run)
    raise ValueError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")
