"""Turn per-host outcomes into graded host reports and render them (pure: strings and ints out).

Formats: the default table (one row per host, fits 100 columns), ``--details`` (every check),
JSON (one document, ``schema_version`` 1, documented in ``docs/audit.md``), CSV (one row per
check) and Markdown. Exit codes: 0 all OK, 1 some WARN, 2 some FAIL, 3 some UNREACHABLE or
UNKNOWN; ``fail_on`` moves the bar.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tabulate import DataRow, Line, TableFormat, tabulate

from provision.audit.checks import (
    GIB,
    SEVERITY,
    CheckResult,
    Status,
    drift_checks,
    run_checks,
    worst,
)
from provision.audit.settings import AuditSettings

SCHEMA_VERSION = 1
TABLE_WIDTH = 100
HEADERS = (
    "HOST",
    "STATUS",
    "DRIVER",
    "CUDA",
    "GPUS",
    "MEM",
    "BUSY",
    "DISK",
    "DOCKER",
    "IMG",
    "ISSUES",
)
# Columns that may be cut to fit the width, first cut first, with their minimum width.
# (column, narrowest) in the order they give way; the host name (column 0) never does: a cut
# name is useless to an admin, so a lab with very long names gets a wider table instead.
SHRINKABLE = ((10, 30), (4, 14), (6, 8), (10, 12), (4, 6), (10, 8))
COLOURS = {
    Status.OK: "\033[32m",
    Status.WARN: "\033[33m",
    Status.FAIL: "\033[31m",
    Status.UNKNOWN: "\033[35m",
    Status.UNREACHABLE: "\033[1;31m",
    Status.SKIP: "",
}
RESET = "\033[0m"
FAIL_ON = {"warn": 1, "fail": 2, "unknown": 3, "never": 99}
UNREACHABLE_STATES = {"unreachable", "host key refused", "timed out"}


@dataclass
class HostReport:
    host: str
    status: Status
    facts: dict[str, Any] | None
    checks: list[CheckResult] = field(default_factory=list)
    state: str = "ok"  # the executor's state for this host
    reason: str = ""  # why the host could not be audited
    duration: float | None = None
    round_trips: int | None = None


def _settings(chosen: AuditSettings | Mapping[str, AuditSettings], host: str) -> AuditSettings:
    if isinstance(chosen, AuditSettings):
        return chosen
    return chosen.get(host) or AuditSettings()


def host_report(
    host: str,
    state: str,
    facts: dict[str, Any] | None,
    reason: str,
    settings: AuditSettings,
    duration: float | None = None,
    round_trips: int | None = None,
) -> HostReport:
    """Grade one host; a host without facts is UNREACHABLE (transport) or UNKNOWN (probe)."""
    if state != "ok" or facts is None:
        status = Status.UNREACHABLE if state in UNREACHABLE_STATES else Status.UNKNOWN
        check = CheckResult("host.reachable", status, f"{state}: {reason}" if reason else state)
        return HostReport(host, status, None, [check], state, reason, duration, round_trips)
    checks = run_checks(facts, settings)
    return HostReport(
        host, worst(c.status for c in checks), facts, checks, state, reason, duration, round_trips
    )


def assemble(
    outcomes: Mapping[str, Any], settings: AuditSettings | Mapping[str, AuditSettings]
) -> list[HostReport]:
    """Reports from ``executor.run_hosts`` outcomes (HostOutcome objects), drift included."""
    reports = []
    for name, o in outcomes.items():
        state = getattr(o.state, "value", o.state)
        value = o.value if isinstance(o.value, dict) else None
        reports.append(
            host_report(
                name, state, value, o.reason, _settings(settings, name), o.duration, o.round_trips
            )
        )
    return add_drift(reports)


def add_drift(reports: list[HostReport]) -> list[HostReport]:
    """Append the lab-majority driver check to every audited host and regrade it."""
    drift = drift_checks({r.host: r.facts for r in reports if r.facts is not None})
    for r in reports:
        check = drift.get(r.host)
        if check is not None:
            r.checks.append(check)
            r.status = worst(c.status for c in r.checks)
    return reports


def exit_code(reports: Iterable[HostReport], fail_on: str = "warn") -> int:
    """0 all OK, 1 some WARN, 2 some FAIL, 3 some UNREACHABLE/UNKNOWN; below ``fail_on`` -> 0."""
    code = 0
    for r in reports:
        if r.status in (Status.UNREACHABLE, Status.UNKNOWN):
            code = max(code, 3)
        elif r.status is Status.FAIL:
            code = max(code, 2)
        elif r.status is Status.WARN:
            code = max(code, 1)
    bar = FAIL_ON.get(fail_on)
    if bar is None:
        raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON)}")
    return code if code >= bar else 0


# -- cells ---------------------------------------------------------------------------------------


def _short_gpu(name: str | None) -> str:
    name = name or "?"
    for prefix in ("NVIDIA ", "GeForce ", "Tesla "):
        name = name.replace(prefix, "")
    # memory and form-factor suffixes ("H100 80GB HBM3" -> "H100") cost columns, not meaning
    name = re.sub(r"\s+(\d+GB|HBM\d*e?|PCIe|SXM\d*|NVL)\b", "", name)
    return name.strip()


def gpus_cell(facts: Mapping[str, Any] | None) -> str:
    """ "2x RTX A6000" (grouped by model; a lost GPU counts as "lost")."""
    if not facts:
        return ""
    gpus = (facts.get("nvidia") or {}).get("gpus") or []
    if not gpus:
        nv = facts.get("nvidia") or {}
        pci = nv.get("pci_gpus") or []
        state = nv.get("nvml")
        if state in ("mismatch", "error"):
            return f"{len(pci)}x ({state})" if pci else f"({state})"
        return f"{len(pci)}x (no driver)" if pci else "none"
    counts: dict[str, int] = {}
    for g in gpus:
        key = "lost" if g.get("lost") else _short_gpu(g.get("name"))
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n}x {k}" for k, n in counts.items())


def mem_cell(facts: Mapping[str, Any] | None) -> str:
    gpus = [g for g in ((facts or {}).get("nvidia") or {}).get("gpus") or [] if not g.get("lost")]
    used = [g.get("memory_used") for g in gpus if g.get("memory_used") is not None]
    total = [g.get("memory_total") for g in gpus if g.get("memory_total") is not None]
    if not total:
        return ""
    return f"{sum(used) / GIB:.0f}/{sum(total) / GIB:.0f}G"


def busy_cell(facts: Mapping[str, Any] | None) -> str:
    """Busy GPUs and who: "0:alice 1:bob,carol"."""
    parts = []
    for g in ((facts or {}).get("nvidia") or {}).get("gpus") or []:
        procs = g.get("processes") or []
        if procs:
            users = sorted({str(p.get("user") or p.get("pid")) for p in procs})
            parts.append(f"{g.get('index')}:{','.join(users)}")
    return " ".join(parts)


def disk_cell(facts: Mapping[str, Any] | None) -> str:
    """Lowest free share over the checked paths, with its free bytes: "85G 31%"."""
    best = None
    for d in (facts or {}).get("disk") or []:
        if d.get("total"):
            pct = 100.0 * d["free"] / d["total"]
            if best is None or pct < best[0]:
                best = (pct, d["free"])
    if best is None:
        return ""
    return f"{best[1] / GIB:.0f}G {best[0]:.0f}%"


def docker_cell(facts: Mapping[str, Any] | None) -> str:
    dk = (facts or {}).get("docker") or {}
    if not facts:
        return ""
    if not dk.get("installed"):
        return "none"
    if not dk.get("daemon_running"):
        return "denied" if dk.get("daemon_access_denied") else "down"
    return "nvidia" if "nvidia" in (dk.get("runtimes") or []) else "no-rt"


def images_cell(report: HostReport) -> str:
    checks = [c for c in report.checks if c.id == "docker.image"]
    if not checks:
        return ""
    ok = sum(1 for c in checks if c.status is Status.OK)
    return f"{ok}/{len(checks)}"


def issues_cell(report: HostReport) -> str:
    """Non-OK checks, worst first: "driver.mismatch, gpu.memory_errors[0], clock.ntp"."""
    if report.facts is None:
        return report.reason or report.state
    bad = [c for c in report.checks if SEVERITY[c.status] > 0]
    bad.sort(key=lambda c: -SEVERITY[c.status])
    names = []
    for c in bad:
        name = c.id + (f"[{c.gpu_index}]" if c.gpu_index is not None else "")
        if name not in names:
            names.append(name)
    return ", ".join(names)


def row(report: HostReport) -> list[str | None]:
    """One table row; empty cells become None so tabulate prints ``missingval``."""
    return [c or None for c in _cells(report)]


def _cells(report: HostReport) -> list[str]:
    f = report.facts
    nv = (f or {}).get("nvidia") or {}
    return [
        report.host,
        "UNREACH" if report.status is Status.UNREACHABLE else report.status.value,
        nv.get("driver_version") or "",
        nv.get("cuda_version") or "",
        gpus_cell(f),
        mem_cell(f),
        busy_cell(f),
        disk_cell(f),
        docker_cell(f),
        images_cell(report),
        issues_cell(report),
    ]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "~"


def _widths(rows: list[list[str | None]]) -> list[int]:
    return [
        max([len(HEADERS[i])] + [1 if r[i] is None else len(str(r[i])) for r in rows])
        for i in range(len(HEADERS))
    ]


def fit(
    rows: list[list[str | None]], width: int = TABLE_WIDTH, gap: int = 1
) -> list[list[str | None]]:
    """Shorten the shrinkable columns (issues first) until the table fits ``width``."""
    rows = [list(r) for r in rows]
    for col, minimum in SHRINKABLE:
        widths = _widths(rows)
        total = sum(widths) + gap * (len(widths) - 1)
        if total <= width:
            break
        target = max(minimum, widths[col] - (total - width))
        for r in rows:
            if r[col] is not None:
                r[col] = _cut(str(r[col]), target)
    return rows


# One space between columns (tabulate's "simple" uses two, which costs 10 of our 100 columns).
_FORMAT = TableFormat(
    lineabove=None,
    linebelowheader=Line("", "-", " ", ""),
    linebetweenrows=None,
    linebelow=None,
    headerrow=DataRow("", " ", ""),
    datarow=DataRow("", " ", ""),
    padding=0,
    with_header_hide=None,
)


def _colour(status: str) -> str:
    try:
        key = Status.UNREACHABLE if status == "UNREACH" else Status(status)
        return COLOURS[key] + status + RESET
    except ValueError:
        return status


def render_table(
    reports: Sequence[HostReport], colour: bool = False, width: int = TABLE_WIDTH
) -> str:
    rows = fit([row(r) for r in reports], width)
    if colour:
        for r in rows:
            r[1] = _colour(str(r[1]))
    widths = _widths(rows)
    body = [[*HEADERS], ["-" * w for w in widths], *rows]
    return (
        "\n".join(
            line.rstrip()
            for line in tabulate(
                body, tablefmt=_FORMAT, disable_numparse=True, missingval="-"
            ).splitlines()
        )
        + "\n"
        + summary_line(reports)
        + "\n"
    )


def summary_line(reports: Sequence[HostReport]) -> str:
    counts: dict[str, int] = {}
    for r in reports:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    order = [s.value for s in sorted(Status, key=lambda s: -SEVERITY[s])]
    parts = [f"{counts[s]} {s}" for s in order if s in counts]
    n = len(reports)
    return f"{n} host{'' if n == 1 else 's'}: " + ", ".join(parts)


def render_details(reports: Sequence[HostReport], colour: bool = False) -> str:
    """Every check of every host, with evidence-free one-line reasons and remediation."""
    out = []
    for r in reports:
        status = _colour(r.status.value) if colour else r.status.value
        out.append(f"== {r.host}: {status}")
        rows = []
        for c in r.checks:
            s = _colour(c.status.value) if colour else c.status.value
            rows.append([s, c.id, c.message, c.remediation])
        out.append(
            tabulate(
                rows,
                headers=["STATUS", "CHECK", "MESSAGE", "REMEDIATION"],
                tablefmt="simple",
                disable_numparse=True,
                missingval="-",
                maxcolwidths=[None, 22, 44, 24],
            )
        )
        out.append("")
    return "\n".join(out)


def to_document(reports: Sequence[HostReport], fail_on: str = "warn") -> dict[str, Any]:
    counts: dict[str, int] = {s.value: 0 for s in Status if s is not Status.SKIP}
    for r in reports:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "summary": {
            "hosts": len(reports),
            "by_status": counts,
            "worst": worst(r.status for r in reports).value if reports else Status.OK.value,
            "exit_code": exit_code(reports, fail_on),
        },
        "hosts": [
            {
                "host": r.host,
                "status": r.status.value,
                "state": r.state,
                "reason": r.reason,
                "duration_s": r.duration,
                "round_trips": r.round_trips,
                "facts": r.facts,
                "checks": [c.to_dict() for c in r.checks],
            }
            for r in reports
        ],
    }


def render_json(reports: Sequence[HostReport], fail_on: str = "warn") -> str:
    return json.dumps(to_document(reports, fail_on), indent=2, sort_keys=False, default=str) + "\n"


def render_csv(reports: Sequence[HostReport]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "host",
            "host_status",
            "check",
            "status",
            "gpu_index",
            "gpu_uuid",
            "message",
            "remediation",
        ]
    )
    for r in reports:
        for c in r.checks:
            w.writerow(
                [
                    r.host,
                    r.status.value,
                    c.id,
                    c.status.value,
                    "" if c.gpu_index is None else c.gpu_index,
                    c.gpu_uuid or "",
                    c.message,
                    c.remediation,
                ]
            )
    return buf.getvalue()


def _md(text: str) -> str:
    return re.sub(r"([|\\])", r"\\\1", text)


def render_markdown(reports: Sequence[HostReport], details: bool = False) -> str:
    rows = [[None if c is None else _md(c) for c in row(r)] for r in reports]
    out = [
        tabulate(
            rows, headers=list(HEADERS), tablefmt="github", disable_numparse=True, missingval="-"
        ),
        "",
        summary_line(reports),
    ]
    if details:
        for r in reports:
            out += ["", f"### {_md(r.host)}: {r.status.value}", ""]
            out.append(
                tabulate(
                    [[c.status.value, c.id, _md(c.message), _md(c.remediation)] for c in r.checks],
                    headers=["Status", "Check", "Message", "Remediation"],
                    tablefmt="github",
                    disable_numparse=True,
                    missingval="-",
                )
            )
    return "\n".join(out) + "\n"


def render(
    reports: Sequence[HostReport],
    fmt: str = "table",
    *,
    details: bool = False,
    colour: bool = False,
    fail_on: str = "warn",
) -> str:
    """One entry point for the CLI: ``fmt`` is table, json, csv or markdown."""
    if fmt == "table":
        text = render_table(reports, colour)
        return text + ("\n" + render_details(reports, colour) if details else "")
    if fmt == "json":
        return render_json(reports, fail_on)
    if fmt == "csv":
        return render_csv(reports)
    if fmt == "markdown":
        return render_markdown(reports, details)
    raise ValueError(f"unknown format {fmt!r} (table, json, csv, markdown)")
