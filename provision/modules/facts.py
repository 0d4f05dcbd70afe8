"""Host facts in one snippet: OS, version, architecture, kernel, init, GPU, Secure Boot, packages.

The snippet rides along with the first batched state read of a host, so facts cost no extra
round trip. Parsing is pure and tolerant: a missing tool gives an "unknown" value, never a failure.
"""

from __future__ import annotations

from typing import Any

# efivar SecureBoot-<EFI global variable GUID>: 4 attribute bytes, then 1 byte: 1 = enabled.
_SB_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

FACTS_SCRIPT = "\n".join(
    [
        "if [ -r /etc/os-release ]; then . /etc/os-release; fi",
        'echo "id=${ID:-}"; echo "id_like=${ID_LIKE:-}"; echo "version_id=${VERSION_ID:-}"',
        'echo "codename=${VERSION_CODENAME:-}"; echo "name=${NAME:-}"',
        'echo "arch=$(uname -m)"; echo "kernel=$(uname -r)"; echo "hostname=$(hostname)"',
        'echo "init=$(cat /proc/1/comm 2>/dev/null)"',
        "gpu=0; for d in /sys/bus/pci/devices/*; do",
        '  [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] || continue',
        '  case "$(cat "$d/class" 2>/dev/null)" in 0x03*) gpu=1 ;; esac',
        "done; echo gpu=$gpu",
        f"if [ -r {_SB_VAR} ]; then echo sb=$(od -An -t u1 -j4 -N1 {_SB_VAR} | tr -d ' ');",
        "elif [ -d /sys/firmware/efi ]; then echo sb=unknown; else echo sb=bios; fi",
        "for m in apt-get dnf yum zypper apk; do",
        '  if command -v "$m" >/dev/null 2>&1; then echo "pkg=$m"; break; fi',
        "done",
    ]
)

_DISTRIBUTIONS = {"debian": "Debian", "ubuntu": "Ubuntu", "rhel": "RedHat", "rocky": "Rocky"}
_FAMILIES = {"debian": "Debian", "ubuntu": "Debian", "rhel": "RedHat", "fedora": "RedHat"}
_PKG = {"apt-get": "apt", "dnf": "dnf", "yum": "yum", "zypper": "zypper", "apk": "apk"}


def parse_facts(text: str) -> dict[str, Any]:
    """The snippet's output -> Ansible-named facts plus ``nvidia_gpu_present``/``secure_boot``."""
    raw: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            raw[key] = value.strip().strip('"')
    os_id = raw.get("id", "").lower()
    family = _FAMILIES.get(os_id)
    if family is None:
        for like in raw.get("id_like", "").lower().split():
            if like in _FAMILIES:
                family = _FAMILIES[like]
                break
    sb = raw.get("sb", "unknown")
    secure_boot = {"1": "enabled", "0": "disabled", "bios": "not supported (BIOS)"}.get(sb, sb)
    init = raw.get("init", "")
    return {
        "ansible_distribution": _DISTRIBUTIONS.get(os_id, os_id.capitalize() or "unknown"),
        "ansible_distribution_version": raw.get("version_id", ""),
        "ansible_distribution_release": raw.get("codename", ""),
        "ansible_os_family": family or "unknown",
        "ansible_architecture": raw.get("arch", ""),
        "ansible_kernel": raw.get("kernel", ""),
        "ansible_hostname": raw.get("hostname", ""),
        "ansible_service_mgr": "systemd" if init == "systemd" else init or "unknown",
        "ansible_pkg_mgr": _PKG.get(raw.get("pkg", ""), "unknown"),
        "nvidia_gpu_present": raw.get("gpu") == "1",
        "secure_boot": secure_boot,
    }
