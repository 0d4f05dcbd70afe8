"""How the audit itself went: degraded, failed probe steps, settings that look like typos."""

from __future__ import annotations

from provision.audit.checks.base import CheckResult, Context, Status, check


@check("audit.degraded", reads=("probe", "notes"))
def degraded(ctx: Context) -> list[CheckResult]:
    if ctx.facts.get("probe") != "nvidia-smi":
        return []
    note = "; ".join(ctx.facts.get("notes") or []) or "degraded audit via nvidia-smi"
    fix = "install python3 on the host for a full NVML audit"
    return [CheckResult("audit.degraded", Status.WARN, note, remediation=fix)]


@check("audit.probe", reads=("errors",))
def probe_errors(ctx: Context) -> list[CheckResult]:
    return [
        CheckResult("audit.probe", Status.UNKNOWN, f"probe step failed: {err}")
        for err in ctx.facts.get("errors") or []
    ]


@check("audit.settings", reads=())
def settings_warnings(ctx: Context) -> list[CheckResult]:
    return [CheckResult("audit.settings", Status.WARN, w) for w in ctx.settings.warnings]
