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

# Asked for by name with a header row (``--format=csv,nounits``), so a field this driver refuses
# can be dropped and the rest still map (see QUERY_SCRIPT). kmd_version replaces the deprecated
# driver_version from R595; clocks_event_reasons replaced clocks_throttle_reasons (R535).
GPU_FIELDS = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "kmd_version",
    "driver_version",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "utilization.memory",
    "temperature.gpu",
    "power.draw",
    "persistence_mode",
    "pcie.link.width.current",
    "pcie.link.width.max",
    "ecc.errors.uncorrected.volatile.total",
    "retired_pages.pending",
    "remapped_rows.pending",
    "remapped_rows.failure",
    "clocks_event_reasons.active",
    "clocks_throttle_reasons.active",
    "mig.mode.current",
)
APP_FIELDS = ("gpu_uuid", "pid", "process_name", "used_gpu_memory")
APPS = ",".join(APP_FIELDS)
NA_VALUES = {
    "",
    "n/a",
    "[n/a]",
    "[not supported]",
    "not supported",
    "[unknown error]",
    "[gpu is lost]",
    "[requested functionality has been deprecated]",
    "err!",
}
MIB = 1024 * 1024
MAX_FIELD_RETRIES = len(GPU_FIELDS)  # each refused field costs one more call
TIMED_OUT = 124  # timeout(1)'s exit status: the command hung and was killed

# Drop each field nvidia-smi refuses ("Field "X" is not a valid field to query.", exit 2) and ask
# again, so one field a driver removed never empties the report.
QUERY_SCRIPT = """fields={fields}; n=0
while :; do
  out=$({to} nvidia-smi --query-gpu=$fields --format=csv,nounits 2>&1); rc=$?
  bad=$(printf '%s\\n' "$out" |
    sed -n 's/^Field "\\(.*\\)" is not a valid field to query.*/\\1/p' | head -n 1)
  [ -n "$bad" ] && [ $n -lt {retries} ] || break
  new=; for f in $(printf '%s' "$fields" | tr , ' '); do
    [ "$f" = "$bad" ] || new="${{new:+$new,}}$f"; done
  [ "$new" = "$fields" ] && break
  fields=$new; n=$((n+1))
done
printf '%s\\n' "$out"; smi_rc=$rc; (exit $rc)"""

# NVIDIA display controllers (class 0x03xxxx) on the PCI bus, from sysfs: a broken driver must
# not make a GPU box look like a CPU box.
PCI_SCRIPT = (
    "for d in /sys/bus/pci/devices/*; do "
    'v=$(cat "$d/vendor" 2>/dev/null); c=$(cat "$d/class" 2>/dev/null); '
    'case "$v:$c" in 0x10de:0x03*) l=$(readlink "$d/driver" 2>/dev/null); '
    'echo "${d##*/} $(cat "$d/device" 2>/dev/null) ${l##*/}";; esac; done'
)


def _smi(to: str, command: str) -> str:
    """An nvidia-smi call that is skipped when the GPU query already hung (a hung driver)."""
    return (
        f'if [ "${{smi_rc:-0}}" = {TIMED_OUT} ]; then echo "skipped: nvidia-smi timed out"; '
        f"(exit {TIMED_OUT}); else {to} {command} 2>&1; fi"
    )


def shell_script(token: str, paths: list[str], timeout: float) -> str:
    """POSIX sh that prints every section as ``<token> NAME`` ... ``<token>rc N``."""
    t = quote(f"{max(1, int(timeout))}")
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
        ("pci", PCI_SCRIPT),
        (
            "smi_query",
            QUERY_SCRIPT.format(
                fields=quote(",".join(GPU_FIELDS)), to=to, retries=MAX_FIELD_RETRIES
            ),
        ),
        ("smi_table", _smi(to, "nvidia-smi")),
        (
            "smi_apps",
            _smi(
                to, f"nvidia-smi --query-compute-apps={','.join(APP_FIELDS)} --format=csv,nounits"
            ),
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


_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?")


def _float(value: str | None) -> float | None:
    """The number at the start of a cell: "81559 MiB" (csv with units) and "81559" alike."""
    v = na(value)
    m = _NUMBER.match(v) if v is not None else None
    return float(m.group(0)) if m else None


def _int(value: str | None) -> int | None:
    f = _float(value)
    return None if f is None else int(f)


def _yes_no(value: str | None, yes: str = "yes") -> bool | None:
    v = na(value)
    return None if v is None else v.lower() == yes


# nvidia-smi's failure texts (tests/data/nvidia-smi-real/errors) -> the NVML path's states.
# The exit codes are nvidia-smi(1)'s RETURN VALUE section; 124 is timeout(1)'s.
SMI_ERRORS = (
    ("driver/library version mismatch", 18, "mismatch"),
    ("couldn't communicate with the nvidia driver", 9, "no driver"),
    ("couldn't find libnvidia-ml.so", 12, "no driver"),
    ("no supported gpus were found", None, "no devices"),
    ("no devices were found", 6, "no devices"),
    ("nvidia-smi: command not found", 127, "missing"),
    ("nvidia-smi: not found", None, "missing"),
)


def smi_error(text: str, rc: int | None) -> str | None:
    """Classify nvidia-smi's failure: "mismatch", "no driver", "no devices", "missing",
    "timed out", "error" or None (it worked)."""
    low = text.lower()
    for phrase, code, state in SMI_ERRORS:
        if phrase in low or (code is not None and rc == code):
            return state
    if rc == TIMED_OUT:
        return "timed out"
    if rc not in (0, None):
        return "error"
    return None


def library_version(text: str) -> str | None:
    """The user-space NVML version nvidia-smi names in a mismatch ("NVML library version: X")."""
    m = re.search(r"NVML library version:\s*([\d.]+)", text)
    return m.group(1) if m else None


def _clean_header(cell: str) -> str:
    """ "memory.total [MiB]" -> "memory.total" (with or without nounits)."""
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", cell.strip())


def csv_records(text: str, key: str) -> list[dict[str, str]]:
    """Rows of nvidia-smi CSV with a header row (the first row naming ``key``); lines before
    it (warnings, lost-GPU lines) and rows of another width are skipped."""
    header: list[str] | None = None
    out = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        cells = [c.strip() for c in row]
        if header is None:
            if key in [_clean_header(c) for c in cells]:
                header = [_clean_header(c) for c in cells]
            continue
        if len(cells) == len(header):
            out.append(dict(zip(header, cells, strict=True)))
    return out


def parse_gpu_csv(text: str) -> list[dict[str, Any]]:
    """``--query-gpu`` CSV with a header row -> GPU dicts like the probe's."""
    gpus = []
    for f in csv_records(text, "index"):
        if not f["index"].isdigit():
            continue
        total, used = _int(f.get("memory.total")), _int(f.get("memory.used"))
        reasons = na(f.get("clocks_event_reasons.active")) or na(
            f.get("clocks_throttle_reasons.active")
        )
        gpu: dict[str, Any] = {
            "index": int(f["index"]),
            "lost": False,
            "name": na(f.get("name")),
            "uuid": na(f.get("uuid")),
            "pci_bus_id": na(f.get("pci.bus_id")),
            "memory_total": total * MIB if total is not None else None,
            "memory_used": used * MIB if used is not None else None,
            "utilization_gpu": _int(f.get("utilization.gpu")),
            "utilization_memory": _int(f.get("utilization.memory")),
            "temperature_c": _int(f.get("temperature.gpu")),
            "power_w": _float(f.get("power.draw")),
            "persistence_mode": _yes_no(f.get("persistence_mode"), "enabled"),
            "ecc_uncorrected_volatile": _int(f.get("ecc.errors.uncorrected.volatile.total")),
            "remap_pending": _yes_no(f.get("remapped_rows.pending")),
            "remap_failure": _yes_no(f.get("remapped_rows.failure")),
            "retired_pages_pending": _yes_no(f.get("retired_pages.pending")),
            "pcie_width_current": _int(f.get("pcie.link.width.current")),
            "pcie_width_max": _int(f.get("pcie.link.width.max")),
            "clock_event_reasons": int(reasons, 16)
            if reasons and reasons.lower().startswith("0x")
            else None,
            "mig_mode": _yes_no(f.get("mig.mode.current"), "enabled"),
            "inforom_corrupted": None,
            "processes": [],
            "na": [k for k, v in f.items() if na(v) is None],
            "driver_version": na(f.get("kmd_version")) or na(f.get("driver_version")),
        }
        gpus.append(gpu)
    return gpus


def parse_apps_csv(text: str) -> list[dict[str, Any]]:
    """``--query-compute-apps`` CSV with a header row -> [{gpu_uuid, pid, name, used_memory}]."""
    apps = []
    for row in csv_records(text, "pid"):
        if not row["pid"].isdigit():
            continue
        used = _int(row.get("used_gpu_memory"))
        apps.append(
            {
                "gpu_uuid": row.get("gpu_uuid"),
                "pid": int(row["pid"]),
                "name": na(row.get("process_name")),
                "user": None,
                "used_memory": used * MIB if used is not None else None,
            }
        )
    return apps


# A process row of the default table: GPU, (GI, CI,) PID, type (C, G, C+G, M, M+C), name, memory.
_PROC_ROW = re.compile(
    r"^\|\s+(\d+)\s+(?:\S+\s+\S+\s+)?(\d+)\s+(C\+G|M\+C|C|G|M)\s+(.*?)\s+(\d+MiB|N/A)\s*\|$"
)


def parse_table_processes(text: str) -> list[dict[str, Any]]:
    """The Processes section of the default ``nvidia-smi`` table, with each process's type."""
    out = []
    in_procs = False
    for line in text.splitlines():
        if "Processes:" in line:
            in_procs = True
            continue
        m = _PROC_ROW.match(line.strip()) if in_procs else None
        if m:
            used = _int(m.group(5))
            out.append(
                {
                    "gpu_index": int(m.group(1)),
                    "pid": int(m.group(2)),
                    "type": m.group(3),
                    "name": m.group(4) or None,
                    "used_memory": used * MIB if used is not None else None,
                }
            )
    return out


def parse_header(text: str) -> dict[str, str | None]:
    """Driver and CUDA version from the ``nvidia-smi`` banner: ``Driver Version:``/``CUDA
    Version:`` up to R595, ``KMD Version:``/``CUDA UMD Version:`` from R610; N/A or ERR! -> None."""
    drv = re.search(r"(?:Driver|KMD) Version:\s*([\d.]+)", text)
    cuda = re.search(r"CUDA (?:UMD )?Version:\s*([\d.]+)", text)
    return {"driver": drv.group(1) if drv else None, "cuda": cuda.group(1) if cuda else None}


# "Unable to determine the device handle for GPU 0000:0B:00.0: Unknown Error", also spelled
# "GPU0000:07:00.0" and "GPU1: 0000:34:00.0"; and "... GPU is lost. Reboot the system ...".
_HANDLE_ERROR = re.compile(
    r"Unable to determine the device handle for GPU\s*(?:(\d+):\s*)?"
    r"([0-9A-Fa-f]+:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*:\s*(.*)"
)
_INFOROM = re.compile(
    r"infoROM is corrupted at gpu\s+([0-9A-Fa-f]+:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])"
)


def bus_id(text: str | None) -> str | None:
    """A PCI address in one spelling: nvidia-smi's "00000000:0B:00.0" and sysfs's
    "0000:0b:00.0" both become "0000:0b:00.0"."""
    if not text:
        return None
    m = re.match(r"^([0-9A-Fa-f]+):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])$", text.strip())
    if not m:
        return text.strip().lower()
    return f"{int(m.group(1), 16):04x}:{m.group(2)}:{m.group(3)}.{m.group(4)}".lower()


def lost_gpus(text: str) -> list[dict[str, Any]]:
    """Lost-GPU entries for every GPU nvidia-smi could not get a handle for."""
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        m = _HANDLE_ERROR.search(line)
        if m:
            addr = bus_id(m.group(2)) or m.group(2)
            out.setdefault(
                addr,
                {
                    "index": int(m.group(1)) if m.group(1) else None,
                    "lost": True,
                    "pci_bus_id": addr,
                    "error": "nvidia-smi: " + line.strip(),
                    "na": [],
                },
            )
    return list(out.values())


def inforom_warnings(text: str) -> list[str]:
    """PCI addresses of the GPUs nvidia-smi warns have a corrupted infoROM (exit 14)."""
    return sorted({bus_id(m.group(1)) or m.group(1) for m in _INFOROM.finditer(text)})


def parse_pci(text: str) -> list[dict[str, str | None]]:
    """The ``pci`` section (address, device id, bound driver) -> the probe's pci_gpus shape."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("0x"):
            out.append(
                {
                    "address": parts[0],
                    "device": parts[1],
                    "driver": parts[2] if len(parts) > 2 else None,
                }
            )
    return out


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


def _processes(gpu: dict[str, Any], apps: list[dict[str, Any]] | None, table: list) -> list:
    """Compute processes of one GPU: ``--query-compute-apps`` rows, else the table's; a
    graphics-only process (type G, e.g. a desktop compositor) does not make a GPU busy."""
    kinds = {p["pid"]: p["type"] for p in table if p["gpu_index"] == gpu["index"]}
    if apps is None:
        mine = [
            {"pid": p["pid"], "name": p["name"], "user": None, "used_memory": p["used_memory"]}
            for p in table
            if p["gpu_index"] == gpu["index"]
        ]
    else:
        mine = [a for a in apps if a["gpu_uuid"] == gpu["uuid"]]
    return [p for p in mine if kinds.get(p["pid"]) != "G"]


def nvidia_from_sections(sections: dict[str, tuple[int | None, str]]) -> dict[str, Any]:
    """The probe's ``nvidia`` facts from the nvidia-smi sections (pure). Rows are read whatever
    nvidia-smi's exit code (exit 14, a corrupted infoROM, still prints every GPU)."""

    def text(name: str) -> str:
        return sections.get(name, (None, ""))[1]

    proc_version = text("nvidia_version")
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", proc_version)
    kmod = m.group(1) if m else None
    query, qrc = text("smi_query"), sections.get("smi_query", (None, ""))[0]
    table = text("smi_table")
    header = parse_header(table)
    gpus = parse_gpu_csv(query)
    seen = {bus_id(g["pci_bus_id"]) for g in gpus} | {g["index"] for g in gpus}
    lost = [
        g
        for g in lost_gpus(query + "\n" + table)
        if g["pci_bus_id"] not in seen and g["index"] not in seen
    ]
    broken = set(inforom_warnings(query + "\n" + table))
    for gpu in gpus:
        if broken:
            gpu["inforom_corrupted"] = bus_id(gpu["pci_bus_id"]) in broken
    apps_text = text("smi_apps")
    apps = parse_apps_csv(apps_text) if "pid" in apps_text else None
    procs = parse_table_processes(table)
    for gpu in gpus:
        gpu["processes"] = _processes(gpu, apps, procs)
    nvidia: dict[str, Any] = {
        "pci_gpus": parse_pci(text("pci")) if "pci" in sections else None,
        "kernel_module_version": kmod,
        "module_flavour": None
        if not proc_version.strip()
        else ("open" if "Open Kernel Module" in proc_version else "proprietary"),
        "library_versions": [],
        "nvml": "ok",
        "nvml_error": None,
        "driver_version": header["driver"]
        or next((g["driver_version"] for g in gpus if g["driver_version"]), None),
        "nvml_version": None,
        "cuda_driver_version": None,
        "cuda_version": header["cuda"],
        "gpu_count": len(gpus) + len(lost),
        "gpus": sorted(gpus + lost, key=lambda g: (g["index"] is None, g["index"] or 0)),
        "mismatch": None,
        "inforom_warnings": sorted(broken),
    }
    state = None if gpus or lost else smi_error(query, qrc)
    if state is not None:
        nvidia["nvml"] = {"missing": "no driver"}.get(state, state)
        first = (query.strip().splitlines() or ["no output"])[0]
        nvidia["nvml_error"] = "nvidia-smi: " + (
            f"timed out (killed after the probe's step timeout): {first}"
            if state == "timed out"
            else first
        )
        nvidia["gpu_count"] = 0 if state == "no devices" else None
        if state == "mismatch":
            nvidia["mismatch"] = True
            lib = library_version(query)
            nvidia["library_versions"] = [lib] if lib else []
    elif kmod and nvidia["driver_version"]:
        nvidia["mismatch"] = kmod != nvidia["driver_version"]
    return nvidia


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
    nvidia = nvidia_from_sections(sections)
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
