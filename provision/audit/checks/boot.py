"""Predictive checks: what the next reboot or kernel update will do to the driver. They run on
GPU hosts with a driver installed (driver packages in dpkg, or the module loaded)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from provision.audit.checks.base import CheckResult, Context, Status, check
from provision.nvidia_packages import TOOLKIT_PREFIXES

FABRIC_FIX = (
    "apt install nvidia-fabricmanager-<branch> matching the driver; "
    "systemctl enable --now nvidia-fabricmanager"
)
NOT_INITIALIZED = " (CUDA then fails with 'system not yet initialized')"


def applies(ctx: Context) -> Mapping[str, Any] | None:
    """The boot facts when the predictive checks apply to this host, else None."""
    boot = ctx.facts.get("boot")
    if not boot or not ctx.gpu_host:
        return None
    drivers = [p for p in boot.get("packages") or {} if not p.startswith(TOOLKIT_PREFIXES)]
    return boot if drivers or ctx.host.get("nvidia_module_loaded") else None


@check("boot.next_kernel", reads=("boot.next_kernel", "boot.next_kernel_modules", "boot.dkms"))
def next_kernel(ctx: Context) -> list[CheckResult]:
    boot = applies(ctx)
    if boot is None:
        return []
    kernel = boot.get("next_kernel")
    if not kernel:
        return [CheckResult("boot.next_kernel", Status.SKIP, "no installed kernel in /boot")]
    built = boot.get("next_kernel_modules") or []
    dkms = (boot.get("dkms") or {}).get(kernel) or []
    if built or any(m.startswith("nvidia") for m in dkms):
        msg = f"kernel {kernel} (next boot) has the NVIDIA module"
        return [CheckResult("boot.next_kernel", Status.OK, msg, built or dkms)]
    msg = (
        f"the driver will be missing after the next reboot: kernel {kernel} boots next and "
        "has no NVIDIA module built for it"
    )
    fix = (
        f"apt install linux-headers-{kernel}, then `dkms autoinstall -k {kernel}` and check "
        "`dkms status` (or install the driver's prebuilt modules for that kernel)"
    )
    ev = {"kernel": kernel, "dkms": boot.get("dkms")}
    return [CheckResult("boot.next_kernel", Status.WARN, msg, ev, fix)]


@check("packages.held", reads=("boot.packages", "boot.unattended_upgrades"))
def held(ctx: Context) -> list[CheckResult]:
    boot = applies(ctx)
    if boot is None:
        return []
    packages = boot.get("packages") or {}
    if not packages:
        return [CheckResult("packages.held", Status.SKIP, "no NVIDIA driver packages from dpkg")]
    loose = sorted(p for p, v in packages.items() if not v.get("held"))
    if not loose:
        msg = f"{len(packages)} driver packages held"
        return [CheckResult("packages.held", Status.OK, msg)]
    uu = boot.get("unattended_upgrades") or {}
    blacklist = uu.get("blacklist") or []
    upgraded = [p for p in loose if not any(re.match(b, p) for b in blacklist)]
    msg = "driver/toolkit packages not held: " + ", ".join(loose)
    if uu.get("enabled") and upgraded:
        msg += "; unattended-upgrades may upgrade " + ", ".join(upgraded)
    ev = {"not_held": loose, "unattended_upgrades": upgraded if uu.get("enabled") else []}
    fix = "apt-mark hold " + " ".join(loose)
    fix += " (provision apply does, with the unattended-upgrades blacklist)"
    return [CheckResult("packages.held", Status.WARN, msg, ev, fix)]


@check(
    "kernel.headers",
    reads=("boot.headers_flavour", "boot.headers_kernel", "boot.headers_packages"),
)
def headers(ctx: Context) -> list[CheckResult]:
    boot = applies(ctx)
    if boot is None:
        return []
    flavour, kernel = boot.get("headers_flavour"), boot.get("headers_kernel")
    if not flavour:
        why = f"custom kernel {kernel}" if kernel else "no installed kernel in /boot"
        return [CheckResult("kernel.headers", Status.SKIP, f"{why}: no headers metapackage")]
    installed = boot.get("headers_packages") or []
    if installed:
        return [CheckResult("kernel.headers", Status.OK, f"{', '.join(installed)} installed")]
    meta = f"linux-headers-{flavour}"
    msg = (
        f"no {meta} installed for the {flavour} kernels: the next kernel update loses the "
        "driver (DKMS cannot build without headers)"
    )
    return [CheckResult("kernel.headers", Status.WARN, msg, kernel, f"apt install {meta}")]


@check("fabric.manager", reads=("boot.fabric", "nvidia.driver_version"))
def fabric_manager(ctx: Context) -> list[CheckResult]:
    boot = applies(ctx)
    fabric = (boot or {}).get("fabric") or {}
    switches = fabric.get("nvswitches") or []
    if not switches:
        return []
    if not fabric.get("active"):
        state = fabric.get("state") or "unknown"
        msg = f"{len(switches)} NVSwitches but nvidia-fabricmanager is {state}{NOT_INITIALIZED}"
        return [CheckResult("fabric.manager", Status.FAIL, msg, switches, FABRIC_FIX)]
    version, driver = fabric.get("version"), ctx.nvidia.get("driver_version")
    if driver and version != driver:
        msg = f"nvidia-fabricmanager {version or '?'} differs from the driver {driver}"
        msg += NOT_INITIALIZED
        return [CheckResult("fabric.manager", Status.FAIL, msg, version, FABRIC_FIX)]
    msg = f"nvidia-fabricmanager {version} running"
    return [CheckResult("fabric.manager", Status.OK, msg)]
