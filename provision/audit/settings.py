"""Audit thresholds and expectations, read from inventory variables and CLI flags (pure).

Every knob is an ``audit_*`` inventory variable (per host or group, Ansible precedence already
applied by the inventory) that a CLI flag may override. A variable that starts with ``audit_`` but
is not known is almost always a typo that would silently disable a check, so it gives a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provision.errors import ConfigError


@dataclass(frozen=True)
class AuditSettings:
    """Per-host audit settings; defaults follow field notes section 5."""

    disk_warn_pct: float = 15.0  # audit_min_free_disk_pct: WARN below this % free
    disk_fail_pct: float = 5.0  # audit_fail_free_disk_pct: FAIL below this % free
    disk_fail_gib: float = 10.0  # audit_min_free_disk_gib: FAIL below this many GiB free
    inode_warn_pct: float = 15.0  # audit_min_free_inodes_pct
    inode_fail_pct: float = 5.0  # audit_fail_free_inodes_pct
    min_driver: str | None = None  # audit_min_driver, e.g. "550.54"
    required_cuda: str | None = None  # audit_required_cuda, e.g. "12.4"
    expected_gpus: int | None = None  # audit_expected_gpus
    required_images: tuple[str, ...] = ()  # audit_required_images: "name" or "name@sha256:..."
    disk_paths: tuple[str, ...] = ()  # audit_disk_paths: extra paths to check
    probe_timeout: float = 10.0  # audit_probe_timeout: seconds per probe step on the host
    cache_dir: str | None = None  # audit_cache_dir: where the probe is cached on the host
    warnings: tuple[str, ...] = field(default=(), compare=False)


# inventory variable -> (field, converter)
VARIABLES: dict[str, tuple[str, str]] = {
    "audit_min_free_disk_pct": ("disk_warn_pct", "float"),
    "audit_fail_free_disk_pct": ("disk_fail_pct", "float"),
    "audit_min_free_disk_gib": ("disk_fail_gib", "float"),
    "audit_min_free_inodes_pct": ("inode_warn_pct", "float"),
    "audit_fail_free_inodes_pct": ("inode_fail_pct", "float"),
    "audit_min_driver": ("min_driver", "str"),
    "audit_required_cuda": ("required_cuda", "str"),
    "audit_expected_gpus": ("expected_gpus", "int"),
    "audit_required_images": ("required_images", "list"),
    "audit_disk_paths": ("disk_paths", "list"),
    "audit_probe_timeout": ("probe_timeout", "float"),
    "audit_cache_dir": ("cache_dir", "str"),
}


def _convert(name: str, kind: str, value: Any) -> Any:
    if value is None or value == "":
        return () if kind == "list" else None
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
        if kind == "list":
            if isinstance(value, str):
                items = [v.strip() for v in value.replace("\n", ",").split(",")]
            elif isinstance(value, list | tuple):
                items = [str(v).strip() for v in value]
            else:
                raise ValueError(f"expected a list, got {type(value).__name__}")
            return tuple(i for i in items if i)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: invalid value {value!r}: {exc}") from None


def settings_for(
    hostvars: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> AuditSettings:
    """Settings from one host's variables, then CLI ``overrides`` (variable names as keys)."""
    values: dict[str, Any] = {}
    warnings = []
    merged = {**hostvars, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    for name, value in merged.items():
        if not name.startswith("audit_"):
            continue
        if name not in VARIABLES:
            close = difflib.get_close_matches(name, list(VARIABLES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"unknown audit variable {name!r} ignored{hint}")
            continue
        fld, kind = VARIABLES[name]
        values[fld] = _convert(name, kind, value)
    return dataclasses.replace(AuditSettings(), **values, warnings=tuple(warnings))
