"""The audit probe: runs ON the audited host and prints one facts document between markers.

It is shipped inside a zip application together with ``pynvml`` (see ``bundle.py``) and run by
the host's own ``python3``, so it must stay stdlib-only and Python 3.8 compatible (no ``match``,
no ``X | Y`` at run time). Everything is gathered in one pass so a warm audit costs one round
trip. Every probe step is isolated: a missing tool, an unsupported NVML field or a hanging
command (dead mount, hung driver) costs that one field, with a reason, never the whole host.

Usage: ``python3 probe.pyz START_MARKER END_MARKER [NAME=VALUE ...]``: ``timeout=`` (seconds
per step), and one word per extra disk ``path=``, required ``image=`` and driver ``package=``
name prefix (:func:`parse_config`). It prints the facts as one line of ASCII JSON
(:func:`to_json`).
"""

from __future__ import annotations

import _thread
import ctypes
import os
import sys
import time

try:  # json's own C string escaper, without importing json (which imports re and enum)
    from _json import encode_basestring_ascii as _json_string
except ImportError:  # pragma: no cover - CPython always has it; any other Python: json's
    from json.encoder import py_encode_basestring_ascii as _json_string

# Every import here is paid by every audited host on every audit, so the probe imports at the
# top only what every host runs (measured in-process on a warm host: the probe's imports took
# 16.6 ms of its 24 ms before they were cut to these). typing (~3 ms with what it pulls in) is
# for the type checker only; ``re`` (with enum and functools, ~8 ms), ``json`` (re and ~3 ms
# of its own; see to_json), ``subprocess`` and ``pwd`` are imported by the functions that need
# them, which a host without NVIDIA hardware or Docker never calls; ``_thread`` stands in for
# ``threading`` (~4 ms) and ``os.listdir`` for ``glob`` (~3 ms with fnmatch and contextlib).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

SCHEMA = 1
NVIDIA_VENDOR = "0x10de"

# NVML return codes we treat specially (pynvml constants, repeated so the probe runs without it).
NVML_NOT_SUPPORTED = 3
NVML_NO_PERMISSION = 4
NVML_DRIVER_NOT_LOADED = 9
NVML_LIBRARY_NOT_FOUND = 12
NVML_FUNCTION_NOT_FOUND = 13
NVML_CORRUPTED_INFOROM = 14
NVML_GPU_IS_LOST = 15
NVML_LIB_RM_VERSION_MISMATCH = 18
NA_CODES = (NVML_NOT_SUPPORTED, NVML_FUNCTION_NOT_FOUND, NVML_NO_PERMISSION)


def read_text(path: str, limit: int = 65536) -> str | None:
    """A small file's text, or None when it is missing or unreadable."""
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def one_line(text: str, limit: int = 200) -> str:
    """Collapse a tool's message to one line for a reason field."""
    return " ".join(text.split())[:limit]


def which(name: str) -> str | None:
    for d in [*os.environ.get("PATH", "/usr/bin:/bin").split(":"), "/usr/sbin", "/sbin"]:
        p = os.path.join(d or ".", name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def run_cmd(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one command with a timeout; kill its whole process group when it hangs."""
    import signal
    import subprocess

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=dict(os.environ, LC_ALL="C"),
        )
    except OSError as exc:
        return {"rc": None, "out": "", "err": str(exc), "error": f"cannot run: {exc}"}
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        import contextlib  # subprocess has imported it already

        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.communicate(timeout=2)
        return {"rc": None, "out": "", "err": "", "error": f"timed out after {timeout:g}s"}
    return {
        "rc": proc.returncode,
        "out": out.decode("utf-8", "replace"),
        "err": err.decode("utf-8", "replace"),
        "error": None,
    }


def with_timeout(fn: Callable[[], Any], timeout: float) -> tuple[Any, str | None]:
    """Call ``fn`` in a daemon thread: a syscall stuck on a dead mount cannot be interrupted."""
    return concurrently([("", fn)], timeout)[""]


def once(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` called at most once however many step threads ask (the others wait for it)."""
    lock = _thread.allocate_lock()
    box: list[Any] = []

    def call() -> Any:
        with lock:
            if not box:
                box.append(fn())
        return box[0]

    return call


# The probe's steps run concurrently and all end within this many step timeouts: a step is a
# command or two, each limited to the step timeout, and one that takes longer is hung.
STEP_CAP = 1.5


def concurrently(
    steps: list[tuple[str, Callable[[], Any]]], timeout: float
) -> dict[str, tuple[Any, str | None]]:
    """Run every step in its own thread and wait ``timeout`` seconds for them all:
    {name: (value, None) or (None, reason)}. The slow steps of a host (the kernel log, Docker,
    a hung driver) then cost the slowest of them, not their sum. Each step holds a lock that it
    releases when it ends, so waiting for it is acquiring that lock with a timeout; a step still
    running then is left behind (the probe ends with ``os._exit``, which does not wait)."""
    running: list[tuple[str, _thread.LockType, dict[str, Any]]] = []
    for name, fn in steps:
        box: dict[str, Any] = {}
        done = _thread.allocate_lock()
        done.acquire()

        def target(
            box: dict[str, Any] = box, fn: Callable[[], Any] = fn, done: _thread.LockType = done
        ) -> None:
            try:
                box["value"] = fn()
            except Exception as exc:
                box["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                done.release()

        _thread.start_new_thread(target, ())
        running.append((name, done, box))
    end = time.monotonic() + timeout
    out: dict[str, tuple[Any, str | None]] = {}
    for name, done, box in running:
        if done.acquire(True, max(0.0, end - time.monotonic())):
            out[name] = (box.get("value"), box.get("error"))
        else:
            out[name] = (None, f"timed out after {timeout:g}s")
    return out


# -- host ----------------------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def host_facts(timeout: float) -> dict[str, Any]:
    osr = parse_os_release(read_text("/etc/os-release") or "")
    uptime = read_text("/proc/uptime")
    modules = read_text("/proc/modules", 1 << 20) or ""
    loaded = {line.split(" ", 1)[0] for line in modules.splitlines() if line}
    uname = os.uname()  # not socket/platform: importing them costs every audited host ~6 ms
    facts: dict[str, Any] = {
        "hostname": uname.nodename,
        "os_id": osr.get("ID"),
        "os_version": osr.get("VERSION_ID"),
        "os_pretty": osr.get("PRETTY_NAME"),
        "kernel": uname.release,
        "arch": uname.machine,
        "python": ".".join(str(n) for n in sys.version_info[:3]),
        "uptime_s": float(uptime.split()[0]) if uptime else None,
        "boot_id": (read_text("/proc/sys/kernel/random/boot_id") or "").strip() or None,
        "reboot_required": os.path.exists("/var/run/reboot-required"),
        "nouveau_loaded": "nouveau" in loaded,
        "nvidia_module_loaded": "nvidia" in loaded,
        "secure_boot": None,
        "secure_boot_reason": None,
        "ntp_synced": None,
        "ntp_reason": None,
    }
    if which("mokutil"):
        r = run_cmd(["mokutil", "--sb-state"], timeout)
        text = (r["out"] + r["err"]).lower()
        if "enabled" in text:
            facts["secure_boot"] = True
        elif "disabled" in text:
            facts["secure_boot"] = False
        else:
            facts["secure_boot_reason"] = r["error"] or one_line(r["err"]) or "unknown"
    else:
        facts["secure_boot_reason"] = "mokutil not installed"
    facts["ntp_synced"], reason = clock_synced()
    if reason:
        facts["ntp_reason"] = reason
    return facts


class _Timex(ctypes.Structure):
    """The head of the kernel's ``struct timex``; ctypes lays it out for this ABI."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_char * 512),  # the remaining fields, never read
    ]


STA_UNSYNC = 0x0040


def clock_synced() -> tuple[bool | None, str | None]:
    """Whether NTP (any daemon) keeps the kernel clock in sync: the kernel's STA_UNSYNC bit.

    This is exactly what ``timedatectl``'s NTPSynchronized reports, read with one system call
    instead of a process and a D-Bus round trip, and it works on hosts without systemd.
    """
    try:
        tx = _Timex()  # modes = 0: read only
        if ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.byref(tx)) < 0:
            return None, "adjtimex failed: " + os.strerror(ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        return None, "adjtimex unavailable: " + str(exc)
    return not tx.status & STA_UNSYNC, None


# -- NVIDIA --------------------------------------------------------------------------------------


PCI_DEVICES = "/sys/bus/pci/devices"


def nvidia_pci_functions() -> list[tuple[str, str]]:
    """(sysfs folder, PCI class) of every NVIDIA function on the bus, in address order."""
    found = []
    for name in sorted(_names(PCI_DEVICES)):
        dev = os.path.join(PCI_DEVICES, name)
        if (read_text(os.path.join(dev, "vendor")) or "").strip() == NVIDIA_VENDOR:
            found.append((dev, (read_text(os.path.join(dev, "class")) or "").strip()))
    return found


def pci_gpus() -> list[dict[str, str | None]]:
    """NVIDIA display/3D controllers on the PCI bus, from sysfs (no lspci needed)."""
    found = []
    for dev, cls in nvidia_pci_functions():
        if cls.startswith("0x03"):
            driver = os.path.join(dev, "driver")
            found.append(
                {
                    "address": os.path.basename(dev),
                    "device": (read_text(os.path.join(dev, "device")) or "").strip(),
                    "driver": os.path.basename(os.readlink(driver))
                    if os.path.islink(driver)
                    else None,
                }
            )
    return found


def decode_cuda(version: int | None) -> str | None:
    """NVML's CUDA driver version integer: 12040 -> "12.4"."""
    if not version:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def module_version(text: str | None) -> tuple[str | None, str | None]:
    """(version, flavour) from /proc/driver/nvidia/version."""
    if not text:
        return None, None
    import re

    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    flavour = "open" if "Open Kernel Module" in text else "proprietary"
    return (m.group(1) if m else None), flavour


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


NVML_FILE_PREFIX = "libnvidia-ml.so."


def nvml_file_version(name: str) -> str | None:
    """The version a file name like libnvidia-ml.so.570.86.15 carries (2 or 3 numbers), else
    None: the test every library folder's thousand names go through, without a regular
    expression."""
    if not name.startswith(NVML_FILE_PREFIX):
        return None
    version = name[len(NVML_FILE_PREFIX) :]
    parts = version.split(".")
    return version if len(parts) in (2, 3) and all(p.isdigit() for p in parts) else None


def library_versions() -> list[str]:
    """Versions of the installed user-space NVML (libnvidia-ml.so.<ver> file names) in
    /usr/lib*/ and /usr/lib*/*/. Plain listings, not glob: /usr/lib/x86_64-linux-gnu alone holds
    a thousand names, and glob's per-name matching cost every host ~5 ms, twice per audit."""
    seen = set()
    for top in [f"/usr/{n}" for n in _names("/usr") if n.startswith("lib")]:
        for name in _names(top):
            path = os.path.join(top, name)
            inner = _names(path) if os.path.isdir(path) else []
            for candidate in [name, *inner]:
                version = nvml_file_version(candidate)
                if version:
                    seen.add(version)
    return sorted(seen)


def nvml_library_visible() -> bool:
    """Whether the dynamic loader could find libnvidia-ml.so.1 beyond the standard folders that
    :func:`library_versions` scans: /dev/nvidiactl, $LD_LIBRARY_PATH, or the ld.so cache."""
    if os.path.exists("/dev/nvidiactl"):
        return True
    for folder in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if folder and os.path.exists(os.path.join(folder, "libnvidia-ml.so.1")):
            return True
    try:
        with open("/etc/ld.so.cache", "rb") as fh:
            return b"libnvidia-ml.so.1" in fh.read(1 << 24)
    except OSError:
        return False


def nvml_call(nv: Any, name: str, *args: Any) -> tuple[Any, str | None]:
    """Call one NVML function: (value, None), or (None, reason) for N/A; lost GPU re-raised."""
    fn = getattr(nv, name, None)
    if fn is None:
        return None, "not in this pynvml"
    try:
        return fn(*args), None
    except nv.NVMLError as exc:
        code = getattr(exc, "value", None)
        if code == NVML_GPU_IS_LOST:
            raise
        if code in NA_CODES:
            return None, "N/A"
        return None, f"NVML error {code}: {exc}"
    except Exception as exc:  # e.g. pynvml's NVMLLibraryMismatchError for a missing symbol
        return None, f"{type(exc).__name__}: {exc}"


def user_of(pid: int) -> str | None:
    import pwd
    import re

    status = read_text(f"/proc/{pid}/status") or ""
    m = re.search(r"^Uid:\s+(\d+)", status, re.M)
    if not m:
        return None
    try:
        return pwd.getpwuid(int(m.group(1))).pw_name
    except KeyError:
        return m.group(1)


def gpu_facts(nv: Any, index: int) -> dict[str, Any]:
    """One GPU; a lost GPU (NVML 15) gives a placeholder entry instead of aborting the host."""
    gpu: dict[str, Any] = {"index": index, "lost": False, "na": []}
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)

        def get(field: str, name: str, *args: Any) -> Any:
            value, why = nvml_call(nv, name, handle, *args)
            if why is not None:
                gpu["na"].append(field)
            return value

        gpu["name"] = get("name", "nvmlDeviceGetName")
        gpu["uuid"] = get("uuid", "nvmlDeviceGetUUID")
        mem = get("memory", "nvmlDeviceGetMemoryInfo")
        gpu["memory_total"] = int(mem.total) if mem is not None else None
        gpu["memory_used"] = int(mem.used) if mem is not None else None
        util = get("utilization", "nvmlDeviceGetUtilizationRates")
        gpu["utilization_gpu"] = int(util.gpu) if util is not None else None
        gpu["utilization_memory"] = int(util.memory) if util is not None else None
        gpu["temperature_c"] = get("temperature", "nvmlDeviceGetTemperature", 0)
        power = get("power", "nvmlDeviceGetPowerUsage")
        gpu["power_w"] = round(power / 1000.0, 1) if power is not None else None
        gpu["persistence_mode"] = _bool(get("persistence_mode", "nvmlDeviceGetPersistenceMode"))
        # uncorrected (1), volatile (0) counter
        gpu["ecc_uncorrected_volatile"] = get("ecc", "nvmlDeviceGetTotalEccErrors", 1, 0)
        rows = get("remapped_rows", "nvmlDeviceGetRemappedRows")
        if rows is not None:
            gpu["remap_pending"] = bool(rows[2])
            gpu["remap_failure"] = bool(rows[3])
        else:
            gpu["remap_pending"] = gpu["remap_failure"] = None
        gpu["retired_pages_pending"] = _bool(
            get("retired_pages", "nvmlDeviceGetRetiredPagesPendingStatus")
        )
        gpu["pcie_width_current"] = get("pcie_width", "nvmlDeviceGetCurrPcieLinkWidth")
        gpu["pcie_width_max"] = get("pcie_width_max", "nvmlDeviceGetMaxPcieLinkWidth")
        reasons, why = nvml_call(nv, "nvmlDeviceGetCurrentClocksEventReasons", handle)
        if why is not None:  # older drivers only have the "throttle" name
            reasons, why = nvml_call(nv, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        if why is not None:
            gpu["na"].append("clock_event_reasons")
        gpu["clock_event_reasons"] = reasons
        _, why = nvml_call(nv, "nvmlDeviceValidateInforom", handle)
        gpu["inforom_corrupted"] = inforom_corrupted(why)
        mig = get("mig_mode", "nvmlDeviceGetMigMode")
        gpu["mig_mode"] = bool(mig[0]) if mig is not None else None
        procs = get("processes", "nvmlDeviceGetComputeRunningProcesses")
        if procs is None:
            gpu["processes"] = None
        else:
            gpu["processes"] = [
                {
                    "pid": int(p.pid),
                    "user": user_of(int(p.pid)),
                    "name": (read_text(f"/proc/{int(p.pid)}/comm") or "").strip() or None,
                    "used_memory": int(p.usedGpuMemory) if p.usedGpuMemory is not None else None,
                }
                for p in procs
            ]
    except nv.NVMLError as exc:
        if getattr(exc, "value", None) != NVML_GPU_IS_LOST:
            raise
        gpu = {"index": index, "lost": True, "error": f"GPU is lost (NVML error 15): {exc}"}
    return gpu


def inforom_corrupted(why: str | None) -> bool | None:
    """nvmlDeviceValidateInforom's answer: True for NVML error 14, None when not known."""
    if why is None:
        return False
    return True if why.startswith(f"NVML error {NVML_CORRUPTED_INFOROM}:") else None


def loaded_library_version() -> str | None:
    """The version of the libnvidia-ml.so that pynvml loaded, from its file name in
    /proc/self/maps (libnvidia-ml.so.1 links to libnvidia-ml.so.<version>)."""
    import re

    maps = read_text("/proc/self/maps", 1 << 24) or ""
    m = re.search(r"libnvidia-ml\.so\.(\d+\.\d+(?:\.\d+)?)\s*$", maps, re.M)
    return m.group(1) if m else None


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def parse_xids(text: str) -> dict[str, int]:
    """Count NVIDIA Xid events in kernel log text: {"79": 1, ...} (string keys for JSON)."""
    import re

    counts: dict[str, int] = {}
    for m in re.finditer(r"NVRM: Xid.*?: (\d+),", text):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def kernel_xids(timeout: float) -> tuple[dict[str, int] | None, str | None]:
    """Xids since boot from the kernel log (journalctl, else dmesg; dmesg may need root)."""
    if which("journalctl"):
        r = run_cmd(["journalctl", "-k", "-b", "--no-pager", "-o", "cat"], timeout)
        if r["rc"] == 0 and r["out"].strip():
            return parse_xids(r["out"]), None
    if which("dmesg"):
        r = run_cmd(["dmesg"], timeout)
        if r["rc"] == 0:
            return parse_xids(r["out"]), None
        return None, r["error"] or one_line(r["err"]) or "dmesg failed"
    return None, "no journalctl or dmesg"


def nvidia_present(libraries: Callable[[], list[str]] = library_versions) -> bool:
    """An NVIDIA device, module or library on this host (then its kernel log is worth reading:
    the same test that decides whether NVML is tried)."""
    module = os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/sys/module/nvidia")
    return bool(module or pci_gpus() or nvml_library_visible() or libraries())


def nvidia_facts(
    timeout: float, libraries: Callable[[], list[str]] = library_versions
) -> dict[str, Any]:
    proc_text = read_text("/proc/driver/nvidia/version")
    kmod, flavour = module_version(proc_text)
    if kmod is None:
        kmod = (read_text("/sys/module/nvidia/version") or "").strip() or None
    facts: dict[str, Any] = {
        "pci_gpus": pci_gpus(),
        "kernel_module_version": kmod,
        "module_flavour": flavour,
        "library_versions": libraries(),
        "nvml": "not tried",
        "nvml_error": None,
        "driver_version": None,
        "nvml_version": None,
        "cuda_driver_version": None,
        "cuda_version": None,
        "gpu_count": None,
        "gpus": [],
        "mismatch": None,
        "xids": None,
        "xids_reason": "no NVIDIA GPU",
    }
    if not (facts["pci_gpus"] or kmod or facts["library_versions"] or nvml_library_visible()):
        # A host with no NVIDIA device, module or library (a bastion, a CPU node): NVML has
        # nothing to say, and importing pynvml is a third of the probe's start-up.
        facts["nvml"] = "no driver"
        facts["nvml_error"] = "no NVIDIA device, kernel module or libnvidia-ml on this host"
        return facts
    try:
        import pynvml as nv
    except Exception as exc:  # pragma: no cover - the bundle always ships it
        facts["nvml"] = "pynvml unavailable"
        facts["nvml_error"] = str(exc)
        return facts
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        code = getattr(exc, "value", None)
        facts["nvml_error"] = f"NVML error {code}: {exc}"
        if code in (NVML_DRIVER_NOT_LOADED, NVML_LIBRARY_NOT_FOUND):
            facts["nvml"] = "no driver"
        elif code == NVML_LIB_RM_VERSION_MISMATCH:
            facts["nvml"] = "mismatch"
            facts["mismatch"] = True
            loaded = loaded_library_version()
            if loaded:  # the library that refused: what the report names next to the module
                facts["library_versions"] = sorted({*facts["library_versions"], loaded})
        else:
            facts["nvml"] = "error"
        return facts
    try:
        facts["nvml"] = "ok"
        facts["driver_version"], _ = nvml_call(nv, "nvmlSystemGetDriverVersion")
        facts["nvml_version"], _ = nvml_call(nv, "nvmlSystemGetNVMLVersion")
        cuda, why = nvml_call(nv, "nvmlSystemGetCudaDriverVersion_v2")
        if why is not None:
            cuda, _ = nvml_call(nv, "nvmlSystemGetCudaDriverVersion")
        facts["cuda_driver_version"] = cuda
        facts["cuda_version"] = decode_cuda(cuda)
        count, why = nvml_call(nv, "nvmlDeviceGetCount")
        facts["gpu_count"] = count
        if why is not None:
            facts["nvml_error"] = f"device count: {why}"
        for i in range(count or 0):
            try:
                facts["gpus"].append(gpu_facts(nv, i))
            except nv.NVMLError as exc:
                facts["gpus"].append(
                    {"index": i, "lost": False, "error": f"NVML error: {exc}", "na": []}
                )
        lib = facts["driver_version"]
        if kmod and lib:
            facts["mismatch"] = kmod != lib
        elif kmod and facts["library_versions"]:
            facts["mismatch"] = kmod not in facts["library_versions"]
    finally:
        import contextlib  # here: pynvml's import already costs this host far more

        with contextlib.suppress(Exception):  # the facts are in; a failed shutdown changes none
            nv.nvmlShutdown()
    return facts


# -- the next boot (predictive checks) -----------------------------------------------------

NVSWITCH_CLASS = "0x0680"  # NVIDIA PCI functions of class "bridge, other": NVSwitch
FABRIC_UNIT = "nvidia-fabricmanager"
MODULE_FILES = {"nvidia.ko", "nvidia.ko.xz", "nvidia.ko.zst", "nvidia.ko.gz"}


def version_key(text: str) -> tuple[int, ...]:
    """Numeric sort key of a kernel or package version: "6.1.0-18-amd64" -> (6, 1, 0, 18)."""
    import re

    return tuple(int(n) for n in re.findall(r"\d+", text))


def parse_dpkg_status(text: str, prefixes: list[str]) -> dict[str, dict[str, Any]]:
    """Installed packages named with one of ``prefixes``, from /var/lib/dpkg/status text:
    {name: {"version": ..., "held": bool}} (``apt-mark hold`` sets the selection to hold)."""
    import re

    wanted = tuple(prefixes)
    out: dict[str, dict[str, Any]] = {}
    for stanza in text.split("\n\n"):
        head = stanza.lstrip("\n")
        if head.startswith("Package: ") and not head[len("Package: ") :].startswith(wanted):
            # dpkg writes Package first: most of a workstation's ~2,000 stanzas end here,
            # before any regular expression (4 full parses of a 0.7 MB file took 14-26 ms)
            continue
        fields = dict(re.findall(r"^(Package|Status|Version): (.*)$", stanza, re.M))
        name, status = fields.get("Package", ""), fields.get("Status", "").split()
        if name.startswith(wanted) and status[-1:] == ["installed"]:
            out[name] = {"version": fields.get("Version"), "held": status[0] == "hold"}
    return out


def parse_apt_config(text: str) -> dict[str, Any]:
    """``apt-config dump`` -> whether unattended-upgrades runs and its package blacklist."""
    import re

    periodic = re.search(r'^APT::Periodic::Unattended-Upgrade "([^"]*)";', text, re.M)
    blacklist = re.findall(r'^Unattended-Upgrade::Package-Blacklist:: "([^"]*)";', text, re.M)
    return {
        "enabled": periodic is not None and periodic.group(1) not in ("0", ""),
        "blacklist": blacklist,
    }


def parse_dkms_status(text: str) -> dict[str, list[str]]:
    """``dkms status`` -> {kernel: ["nvidia/580.95.05", ...]} for modules that are installed.
    Both spellings: "nvidia/580.95.05, 6.1.0-18-amd64, x86_64: installed" (dkms 3) and
    "nvidia, 535.54.03, 5.15.0-76-generic, x86_64: installed" (dkms 2)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        head, _, state = line.rpartition(":")
        parts = [p.strip() for p in head.split(",")]
        if state.strip().startswith("installed") and len(parts) >= 3:
            module = parts[0] if "/" in parts[0] else f"{parts[0]}/{parts[1]}"
            out.setdefault(parts[-2], []).append(module)
    return out


def kernel_flavour(release: str) -> str | None:
    """The flavour of a distribution kernel: "6.1.0-18-cloud-amd64" -> "cloud-amd64",
    "5.15.0-105-generic" -> "generic"; None for a custom kernel (no ABI number)."""
    import re

    m = re.match(r"^\d+\.\d+\.\d+-\d+(?:\.\d+)?-([a-z][a-z0-9-]*)$", release)
    return m.group(1) if m else None


def installed_kernels() -> list[str]:
    """Kernels a boot can start: /boot/vmlinuz-<release>, oldest first."""
    found = [n[len("vmlinuz-") :] for n in _names("/boot") if n.startswith("vmlinuz-")]
    return sorted(found, key=version_key)


def next_kernel(kernels: list[str]) -> str | None:
    """GRUB's saved default when it names an installed kernel, else the newest one."""
    import re

    env = read_text("/boot/grub/grubenv") or ""
    saved = re.search(r"^saved_entry=(.*)$", env, re.M)
    named = [k for k in kernels if saved and k in saved.group(1)]
    if named:
        return max(named, key=len)
    return kernels[-1] if kernels else None


def nvidia_modules(release: str) -> list[str]:
    """NVIDIA kernel modules built for ``release`` (DKMS puts them in updates/dkms/)."""
    found = []
    for root, _dirs, files in os.walk(f"/lib/modules/{release}"):
        found += [os.path.join(root, f) for f in files if f in MODULE_FILES]
    return sorted(found)


def fabric_facts(timeout: float) -> dict[str, Any]:
    """NVSwitch functions on the PCI bus and the state of nvidia-fabricmanager (HGX systems)."""
    switches = [
        os.path.basename(dev)
        for dev, cls in nvidia_pci_functions()
        if cls.startswith(NVSWITCH_CLASS)
    ]
    facts: dict[str, Any] = {"nvswitches": switches, "active": None}
    if switches and which("systemctl"):
        r = run_cmd(["systemctl", "is-active", FABRIC_UNIT], timeout)
        facts["active"] = r["out"].strip() == "active"
        facts["state"] = r["out"].strip() or r["error"] or one_line(r["err"])
    return facts


def boot_facts(packages: list[str], timeout: float) -> dict[str, Any]:
    """What the next boot will find: its kernel, NVIDIA modules built for it, DKMS, headers
    metapackages, driver package holds and unattended-upgrades, NVSwitch and fabricmanager."""
    kernels = installed_kernels()
    following = next_kernel(kernels)
    running = os.uname().release
    status = read_text("/var/lib/dpkg/status", 1 << 27) or ""
    # The running kernel's flavour; a running kernel the distribution did not install (a VM's
    # or a container host's) has no headers to keep: then the flavour of the one booting next.
    headers_for = running if running in kernels else following
    flavour = kernel_flavour(headers_for) if headers_for else None
    meta = f"linux-headers-{flavour}"
    # one pass over the status file for every name asked about below
    asked = [*packages, FABRIC_UNIT, "unattended-upgrades", *([meta] if flavour else [])]
    installed = parse_dpkg_status(status, asked)

    def named(prefixes: list[str]) -> dict[str, dict[str, Any]]:
        return {n: v for n, v in installed.items() if n.startswith(tuple(prefixes))}

    headers = named([meta]) if flavour else {}
    facts: dict[str, Any] = {
        "running_kernel": running,
        "installed_kernels": kernels,
        "next_kernel": following,
        "next_kernel_modules": nvidia_modules(following) if following else [],
        "dkms": None,
        "dpkg": bool(status),
        "packages": named(packages),
        "headers_kernel": headers_for,
        "headers_flavour": flavour,
        "headers_packages": sorted(p for p in headers if p == meta or p.startswith(meta + "-")),
        "unattended_upgrades": None,
        "fabric": fabric_facts(timeout),
    }
    fabric = named([FABRIC_UNIT])
    if fabric:  # "580.95.05-1" -> the driver version it was built for
        facts["fabric"]["version"] = max(v["version"] for v in fabric.values()).split("-")[0]
    if which("dkms"):
        r = run_cmd(["dkms", "status"], timeout)
        facts["dkms"] = parse_dkms_status(r["out"]) if r["rc"] == 0 else None
    if named(["unattended-upgrades"]) and which("apt-config"):
        r = run_cmd(["apt-config", "dump"], timeout)
        if r["rc"] == 0:
            facts["unattended_upgrades"] = parse_apt_config(r["out"])
    return facts


# -- Docker ----------------------------------------------------------------------------------


def empty_docker_facts(installed: bool) -> dict[str, Any]:
    """Docker facts before anything is known; the nvidia-smi fallback fills the same shape."""
    return {
        "installed": installed,
        "client_version": None,
        "daemon_running": False,
        "daemon_error": None,
        "server_version": None,
        "data_root": None,
        "runtimes": [],
        "default_runtime": None,
        "nvidia_ctk": None,
        "images": [],
        "daemon_access_denied": False,
    }


def docker_facts(images: list[str], timeout: float) -> dict[str, Any]:
    facts = empty_docker_facts(which("docker") is not None)
    ctk = which("nvidia-ctk")
    if ctk:
        import re

        r = run_cmd([ctk, "--version"], timeout)
        m = re.search(r"version\s+(\d+\.\d+\.\d+\S*)", r["out"] + r["err"])
        facts["nvidia_ctk"] = m.group(1) if m else (r["out"].strip().splitlines() or ["?"])[0]
    if not facts["installed"]:
        facts["daemon_error"] = "docker not installed"
        return facts
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        # No socket, no daemon: say so without a Go process (tens of ms on every host).
        facts["daemon_error"] = "daemon not running: /var/run/docker.sock does not exist"
        return facts
    import json

    # One docker call: `docker info` carries the client's version too (ClientInfo), also when
    # the daemon is down; every extra process costs each host tens of milliseconds.
    r = run_cmd(["docker", "info", "--format", "{{json .}}"], timeout)
    info: dict[str, Any] = {}
    try:
        info = json.loads(r["out"]) if r["out"].strip() else {}
    except ValueError:
        info = {}
    facts["client_version"] = (info.get("ClientInfo") or {}).get("Version")
    if not facts["client_version"] and not r["error"]:
        # ClientInfo.Version only exists since Docker 23; Debian 12's docker.io is 20.10.
        v = run_cmd(["docker", "version", "--format", "{{.Client.Version}}"], timeout)
        facts["client_version"] = v["out"].strip() or None
    if r["error"]:
        facts["daemon_error"] = "docker info " + r["error"]
    elif r["rc"] != 0 or not info.get("ServerVersion"):
        errors = info.get("ServerErrors") or [r["err"].strip()]
        text = " ".join(str(e) for e in errors if e).strip()
        if "permission denied" in text.lower():
            # An audit user outside the docker group: the daemon may well be running.
            facts["daemon_access_denied"] = True
            facts["daemon_error"] = "no access to the Docker daemon: " + one_line(text)
        else:
            facts["daemon_error"] = "daemon not running: " + (one_line(text) or "no answer")
    else:
        facts["daemon_running"] = True
        facts["server_version"] = info.get("ServerVersion")
        facts["data_root"] = info.get("DockerRootDir")
        facts["runtimes"] = sorted((info.get("Runtimes") or {}).keys())
        facts["default_runtime"] = info.get("DefaultRuntime")
    if facts["daemon_running"]:
        for ref in images:
            facts["images"].append(image_facts(ref, timeout))
    return facts


def pin_tag(ref: str) -> str | None:
    """The tag provision gives an image it received over the LAN for a digest-pinned
    reference, once its image ID was verified against the source's (``docker load`` keeps no
    registry digests): ``repo@sha256:HEX`` -> ``repo:sha256-HEX``; None without a digest."""
    name, _, digest = ref.partition("@")
    if not digest.startswith("sha256:"):
        return None
    repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    return f"{repo}:sha256-{digest.split(':', 1)[1]}"


def image_facts(ref: str, timeout: float) -> dict[str, Any]:
    import json

    name, _, digest = ref.partition("@")
    out: dict[str, Any] = {"ref": ref, "present": False, "digests": [], "size": None}
    # An image pulled by digest (`docker pull repo@sha256:...`, the usual pin) has no tag, so
    # `inspect name` alone calls it missing: look it up by the full reference first, then by
    # provision's pin tag (an image fanned out over the LAN, verified when it was loaded), then
    # by name (tag) to tell "present but digest differs" (or a local image pinned by ID) from gone.
    pinned = pin_tag(ref)
    candidates = [c for c in (ref, pinned, name) if c] if digest else [name]
    for candidate in candidates:
        r = run_cmd(["docker", "image", "inspect", "--format", "{{json .}}", candidate], timeout)
        if r["error"]:
            out["error"] = r["error"]
            return out
        if r["rc"] == 0:
            break
    else:
        return out
    try:
        data = json.loads(r["out"])
    except ValueError:
        out["error"] = "unreadable docker image inspect output"
        return out
    out["present"] = True
    out["id"] = data.get("Id")
    out["digests"] = data.get("RepoDigests") or []
    out["size"] = data.get("Size")
    env = (data.get("Config") or {}).get("Env") or []
    for item in env:
        if item.startswith("NVIDIA_REQUIRE_CUDA="):
            out["require_cuda"] = item.split("=", 1)[1]
        elif item.startswith("CUDA_VERSION="):
            out["cuda_version"] = item.split("=", 1)[1]
    if digest:
        out["digest_match"] = (
            any(d.endswith("@" + digest) for d in out["digests"])
            or out.get("id") == digest
            or (pinned is not None and candidate == pinned)
        )
    return out


# -- disk ------------------------------------------------------------------------------------


def _statvfs_call(path: str) -> Callable[[], os.statvfs_result]:
    return lambda: os.statvfs(path)


def disk_facts(paths: list[tuple[str, str]], timeout: float) -> list[dict[str, Any]]:
    out = []
    for path, role in paths:
        entry: dict[str, Any] = {"path": path, "role": role}
        value, error = with_timeout(_statvfs_call(path), timeout)
        if error:
            entry["error"] = error
        else:
            st = value
            entry.update(
                total=st.f_blocks * st.f_frsize,
                free=st.f_bavail * st.f_frsize,
                inodes_total=st.f_files,
                inodes_free=st.f_favail,
            )
        out.append(entry)
    return out


def gather(config: dict[str, Any]) -> dict[str, Any]:
    timeout = float(config.get("timeout", 10))
    start = time.time()
    facts: dict[str, Any] = {"schema": SCHEMA, "probe": "python", "errors": []}
    packages = list(config.get("packages") or [])
    # Three steps ask whether NVIDIA is here and which libraries it has: scanned once.
    libraries = once(library_versions)
    present = once(lambda: nvidia_present(libraries))
    steps = [
        ("host", lambda: host_facts(timeout)),
        ("nvidia", lambda: nvidia_facts(timeout, libraries)),
        ("xids", lambda: kernel_xids(timeout) if present() else None),
        ("docker", lambda: docker_facts(list(config.get("images") or []), timeout)),
        # the predictive checks' facts, on NVIDIA hosts only (dkms status alone costs ~0.1 s)
        ("boot", lambda: boot_facts(packages, timeout) if present() else None),
    ]
    results = concurrently(steps, STEP_CAP * timeout)
    for key, (value, error) in results.items():
        if error:
            facts["errors"].append(f"{key}: {error}")
        if key != "xids":
            facts[key] = value
    nv = facts.get("nvidia")
    xids, why = results["xids"]
    if nv and xids:
        nv["xids"], nv["xids_reason"] = xids
    elif nv and why:
        nv["xids_reason"] = why
    paths = [("/", "root")]
    data_root = (facts.get("docker") or {}).get("data_root")
    if data_root:
        paths.append((data_root, "docker"))
    for p in config.get("paths") or []:
        paths.append((str(p), "extra"))
    seen = set()
    unique = []
    for p, role in paths:
        if p not in seen:
            seen.add(p)
            unique.append((p, role))
    try:
        facts["disk"] = disk_facts(unique, timeout)
    except Exception as exc:
        facts["disk"] = []
        facts["errors"].append(f"disk: {exc}")
    facts["duration_s"] = round(time.time() - start, 3)
    return facts


# What the zipapp extracts beside itself (``probe-<sha>.pyz.d/``), the probe last: once it is
# there, the cached folder is complete and a warm audit imports it from there (bundle.py).
CACHED_MODULES = ("pynvml.py", "probe.py")


def use_cached_modules(archive: str) -> None:
    """Import pynvml (and, on the next audit, this probe) from a folder beside the cached
    zipapp, not from the zip.

    zipimport cannot cache bytecode and a script run as ``__main__`` is never cached either,
    so pynvml (8,000 lines) would be compiled on every run (~120 ms) and the probe itself
    (~25 ms, plus ~7 ms of runpy to start a zipapp); extracted once next to
    ``probe-<sha>.pyz`` Python keeps their ``.pyc``. The folder is named by the archive's
    sha256, which the audit verified before running it. Any failure (read-only home...) just
    leaves the zip import in place.
    """
    if not (archive.endswith(".pyz") and os.path.isfile(archive)):
        return
    folder = archive + ".d"
    missing = [n for n in CACHED_MODULES if not os.path.exists(os.path.join(folder, n))]
    if missing:
        try:
            import zipfile

            with zipfile.ZipFile(archive) as zf:
                parts = [(n, zf.read("__main__.py" if n == "probe.py" else n)) for n in missing]
            os.makedirs(folder, exist_ok=True)
            for name, data in parts:
                target = os.path.join(folder, name)
                tmp = f"{target}.{os.getpid()}.tmp"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)
        except Exception:
            return
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.dont_write_bytecode = False  # our own cache folder: keep the .pyc even if env says not


# The probe's NAME=VALUE words (bundle.config_words writes them) and the list each one adds to.
CONFIG_LISTS = {"path": "paths", "image": "images", "package": "packages"}


def parse_config(words: list[str]) -> dict[str, Any]:
    """``["timeout=5", "path=/data", "image=cuda:12"]`` -> the config :func:`gather` takes.
    Words, not a JSON document: decoding one would import ``json`` and ``re`` on every host."""
    config: dict[str, Any] = {name: [] for name in CONFIG_LISTS.values()}
    for word in words:
        name, sep, value = word.partition("=")
        if name == "timeout" and sep:
            config["timeout"] = float(value)
        elif name in CONFIG_LISTS and sep:
            config[CONFIG_LISTS[name]].append(value)
        else:
            raise ValueError(f"unknown probe setting {word!r}")
    return config


def to_json(value: Any) -> str:
    """``value`` as compact, ASCII-only JSON, as ``json.dumps(value, default=str)`` writes it
    except that a float that is not finite becomes null. Not ``json.dumps``: importing ``json``
    costs every audited host ``re`` and ``enum`` too, ~10 ms of a warm probe's ~20 ms of CPU;
    the strings still go through json's own escaper (``_json``, a C module), and the controller
    reads the document with ``json.loads``. Anything that is not JSON becomes its ``str``."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value) if value - value == 0.0 else "null"  # inf, nan: nan
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, dict):
        items = (f"{_json_string(str(k))}:{to_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return _json_string(str(value))


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: probe START END [NAME=VALUE ...]\n")
        return 2
    use_cached_modules(os.path.abspath(argv[0]))
    start, end = argv[1], argv[2]
    try:
        config = parse_config(argv[3:])
    except ValueError as exc:
        sys.stderr.write(f"probe: {exc}\n")
        return 2
    sys.stdout.write(f"\n{start}\n{to_json(gather(config))}\n{end}\n")
    sys.stdout.flush()
    return 0


def run(argv: list[str]) -> None:
    """The probe's entry point, as the zipapp's ``__main__`` or imported from the cache."""
    code = main(argv)
    sys.stderr.flush()
    os._exit(code)  # do not wait for a thread stuck on a dead mount


if __name__ == "__main__":
    run(sys.argv)
