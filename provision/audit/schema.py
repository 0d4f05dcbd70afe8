"""The facts document, written once: what ``probe.py`` (NVML, on the host) and ``fallback.py``
(nvidia-smi and sh) both produce and ``checks`` grade.

``probe.py`` runs on the audited host with nothing but the standard library, so it cannot import
this module; :func:`problems` is how the tests hold both producers to it (every key typed, no key
that is not declared here). ``null`` always means "not available / not measured". Keys a
producer may leave out are in the ``total=False`` part of each class.
"""

from __future__ import annotations

import types
from typing import Any, TypedDict, Union, get_args, get_origin, get_type_hints, is_typeddict


class ProcessFacts(TypedDict, total=False):
    pid: int
    name: str | None
    user: str | None  # from /proc/<pid>/status; nvidia-smi cannot say (None)
    used_memory: int | None  # bytes
    gpu_uuid: str | None  # nvidia-smi's row (the probe asks per GPU)


class _GpuKeys(TypedDict):
    index: int | None  # None: a lost GPU nvidia-smi named only by its PCI address
    lost: bool


class GpuFacts(_GpuKeys, total=False):
    error: str  # a lost or unreadable GPU: only index, lost, error (and na, pci_bus_id) are set
    na: list[str]  # the fields this card does not support
    name: str | None
    uuid: str | None
    pci_bus_id: str | None
    driver_version: str | None
    memory_total: int | None  # bytes
    memory_used: int | None
    utilization_gpu: int | None  # %
    utilization_memory: int | None
    temperature_c: int | None
    power_w: float | None
    persistence_mode: bool | None
    ecc_uncorrected_volatile: int | None
    remap_pending: bool | None
    remap_failure: bool | None
    retired_pages_pending: bool | None
    pcie_width_current: int | None
    pcie_width_max: int | None
    clock_event_reasons: int | None  # NVML's bit mask
    mig_mode: bool | None
    inforom_corrupted: bool | None
    processes: list[ProcessFacts] | None


class PciGpu(TypedDict):
    address: str
    device: str
    driver: str | None


class _NvidiaKeys(TypedDict):
    nvml: str  # ok, no driver, mismatch, no devices, timed out, error, not tried, ...
    nvml_error: str | None
    pci_gpus: list[PciGpu] | None  # None: not scanned
    kernel_module_version: str | None
    module_flavour: str | None  # open, proprietary
    library_versions: list[str]
    driver_version: str | None
    nvml_version: str | None
    cuda_driver_version: int | None  # NVML's integer, 12040
    cuda_version: str | None  # "12.4": the highest CUDA the driver supports
    gpu_count: int | None
    gpus: list[GpuFacts]
    mismatch: bool | None


class NvidiaFacts(_NvidiaKeys, total=False):
    xids: dict[str, int] | None  # {"79": 1}: Xids since boot
    xids_reason: str | None
    inforom_warnings: list[str]  # nvidia-smi's infoROM warnings by PCI address


class HostFacts(TypedDict, total=False):
    hostname: str | None
    os_id: str | None
    os_version: str | None
    os_pretty: str | None
    kernel: str | None
    arch: str
    python: str
    uptime_s: float | None
    boot_id: str | None
    reboot_required: bool
    nouveau_loaded: bool
    nvidia_module_loaded: bool
    secure_boot: bool | None
    secure_boot_reason: str | None
    ntp_synced: bool | None
    ntp_reason: str | None


class ImageFacts(TypedDict, total=False):
    ref: str
    present: bool
    digests: list[str]
    size: int | None
    id: str | None
    error: str
    require_cuda: str
    cuda_version: str
    digest_match: bool


class DockerFacts(TypedDict):
    installed: bool
    client_version: str | None
    daemon_running: bool
    daemon_error: str | None
    server_version: str | None
    data_root: str | None
    runtimes: list[str]
    default_runtime: str | None
    nvidia_ctk: str | None
    images: list[ImageFacts]
    daemon_access_denied: bool


class _DiskKeys(TypedDict):
    path: str
    role: str  # root, docker, extra


class DiskFacts(_DiskKeys, total=False):
    error: str
    total: int  # bytes
    free: int
    inodes_total: int
    inodes_free: int


class PackageFacts(TypedDict):
    version: str | None
    held: bool


class UnattendedFacts(TypedDict):
    enabled: bool
    blacklist: list[str]


class FabricFacts(TypedDict, total=False):
    nvswitches: list[str]
    active: bool | None
    state: str
    version: str


class BootFacts(TypedDict):
    running_kernel: str
    installed_kernels: list[str]
    next_kernel: str | None
    next_kernel_modules: list[str]
    dkms: dict[str, list[str]] | None
    dpkg: bool
    packages: dict[str, PackageFacts]
    headers_kernel: str | None
    headers_flavour: str | None
    headers_packages: list[str]
    unattended_upgrades: UnattendedFacts | None
    fabric: FabricFacts


class _FactsKeys(TypedDict):
    schema: int
    probe: str  # "python" (NVML) or "nvidia-smi" (degraded)
    errors: list[str]  # probe steps that failed or timed out
    host: HostFacts | None
    nvidia: NvidiaFacts | None
    docker: DockerFacts | None
    disk: list[DiskFacts]


class Facts(_FactsKeys, total=False):
    notes: list[str]
    boot: BootFacts | None  # the predictive checks' facts (NVML probe only)
    duration_s: float


def problems(value: Any, hint: Any = Facts, path: str = "facts") -> list[str]:
    """Every way ``value`` differs from the schema: a missing required key, an undeclared key,
    a value of another type. Empty for a conforming document."""
    if hint is Any:
        return []
    if is_typeddict(hint):
        return _dict_problems(value, hint, path)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        arms = [a for a in get_args(hint) if value is None or a is not type(None)]
        tries = [problems(value, arm, path) for arm in arms]
        return [] if any(not t for t in tries) else min(tries, key=len)
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        (item,) = get_args(hint)
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {type(value).__name__}"]
        _, item = get_args(hint)
        return [p for k, v in value.items() for p in problems(v, item, f"{path}.{k}")]
    return [] if _is(value, hint) else [f"{path}: expected {_name(hint)}, got {value!r:.60}"]


def _dict_problems(value: Any, hint: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping, got {type(value).__name__}"]
    fields = get_type_hints(hint)
    out = [f"{path}.{k}: missing" for k in sorted(hint.__required_keys__) if k not in value]
    out += [f"{path}.{k}: not in the schema" for k in sorted(set(value) - set(fields))]
    for key, sub in fields.items():
        if key in value:
            out += problems(value[key], sub, f"{path}.{key}")
    return out


def _is(value: Any, hint: Any) -> bool:
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _name(hint: Any) -> str:
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))
