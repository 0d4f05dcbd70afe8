"""GPUs present, driver loaded and consistent, driver and CUDA versions against requirements."""

from __future__ import annotations

from provision.audit.checks.base import CheckResult, Context, Status, check, version_tuple

# CUDA release -> minimum Linux x86_64 driver of its GA toolkit: NVIDIA's CUDA Toolkit release
# notes, Table 3 "CUDA Toolkit and Corresponding Driver Versions" (docs/audit.md names the page).
CUDA_MIN_DRIVER = {
    "13.3": "610.43.02",
    "13.2": "595.45.04",
    "13.1": "590.44.01",
    "13.0": "580.65.06",
    "12.9": "575.51.03",
    "12.8": "570.26",
    "12.6": "560.28.03",
    "12.5": "555.42.02",
    "12.4": "550.54.14",
    "12.3": "545.23.06",
    "12.2": "535.54.03",
    "12.1": "530.30.02",
    "12.0": "525.60.13",
}
# Table 2, minor-version compatibility: the lowest driver that runs any CUDA X.y application
# (with its documented limits, e.g. no PTX JIT of newer code).
CUDA_MAJOR_MIN_DRIVER = {13: "580", 12: "525.60.13", 11: "450.80.02"}
# The driver's answer is unusable in these NVML states: a version requirement then FAILs.
BROKEN = ("no driver", "mismatch")


def min_driver_for_cuda(cuda: str) -> str | None:
    """The lowest driver that supports CUDA ``cuda`` (e.g. "12.6" -> "560.28.03")."""
    v = version_tuple(cuda)
    if not v:
        return None
    known = [(version_tuple(c), d) for c, d in CUDA_MIN_DRIVER.items()]
    same_major = [(c, d) for c, d in known if c and c[0] == v[0] and c <= v[: len(c)]]
    if same_major:
        return max(same_major)[1]
    return CUDA_MAJOR_MIN_DRIVER.get(v[0])


def cuda_from_driver(driver: str | None) -> str | None:
    """Highest CUDA in our table that ``driver`` supports (a hint: never used to grade)."""
    dv = version_tuple(driver)
    if not dv:
        return None
    best = None
    for cuda, need in CUDA_MIN_DRIVER.items():
        nv, cv = version_tuple(need), version_tuple(cuda)
        if nv and cv and dv >= nv and (best is None or cv > best):
            best = cv
    return ".".join(str(x) for x in best) if best else None


def _table_hint(driver: str | None) -> str:
    """What NVIDIA's table says a known driver supports at least (a hint, never a grade)."""
    floor = cuda_from_driver(driver)
    return f"; driver {driver} supports at least CUDA {floor} by NVIDIA's table" if floor else ""


@check(
    "gpu.present",
    reads=("nvidia.pci_gpus", "nvidia.gpu_count", "nvidia.nvml", "nvidia.nvml_error"),
    settings=("audit_expected_gpus",),
)
def present(ctx: Context) -> list[CheckResult]:
    if not ctx.gpu_host:
        return [CheckResult("gpu.present", Status.SKIP, "no NVIDIA GPU on this host")]
    nv, expected = ctx.nvidia, ctx.settings.expected_gpus
    pci, count = nv.get("pci_gpus") or [], nv.get("gpu_count")
    seen = count if count is not None else (len(pci) if pci else None)
    ev = {"pci": len(pci), "nvml": count}
    if expected is not None and seen is None:
        msg = f"expected {expected} GPUs, NVML sees none ({nv.get('nvml')})"
        return [CheckResult("gpu.present", Status.FAIL, msg, ev)]
    if expected is not None and seen is not None and seen < expected:
        fix = "check seating/power; `nvidia-smi -L`; kernel log for Xid 79"
        msg = f"{seen} of {expected} expected GPUs visible"
        return [CheckResult("gpu.present", Status.FAIL, msg, ev, fix)]
    if expected is not None:
        return [CheckResult("gpu.present", Status.OK, f"{seen} GPUs (expected {expected})")]
    if not seen:
        msg = f"no GPU visible to the driver ({nv.get('nvml_error') or nv.get('nvml')})"
        msg += f" although the PCI bus shows {len(pci)}" if pci else ""
        fix = (
            "check the kernel log (RmInitAdapter, Xid 79); reseat or reboot; "
            "the card may need the open kernel modules"
        )
        return [CheckResult("gpu.present", Status.FAIL, msg, ev, fix)]
    if pci and count is not None and count < len(pci):
        msg = f"{len(pci)} GPUs on the PCI bus but NVML sees {count}"
        return [CheckResult("gpu.present", Status.FAIL, msg, ev)]
    return [CheckResult("gpu.present", Status.OK, f"{seen or len(pci)} GPUs")]


# NVML state -> (status, message prefix, remediation) for a driver that does not answer.
DRIVER_STATES = {
    "no driver": (
        Status.FAIL,
        "no NVIDIA driver loaded on a GPU host",
        "install the driver (provision apply) or `modprobe nvidia`; check dmesg",
    ),
    "mismatch": (Status.FAIL, "driver unusable: version mismatch", ""),
    "timed out": (
        Status.FAIL,
        "the driver hung",
        "check the kernel log for Xids; a reboot is usually needed",
    ),
    "no devices": (
        Status.FAIL,
        "driver loaded but it sees no GPU",
        "check the kernel log (RmInitAdapter failed, Xid 79)",
    ),
}


@check(
    "driver.loaded",
    reads=("nvidia.nvml", "nvidia.nvml_error", "nvidia.driver_version", "nvidia.module_flavour"),
)
def loaded(ctx: Context) -> list[CheckResult]:
    if not ctx.gpu_host:
        return []
    nv = ctx.nvidia
    state, error = nv.get("nvml"), nv.get("nvml_error")
    if state == "ok":
        driver = nv.get("driver_version")
        msg = f"driver {driver} ({nv.get('module_flavour') or 'flavour ?'})"
        return [CheckResult("driver.loaded", Status.OK, msg, driver)]
    if state not in DRIVER_STATES:
        return [CheckResult("driver.loaded", Status.UNKNOWN, f"NVML: {error or state}")]
    status, msg, fix = DRIVER_STATES[state]
    if state == "no driver":
        return [CheckResult("driver.loaded", status, msg, error, fix)]
    if state in ("timed out", "no devices"):
        msg += ": " + (error or ("nvidia-smi timed out" if state == "timed out" else state))
    return [CheckResult("driver.loaded", status, msg, remediation=fix)]


@check(
    "driver.mismatch",
    reads=(
        "nvidia.mismatch",
        "nvidia.nvml",
        "nvidia.kernel_module_version",
        "nvidia.library_versions",
        "nvidia.driver_version",
    ),
)
def mismatch(ctx: Context) -> list[CheckResult]:
    if not ctx.gpu_host:
        return []
    nv = ctx.nvidia
    if nv.get("mismatch") or nv.get("nvml") == "mismatch":
        lib = nv.get("driver_version") or ",".join(nv.get("library_versions") or []) or "?"
        msg = (
            "driver/library version mismatch: reboot needed "
            f"(module {nv.get('kernel_module_version') or '?'}, library {lib})"
        )
        fix = "reboot (or unload and reload the nvidia modules); hold the driver packages"
        return [CheckResult("driver.mismatch", Status.FAIL, msg, nv.get("nvml_error"), fix)]
    if nv.get("mismatch") is False:
        return [CheckResult("driver.mismatch", Status.OK, "module and library versions match")]
    return []


@check("driver.min", reads=("nvidia.driver_version", "nvidia.nvml"), settings=("audit_min_driver",))
def min_driver(ctx: Context) -> list[CheckResult]:
    need_text = ctx.settings.min_driver
    if not ctx.gpu_host or not need_text:
        return []
    driver = ctx.nvidia.get("driver_version")
    have, need = version_tuple(driver), version_tuple(need_text)
    if have is None:
        status = Status.FAIL if ctx.nvidia.get("nvml") in BROKEN else Status.UNKNOWN
        return [CheckResult("driver.min", status, f"driver version unknown (need >= {need_text})")]
    if need and have < need:
        msg, fix = (
            f"driver {driver} < required {need_text}",
            f"upgrade the driver to >= {need_text}",
        )
        return [CheckResult("driver.min", Status.FAIL, msg, driver, fix)]
    return [CheckResult("driver.min", Status.OK, f"driver {driver} >= {need_text}")]


@check(
    "cuda.required",
    reads=("nvidia.cuda_version", "nvidia.driver_version", "nvidia.nvml"),
    settings=("audit_required_cuda",),
)
def required_cuda(ctx: Context) -> list[CheckResult]:
    need_text = ctx.settings.required_cuda
    if not ctx.gpu_host or not need_text:
        return []
    # Never guessed from the driver: a table that lags NVIDIA would FAIL good hosts.
    cuda, driver = ctx.nvidia.get("cuda_version"), ctx.nvidia.get("driver_version")
    hint = f"CUDA {need_text} needs driver >= {min_driver_for_cuda(need_text) or '?'}"
    have, need = version_tuple(cuda), version_tuple(need_text)
    if have is None:
        status = Status.FAIL if ctx.nvidia.get("nvml") in BROKEN else Status.UNKNOWN
        msg = f"driver CUDA version unknown (need {need_text})" + _table_hint(driver)
        return [CheckResult("cuda.required", status, msg, remediation=hint)]
    if need and have < need:
        msg = f"driver supports CUDA {cuda} < required {need_text}"
        return [CheckResult("cuda.required", Status.FAIL, msg, cuda, hint)]
    return [CheckResult("cuda.required", Status.OK, f"CUDA {cuda} >= {need_text}", cuda)]
