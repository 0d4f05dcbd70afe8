"""Audit thresholds and expectations, read from inventory variables and CLI flags (pure).

Every knob is an ``audit_*`` inventory variable (per host or group, Ansible precedence already
applied by the inventory) that a CLI flag may override. A variable that starts with ``audit_`` but
is not known is almost always a typo that would silently disable a check, so it gives a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from provision.errors import ConfigError


def setting(variable: str, kind: str, default: Any, doc: str, flag: str | None = None) -> Any:
    """One audit setting, declared once: its ``audit_*`` variable, how its value is read
    (float, int, version, list, str), its default, what it does and the CLI flag that sets it.
    ``VARIABLES`` and ``FLAGS`` follow from these; a test holds docs/audit.md's table to them."""
    return field(
        default=default, metadata={"variable": variable, "kind": kind, "doc": doc, "flag": flag}
    )


@dataclass(frozen=True)
class AuditSettings:
    """Per-host audit settings; defaults follow field notes section 5. The checks that read
    each one name its variable in their registration (provision/audit/checks/)."""

    disk_warn_pct: float = setting(
        "audit_min_free_disk_pct", "float", 15.0, "WARN below this % free (bytes)"
    )
    disk_fail_pct: float = setting(
        "audit_fail_free_disk_pct", "float", 5.0, "FAIL below this % free"
    )
    disk_fail_gib: float = setting(
        "audit_min_free_disk_gib", "float", 10.0, "FAIL below this many GiB free"
    )
    inode_warn_pct: float = setting(
        "audit_min_free_inodes_pct", "float", 15.0, "WARN below this % of free inodes"
    )
    inode_fail_pct: float = setting(
        "audit_fail_free_inodes_pct", "float", 5.0, "FAIL below this % of free inodes"
    )
    min_driver: str | None = setting(
        "audit_min_driver", "version", None, "FAIL when the driver is older", "--min-driver"
    )
    required_cuda: str | None = setting(
        "audit_required_cuda",
        "version",
        None,
        "FAIL when the driver's highest CUDA is lower",
        "--require-cuda",
    )
    expected_gpus: int | None = setting(
        "audit_expected_gpus", "int", None, "FAIL when fewer GPUs are visible", "--expect-gpus"
    )
    required_images: tuple[str, ...] = setting(
        "audit_required_images",
        "list",
        (),
        'images that must be present: "name[:tag]" or "name@sha256:..."',
        "--require-image",
    )
    disk_paths: tuple[str, ...] = setting(
        "audit_disk_paths", "list", (), "extra paths whose filesystems are checked", "--disk-path"
    )
    probe_timeout: float = setting(
        "audit_probe_timeout", "float", 10.0, "seconds per probe step on the host"
    )
    cache_dir: str | None = setting(
        "audit_cache_dir", "str", None, "where the probe is cached on the host"
    )
    warnings: tuple[str, ...] = field(default=(), compare=False)


SETTINGS = [f for f in dataclasses.fields(AuditSettings) if "variable" in f.metadata]
# inventory variable -> (field, converter)
VARIABLES: dict[str, tuple[str, str]] = {
    f.metadata["variable"]: (f.name, f.metadata["kind"]) for f in SETTINGS
}
# The CLI flag that sets a variable, for error messages about a flag's value.
FLAGS = {f.metadata["variable"]: f.metadata["flag"] for f in SETTINGS if f.metadata["flag"]}
VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


def parse_version(name: str, value: Any) -> str:
    """A version threshold as text ("550.54.15"); junk and INI numbers are refused, because an
    unquoted ``550.100`` reaches us as the float 550.1 and would grade the wrong driver."""
    if isinstance(value, float):
        raise ValueError(
            "read as a number, which loses trailing zeros (550.100 becomes 550.1): "
            f'quote the version, e.g. {name}="550.100"'
        )
    text = str(value).strip()
    if isinstance(value, bool) or not VERSION.match(text):
        raise ValueError("not a version: expected numbers and dots, e.g. 550.54.15")
    return text


def _convert(name: str, kind: str, value: Any) -> Any:
    if value is None or value == "":
        return () if kind == "list" else None
    try:
        if kind == "version":
            return parse_version(name, value)
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


def _where(name: str, from_flag: bool, locate: Callable[[str], str] | None) -> str:
    if from_flag:
        return FLAGS.get(name, name)
    return locate(name) if locate else name


def settings_for(
    hostvars: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    locate: Callable[[str], str] | None = None,
) -> AuditSettings:
    """Settings from one host's variables, then CLI ``overrides`` (variable names as keys).

    ``locate(name)`` says where a variable was set ("hosts.ini:12"), for error messages."""
    values: dict[str, Any] = {}
    warnings = []
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    merged = {**hostvars, **flags}
    for name, value in merged.items():
        if not name.startswith("audit_"):
            continue
        if name not in VARIABLES:
            close = difflib.get_close_matches(name, list(VARIABLES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"unknown audit variable {name!r} ignored{hint}")
            continue
        fld, kind = VARIABLES[name]
        try:
            values[fld] = _convert(name, kind, value)
        except ConfigError as exc:
            raise ConfigError(f"{_where(name, name in flags, locate)}: {exc}") from None
    return dataclasses.replace(AuditSettings(), **values, warnings=tuple(warnings))
