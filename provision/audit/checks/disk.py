"""Free space and inodes on /, Docker's data-root and the extra paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provision.audit.checks.base import GIB, CheckResult, Context, Status, check, gib
from provision.audit.settings import AuditSettings

DISK_SETTINGS = (
    "audit_min_free_disk_pct",
    "audit_fail_free_disk_pct",
    "audit_min_free_disk_gib",
)
INODE_SETTINGS = ("audit_min_free_inodes_pct", "audit_fail_free_inodes_pct")


def _largest_image(ctx: Context) -> int:
    return max((i.get("size") or 0 for i in ctx.docker.get("images") or []), default=0)


def _space(d: Mapping[str, Any], s: AuditSettings, image_fs: bool, largest: int) -> CheckResult:
    path = d.get("path")
    cid = f"disk:{path}"
    if d.get("error"):
        return CheckResult(cid, Status.UNKNOWN, f"{path}: {d['error']}")
    total, free = d.get("total") or 0, d.get("free") or 0
    if total <= 0:
        return CheckResult(cid, Status.SKIP, f"{path}: size unknown")
    pct = 100.0 * free / total
    ev = {"free": free, "total": total, "pct": round(pct, 1)}
    absolute = total >= 2 * s.disk_fail_gib * GIB  # small partitions: % rule only
    msg = f"{path}: {gib(free)} free ({pct:.0f}%)"
    short = image_fs and largest and free < 2 * largest
    if pct < s.disk_fail_pct or (absolute and free < s.disk_fail_gib * GIB):
        status = Status.FAIL
    elif pct < s.disk_warn_pct or short:
        status = Status.WARN
        msg += f", less than 2x the largest image ({gib(largest)})" if short else ""
    else:
        status = Status.OK
    fix = "" if status is Status.OK else "free space: docker system prune, old checkpoints"
    return CheckResult(cid, status, msg, ev, fix)


@check("disk", reads=("disk", "docker.images"), settings=DISK_SETTINGS)
def space(ctx: Context) -> list[CheckResult]:
    disks = ctx.facts.get("disk") or []
    has_docker = any(d.get("role") == "docker" for d in disks)
    largest = _largest_image(ctx)
    out = []
    for d in disks:
        image_fs = d.get("role") == "docker" or (not has_docker and d.get("role") == "root")
        out.append(_space(d, ctx.settings, image_fs, largest))
    return out


@check("inodes", reads=("disk",), settings=INODE_SETTINGS)
def inodes(ctx: Context) -> list[CheckResult]:
    out = []
    for d in ctx.facts.get("disk") or []:
        itotal, ifree = d.get("inodes_total") or 0, d.get("inodes_free")
        if d.get("error") or not d.get("total") or itotal <= 0 or ifree is None:
            continue
        ipct = 100.0 * ifree / itotal
        if ipct < ctx.settings.inode_fail_pct:
            status = Status.FAIL
        elif ipct < ctx.settings.inode_warn_pct:
            status = Status.WARN
        else:
            status = Status.OK
        msg = f"{d.get('path')}: {ipct:.0f}% inodes free"
        out.append(
            CheckResult(f"inodes:{d.get('path')}", status, msg, {"free": ifree, "total": itotal})
        )
    return out
