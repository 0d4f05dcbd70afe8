"""The audit as Prometheus metrics, for node_exporter's textfile collector (pure: text out).

Format: Prometheus' text exposition format 0.0.4 (prometheus.io/docs/instrumenting/
exposition_formats), which the textfile collector parses; no sample timestamps (the collector
rejects them). Names follow prometheus.io/docs/practices/naming: the ``provision_`` prefix, base
units in the name (``_bytes``, ``_seconds``, ``_celsius``, ``_watts``, ``_ratio``), ``_info`` for
labels-only series of value 1. Enumerations (host and check status) are state sets: one series
per possible status, 1 for the current one, so a series never disappears when a status changes
and an alert is ``provision_audit_check_status{status="FAIL"} == 1``.

The CLI writes the file atomically (temp file beside it, then rename): the collector reads only
``*.prom`` files, so it never sees the temp file, and a scrape reads either the old file or the
new one (node_exporter README, "Textfile Collector").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from provision import __version__
from provision.audit.checks import CheckResult, Status
from provision.audit.report import AuditRun, HostReport

STATUSES = tuple(s.value for s in Status)


@dataclass
class Family:
    """One metric family: its HELP, TYPE and samples (labels, value)."""

    name: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)
    type: str = "gauge"

    def add(self, value: float | None, **labels: str) -> None:
        if value is not None:
            self.samples.append((labels, float(value)))


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {_number(value)}"


def format_families(families: Iterable[Family]) -> str:
    out = []
    for fam in families:
        if not fam.samples:
            continue
        out.append(f"# HELP {fam.name} {_help(fam.help)}")
        out.append(f"# TYPE {fam.name} {fam.type}")
        out += [_sample(fam.name, labels, value) for labels, value in fam.samples]
    return "\n".join(out) + "\n"


def check_subject(check: CheckResult) -> str:
    """What a check is about beyond its id, so that every series is unique on a host: the GPU
    index for per-GPU checks, the image reference for the per-image checks (their messages
    start with it), else ""."""
    if check.gpu_index is not None:
        return str(check.gpu_index)
    if check.id.startswith("docker.image"):
        return check.message.split(" ", 1)[0].rstrip(":")
    return ""


def _state_set(fam: Family, current: Status, **labels: str) -> None:
    for status in STATUSES:
        fam.add(1 if status == current.value else 0, **labels, status=status)


def _check_families(reports: Sequence[HostReport]) -> list[Family]:
    host_status = Family(
        "provision_audit_host_status",
        "Host status of the last audit (state set: 1 for the current status)",
    )
    up = Family("provision_audit_host_up", "1 when the host was reached and audited")
    duration = Family("provision_audit_host_duration_seconds", "Time spent auditing the host")
    checks = Family(
        "provision_audit_check_status",
        "Status of each audit check (state set: 1 for the current status); "
        "subject is the GPU index or image the check is about",
    )
    for r in reports:
        _state_set(host_status, r.status, host=r.host)
        up.add(0 if r.facts is None else 1, host=r.host)
        duration.add(None if r.duration is None else round(r.duration, 3), host=r.host)
        seen: set[tuple[str, str]] = set()
        for c in r.checks:
            key = (c.id, check_subject(c))
            if key in seen:  # a check repeated on one subject: keep the first, series are unique
                continue
            seen.add(key)
            _state_set(checks, c.status, host=r.host, check=key[0], subject=key[1])
    return [host_status, up, duration, checks]


def _gpu_families(reports: Sequence[HostReport]) -> list[Family]:
    fams = {
        "memory_used": Family("provision_gpu_memory_used_bytes", "GPU memory in use"),
        "memory_total": Family("provision_gpu_memory_total_bytes", "GPU memory installed"),
        "utilization_gpu": Family(
            "provision_gpu_utilization_ratio", "GPU utilisation (0-1) over the last sample period"
        ),
        "temperature_c": Family("provision_gpu_temperature_celsius", "GPU core temperature"),
        "power_w": Family("provision_gpu_power_watts", "GPU power draw"),
    }
    scale = {"utilization_gpu": 0.01}
    lost = Family("provision_gpu_lost", "1 when NVML lost the GPU (fell off the bus)")
    procs = Family("provision_gpu_processes", "Processes using the GPU")
    for r in reports:
        for g in ((r.facts or {}).get("nvidia") or {}).get("gpus") or []:
            labels = {"host": r.host, "gpu": str(g.get("index")), "uuid": str(g.get("uuid") or "")}
            lost.add(1 if g.get("lost") else 0, **labels)
            if g.get("lost"):
                continue
            labels["model"] = str(g.get("name") or "")
            for key, fam in fams.items():
                value = g.get(key)
                fam.add(None if value is None else value * scale.get(key, 1), **labels)
            procs.add(len(g.get("processes") or []), **labels)
    return [*fams.values(), lost, procs]


def _host_families(reports: Sequence[HostReport]) -> list[Family]:
    driver = Family(
        "provision_nvidia_driver_info",
        "NVIDIA driver and the highest CUDA it supports, as labels (value 1)",
    )
    free = Family("provision_disk_free_bytes", "Free bytes on the filesystem of a checked path")
    size = Family("provision_disk_size_bytes", "Size of the filesystem of a checked path")
    for r in reports:
        f: dict[str, Any] = r.facts or {}
        nv = f.get("nvidia") or {}
        if r.facts is not None:
            driver.add(
                1,
                host=r.host,
                driver_version=str(nv.get("driver_version") or ""),
                cuda_version=str(nv.get("cuda_version") or ""),
                nvml=str(nv.get("nvml") or ""),
            )
        for d in f.get("disk") or []:
            labels = {"host": r.host, "path": str(d.get("path")), "role": str(d.get("role") or "")}
            free.add(d.get("free"), **labels)
            size.add(d.get("total"), **labels)
    return [driver, free, size]


def render_prometheus(reports: Sequence[HostReport], run: AuditRun) -> str:
    """Every family of the audit in the text exposition format."""
    info = Family("provision_audit_info", "The provision version that ran the audit (value 1)")
    info.add(1, version=__version__)
    stamp = Family(
        "provision_audit_timestamp_seconds", "Unix time the audit finished (alert when stale)"
    )
    stamp.add(round(run.generated_at, 3))
    took = Family("provision_audit_duration_seconds", "Wall time of the whole audit")
    took.add(None if run.duration is None else round(run.duration, 3))
    hosts = Family("provision_audit_hosts", "Hosts audited, by status")
    for status in STATUSES:
        hosts.add(sum(1 for r in reports if r.status.value == status), status=status)
    families = [info, stamp, took, hosts]
    families += _check_families(reports) + _gpu_families(reports) + _host_families(reports)
    return format_families(families)
