"""Host facts in one snippet: OS, version, architecture, kernel, init, GPU, Secure Boot, packages.

The snippet rides along with the first batched state read of a host, so facts cost no extra
round trip. Parsing is pure and tolerant: a missing tool gives an "unknown" value, never a failure.
"""

from __future__ import annotations

import base64
import configparser
import ipaddress
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

# efivar SecureBoot-<EFI global variable GUID>: 4 attribute bytes, then 1 byte: 1 = enabled.
_SB_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

# One snippet, few processes: it runs on every host at the start of every play that gathers
# facts, so files are read with the shell's `read` and one awk, not a process per file (a
# workstation has dozens of PCI devices). Processes: uname, awk, date, ip, base64.
_PROC_AWK = (
    "awk -F': *' '"
    'FILENAME == "/proc/self/status" { if ($1 == "Uid") { split($2, a, " "); uid = a[1] } '
    'if ($1 == "Cpus_allowed_list") allowed = $2; next } '
    'FILENAME == "/proc/uptime" { split($0, u, " "); up = u[1]; next } '
    'FILENAME == "/proc/net/route" { split($0, r, "\t"); '
    'if (r[2] == "00000000" && r[8] == "00000000" && dev == "") { dev = r[1]; gw = r[3] } next } '
    'FILENAME == "/etc/passwd" { split($0, p, ":"); if (p[3] == uid && pw == "") pw = $0; next } '
    "/^processor/ {n++} /^physical id/ {s[$2]=1} /^cpu cores/ {c=$2} /^siblings/ {t=$2} "
    "/^MemTotal/ {m=$2} /^MemFree/ {f=$2} "
    "END { k = 0; for (i in s) k++; "
    'print "cpus=" n; print "sockets=" k; print "cores=" c; print "siblings=" t; '
    'print "allowed=" allowed; print "memtotal=" m+0; print "memfree=" f+0; '
    'print "uptime=" up; if (dev != "") { print "route_dev=" dev; print "route_gw=" gw } '
    # a directory user (LDAP, sssd) is not in /etc/passwd: ask NSS for that one
    'if (pw != "") print "passwd=" pw; else if (uid != "") { printf "passwd="; fflush(); '
    'system("getent passwd " uid) } }'
    "' /proc/self/status /proc/cpuinfo /proc/meminfo /proc/uptime /proc/net/route /etc/passwd"
)

FACTS_SCRIPT = "\n".join(
    [
        "if [ -r /etc/os-release ]; then . /etc/os-release; fi",
        'echo "id=${ID:-}"; echo "id_like=${ID_LIKE:-}"; echo "version_id=${VERSION_ID:-}"',
        'echo "codename=${VERSION_CODENAME:-}"; echo "name=${NAME:-}"',
        'echo "pretty=${PRETTY_NAME:-}"',
        # uname -snrm: four words (the kernel's build string has spaces: read from /proc)
        'set -- $(uname -snrm); echo "system=$1"; echo "hostname=$2"; echo "kernel=$3"',
        'echo "arch=$4"',
        'if read -r v < /proc/sys/kernel/version; then echo "kernel_version=$v"; fi',
        # Debian's point release (12.11) is ansible_distribution_version there, not VERSION_ID
        "if [ -r /etc/debian_version ] && read -r v < /etc/debian_version; then "
        'echo "debian_version=$v"; fi',
        # ansible_lsb: lsb_release's answer where it is installed (Ubuntu's reads lsb-release)
        "if [ -r /etc/lsb-release ]; then sed -n 's/^DISTRIB_\\([A-Z]*\\)=/lsb_\\1=/p' "
        "/etc/lsb-release; elif command -v lsb_release >/dev/null 2>&1; then echo lsb=os; fi",
        _PROC_AWK,
        "echo \"date=$(date '+%s %z %Z %A %w %W %j')\"",
        "if command -v ip >/dev/null 2>&1; then",
        "  ip -4 -o addr 2>/dev/null | while read -r _ dev _ addr _; do "
        'echo "inet=$dev $addr"; done',
        "fi",
        'echo "env=$(base64 -w0 /proc/$$/environ)"',
        'for f in /etc/ansible/facts.d/*.fact; do [ -f "$f" ] || continue; '
        'if [ -x "$f" ]; then v=$("$f" 2>/dev/null); else v=$(cat "$f"); fi; '
        'echo "local=$(basename "$f" .fact) $(printf %s "$v" | base64 -w0)"; done',
        'if read -r v < /proc/1/comm; then echo "init=$v"; fi',
        "gpu=0; for d in /sys/bus/pci/devices/*; do",
        '  read -r v < "$d/vendor" 2>/dev/null && [ "$v" = 0x10de ] || continue',
        '  read -r v < "$d/class" 2>/dev/null && case "$v" in 0x03*) gpu=1 ;; esac',
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
    many: dict[str, list[str]] = {}  # keys printed once per item (inet=, local=, lsb_*)
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            raw[key] = value.strip().strip('"')
            many.setdefault(key, []).append(value.strip())
    return {**_os_facts(raw), **_system_facts(raw, many)}


def _os_facts(raw: dict[str, str]) -> dict[str, Any]:
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
    version = raw.get("version_id", "")
    if os_id == "debian" and re.fullmatch(r"\d+(\.\d+)*", raw.get("debian_version", "")):
        version = raw["debian_version"]  # Ansible's Debian version: /etc/debian_version (12.11)
    return {
        "ansible_distribution": _DISTRIBUTIONS.get(os_id, os_id.capitalize() or "unknown"),
        "ansible_distribution_version": version,
        "ansible_distribution_major_version": version.split(".")[0] if version else "",
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


def _system_facts(raw: dict[str, str], many: dict[str, list[str]]) -> dict[str, Any]:
    """The other facts real roles read, named and shaped as Ansible's setup module returns
    them (ansible/module_utils/facts/: system/lsb.py, system/platform.py, system/user.py,
    system/date_time.py, system/env.py, system/local.py, hardware/linux.py, network/linux.py);
    a fact whose source is missing is left out, never invented."""
    out: dict[str, Any] = {}
    if "system" in raw:
        out["ansible_system"] = raw["system"]
        out["ansible_machine"] = raw.get("arch", "")
        out["ansible_nodename"] = raw.get("hostname", "")
        out["ansible_kernel_version"] = raw.get("kernel_version", "")
        out["ansible_hostname"] = raw.get("hostname", "").split(".")[0]
    if _FAMILIES.get(raw.get("id", "").lower()) == "Debian":
        out["ansible_distribution_file_variety"] = "Debian"
    out["ansible_lsb"] = _lsb(raw, many)
    out.update(_cpu_memory(raw))
    out.update(_user(raw.get("passwd", "")))
    if raw.get("uptime"):
        out["ansible_uptime_seconds"] = int(float(raw["uptime"]))
    if raw.get("date"):
        out["ansible_date_time"] = _date_time(raw["date"])
    out.update(_network(raw, many.get("inet", [])))
    if "env" in raw:
        out["ansible_env"] = _environment(raw["env"])
    out["ansible_local"] = _local(many.get("local", []))
    return {k: v for k, v in out.items() if v is not None}


def _lsb(raw: dict[str, str], many: dict[str, list[str]]) -> dict[str, str]:
    """/etc/lsb-release (Ubuntu); where only lsb_release is installed (Debian's lsb-release
    package), what it prints, which it takes from os-release; else nothing, as Ansible."""
    if "lsb_ID" in raw:
        out = {
            "id": raw["lsb_ID"],
            "release": raw.get("lsb_RELEASE", ""),
            "codename": raw.get("lsb_CODENAME", ""),
            "description": raw.get("lsb_DESCRIPTION", ""),
        }
    elif raw.get("lsb") == "os":
        out = {
            "id": raw.get("name", "").split()[0] if raw.get("name") else "",
            "release": raw.get("version_id", ""),
            "codename": raw.get("codename", ""),
            "description": raw.get("pretty", ""),
        }
    else:
        return {}
    out["major_release"] = out["release"].split(".")[0]
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def _cpu_memory(raw: dict[str, str]) -> dict[str, Any]:
    """Ansible's Linux hardware facts: sockets, cores and threads from /proc/cpuinfo (no
    ``physical id``, as on ARM: one core per listed processor), memory in MB from meminfo."""
    cpus, sockets = _int(raw.get("cpus")), _int(raw.get("sockets"))
    if cpus is None:
        return {}
    if sockets:
        cores = _int(raw.get("cores")) or 1
        threads = max((_int(raw.get("siblings")) or cores) // cores, 1)
        count = sockets
    else:
        count, cores, threads = cpus, 1, 1
    out: dict[str, Any] = {
        "ansible_processor_count": count,
        "ansible_processor_cores": cores,
        "ansible_processor_threads_per_core": threads,
        "ansible_processor_vcpus": threads * cores * count,
        "ansible_processor_nproc": _cpu_list(raw.get("allowed", "")) or cpus,
    }
    for key in ("memtotal", "memfree"):
        kb = _int(raw.get(key))
        if kb:
            out[f"ansible_{key}_mb"] = kb // 1024
    return out


def _user(passwd: str) -> dict[str, Any]:
    fields = passwd.split(":")
    if len(fields) < 7:
        return {}
    return {
        "ansible_user_id": fields[0],
        "ansible_user_uid": _int(fields[2]),
        "ansible_user_gid": _int(fields[3]),
        "ansible_user_gecos": fields[4],
        "ansible_user_dir": fields[5],
        "ansible_user_shell": fields[6],
    }


def _date_time(text: str) -> dict[str, str] | None:
    """``date '+%s %z %Z %A %w %W %j'`` -> Ansible's ``date_time`` (the host's local time; the
    iso8601 forms in UTC, as Ansible's are)."""
    words = text.split()
    if len(words) < 6 or not words[0].isdigit():
        return None
    epoch, offset, zone, weekday, weekday_number, weeknumber = words[:6]
    sign = -1 if offset.startswith("-") else 1
    delta = timedelta(hours=int(offset[1:3] or 0), minutes=int(offset[3:5] or 0)) * sign
    utc = datetime.fromtimestamp(int(epoch), timezone.utc)
    local = utc.astimezone(timezone(delta))
    return {
        "date": local.strftime("%Y-%m-%d"),
        "day": local.strftime("%d"),
        "epoch": epoch,
        "epoch_int": epoch,
        "hour": local.strftime("%H"),
        "iso8601": utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "iso8601_basic_short": local.strftime("%Y%m%dT%H%M%S"),
        "minute": local.strftime("%M"),
        "month": local.strftime("%m"),
        "second": local.strftime("%S"),
        "time": local.strftime("%H:%M:%S"),
        "tz": zone,
        "tz_offset": offset,
        "weekday": weekday,
        "weekday_number": weekday_number,
        "weeknumber": weeknumber,
        "year": local.strftime("%Y"),
    }


def _network(raw: dict[str, str], inets: list[str]) -> dict[str, Any]:
    """The default route (/proc/net/route: its interface and gateway) and ``ip -4 -o addr``
    -> ``default_ipv4`` (its address: the interface's first) and ``all_ipv4_addresses``
    (loopback left out)."""
    if not inets and "route_dev" not in raw:
        return {}
    listed = _interfaces(inets)
    addresses: dict[str, ipaddress.IPv4Interface] = {}
    for dev, listed_iface in listed:
        addresses.setdefault(dev, listed_iface)  # an interface's first address
    out: dict[str, Any] = {
        "ansible_all_ipv4_addresses": [str(i.ip) for _, i in listed if not i.ip.is_loopback]
    }
    route_dev = raw.get("route_dev")
    if route_dev:
        default: dict[str, Any] = {"interface": route_dev, "alias": route_dev}
        gateway = _route_address(raw.get("route_gw", ""))
        if gateway is not None:
            default["gateway"] = gateway
        iface = addresses.get(route_dev)
        if iface is not None:
            default.update(
                address=str(iface.ip),
                netmask=str(iface.netmask),
                network=str(iface.network.network_address),
                prefix=str(iface.network.prefixlen),
                broadcast=str(iface.network.broadcast_address),
            )
        out["ansible_default_ipv4"] = default
    return out


def _route_address(hex_text: str) -> str | None:
    """/proc/net/route's gateway: 8 hex digits of the address in the host's (little-endian)
    byte order; 0.0.0.0 (an on-link route) is none."""
    try:
        number = int(hex_text, 16)
    except ValueError:
        return None
    address = ".".join(str((number >> shift) & 0xFF) for shift in (0, 8, 16, 24))
    return None if address == "0.0.0.0" else address


def _cpu_list(text: str) -> int | None:
    """``Cpus_allowed_list`` (``0-3,8``) -> how many CPUs: Ansible's processor_nproc, the
    scheduler affinity's size."""
    count = 0
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        count += int(high) - int(low) + 1 if high else 1
    return count or None


def _interfaces(inets: list[str]) -> list[tuple[str, ipaddress.IPv4Interface]]:
    """``inet=DEV ADDR/PREFIX`` lines -> (device, interface), in ``ip``'s order."""
    out = []
    for line in inets:
        dev, _, cidr = line.partition(" ")
        try:
            out.append((dev, ipaddress.IPv4Interface(cidr.strip())))
        except ValueError:
            continue
    return out


def _environment(encoded: str) -> dict[str, str]:
    try:
        data = base64.b64decode(encoded).decode("utf-8", "replace")
    except ValueError:
        return {}
    out = {}
    for item in data.split("\0"):
        key, sep, value = item.partition("=")
        if sep and key:
            out[key] = value
    return out


def _local(items: list[str]) -> dict[str, Any]:
    """/etc/ansible/facts.d/NAME.fact -> ``ansible_local.NAME``: JSON, else INI sections (the
    output when the file is executable), as Ansible's local facts are read."""
    out: dict[str, Any] = {}
    for item in items:
        name, _, encoded = item.partition(" ")
        try:
            text = base64.b64decode(encoded).decode("utf-8", "replace")
        except ValueError:
            continue
        try:
            out[name] = json.loads(text)
            continue
        except ValueError:
            pass
        parser = configparser.ConfigParser()
        try:
            parser.read_string(text)
        except configparser.Error:
            out[name] = f"error loading facts as JSON or ini - please check content: {name}"
            continue
        out[name] = {section: dict(parser.items(section)) for section in parser.sections()}
    return out
