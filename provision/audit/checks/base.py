"""The check registry: statuses, results, and :func:`check`, which registers one pure grading
function per concern with the facts and settings it reads.

A new check is one function in the module of its concern, decorated with ``@check(id, reads=...,
settings=...)``, plus its test; ``run_checks`` runs every registered check in registration order
(the catalogue order of docs/audit.md) and ``tests/test_audit_checks.py`` holds every check's
``reads`` to the facts schema and its ``settings`` to the declared ``audit_*`` variables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from provision.audit.settings import AuditSettings

GIB = 1024**3


class Status(str, Enum):
    OK = "OK"
    SKIP = "SKIP"
    WARN = "WARN"
    UNKNOWN = "UNKNOWN"
    FAIL = "FAIL"
    UNREACHABLE = "UNREACHABLE"


# Worst wins. FAIL outranks UNKNOWN inside one host: a known fault is more actionable than a gap.
SEVERITY = {
    Status.OK: 0,
    Status.SKIP: 0,
    Status.WARN: 1,
    Status.UNKNOWN: 2,
    Status.FAIL: 3,
    Status.UNREACHABLE: 4,
}


@dataclass
class CheckResult:
    id: str
    status: Status
    message: str
    evidence: Any = None
    remediation: str = ""
    gpu_index: int | None = None
    gpu_uuid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d


@dataclass(frozen=True)
class Context:
    """What a check sees: one host's facts, its settings, and whether it is a GPU host."""

    facts: Mapping[str, Any]
    settings: AuditSettings
    gpu_host: bool

    @property
    def nvidia(self) -> Mapping[str, Any]:
        return self.facts.get("nvidia") or {}

    @property
    def host(self) -> Mapping[str, Any]:
        return self.facts.get("host") or {}

    @property
    def docker(self) -> Mapping[str, Any]:
        return self.facts.get("docker") or {}


Grade = Callable[[Context], list[CheckResult]]


@dataclass(frozen=True)
class Check:
    id: str
    reads: tuple[str, ...]  # facts paths it grades ("nvidia.gpus[].remap_pending")
    settings: tuple[str, ...]  # audit_* variables it reads
    grade: Grade


REGISTRY: list[Check] = []


def check(
    cid: str, *, reads: Iterable[str], settings: Iterable[str] = ()
) -> Callable[[Grade], Grade]:
    """Register ``grade`` as check ``cid`` (ids are unique; order is the catalogue's)."""

    def register(grade: Grade) -> Grade:
        if any(c.id == cid for c in REGISTRY):
            raise ValueError(f"check {cid!r} is registered twice")
        REGISTRY.append(Check(cid, tuple(reads), tuple(settings), grade))
        return grade

    return register


def worst(statuses: Iterable[Status]) -> Status:
    result = Status.OK
    for s in statuses:
        if SEVERITY[s] > SEVERITY[result]:
            result = s
    return result


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """ "550.54.15" -> (550, 54, 15); None when there are no digits."""
    if not text:
        return None
    parts = re.findall(r"\d+", str(text))
    return tuple(int(p) for p in parts) if parts else None


def gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f} GiB"


def is_gpu_host(facts: Mapping[str, Any], settings: AuditSettings) -> bool:
    """A host that has, or is expected to have, NVIDIA GPUs."""
    nv = facts.get("nvidia") or {}
    return bool(
        nv.get("pci_gpus")
        or (nv.get("gpu_count") or 0) > 0
        or nv.get("nvml") == "mismatch"
        or nv.get("kernel_module_version")
        or nv.get("nvml") in ("ok", "no devices", "timed out")  # the driver answered or hung
        or (facts.get("host") or {}).get("nvidia_module_loaded")
        or (settings.expected_gpus or 0) > 0
    )


def run_checks(facts: Mapping[str, Any], settings: AuditSettings) -> list[CheckResult]:
    """Every registered check for one audited host, in catalogue order."""
    ctx = Context(facts, settings, is_gpu_host(facts, settings))
    return [result for registered in REGISTRY for result in registered.grade(ctx)]
