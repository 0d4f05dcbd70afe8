"""Turn per-host outcomes into graded host reports and render them (pure: strings and ints out).

The report model (:class:`HostReport`, :class:`AuditRun`), the table's cells, and the JSON
(one document, ``schema_version`` 1, documented in ``docs/audit.md``), CSV (one row per check)
and Markdown formats; the terminal table is ``table.py``, the page ``html.py``, the metrics
``prometheus.py``, and ``output.py`` picks one. Exit codes: 0 all OK, 1 some WARN, 2 some
FAIL, 3 some UNREACHABLE or UNKNOWN; ``fail_on`` moves the bar.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from provision import __version__
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
FAIL_ON = {"warn": 1, "fail": 2, "unknown": 3, "never": 99}
UNREACHABLE_STATES = {"unreachable", "host key refused", "timed out"}
# What to do about a host that could not be audited, by executor state.
REACH_FIX = {
    "unreachable": "check that the host is up and sshd listens on its address and port "
    "(ssh -v HOST)",
    "timed out": "check the host's load and network; raise -T/--timeout for slow links",
    "host key refused": "verify the host's new key out of band, then remove the old one "
    "(ssh-keygen -R HOST)",
    "failed": "run the audit with -vvv to see the probe's output",
}


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
    address: str = ""  # where the audit connected (ConnSpec.hostname); "" for --local
    groups: list[str] = field(default_factory=list)  # inventory groups, "all" included


@dataclass(frozen=True)
class AuditRun:
    """The audit as a whole, stamped by the CLI: every format shows when it ran."""

    generated_at: float  # Unix time the audit finished
    duration: float | None = None  # seconds for the whole fan-out
    previous_at: float | None = None  # the previous recorded audit (history), if any


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
        message = f"{state}: {reason}" if reason else state
        check = CheckResult("host.reachable", status, message, None, REACH_FIX.get(state, ""))
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


def add_interrupted(
    reports: list[HostReport],
    hosts: Sequence[str],
    settings: AuditSettings | Mapping[str, AuditSettings],
) -> list[HostReport]:
    """After Ctrl-C: the hosts that answered, plus every other host marked "interrupted", in
    ``hosts`` order."""
    done = {r.host: r for r in reports}
    reason = "Ctrl-C before it answered"
    return [
        done.get(h) or host_report(h, "interrupted", None, reason, _settings(settings, h))
        for h in hosts
    ]


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
    """0 all OK, 1 some WARN, 2 some FAIL, 3 some UNKNOWN, 4 some UNREACHABLE (the code ping,
    run and apply give an unreachable host, Ansible's 4); below ``fail_on`` -> 0."""
    code = 0
    for r in reports:
        if r.status is Status.UNREACHABLE:
            code = max(code, 4)
        elif r.status is Status.UNKNOWN:
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


def short_gpu(name: str | None) -> str:
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
        key = "lost" if g.get("lost") else short_gpu(g.get("name"))
        key += " MIG" if g.get("mig_mode") else ""
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
    return [c or None for c in host_cells(report)]


def host_cells(report: HostReport) -> list[str]:
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


def summary_line(reports: Sequence[HostReport]) -> str:
    counts: dict[str, int] = {}
    for r in reports:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    order = [s.value for s in sorted(Status, key=lambda s: -SEVERITY[s])]
    parts = [f"{counts[s]} {s}" for s in order if s in counts]
    n = len(reports)
    return f"{n} host{'' if n == 1 else 's'}: " + ", ".join(parts)


def iso_time(stamp: float | None) -> str | None:
    """UTC, to the second, ISO 8601 with a Z: what JSON readers and the page show."""
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def to_document(
    reports: Sequence[HostReport], fail_on: str = "warn", run: AuditRun | None = None
) -> dict[str, Any]:
    counts: dict[str, int] = {s.value: 0 for s in Status if s is not Status.SKIP}
    for r in reports:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": iso_time(run.generated_at if run else None),
        "previous_at": iso_time(run.previous_at if run else None),
        "duration_s": _rounded(run.duration if run else None),
        "provision_version": __version__,
        "summary": {
            "hosts": len(reports),
            "by_status": counts,
            "worst": worst(r.status for r in reports).value if reports else Status.OK.value,
            "exit_code": exit_code(reports, fail_on),
        },
        "hosts": [
            {
                "host": r.host,
                "address": r.address,
                "groups": r.groups,
                "status": r.status.value,
                "state": r.state,
                "reason": r.reason,
                "duration_s": _rounded(r.duration),
                "round_trips": r.round_trips,
                "facts": r.facts,
                "checks": [c.to_dict() for c in r.checks],
            }
            for r in reports
        ],
    }


def render_json(
    reports: Sequence[HostReport],
    fail_on: str = "warn",
    run: AuditRun | None = None,
    history: dict[str, Any] | None = None,
) -> str:
    """The document; ``history``: changes and disk trends from the audit history, if kept."""
    doc = {**to_document(reports, fail_on, run), **({"history": history} if history else {})}
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"


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
    # Imported here, not at the top: tabulate imports importlib.metadata (~40 ms), which every
    # audit would pay at start-up for the one format that needs it.
    from tabulate import tabulate

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


def render(reports: Sequence[HostReport], fmt: str = "table", **options: Any) -> str:
    """Kept for existing callers: the one dispatcher is :func:`provision.audit.output.render`."""
    from provision.audit.output import render as dispatch  # output imports this module

    return dispatch(reports, fmt, **options)
