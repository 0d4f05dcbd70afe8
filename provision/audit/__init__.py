"""GPU audit: probe (runs ON each host), bundle (zipapp), gather, checks and report.

Integration for the CLI::

    settings = {name: settings_for(inv.hosts[name].vars, overrides) for name in names}
    outcomes = run_hosts(specs, audit_task(settings), opts, on_done=progress)
    reports = assemble(outcomes, settings)
    text = render(reports, fmt, details=..., colour=..., fail_on=...)
    code = exit_code(reports, fail_on)

Without an inventory: ``reports = add_drift([host_report("localhost", "ok",
audit_local(s), "", s)])``.
"""

from provision.audit.checks import CheckResult, Status, run_checks
from provision.audit.gather import AuditError, audit_local, audit_task
from provision.audit.output import render
from provision.audit.report import (
    AuditRun,
    HostReport,
    add_drift,
    add_interrupted,
    assemble,
    exit_code,
    host_report,
)
from provision.audit.settings import AuditSettings, settings_for

__all__ = [
    "AuditError",
    "AuditRun",
    "AuditSettings",
    "CheckResult",
    "HostReport",
    "Status",
    "add_drift",
    "add_interrupted",
    "assemble",
    "audit_local",
    "audit_task",
    "exit_code",
    "host_report",
    "render",
    "run_checks",
    "settings_for",
]
