"""Grade one host's facts into checks (pure): OK, WARN, FAIL, UNKNOWN or SKIP, each with a reason.

Catalogue and thresholds follow field notes section 5 (documented in ``docs/audit.md``). Fields a
card does not support (N/A) never fail a check: they make it SKIP. A host's status is its worst
check by the explicit :data:`SEVERITY` order; a host that could not be audited is UNREACHABLE
(transport) or UNKNOWN (the probe's answer was unusable).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
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

# HwSlowdown, HwThermalSlowdown, HwPowerBrakeSlowdown (NVML clocks event reasons)
HW_SLOWDOWN_BITS = {0x8: "HW slowdown", 0x40: "HW thermal slowdown", 0x80: "HW power brake"}

# CUDA release -> minimum Linux driver (CUDA release notes, tables 2 and 3); majors as fallback.
CUDA_MIN_DRIVER = {
    "13.0": "580.65.06",
    "12.9": "575.51.03",
    "12.6": "560.28.03",
    "12.5": "555.42.02",
    "12.1": "530.30.02",
    "12.0": "525.60.13",
}
CUDA_MAJOR_MIN_DRIVER = {13: "580", 12: "525", 11: "450"}

# Xids (field notes section 4): application errors are ignored; these are hardware trouble.
XID_IGNORED = {13, 31, 43, 45, 68}
XID_FAIL = {48: "double-bit ECC", 79: "fell off the bus", 95: "uncontained ECC"}
XID_WARN = {63: "page retirement", 64: "row remap", 94: "contained ECC"}


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


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """ "550.54.15" -> (550, 54, 15); None when there are no digits."""
    if not text:
        return None
    parts = re.findall(r"\d+", str(text))
    return tuple(int(p) for p in parts) if parts else None


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
    """Highest CUDA in our table that ``driver`` supports (used when NVML gave no CUDA version)."""
    dv = version_tuple(driver)
    if not dv:
        return None
    best = None
    for cuda, need in CUDA_MIN_DRIVER.items():
        nv, cv = version_tuple(need), version_tuple(cuda)
        if nv and cv and dv >= nv and (best is None or cv > best):
            best = cv
    return ".".join(str(x) for x in best) if best else None


def worst(statuses: Iterable[Status]) -> Status:
    result = Status.OK
    for s in statuses:
        if SEVERITY[s] > SEVERITY[result]:
            result = s
    return result


def _gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f} GiB"


def is_gpu_host(facts: Mapping[str, Any], settings: AuditSettings) -> bool:
    """A host that has, or is expected to have, NVIDIA GPUs."""
    nv = facts.get("nvidia") or {}
    return bool(
        nv.get("pci_gpus")
        or (nv.get("gpu_count") or 0) > 0
        or nv.get("nvml") == "mismatch"
        or nv.get("kernel_module_version")
        or (settings.expected_gpus or 0) > 0
    )


# -- host-level checks ---------------------------------------------------------------------------


def _probe(facts: Mapping[str, Any], settings: AuditSettings) -> list[CheckResult]:
    out = []
    if facts.get("probe") == "nvidia-smi":
        note = "; ".join(facts.get("notes") or []) or "degraded audit via nvidia-smi"
        out.append(
            CheckResult(
                "audit.degraded",
                Status.WARN,
                note,
                remediation="install python3 on the host for a full NVML audit",
            )
        )
    for err in facts.get("errors") or []:
        out.append(CheckResult("audit.probe", Status.UNKNOWN, f"probe step failed: {err}"))
    for warning in settings.warnings:
        out.append(CheckResult("audit.settings", Status.WARN, warning))
    return out


def _gpus(facts: Mapping[str, Any], settings: AuditSettings, gpu_host: bool) -> list[CheckResult]:
    nv = facts.get("nvidia") or {}
    state = nv.get("nvml")
    pci = nv.get("pci_gpus") or []
    count = nv.get("gpu_count")
    out = []
    expected = settings.expected_gpus
    if not gpu_host:
        out.append(CheckResult("gpu.present", Status.SKIP, "no NVIDIA GPU on this host"))
        return out
    seen = count if count is not None else (len(pci) if pci else None)
    if expected is not None:
        if seen is None:
            out.append(
                CheckResult(
                    "gpu.present",
                    Status.FAIL,
                    f"expected {expected} GPUs, NVML sees none ({state})",
                    {"pci": len(pci), "nvml": count},
                )
            )
        elif seen < expected:
            out.append(
                CheckResult(
                    "gpu.present",
                    Status.FAIL,
                    f"{seen} of {expected} expected GPUs visible",
                    {"pci": len(pci), "nvml": count},
                    "check seating/power; `nvidia-smi -L`; kernel log for Xid 79",
                )
            )
        else:
            out.append(CheckResult("gpu.present", Status.OK, f"{seen} GPUs (expected {expected})"))
    elif pci and count is not None and count < len(pci):
        out.append(
            CheckResult(
                "gpu.present",
                Status.FAIL,
                f"{len(pci)} GPUs on the PCI bus but NVML sees {count}",
                {"pci": len(pci), "nvml": count},
            )
        )
    else:
        out.append(CheckResult("gpu.present", Status.OK, f"{seen or len(pci)} GPUs"))

    if state == "ok":
        out.append(
            CheckResult(
                "driver.loaded",
                Status.OK,
                f"driver {nv.get('driver_version')} ({nv.get('module_flavour') or 'flavour ?'})",
                nv.get("driver_version"),
            )
        )
    elif state == "no driver":
        out.append(
            CheckResult(
                "driver.loaded",
                Status.FAIL,
                "no NVIDIA driver loaded on a GPU host",
                nv.get("nvml_error"),
                "install the driver (provision apply) or `modprobe nvidia`; check dmesg",
            )
        )
    elif state == "mismatch":
        out.append(CheckResult("driver.loaded", Status.FAIL, "driver unusable: version mismatch"))
    else:
        out.append(
            CheckResult("driver.loaded", Status.UNKNOWN, f"NVML: {nv.get('nvml_error') or state}")
        )

    if nv.get("mismatch") or state == "mismatch":
        lib = nv.get("driver_version") or ",".join(nv.get("library_versions") or []) or "?"
        out.append(
            CheckResult(
                "driver.mismatch",
                Status.FAIL,
                "driver/library version mismatch: reboot needed "
                f"(module {nv.get('kernel_module_version') or '?'}, library {lib})",
                nv.get("nvml_error"),
                "reboot (or unload and reload the nvidia modules); hold the driver packages",
            )
        )
    elif nv.get("mismatch") is False:
        out.append(CheckResult("driver.mismatch", Status.OK, "module and library versions match"))

    driver = nv.get("driver_version")
    if settings.min_driver:
        have, need = version_tuple(driver), version_tuple(settings.min_driver)
        if have is None:
            out.append(
                CheckResult(
                    "driver.min",
                    Status.FAIL if state in ("no driver", "mismatch") else Status.UNKNOWN,
                    f"driver version unknown (need >= {settings.min_driver})",
                )
            )
        elif need and have < need:
            out.append(
                CheckResult(
                    "driver.min",
                    Status.FAIL,
                    f"driver {driver} < required {settings.min_driver}",
                    driver,
                    f"upgrade the driver to >= {settings.min_driver}",
                )
            )
        else:
            out.append(
                CheckResult("driver.min", Status.OK, f"driver {driver} >= {settings.min_driver}")
            )

    if settings.required_cuda:
        cuda = nv.get("cuda_version") or cuda_from_driver(driver)
        need_driver = min_driver_for_cuda(settings.required_cuda)
        hint = f"CUDA {settings.required_cuda} needs driver >= {need_driver or '?'}"
        have_c, need_c = version_tuple(cuda), version_tuple(settings.required_cuda)
        if have_c is None:
            out.append(
                CheckResult(
                    "cuda.required",
                    Status.FAIL if state in ("no driver", "mismatch") else Status.UNKNOWN,
                    f"driver CUDA version unknown (need {settings.required_cuda})",
                    remediation=hint,
                )
            )
        elif need_c and have_c < need_c:
            out.append(
                CheckResult(
                    "cuda.required",
                    Status.FAIL,
                    f"driver supports CUDA {cuda} < required {settings.required_cuda}",
                    cuda,
                    hint,
                )
            )
        else:
            out.append(
                CheckResult(
                    "cuda.required", Status.OK, f"CUDA {cuda} >= {settings.required_cuda}", cuda
                )
            )
    return out


def _host(facts: Mapping[str, Any], gpu_host: bool) -> list[CheckResult]:
    host = facts.get("host") or {}
    nv = facts.get("nvidia") or {}
    out = []
    if host.get("nouveau_loaded"):
        out.append(
            CheckResult(
                "nouveau",
                Status.FAIL,
                "nouveau module is loaded",
                remediation="blacklist nouveau in /etc/modprobe.d, update-initramfs -u, reboot",
            )
        )
    else:
        out.append(CheckResult("nouveau", Status.OK, "nouveau not loaded"))
    sb = host.get("secure_boot")
    if sb is None:
        out.append(
            CheckResult("secure_boot", Status.SKIP, host.get("secure_boot_reason") or "unknown")
        )
    elif sb and gpu_host and nv.get("nvml") == "no driver":
        out.append(
            CheckResult(
                "secure_boot",
                Status.FAIL,
                "Secure Boot enabled and the NVIDIA module is not loaded (unsigned module?)",
                remediation="sign the DKMS module and enroll the MOK (mokutil --import), "
                "confirm at the console on the next boot, or disable Secure Boot",
            )
        )
    else:
        out.append(
            CheckResult("secure_boot", Status.OK, "enabled" if sb else "disabled", evidence=sb)
        )
    ntp = host.get("ntp_synced")
    if ntp is None:
        out.append(CheckResult("clock.ntp", Status.SKIP, host.get("ntp_reason") or "unknown"))
    elif ntp:
        out.append(CheckResult("clock.ntp", Status.OK, "NTP synchronized"))
    else:
        out.append(
            CheckResult(
                "clock.ntp",
                Status.WARN,
                "clock not NTP-synchronized",
                remediation="enable systemd-timesyncd or chrony",
            )
        )
    if host.get("reboot_required"):
        out.append(
            CheckResult(
                "reboot.required", Status.WARN, "/var/run/reboot-required exists", True, "reboot"
            )
        )
    else:
        out.append(CheckResult("reboot.required", Status.OK, "no reboot pending"))
    return out


def _per_gpu(facts: Mapping[str, Any]) -> list[CheckResult]:
    nv = facts.get("nvidia") or {}
    out = []
    persistence_off = []
    for gpu in nv.get("gpus") or []:
        i, uuid = gpu.get("index"), gpu.get("uuid")

        def res(cid: str, status: Status, msg: str, ev: Any = None, fix: str = "") -> CheckResult:
            return CheckResult(cid, status, f"GPU{i}: {msg}", ev, fix, i, uuid)  # noqa: B023

        if gpu.get("lost"):
            out.append(
                res(
                    "gpu.lost",
                    Status.FAIL,
                    "GPU is lost (fell off the bus)",
                    gpu.get("error"),
                    "reset the GPU or reboot; check the kernel log for Xid 79",
                )
            )
            continue
        if gpu.get("error"):
            out.append(res("gpu.read", Status.UNKNOWN, gpu["error"]))
            continue
        ecc, rf = gpu.get("ecc_uncorrected_volatile"), gpu.get("remap_failure")
        rp, pp = gpu.get("remap_pending"), gpu.get("retired_pages_pending")
        ev = {"ecc_uncorrected": ecc, "remap_failure": rf, "remap_pending": rp, "retired": pp}
        if (ecc or 0) > 0 or rf:
            msg = f"{ecc} uncorrected ECC errors" if (ecc or 0) > 0 else "row remapping failed"
            out.append(
                res(
                    "gpu.memory_errors",
                    Status.FAIL,
                    msg,
                    ev,
                    "drain the GPU; reset; RMA if repeats",
                )
            )
        elif rp or pp:
            out.append(
                res(
                    "gpu.memory_errors",
                    Status.WARN,
                    "row remap / page retirement pending",
                    ev,
                    "reset the GPU (or reboot) to apply the pending remap",
                )
            )
        elif all(v is None for v in (ecc, rf, rp, pp)):
            out.append(res("gpu.memory_errors", Status.SKIP, "ECC counters N/A on this card"))
        else:
            out.append(res("gpu.memory_errors", Status.OK, "no memory errors", ev))
        reasons = gpu.get("clock_event_reasons")
        if reasons is None:
            out.append(res("gpu.throttle", Status.SKIP, "clock event reasons N/A"))
        else:
            active = [name for bit, name in HW_SLOWDOWN_BITS.items() if reasons & bit]
            if active:
                out.append(
                    res(
                        "gpu.throttle",
                        Status.WARN,
                        "throttled: " + ", ".join(active),
                        hex(reasons),
                        "check cooling, power cables and PSU",
                    )
                )
            else:
                out.append(res("gpu.throttle", Status.OK, "no hardware slowdown", hex(reasons)))
        cur, mx = gpu.get("pcie_width_current"), gpu.get("pcie_width_max")
        if cur is None or mx is None:
            out.append(res("gpu.pcie", Status.SKIP, "PCIe link width N/A"))
        elif cur < mx:
            out.append(
                res(
                    "gpu.pcie",
                    Status.WARN,
                    f"PCIe link x{cur} below max x{mx}",
                    {"current": cur, "max": mx},
                    "reseat the card / check the slot and riser",
                )
            )
        else:
            out.append(res("gpu.pcie", Status.OK, f"PCIe x{cur}", {"current": cur, "max": mx}))
        if gpu.get("persistence_mode") is False:
            persistence_off.append(i)
        procs = gpu.get("processes") or []
        if procs:
            who = ", ".join(
                f"{p.get('user') or '?'}({p.get('pid')}) {_gib(p.get('used_memory'))}"
                for p in procs
            )
            out.append(res("gpu.busy", Status.OK, f"in use by {who}", procs))
    if persistence_off:
        out.append(
            CheckResult(
                "gpu.persistence",
                Status.WARN,
                "persistence mode off on GPU " + ",".join(str(i) for i in persistence_off),
                persistence_off,
                "enable nvidia-persistenced (systemctl enable --now nvidia-persistenced)",
            )
        )
    elif nv.get("gpus"):
        known = [g for g in nv["gpus"] if g.get("persistence_mode") is not None]
        if known:
            out.append(CheckResult("gpu.persistence", Status.OK, "persistence mode on"))
        else:
            out.append(CheckResult("gpu.persistence", Status.SKIP, "persistence mode N/A"))
    return out


def _xids(facts: Mapping[str, Any], gpu_host: bool) -> list[CheckResult]:
    nv = facts.get("nvidia") or {}
    if not gpu_host:
        return []
    xids = nv.get("xids")
    if xids is None:
        reason = nv.get("xids_reason") or "kernel log not read"
        return [CheckResult("gpu.xid", Status.SKIP, f"Xids unknown: {reason}")]
    found = {int(k): v for k, v in xids.items() if str(k).isdigit() and int(k) not in XID_IGNORED}
    if not found:
        return [CheckResult("gpu.xid", Status.OK, "no critical Xid since boot")]
    names = {**XID_WARN, **XID_FAIL}
    text = ", ".join(f"Xid {x} ({names.get(x, 'other')}) x{n}" for x, n in sorted(found.items()))
    status = Status.FAIL if set(found) & set(XID_FAIL) else Status.WARN
    return [
        CheckResult(
            "gpu.xid",
            status,
            f"since boot: {text}",
            xids,
            "see NVIDIA's Xid catalogue; drain and reset the GPU, RMA if it repeats",
        )
    ]


# The audit user cannot reach /var/run/docker.sock: nothing is known about images or runtimes.
DOCKER_ACCESS_FIX = "audit with --become, or add the audit user to the docker group"


def _docker(facts: Mapping[str, Any], settings: AuditSettings, gpu_host: bool) -> list[CheckResult]:
    dk = facts.get("docker") or {}
    nv = facts.get("nvidia") or {}
    out = []
    needed = gpu_host or bool(settings.required_images)
    running = dk.get("daemon_running")
    denied = bool(dk.get("daemon_access_denied"))
    if not dk.get("installed"):
        status = Status.FAIL if needed else Status.SKIP
        out.append(
            CheckResult(
                "docker.daemon",
                status,
                "Docker not installed",
                remediation="provision apply (docker role)" if needed else "",
            )
        )
    elif not running and denied:
        out.append(
            CheckResult(
                "docker.daemon",
                Status.UNKNOWN,
                dk.get("daemon_error") or "no access to the Docker daemon",
                remediation=DOCKER_ACCESS_FIX,
            )
        )
    elif not running:
        out.append(
            CheckResult(
                "docker.daemon",
                Status.FAIL if needed else Status.WARN,
                dk.get("daemon_error") or "daemon not running",
                remediation="systemctl start docker; journalctl -u docker",
            )
        )
    else:
        out.append(
            CheckResult(
                "docker.daemon",
                Status.OK,
                f"Docker {dk.get('server_version')} running, data-root {dk.get('data_root')}",
            )
        )
    if gpu_host:
        runtimes = dk.get("runtimes") or []
        if not running and denied:
            out.append(
                CheckResult(
                    "docker.gpu_runtime",
                    Status.UNKNOWN,
                    "Docker runtimes unreadable: no access to the Docker daemon",
                    remediation=DOCKER_ACCESS_FIX,
                )
            )
        elif not running:
            out.append(CheckResult("docker.gpu_runtime", Status.SKIP, "Docker daemon not running"))
        elif "nvidia" in runtimes:
            ctk = dk.get("nvidia_ctk")
            out.append(
                CheckResult(
                    "docker.gpu_runtime",
                    Status.OK,
                    f"nvidia runtime registered (nvidia-ctk {ctk or 'not found'})",
                    runtimes,
                )
            )
        else:
            out.append(
                CheckResult(
                    "docker.gpu_runtime",
                    Status.FAIL,
                    "nvidia runtime missing from Docker on a GPU host",
                    runtimes,
                    "install nvidia-container-toolkit; "
                    "nvidia-ctk runtime configure --runtime=docker; restart Docker",
                )
            )
    images = {i.get("ref"): i for i in dk.get("images") or []}
    host_cuda = version_tuple(nv.get("cuda_version"))
    for ref in settings.required_images:
        img = images.get(ref)
        if not running and denied:
            out.append(
                CheckResult(
                    "docker.image",
                    Status.UNKNOWN,
                    f"{ref}: unknown (no access to the Docker daemon)",
                    ref,
                    DOCKER_ACCESS_FIX,
                )
            )
            continue
        if not running:
            out.append(
                CheckResult(
                    "docker.image",
                    Status.FAIL,
                    f"{ref}: cannot be present (daemon not running)",
                    ref,
                )
            )
            continue
        if img is None or not img.get("present"):
            why = (img or {}).get("error")
            out.append(
                CheckResult(
                    "docker.image",
                    Status.UNKNOWN if why else Status.FAIL,
                    f"{ref}: {why}" if why else f"{ref}: missing",
                    ref,
                    f"docker pull {ref}",
                )
            )
            continue
        if "@" in ref and not img.get("digest_match"):
            out.append(
                CheckResult(
                    "docker.image",
                    Status.FAIL,
                    f"{ref}: present but digest differs",
                    img.get("digests"),
                    f"docker pull {ref}",
                )
            )
            continue
        out.append(CheckResult("docker.image", Status.OK, f"{ref}: present", img.get("digests")))
        req = img.get("require_cuda")
        m = re.search(r"cuda>=(\d+(?:\.\d+)?)", req or "")
        if m and host_cuda:
            need = version_tuple(m.group(1))
            if need and host_cuda < need:
                out.append(
                    CheckResult(
                        "docker.image_cuda",
                        Status.FAIL,
                        f"{ref} needs CUDA {m.group(1)}, driver supports {nv.get('cuda_version')}",
                        req,
                        f"driver >= {min_driver_for_cuda(m.group(1)) or '?'}",
                    )
                )
    return out


def _largest_image(facts: Mapping[str, Any]) -> int:
    sizes = [i.get("size") or 0 for i in (facts.get("docker") or {}).get("images") or []]
    return max(sizes, default=0)


def _disk(facts: Mapping[str, Any], settings: AuditSettings) -> list[CheckResult]:
    out = []
    largest = _largest_image(facts)
    disks = facts.get("disk") or []
    has_docker = any(d.get("role") == "docker" for d in disks)
    for d in disks:
        path = d.get("path")
        cid = f"disk:{path}"
        if d.get("error"):
            out.append(CheckResult(cid, Status.UNKNOWN, f"{path}: {d['error']}"))
            continue
        total, free = d.get("total") or 0, d.get("free") or 0
        if total <= 0:
            out.append(CheckResult(cid, Status.SKIP, f"{path}: size unknown"))
            continue
        pct = 100.0 * free / total
        ev = {"free": free, "total": total, "pct": round(pct, 1)}
        image_fs = d.get("role") == "docker" or (not has_docker and d.get("role") == "root")
        absolute = total >= 2 * settings.disk_fail_gib * GIB  # small partitions: % rule only
        msg = f"{path}: {_gib(free)} free ({pct:.0f}%)"
        if pct < settings.disk_fail_pct or (absolute and free < settings.disk_fail_gib * GIB):
            status = Status.FAIL
        elif pct < settings.disk_warn_pct or (image_fs and largest and free < 2 * largest):
            status = Status.WARN
            if image_fs and largest and free < 2 * largest:
                msg += f", less than 2x the largest image ({_gib(largest)})"
        else:
            status = Status.OK
        fix = "" if status is Status.OK else "free space: docker system prune, old checkpoints"
        out.append(CheckResult(cid, status, msg, ev, fix))
        itotal, ifree = d.get("inodes_total") or 0, d.get("inodes_free")
        if itotal > 0 and ifree is not None:
            ipct = 100.0 * ifree / itotal
            if ipct < settings.inode_fail_pct:
                istatus = Status.FAIL
            elif ipct < settings.inode_warn_pct:
                istatus = Status.WARN
            else:
                istatus = Status.OK
            out.append(
                CheckResult(
                    f"inodes:{path}",
                    istatus,
                    f"{path}: {ipct:.0f}% inodes free",
                    {"free": ifree, "total": itotal},
                )
            )
    return out


def run_checks(facts: Mapping[str, Any], settings: AuditSettings) -> list[CheckResult]:
    """Every check for one audited host, in catalogue order."""
    gpu_host = is_gpu_host(facts, settings)
    results = _probe(facts, settings)
    results += _gpus(facts, settings, gpu_host)
    results += _host(facts, gpu_host)
    results += _per_gpu(facts)
    results += _xids(facts, gpu_host)
    results += _docker(facts, settings, gpu_host)
    results += _disk(facts, settings)
    return results


def drift_checks(all_facts: Mapping[str, Mapping[str, Any] | None]) -> dict[str, CheckResult]:
    """Driver version against the lab's majority: WARN for hosts that differ (needs every host)."""
    drivers = {
        host: (f.get("nvidia") or {}).get("driver_version")
        for host, f in all_facts.items()
        if f is not None
    }
    counted = Counter(v for v in drivers.values() if v)
    if len(counted) < 2:
        return {}
    majority, _ = counted.most_common(1)[0]
    out = {}
    for host, version in drivers.items():
        if not version:
            continue
        if version != majority:
            out[host] = CheckResult(
                "driver.drift",
                Status.WARN,
                f"driver {version} differs from the lab majority {majority}",
                {"host": version, "majority": majority},
                "align driver versions across the lab",
            )
        else:
            out[host] = CheckResult(
                "driver.drift", Status.OK, f"driver matches lab majority {majority}"
            )
    return out
