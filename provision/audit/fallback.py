"""Degraded audit for hosts without python3: ``nvidia-smi`` CSV and plain shell commands.

The shell script (:func:`shell_script`) prints sections framed by a token; :func:`parse_sections`
and the pure parsers below turn them into the same facts document the probe prints, marked
``"probe": "nvidia-smi"`` and with a note so the report says the audit was degraded. nvidia-smi's
output is not guaranteed stable across releases (NVML is), hence the tolerant parsing: unknown
values become None, ``[N/A]``/``[Not Supported]`` become None (N/A, never a failure).
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from provision.audit.probe import empty_docker_facts
from provision.shell import join, quote

DEGRADED_NOTE = "python3 missing: degraded audit via nvidia-smi"

GPU_FIELDS = (
    "index",
    "uuid",
    "name",
    "driver_version",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "temperature.gpu",
    "power.draw",
    "persistence_mode",
    "pcie.link.width.current",
    "pcie.link.width.max",
)
EXTRA_FIELDS = ("ecc.errors.uncorrected.volatile.total", "clocks_throttle_reasons.active")
APP_FIELDS = ("gpu_uuid", "pid", "process_name", "used_gpu_memory")
NA_VALUES = {
    "",
    "n/a",
    "[n/a]",
    "[not supported]",
    "not supported",
    "[unknown error]",
    "[gpu is lost]",
}
MIB = 1024 * 1024


def shell_script(token: str, paths: list[str], timeout: float) -> str:
    """POSIX sh that prints every section as ``<token> NAME`` ... ``<token>rc N``."""
    t = quote(f"{max(1, int(timeout))}")
    full = ",".join(GPU_FIELDS + EXTRA_FIELDS)
    base = ",".join(GPU_FIELDS)
    to = f"timeout {t}"
    all_paths = join(["/", *paths])
    sections = [
        ("hostname", "cat /proc/sys/kernel/hostname"),
        ("os-release", "cat /etc/os-release"),
        ("kernel", "uname -r"),
        ("uptime", "cat /proc/uptime"),
        ("boot_id", "cat /proc/sys/kernel/random/boot_id"),
        ("reboot_required", "test -e /var/run/reboot-required && echo yes || echo no"),
        ("modules", "cut -d' ' -f1 /proc/modules"),
        ("nvidia_version", "cat /proc/driver/nvidia/version"),
        (
            "smi_query",
            f"out=$({to} nvidia-smi --query-gpu={full} --format=csv,noheader,nounits 2>&1); "
            'rc=$?; case "$out" in *"not a valid field"*) '
            f"{to} nvidia-smi --query-gpu={base} --format=csv,noheader,nounits 2>&1;; "
            '*) printf "%s\\n" "$out"; (exit $rc);; esac',
        ),
        ("smi_header", f"{to} nvidia-smi 2>&1 | head -n 6"),
        (
            "smi_apps",
            f"{to} nvidia-smi --query-compute-apps={','.join(APP_FIELDS)} "
            "--format=csv,noheader,nounits 2>&1",
        ),
        ("ntp", f"{to} timedatectl show -p NTPSynchronized --value"),
        ("docker_info", f"{to} docker info --format '{{{{json .}}}}'"),
        ("df", f"{to} df -P -B1 {all_paths}"),
        ("dfi", f"{to} df -P -i {all_paths}"),
    ]
    lines = []
    for name, command in sections:
        lines.append(f"echo {quote(token + ' ' + name)}; {{ {command}; }} 2>&1; echo {token}rc $?")
    return "\n".join(lines) + "\n"


def parse_sections(text: str, token: str) -> dict[str, tuple[int | None, str]]:
    """Split the script's output into ``{name: (exit code, text)}``."""
    out: dict[str, tuple[int | None, str]] = {}
    name: str | None = None
    buf: list[str] = []
    for line in text.splitlines():
        if line.startswith(token + " "):
            name, buf = line[len(token) + 1 :].strip(), []
        elif line.startswith(token + "rc ") and name is not None:
            try:
                code: int | None = int(line.split()[-1])
            except ValueError:
                code = None
            out[name] = (code, "\n".join(buf))
            name = None
        elif name is not None:
            buf.append(line)
    return out


def na(value: str | None) -> str | None:
    """None for nvidia-smi's not-available spellings, else the stripped value."""
    if value is None:
        return None
    v = value.strip()
    return None if v.lower() in NA_VALUES else v


def _int(value: str | None) -> int | None:
    v = na(value)
    if v is None:
        return None
    try:
        return int(float(v))
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    v = na(value)
    try:
        return None if v is None else float(v)
    except ValueError:
        return None


def smi_error(text: str, rc: int | None) -> str | None:
    """Classify nvidia-smi's failure: "mismatch", "no driver", "missing" or None (it worked)."""
    low = text.lower()
    if "driver/library version mismatch" in low or rc == 18:
        return "mismatch"
    if "couldn't communicate with the nvidia driver" in low or rc == 9:
        return "no driver"
    if rc == 127 or ("not found" in low and "nvidia-smi" in low):
        return "missing"
    if "no devices were found" in low:
        return "no devices"
    if rc not in (0, None):
        return "error"
    return None


def parse_gpu_csv(text: str) -> list[dict[str, Any]]:
    """``--query-gpu`` rows (our field order, noheader, nounits) -> GPU dicts like the probe's."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) < len(GPU_FIELDS) or not row[0].strip().isdigit():
            continue
        f = dict(zip(GPU_FIELDS + EXTRA_FIELDS, [c.strip() for c in row], strict=False))
        na_fields = [k for k, v in f.items() if na(v) is None]
        total, used = _int(f["memory.total"]), _int(f["memory.used"])
        persistence = na(f["persistence_mode"])
        reasons = na(f.get("clocks_throttle_reasons.active"))
        gpu: dict[str, Any] = {
            "index": int(f["index"]),
            "lost": False,
            "name": na(f["name"]),
            "uuid": na(f["uuid"]),
            "memory_total": total * MIB if total is not None else None,
            "memory_used": used * MIB if used is not None else None,
            "utilization_gpu": _int(f["utilization.gpu"]),
            "utilization_memory": None,
            "temperature_c": _int(f["temperature.gpu"]),
            "power_w": _float(f["power.draw"]),
            "persistence_mode": None if persistence is None else persistence.lower() == "enabled",
            "ecc_uncorrected_volatile": _int(f.get("ecc.errors.uncorrected.volatile.total")),
            "remap_pending": None,
            "remap_failure": None,
            "retired_pages_pending": None,
            "pcie_width_current": _int(f["pcie.link.width.current"]),
            "pcie_width_max": _int(f["pcie.link.width.max"]),
            "clock_event_reasons": int(reasons, 16)
            if reasons and reasons.startswith("0x")
            else None,
            "processes": [],
            "na": na_fields,
            "driver_version": na(f["driver_version"]),
        }
        gpus.append(gpu)
    return gpus


def parse_apps_csv(text: str) -> list[dict[str, Any]]:
    """``--query-compute-apps`` rows -> [{gpu_uuid, pid, name, used_memory}]."""
    apps = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) < len(APP_FIELDS) or not row[1].strip().isdigit():
            continue
        used = _int(row[3])
        apps.append(
            {
                "gpu_uuid": row[0].strip(),
                "pid": int(row[1]),
                "name": na(row[2]),
                "user": None,
                "used_memory": used * MIB if used is not None else None,
            }
        )
    return apps


def parse_header(text: str) -> dict[str, str | None]:
    """Driver and CUDA version from the plain ``nvidia-smi`` banner."""
    drv = re.search(r"Driver Version:\s*([\d.]+)", text)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", text)
    return {"driver": drv.group(1) if drv else None, "cuda": cuda.group(1) if cuda else None}


def _disk(sections: dict[str, tuple[int | None, str]], paths: list[str]) -> list[dict[str, Any]]:
    """df prints one line per argument in order: pair them back with the requested paths."""

    def rows(name: str) -> list[list[str]]:
        text = sections.get(name, (None, ""))[1]
        return [ln.split() for ln in text.splitlines()[1:] if len(ln.split()) >= 6]

    byte_rows, inode_rows = rows("df"), rows("dfi")
    out = []
    for i, path in enumerate(["/", *paths]):
        entry: dict[str, Any] = {"path": path, "role": "root" if i == 0 else "extra"}
        if i < len(byte_rows) and byte_rows[i][1].isdigit():
            entry["total"], entry["free"] = int(byte_rows[i][1]), int(byte_rows[i][3])
        else:
            entry["error"] = "df gave no answer"
        if i < len(inode_rows) and inode_rows[i][1].isdigit():
            entry["inodes_total"], entry["inodes_free"] = (
                int(inode_rows[i][1]),
                int(inode_rows[i][3]),
            )
        out.append(entry)
    return out


def facts_from_sections(
    sections: dict[str, tuple[int | None, str]], paths: list[str]
) -> dict[str, Any]:
    """Build the probe's facts document from the fallback script's sections (pure)."""

    def text(name: str) -> str:
        return sections.get(name, (None, ""))[1]

    def code(name: str) -> int | None:
        return sections.get(name, (None, ""))[0]

    osr = {}
    for line in text("os-release").splitlines():
        k, sep, v = line.partition("=")
        if sep:
            osr[k.strip()] = v.strip().strip('"')
    modules = set(text("modules").split())
    uptime = text("uptime").split()
    ntp = text("ntp").strip()
    host = {
        "hostname": text("hostname").strip() or None,
        "os_id": osr.get("ID"),
        "os_version": osr.get("VERSION_ID"),
        "os_pretty": osr.get("PRETTY_NAME"),
        "kernel": text("kernel").strip() or None,
        "uptime_s": float(uptime[0]) if uptime and re.match(r"^[\d.]+$", uptime[0]) else None,
        "boot_id": text("boot_id").strip() or None,
        "reboot_required": text("reboot_required").strip() == "yes",
        "nouveau_loaded": "nouveau" in modules,
        "nvidia_module_loaded": "nvidia" in modules,
        "secure_boot": None,
        "secure_boot_reason": "not checked in degraded mode",
        "ntp_synced": {"yes": True, "no": False}.get(ntp),
        "ntp_reason": None if ntp in ("yes", "no") else "timedatectl gave no answer",
    }
    proc_version = text("nvidia_version")
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", proc_version)
    kmod = m.group(1) if m else None
    query, qrc = text("smi_query"), code("smi_query")
    state = smi_error(query, qrc)
    header = parse_header(text("smi_header"))
    nvidia: dict[str, Any] = {
        "pci_gpus": None,
        "kernel_module_version": kmod,
        "module_flavour": None
        if not proc_version.strip()
        else ("open" if "Open Kernel Module" in proc_version else "proprietary"),
        "library_versions": [],
        "nvml": "ok",
        "nvml_error": None,
        "driver_version": None,
        "nvml_version": None,
        "cuda_driver_version": None,
        "cuda_version": header["cuda"],
        "gpu_count": None,
        "gpus": [],
        "mismatch": None,
    }
    if state in ("mismatch", "no driver", "missing", "error"):
        nvidia["nvml"] = {"missing": "no driver"}.get(state, state)
        nvidia["nvml_error"] = "nvidia-smi: " + (query.strip().splitlines() or ["no output"])[0]
        nvidia["mismatch"] = True if state == "mismatch" else None
    else:
        gpus = parse_gpu_csv(query)
        apps = parse_apps_csv(text("smi_apps"))
        for gpu in gpus:
            gpu["processes"] = [a for a in apps if a["gpu_uuid"] == gpu["uuid"]]
        nvidia["gpus"] = gpus
        nvidia["gpu_count"] = len(gpus)
        nvidia["driver_version"] = header["driver"] or (gpus[0]["driver_version"] if gpus else None)
        if kmod and nvidia["driver_version"]:
            nvidia["mismatch"] = kmod != nvidia["driver_version"]
    docker = empty_docker_facts(code("docker_info") != 127)
    raw = text("docker_info")
    start = raw.find("{")
    info: dict[str, Any] = {}
    if start >= 0:
        try:
            info = json.loads(raw[start : raw.rfind("}") + 1])
        except ValueError:
            info = {}
    if code("docker_info") == 0 and info.get("ServerVersion"):
        docker.update(
            daemon_running=True,
            server_version=info.get("ServerVersion"),
            data_root=info.get("DockerRootDir"),
            runtimes=sorted((info.get("Runtimes") or {}).keys()),
            default_runtime=info.get("DefaultRuntime"),
        )
    elif docker["installed"]:
        docker["daemon_error"] = "daemon not running"
    else:
        docker["daemon_error"] = "docker not installed"
    return {
        "schema": 1,
        "probe": "nvidia-smi",
        "notes": [DEGRADED_NOTE],
        "errors": [],
        "host": host,
        "nvidia": nvidia,
        "docker": docker,
        "disk": _disk(sections, paths),
    }
