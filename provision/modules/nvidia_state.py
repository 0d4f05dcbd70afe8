"""nvidia_state: read (never change) what the driver playbooks decide on: GPUs on the PCI bus and
their generation, the loaded and the installed driver, driver packages, nouveau, GPU processes,
kernel headers, Secure Boot and the MOK key.

The state snippet rides in the batched state read (no round trip of its own); ``plan`` is pure
and always a no-op whose result keys a playbook registers. The snippet reads sysfs and /proc
rather than NVML because the decisions come before a driver exists (which flavour to install),
and right after an install, when NVML fails on purpose (module and library differ until the
reboot). NVML is asked only with ``query_nvml: true``, to verify a reboot brought the driver up.
Processes holding /dev/nvidiaN are complete only with become (other users' /proc/PID/fd).
"""

from __future__ import annotations

import re
from typing import Any

from provision.gpu_generations import classify
from provision.modules.base import Arg, Context, Module, Plan, noop
from provision.modules.facts import _SB_VAR, parse_facts
from provision.nvidia_packages import DRIVER_PATTERNS, DRIVER_PREFIXES, TOOLKIT_PREFIXES
from provision.shell import join, quote

# NVIDIA's and Ubuntu's packages put libnvidia-ml.so.<version> in the multiarch folder; Debian's
# (libnvidia-ml1, nvidia-graphics-drivers) in <multiarch>/nvidia/current/, reached through
# update-alternatives (Debian package file list of libnvidia-ml1 in bookworm non-free).
LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu/nvidia/current",
    "/usr/lib/aarch64-linux-gnu/nvidia/current",
    "/usr/lib64",
    "/usr/lib",
)
# The MOK certificates DKMS signs with: dkms's default (mok_certificate in dkms 3.0 and 3.1+;
# on Debian created at the first signed build, or by `dkms generate_mok` from 3.1) and Ubuntu's
# (`update-secureboot-policy --new-key` writes /var/lib/shim-signed/mok/MOK.der + MOK.priv).
MOK_KEYS = ("/var/lib/dkms/mok.pub", "/var/lib/shim-signed/mok/MOK.der")
PERSISTENCED = "nvidia-persistenced"
SMI_TIMEOUT = 20  # seconds; nvidia-smi hangs on a GPU that fell off the bus

_LIB = re.compile(r"^libnvidia-ml\.so\.(\d+\.\d+(?:\.\d+)?)$")
_VERSION = re.compile(r"\b(\d+\.\d+(?:\.\d+)?)\b")


def state_script(query_nvml: bool) -> str:
    """A POSIX sh snippet printing ``key=value`` lines (repeated keys for lists)."""
    libs = " ".join(f"{quote(d)}/libnvidia-ml.so.*" for d in LIB_DIRS)
    lines = [
        'k=$(uname -r); echo "kernel=$k"',
        'if [ -e "/lib/modules/$k/build" ]; then echo headers=1; else echo headers=0; fi',
        "for d in /sys/bus/pci/devices/*; do",
        '  [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] || continue',
        '  c=$(cat "$d/class" 2>/dev/null)',
        '  case "$c" in 0x03*) echo "pci=${d##*/} $(cat "$d/device" 2>/dev/null) $c" ;; esac',
        "done",
        "if [ -r /sys/module/nvidia/version ]; then",
        '  echo "module=$(cat /sys/module/nvidia/version)"; fi',
        "if [ -r /proc/driver/nvidia/version ]; then",
        '  echo "proc=$(head -n 1 /proc/driver/nvidia/version)"; fi',
        f'for f in {libs}; do [ -e "$f" ] && echo "lib=${{f##*/}}"; done',
        "dpkg-query -W -f 'pkg=${Package}\\t${Status}\\n' "
        + join(DRIVER_PATTERNS)
        + " 2>/dev/null",
        "if [ -d /sys/module/nouveau ]; then echo nouveau=1; else echo nouveau=0; fi",
        "if [ -e /var/run/reboot-required ]; then echo reboot_file=1; else echo reboot_file=0; fi",
        # Who holds a GPU open: one find over every process's fds (no process per fd).
        "for p in $(find /proc/[0-9]*/fd -maxdepth 1 -lname '/dev/nvidia[0-9]*' 2>/dev/null"
        " | cut -d/ -f3 | sort -un); do",
        "  u=$(stat -c %U /proc/$p 2>/dev/null) || continue",
        "  n=$(cat /proc/$p/comm 2>/dev/null)",
        "  a=$(tr '\\0\\t\\n' '   ' < /proc/$p/cmdline 2>/dev/null)",
        '  printf "gpu_proc=%s\\t%s\\t%s\\t%s\\n" "$p" "$u" "$n" "$a"',
        "done",
        "if command -v mokutil >/dev/null 2>&1; then",
        "  echo \"sb_state=$(mokutil --sb-state 2>&1 | tr '\\n' ' ')\"",
        "fi",
        f"v={quote(_SB_VAR)}",
        """if [ -r "$v" ]; then echo "sb=$(od -An -t u1 -j4 -N1 "$v" | tr -d ' ')";""",
        "elif [ -d /sys/firmware/efi ]; then echo sb=unknown; else echo sb=bios; fi",
        f"for m in {join(MOK_KEYS)}; do",
        '  [ -e "$m" ] || continue',
        "  if command -v mokutil >/dev/null 2>&1; then",
        "    printf 'mok=%s\\t%s\\n' \"$m\" \"$(mokutil --test-key \"$m\" 2>&1 | tr '\\n' ' ')\"",
        "  else printf 'mok=%s\\t\\n' \"$m\"; fi",
        "done",
        # dkms generate_mok exists from dkms 3.1 on (Debian 12 has 3.0.10): the steps depend on it.
        "if command -v dkms >/dev/null 2>&1; then",
        '  echo "dkms=$(dkms --version 2>/dev/null | head -n 1)"; fi',
    ]
    if query_nvml:
        lines += [
            "if ! command -v nvidia-smi >/dev/null 2>&1; then echo smi_rc=missing",
            "elif e=$(mktemp); then",
            f"  o=$(timeout {SMI_TIMEOUT} nvidia-smi --query-gpu=driver_version"
            ' --format=csv,noheader 2>"$e")',
            '  echo "smi_rc=$?"',
            "  echo \"smi_out=$(printf '%s\\n' \"$o\" | sed -n '/[^[:space:]]/{p;q;}')\"",
            '  echo "smi_err=$(sed -n \'/[^[:space:]]/{p;q;}\' "$e")"',
            '  rm -f "$e"',
            "else echo smi_rc=mktemp; fi",
        ]
    return "\n".join(lines)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def is_driver_package(name: str) -> bool:
    """Driver packages the playbooks hold; the container toolkit is not one of them."""
    if name.startswith(TOOLKIT_PREFIXES):
        return False
    return name.startswith(DRIVER_PREFIXES)


def secure_boot_state(sb_state: str | None, efivar: str) -> str:
    """mokutil's answer when it is there; else the facts' efivar reading (and its mapping)."""
    if sb_state is not None:
        if "SecureBoot enabled" in sb_state:
            return "enabled"
        if "SecureBoot disabled" in sb_state:
            return "disabled"
        if "doesn't support Secure Boot" in sb_state:
            return "not supported (BIOS)"
    return str(parse_facts(f"sb={efivar}")["secure_boot"])


def parse_state(text: str | None, query_nvml: bool = False) -> dict[str, Any]:
    """The snippet's output -> every result key except the computed ``reboot_*`` ones."""
    gpus: list[dict[str, Any]] = []
    libs: list[str] = []
    packages: set[str] = set()
    procs: list[dict[str, Any]] = []
    raw: dict[str, str] = {}
    moks: list[tuple[str, bool]] = []
    sb_state: str | None = None
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "pci":
            parts = value.split()
            if len(parts) >= 2:
                gpus.append(_gpu(parts[0], parts[1]))
        elif key == "lib":
            m = _LIB.match(value.strip())
            if m:
                libs.append(m.group(1))
        elif key == "pkg":
            name, _, status = value.partition("\t")
            # "install ok installed", or "hold ok installed" once the playbook held it.
            if status.strip().endswith(" ok installed") and is_driver_package(name.strip()):
                packages.add(name.strip())
        elif key == "gpu_proc":
            proc = _process(value)
            if proc is not None:
                procs.append(proc)
        elif key == "sb_state":
            sb_state = value
        elif key == "mok":
            path, _, test = value.partition("\t")
            moks.append((path.strip(), "is already enrolled" in test))
        else:
            raw.setdefault(key, value.strip())
    gpus.sort(key=lambda g: g["slot"])
    legacy = [g for g in gpus if classify(g["device_id"]).legacy]
    open_ok = bool(gpus) and all(g["open_supported"] for g in gpus)
    loaded = raw.get("module", "")
    if not loaded and raw.get("proc"):
        m = _VERSION.search(raw["proc"].partition("Module")[2] or raw["proc"])
        loaded = m.group(1) if m else ""
    enrolled = [path for path, ok in moks if ok]
    # The enrolled key when one is (DKMS signs with it); else the first present one, to import.
    mok_key = (enrolled or [path for path, _ in moks] or [""])[0]
    nvml_version, nvml_error = _nvml(raw) if query_nvml else ("", "")
    return {
        "gpus": gpus,
        "gpu_present": bool(gpus),
        "open_supported": open_ok,
        "recommended_flavour": "" if not gpus else "open" if open_ok else "proprietary",
        "legacy_gpus": legacy,
        "loaded_version": loaded,
        "installed_version": max(libs, key=_version_key) if libs else "",
        "driver_packages": sorted(packages),
        "nouveau_loaded": raw.get("nouveau") == "1",
        "reboot_required_file": raw.get("reboot_file") == "1",
        "gpu_processes": procs,
        "gpu_process_count": len(procs),
        "kernel": raw.get("kernel", ""),
        "headers_present": raw.get("headers") == "1",
        "secure_boot": secure_boot_state(sb_state, raw.get("sb", "unknown")),
        "mok_key": mok_key,
        "mok_enrolled": bool(enrolled),
        "dkms_version": _dkms_version(raw.get("dkms", "")),
        "open_required": any(g["open_required"] for g in gpus),
        "nvml_version": nvml_version,
        "nvml_error": nvml_error,
    }


def _dkms_version(text: str) -> str:
    """``dkms-3.0.10`` (dkms 3.0) or ``dkms 3.1.1`` -> ``3.0.10``; "" when dkms is absent."""
    m = _VERSION.search(text)
    return m.group(1) if m else ""


def _gpu(slot: str, device: str) -> dict[str, Any]:
    device_id = device.strip().lower()
    try:
        gen = classify(device_id)
    except ValueError:
        return {
            "slot": slot,
            "device_id": device_id,
            "generation": "unknown",
            "open_supported": False,
            "open_required": False,
        }
    return {
        "slot": slot,
        "device_id": device_id,
        "generation": gen.name,
        "open_supported": gen.open_supported,
        "open_required": gen.open_required,
    }


def _process(value: str) -> dict[str, Any] | None:
    pid, user, comm, cmdline = [*value.split("\t", 3), "", "", ""][:4]
    if not pid.strip().isdigit():
        return None
    argv0 = cmdline.split(" ", 1)[0].rsplit("/", 1)[-1]
    # comm is cut to 15 characters: "nvidia-persiste".
    if argv0 == PERSISTENCED or comm.strip() in (PERSISTENCED, PERSISTENCED[:15]):
        return None
    return {"pid": int(pid), "user": user.strip(), "command": cmdline.strip() or comm.strip()}


def _nvml(raw: dict[str, str]) -> tuple[str, str]:
    rc = raw.get("smi_rc", "")
    out, err = raw.get("smi_out", ""), raw.get("smi_err", "")
    if rc == "missing":
        return "", "nvidia-smi is not installed"
    if rc == "0" and out:
        return out, ""
    if rc == "mktemp":
        return "", "mktemp failed on the host: nvidia-smi not asked"
    if rc == "124":
        return "", f"nvidia-smi timed out after {SMI_TIMEOUT} s"
    return "", out or err or f"nvidia-smi exited {rc or '?'}"


def reboot_reasons(state: dict[str, Any]) -> list[str]:
    """Why the host needs a reboot for the installed driver (not the reboot-required file)."""
    installed, loaded = state["installed_version"], state["loaded_version"]
    reasons: list[str] = []
    if installed and loaded != installed:
        if loaded:
            reasons.append(f"loaded module {loaded} differs from installed {installed}")
        else:
            reasons.append(f"no nvidia module loaded; installed {installed}")
    if installed and state["nouveau_loaded"]:
        reasons.append("nouveau is loaded")
    return reasons


def summary(state: dict[str, Any]) -> str:
    """One line: "2 GPUs (Hopper), driver 580.95.05 loaded"."""
    gpus = state["gpus"]
    if gpus:
        gens = ", ".join(dict.fromkeys(g["generation"] for g in gpus))
        head = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''} ({gens})"
    else:
        head = "no NVIDIA GPU"
    loaded, installed = state["loaded_version"], state["installed_version"]
    if loaded:
        head += f", driver {loaded} loaded"
    elif installed:
        head += ", no driver loaded"
    if installed and installed != loaded:
        head += f", {installed} installed"
    if state["reboot_needed"]:
        head += "; reboot needed"
    return head


class NvidiaStateModule(Module):
    name = "nvidia_state"
    spec = (Arg("query_nvml", "bool", default=False),)

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return state_script(args["query_nvml"])

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        result = parse_state(state, args["query_nvml"])
        reasons = reboot_reasons(result)
        result["reboot_needed"] = bool(reasons)
        result["reboot_reasons"] = reasons
        return noop(summary(result), **result)


__all__ = [
    "NvidiaStateModule",
    "is_driver_package",
    "parse_state",
    "reboot_reasons",
    "secure_boot_state",
    "state_script",
]
