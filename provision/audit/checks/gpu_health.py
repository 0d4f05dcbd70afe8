"""Each GPU's health: lost, infoROM, MIG, memory errors, throttling, PCIe width, who uses it;
persistence over all GPUs; Xids from the kernel log."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from provision.audit.checks.base import CheckResult, Context, Status, check, gib

# HwSlowdown, HwThermalSlowdown, HwPowerBrakeSlowdown (NVML clocks event reasons)
HW_SLOWDOWN_BITS = {0x8: "HW slowdown", 0x40: "HW thermal slowdown", 0x80: "HW power brake"}

# Xids (field notes section 4): application errors are ignored; these are hardware trouble.
XID_IGNORED = {13, 31, 43, 45, 68}
# 64 is NVIDIA's "failed to record" a page retirement or row remap (memory-error documentation):
# the repair will not survive a reset, so it is graded like a remap failure.
XID_FAIL = {
    48: "double-bit ECC",
    64: "row-remap recording failure",
    79: "fell off the bus",
    95: "uncontained ECC",
}
XID_WARN = {63: "page retirement / row remap recorded", 94: "contained ECC"}
INFOROM_FIX = "drain the GPU and contact the vendor (infoROM reflash or RMA)"


def result(
    gpu: Mapping[str, Any], cid: str, status: Status, msg: str, ev: Any = None, fix: str = ""
) -> CheckResult:
    """A per-GPU result, its message led by the GPU (by index, else by PCI address)."""
    i = gpu.get("index")
    label = f"GPU{i}" if i is not None else f"GPU {gpu.get('pci_bus_id') or '?'}"
    return CheckResult(cid, status, f"{label}: {msg}", ev, fix, i, gpu.get("uuid"))


def readable(ctx: Context) -> Iterator[Mapping[str, Any]]:
    """The GPUs whose fields were read (not lost, no read error)."""
    for gpu in ctx.nvidia.get("gpus") or []:
        if not gpu.get("lost") and not gpu.get("error"):
            yield gpu


@check("gpu.lost", reads=("nvidia.gpus[].lost", "nvidia.gpus[].error"))
def lost(ctx: Context) -> list[CheckResult]:
    msg = "GPU is lost (no handle: fell off the bus or failed)"
    fix = "reset the GPU or reboot; check the kernel log for Xid 79"
    return [
        result(g, "gpu.lost", Status.FAIL, msg, g.get("error"), fix)
        for g in ctx.nvidia.get("gpus") or []
        if g.get("lost")
    ]


@check("gpu.read", reads=("nvidia.gpus[].error",))
def unreadable(ctx: Context) -> list[CheckResult]:
    return [
        result(g, "gpu.read", Status.UNKNOWN, g["error"])
        for g in ctx.nvidia.get("gpus") or []
        if g.get("error") and not g.get("lost")
    ]


@check("gpu.inforom", reads=("nvidia.gpus[].inforom_corrupted", "nvidia.inforom_warnings"))
def inforom(ctx: Context) -> list[CheckResult]:
    gpus = [g for g in ctx.nvidia.get("gpus") or [] if not g.get("lost")]
    msg = "infoROM is corrupted (nvidia-smi exit 14); its ECC/page-retirement records cannot "
    msg += "be trusted"
    out = [
        result(g, "gpu.inforom", Status.WARN, msg, g.get("pci_bus_id"), INFOROM_FIX)
        for g in gpus
        if g.get("inforom_corrupted")
    ]
    warnings = ctx.nvidia.get("inforom_warnings") or []
    if warnings and not out:  # nvidia-smi named a PCI address no GPU row carries
        text = "infoROM is corrupted at " + ", ".join(warnings)
        out.append(CheckResult("gpu.inforom", Status.WARN, text, warnings, INFOROM_FIX))
    return out


@check("gpu.mig", reads=("nvidia.gpus[].mig_mode",))
def mig(ctx: Context) -> list[CheckResult]:
    return [
        result(g, "gpu.mig", Status.OK, "MIG mode " + ("on" if g["mig_mode"] else "off"))
        for g in ctx.nvidia.get("gpus") or []
        if not g.get("lost") and g.get("mig_mode") is not None
    ]


def _memory(gpu: Mapping[str, Any]) -> CheckResult:
    ecc, rf = gpu.get("ecc_uncorrected_volatile"), gpu.get("remap_failure")
    rp, pp = gpu.get("remap_pending"), gpu.get("retired_pages_pending")
    ev = {"ecc_uncorrected": ecc, "remap_failure": rf, "remap_pending": rp, "retired": pp}
    if (ecc or 0) > 0 or rf:
        msg = f"{ecc} uncorrected ECC errors" if (ecc or 0) > 0 else "row remapping failed"
        fix = "drain the GPU; reset; RMA if repeats"
        return result(gpu, "gpu.memory_errors", Status.FAIL, msg, ev, fix)
    if rp or pp:
        fix = "reset the GPU (or reboot) to apply the pending remap"
        msg = "row remap / page retirement pending"
        return result(gpu, "gpu.memory_errors", Status.WARN, msg, ev, fix)
    if all(v is None for v in (ecc, rf, rp, pp)):
        return result(gpu, "gpu.memory_errors", Status.SKIP, "ECC counters N/A on this card")
    return result(gpu, "gpu.memory_errors", Status.OK, "no memory errors", ev)


@check(
    "gpu.memory_errors",
    reads=(
        "nvidia.gpus[].ecc_uncorrected_volatile",
        "nvidia.gpus[].remap_failure",
        "nvidia.gpus[].remap_pending",
        "nvidia.gpus[].retired_pages_pending",
    ),
)
def memory_errors(ctx: Context) -> list[CheckResult]:
    return [_memory(g) for g in readable(ctx)]


def _throttle(gpu: Mapping[str, Any]) -> CheckResult:
    reasons = gpu.get("clock_event_reasons")
    if reasons is None:
        return result(gpu, "gpu.throttle", Status.SKIP, "clock event reasons N/A")
    active = [name for bit, name in HW_SLOWDOWN_BITS.items() if reasons & bit]
    if active:
        msg, fix = "throttled: " + ", ".join(active), "check cooling, power cables and PSU"
        return result(gpu, "gpu.throttle", Status.WARN, msg, hex(reasons), fix)
    return result(gpu, "gpu.throttle", Status.OK, "no hardware slowdown", hex(reasons))


@check("gpu.throttle", reads=("nvidia.gpus[].clock_event_reasons",))
def throttle(ctx: Context) -> list[CheckResult]:
    return [_throttle(g) for g in readable(ctx)]


def _pcie(gpu: Mapping[str, Any]) -> CheckResult:
    cur, mx = gpu.get("pcie_width_current"), gpu.get("pcie_width_max")
    if cur is None or mx is None:
        return result(gpu, "gpu.pcie", Status.SKIP, "PCIe link width N/A")
    ev = {"current": cur, "max": mx}
    if cur < mx:
        fix = "reseat the card / check the slot and riser"
        return result(gpu, "gpu.pcie", Status.WARN, f"PCIe link x{cur} below max x{mx}", ev, fix)
    return result(gpu, "gpu.pcie", Status.OK, f"PCIe x{cur}", ev)


@check("gpu.pcie", reads=("nvidia.gpus[].pcie_width_current", "nvidia.gpus[].pcie_width_max"))
def pcie(ctx: Context) -> list[CheckResult]:
    return [_pcie(g) for g in readable(ctx)]


@check("gpu.busy", reads=("nvidia.gpus[].processes",))
def busy(ctx: Context) -> list[CheckResult]:
    out = []
    for gpu in readable(ctx):
        procs = gpu.get("processes") or []
        if procs:
            who = ", ".join(
                f"{p.get('user') or '?'}({p.get('pid')}) {gib(p.get('used_memory'))}" for p in procs
            )
            out.append(result(gpu, "gpu.busy", Status.OK, f"in use by {who}", procs))
    return out


@check("gpu.persistence", reads=("nvidia.gpus[].persistence_mode",))
def persistence(ctx: Context) -> list[CheckResult]:
    gpus = list(readable(ctx))
    off = [g.get("index") for g in gpus if g.get("persistence_mode") is False]
    if off:
        msg = "persistence mode off on GPU " + ",".join(str(i) for i in off)
        fix = "enable nvidia-persistenced (systemctl enable --now nvidia-persistenced)"
        return [CheckResult("gpu.persistence", Status.WARN, msg, off, fix)]
    if not ctx.nvidia.get("gpus"):
        return []
    if any(g.get("persistence_mode") is not None for g in ctx.nvidia["gpus"]):
        return [CheckResult("gpu.persistence", Status.OK, "persistence mode on")]
    return [CheckResult("gpu.persistence", Status.SKIP, "persistence mode N/A")]


@check("gpu.xid", reads=("nvidia.xids", "nvidia.xids_reason"))
def xids(ctx: Context) -> list[CheckResult]:
    if not ctx.gpu_host:
        return []
    seen = ctx.nvidia.get("xids")
    if seen is None:
        reason = ctx.nvidia.get("xids_reason") or "kernel log not read"
        return [CheckResult("gpu.xid", Status.SKIP, f"Xids unknown: {reason}")]
    found = {int(k): v for k, v in seen.items() if str(k).isdigit() and int(k) not in XID_IGNORED}
    if not found:
        return [CheckResult("gpu.xid", Status.OK, "no critical Xid since boot")]
    names = {**XID_WARN, **XID_FAIL}
    text = ", ".join(f"Xid {x} ({names.get(x, 'other')}) x{n}" for x, n in sorted(found.items()))
    status = Status.FAIL if set(found) & set(XID_FAIL) else Status.WARN
    fix = "see NVIDIA's Xid catalogue; drain and reset the GPU, RMA if it repeats"
    return [CheckResult("gpu.xid", status, f"since boot: {text}", seen, fix)]
