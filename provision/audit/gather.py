"""Run the probe on a host through a Session and return its parsed facts.

One round trip on a warm host (the cached probe runs), two on a cold one (upload + run), and the
degraded ``nvidia-smi`` script runs inside the first command when the host has no python3. The
JSON is framed by random markers, so login junk, MOTDs or shell noise around it never break
parsing (G14); anything else (garbage, huge output, a crashed probe) raises :class:`AuditError`,
which the executor turns into that host's "failed" state with a one-line reason.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from provision.audit import bundle, fallback, probe
from provision.audit.settings import AuditSettings
from provision.errors import ProvisionError
from provision.nvidia_packages import DRIVER_PREFIXES
from provision.ssh import CommandResult, CommandTimeout, Session

MAX_OUTPUT = 16 * 1024 * 1024  # a probe document is a few KiB; more is garbage
# Beyond the probe's own steps: starting Python, unpacking pynvml, an upload on a cold host.
BUDGET_SLACK = 5.0


def host_budget(settings: AuditSettings) -> float:
    """Seconds one host's audit may take in all. The probe runs its slow steps concurrently,
    each within STEP_CAP step timeouts, so a host that takes longer is hung, not slow: it is
    reported "timed out" with the step it was in instead of holding the whole report."""
    return probe.STEP_CAP * settings.probe_timeout + BUDGET_SLACK


class AuditError(ProvisionError):
    """The probe's answer could not be used (garbage, huge, crashed)."""


def markers() -> tuple[str, str, str]:
    """(start, end, fallback token): random per run so no host output can fake them."""
    token = secrets.token_hex(8)
    return f"@@PROVISION-AUDIT-START-{token}@@", f"@@PROVISION-AUDIT-END-{token}@@", f"@@{token}"


def extract(stdout: str, start: str, end: str) -> dict[str, Any]:
    """The JSON document between the markers (pure); raises AuditError on anything else."""
    if len(stdout) > MAX_OUTPUT:
        raise AuditError(f"probe output too large ({len(stdout)} bytes): not a probe answer")
    i = stdout.rfind(start)
    j = stdout.rfind(end)
    if i < 0 or j < i:
        snippet = " ".join(stdout.strip().split())[-120:]
        raise AuditError(f"no probe answer in the output ({snippet or 'empty'})")
    body = stdout[i + len(start) : j].strip()
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        reason = " ".join(str(exc).split())[:120]
        raise AuditError(f"probe answer is not valid JSON: {reason}") from None
    if not isinstance(doc, dict) or "host" not in doc:
        raise AuditError("probe answer has an unexpected shape")
    return doc


def _settings(chosen: AuditSettings | Mapping[str, AuditSettings], name: str) -> AuditSettings:
    if isinstance(chosen, AuditSettings):
        return chosen
    return chosen.get(name) or AuditSettings()


def gather(
    session: Session, settings: AuditSettings, timeout: float | None = None
) -> dict[str, Any]:
    """Audit one host over an open session within ``timeout`` (default: its budget)."""
    budget = host_budget(settings) if timeout is None else timeout
    deadline = time.monotonic() + budget

    def run(command: str, step: str, stdin: bytes | None = None) -> CommandResult:
        try:
            return session.run(command, stdin=stdin, timeout=max(1.0, deadline - time.monotonic()))
        except CommandTimeout:
            raise CommandTimeout(f"audit budget of {budget:g}s spent in step: {step}") from None

    data, sha = bundle.build()
    start, end, token = markers()
    config = bundle.config_words(
        list(settings.disk_paths),
        list(settings.required_images),
        settings.probe_timeout,
        DRIVER_PREFIXES,  # the driver and container toolkit packages whose holds matter
    )
    args = [start, end, *config]
    script = fallback.shell_script(token, list(settings.disk_paths), settings.probe_timeout)
    first = run(
        bundle.run_command(sha, args, settings.cache_dir, script),
        "probe run (python3 check, cached probe or nvidia-smi fallback)",
    )
    out = first.stdout
    if bundle.NO_PYTHON_MARKER in out and start not in out:
        if len(out) > MAX_OUTPUT:
            raise AuditError(f"fallback output too large ({len(out)} bytes)")
        sections = fallback.parse_sections(out, token)
        if not sections:
            raise AuditError("no python3 and the nvidia-smi fallback printed nothing usable")
        return fallback.facts_from_sections(sections, list(settings.disk_paths))
    if bundle.NEED_MARKER in out and start not in out:
        second = run(
            bundle.install_command(sha, len(data), args, settings.cache_dir),
            "probe upload and first run",
            stdin=data,
        )
        if start not in second.stdout:
            err = " ".join(second.stderr.strip().split())[-200:]
            raise AuditError(
                f"probe install/run failed (exit {second.exit_code}): {err or 'no output'}"
            )
        out = second.stdout
    elif start not in out:
        err = " ".join(first.stderr.strip().split())[-200:]
        if first.exit_code != 0:
            raise AuditError(f"probe failed (exit {first.exit_code}): {err or 'no output'}")
    return extract(out, start, end)


def audit_task(
    settings: AuditSettings | Mapping[str, AuditSettings], timeout: float | None = None
) -> Callable[[Session], dict[str, Any]]:
    """The task for ``executor.run_hosts``: settings for all hosts, or per host name."""

    def task(session: Session) -> dict[str, Any]:
        return gather(session, _settings(settings, session.name), timeout)

    return task


def audit_local(settings: AuditSettings) -> dict[str, Any]:
    """Audit this machine in-process (``provision audit`` without an inventory)."""
    return probe.gather(
        {
            "paths": list(settings.disk_paths),
            "images": list(settings.required_images),
            "timeout": settings.probe_timeout,
            "packages": list(DRIVER_PREFIXES),
        }
    )
