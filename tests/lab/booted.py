"""Full lab hosts: booted Debian 12 containers (systemd-nspawn) for apply, reboot and Docker tests.

Light sshd hosts share the machine's filesystem and processes, so anything that changes a system
(apt, systemd units, reboots, dockerd) needs a host of its own. Each host here is a real Debian
bookworm with systemd as PID 1, booted from a shared, cached base root filesystem through its own
overlayfs copy-on-write layer, reachable over real OpenSSH on 127.0.2.N:22. See
docs/lab-recipe.md section 2 (in the shared docs) for why the nspawn flags are what they are.

Stand-in hardware (``BootedLab.start(..., gpus=[("0000:01:00.0", "0x2330")])``, see StandinSys):
fake NVIDIA GPUs in /sys/bus/pci/devices and a writable /sys/module whose ``nvidia/`` folder is
empty at every boot; the stand-in driver packages (tests/lab/standin_debs.py) "load" the module.

Layout on the machine:
- BASE_DIR/root: the debootstrap result, built once; BASE_DIR/stamp.json is written only after a
  successful build, so a crashed build is redone; BASE_LOCK serialises builds across processes.
- STATE_DIR/<name>.json: one record per running host (owner process, nspawn pid, temp dir,
  overlay mount) so that a later run cleans up after a crashed one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provision.shell import join
from tests.conftest import need_binary, need_root

CACHE_DIR = Path(os.environ.get("PROVISION_LAB_CACHE", "/var/cache/provision-lab"))
BASE_DIR = CACHE_DIR / "bookworm-base"
BASE_LOCK = CACHE_DIR / "bookworm-base.lock"
STATE_DIR = Path(os.environ.get("PROVISION_LAB_STATE", "/run/provision-lab/booted"))
STATE_LOCK = STATE_DIR / ".lock"
TMP_PREFIX = "provision-lab-booted-"

SUITE = "bookworm"
# Small on purpose: the apply tests install what they need; these are what almost every apply
# test touches (python3 for remote helpers, sudo for become, procps/kmod/gpg for dpkg-lock
# holders, module blacklists and repository keys).
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "procps",
    "kmod",
    "gpg",
)
# Units that would make tests flaky (apt-daily takes the dpkg lock at random) or only slow boot.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-pstore.service",
)

LAB_USER = "labuser"
LAB_PASSWORD = "lab-sudo-pass"  # a throwaway test credential, known to the become tests
FIRST_OCTET = 10
NSPAWN_REBOOT_STATUS = 133
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# dockerd inside a lab host: no netfilter rights, read-only /proc/sys (ip_forward stays as the
# machine has it; without "ip-forward": false dockerd dies when it is 0), no overlay-on-overlay.
LAB_DOCKER_DAEMON_JSON = {
    "iptables": False,
    "ip6tables": False,
    "ip-forward": False,
    "bridge": "none",
    "storage-driver": "vfs",
}


class LabError(RuntimeError):
    """The lab could not be built or a host did not behave (a test-harness failure)."""


# --------------------------------------------------------------------------------------------
# Mirror discovery (pure parsing + a small reader)


def parse_mirror(files: Sequence[tuple[str, str]], suite: str = SUITE) -> str | None:
    """Return the Debian mirror URI that serves `suite` from apt configuration texts.

    `files` holds (file name, text) pairs: deb822 `.sources` files and one-line `.list` files.
    The mirror is the machine's own (a site may only reach its proxy), never a fixed host name.
    """
    for name, text in files:
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = _deb822_fields(stanza)
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" not in fields.get("types", "").split():
                    continue
                if suite in fields.get("suites", "").split():
                    uris = fields.get("uris", "").split()
                    if uris:
                        return uris[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if not words or words[0] != "deb":
                    continue
                words = words[1:]
                if words and words[0].startswith("["):
                    while words and not words[0].endswith("]"):
                        words = words[1:]
                    words = words[1:]
                if len(words) >= 2 and words[1] == suite:
                    return words[0].rstrip("/")
    return None


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith("#"):
            continue
        if line[:1] in (" ", "\t") and key:
            fields[key] += " " + line.strip()
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


def machine_mirror(etc_apt: Path = Path("/etc/apt"), suite: str = SUITE) -> str:
    """The mirror this machine's apt uses for `suite`; LabError when there is none."""
    files: list[tuple[str, str]] = []
    main_list = etc_apt / "sources.list"
    candidates = sorted((etc_apt / "sources.list.d").glob("*.sources")) + sorted(
        (etc_apt / "sources.list.d").glob("*.list")
    )
    for path in [main_list, *candidates]:
        with contextlib.suppress(OSError):
            files.append((path.name, path.read_text()))
    mirror = parse_mirror(files, suite)
    if mirror is None:
        raise LabError(f"no apt source for suite {suite!r} under {etc_apt}")
    return mirror


# --------------------------------------------------------------------------------------------
# Base root filesystem


@dataclass(frozen=True)
class BaseImage:
    root: Path
    built_now: bool
    build_seconds: float


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _base_recipe(mirror: str) -> dict[str, object]:
    return {
        "suite": SUITE,
        "packages": list(BASE_PACKAGES),
        "masked": list(MASKED_UNITS),
        "user": LAB_USER,
        "mirror": mirror,
        "version": 1,
    }


def ensure_base(base_dir: Path = BASE_DIR, lock: Path = BASE_LOCK) -> BaseImage:
    """Build the cached base root once (about 45-60 s); later calls return at once.

    The stamp records the recipe, so changing the package list rebuilds; a build that crashed
    left no stamp and is redone from scratch.
    """
    mirror = machine_mirror()
    recipe = _base_recipe(mirror)
    stamp = base_dir / "stamp.json"
    root = base_dir / "root"
    with _locked(lock):
        with contextlib.suppress(OSError, ValueError):
            recorded = json.loads(stamp.read_text())
            if recorded.get("recipe") == recipe and (root / "usr/lib/systemd/systemd").exists():
                return BaseImage(root, False, float(recorded.get("build_seconds", 0.0)))
        started = time.monotonic()
        stamp.unlink(missing_ok=True)
        building = base_dir / "root.building"
        for old in (building, root):
            _clear_dir(old)
        base_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(BASE_PACKAGES),
            SUITE,
            str(building),
            mirror,
        ]
        log = base_dir / "debootstrap.log"
        with open(log, "w") as out:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            tail = log.read_text()[-2000:]
            raise LabError(f"debootstrap failed ({done.returncode}), see {log}:\n{tail}")
        _prepare_base(building)
        building.rename(root)
        seconds = time.monotonic() - started
        stamp.write_text(json.dumps({"recipe": recipe, "build_seconds": seconds}))
        return BaseImage(root, True, seconds)


def _prepare_base(root: Path) -> None:
    """Make the base suitable for many hosts: no shared host keys, a sudo user, quiet timers."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    units = root / "etc/systemd/system"
    for unit in MASKED_UNITS:
        for wants in units.glob(f"*.wants/{unit}"):
            wants.unlink()
        target = units / unit
        target.unlink(missing_ok=True)
        target.symlink_to("/dev/null")
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
    subprocess.run(
        ["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", LAB_USER],
        check=True,
        env=env,
    )
    # The password goes on stdin, never in argv.
    subprocess.run(
        ["chroot", str(root), "chpasswd"],
        input=f"{LAB_USER}:{LAB_PASSWORD}\n",
        text=True,
        check=True,
        env=env,
    )
    subprocess.run(["chroot", str(root), "apt-get", "clean"], check=True, env=env)


# --------------------------------------------------------------------------------------------
# Process and mount helpers


def _proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks: tells a live process from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts if len(line.split()) > 1)


def _umount(path: Path) -> None:
    for _ in range(20):
        if not _is_mounted(path):
            return
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            continue
        time.sleep(0.2)
    if _is_mounted(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    return [p for p in points if p == str(path) or p.startswith(prefix)]


def _clear_dir(path: Path) -> None:
    """Remove a (possibly half-built) root safely.

    A killed debootstrap leaves its processes running and /proc, /sys or /dev mounted inside the
    target; removing the tree through such a mount would delete the machine's own files.
    """
    if not path.exists():
        return
    text = str(path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError):
            root = os.readlink(f"/proc/{pid}/root")
            inside = [root, *_cmdline(pid)]
            if any(item == text or item.startswith(text + "/") for item in inside):
                _kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5)
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        _umount(Path(point))
    if _mounts_under(path):
        raise LabError(f"cannot remove {path}: still mounted: {_mounts_under(path)}")
    shutil.rmtree(path)


def _kill(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _proc_start_time(pid) is None:
            return True
        time.sleep(0.05)
    return _proc_start_time(pid) is None


# --------------------------------------------------------------------------------------------
# State records and crash cleanup


def _record_path(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def _records() -> list[dict[str, object]]:
    records = []
    for path in sorted(STATE_DIR.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            records.append(json.loads(path.read_text()))
    return records


def _owner_alive(record: dict[str, Any]) -> bool:  # a JSON state record
    pid = int(record.get("owner_pid", 0) or 0)
    return pid > 0 and _proc_start_time(pid) == record.get("owner_start")


def _owner() -> dict[str, object]:
    return {"owner_pid": os.getpid(), "owner_start": _proc_start_time(os.getpid())}


def _destroy(record: dict[str, Any]) -> None:
    """Kill a host's processes, unmount its overlay and remove its files (idempotent)."""
    merged = str(record.get("merged", ""))
    nspawn_pids = [int(record["nspawn_pid"])] if record.get("nspawn_pid") else []
    for entry in Path("/proc").iterdir():  # also catch an nspawn started after the record
        if entry.name.isdigit():
            argv = _cmdline(int(entry.name))
            if argv and argv[0].endswith("systemd-nspawn") and merged and merged in argv:
                nspawn_pids.append(int(entry.name))
    for pid in set(nspawn_pids):
        argv = _cmdline(pid)
        if not argv or not argv[0].endswith("systemd-nspawn") or merged not in argv:
            continue  # the pid was reused by something else
        for child in _children(pid):  # killing PID 1 of the container ends everything in it
            _kill(child, signal.SIGKILL)
        _kill(pid, signal.SIGKILL)
        _wait_gone(pid, 10)
    if merged:
        _umount(Path(merged))
    # nspawn's per-machine propagation folder, left behind when nspawn itself was killed.
    propagate = Path("/run/systemd/nspawn/propagate") / str(record.get("name"))
    if record.get("name") and propagate.is_dir() and not _is_mounted(propagate):
        shutil.rmtree(propagate, ignore_errors=True)
    tmpdir = str(record.get("tmpdir", ""))
    if tmpdir and Path(tmpdir).name.startswith(TMP_PREFIX):
        shutil.rmtree(tmpdir, ignore_errors=True)
    _record_path(str(record.get("name"))).unlink(missing_ok=True)


def cleanup_stale() -> int:
    """Undo what a crashed earlier run left: its containers, overlay mounts and temp dirs.

    Returns how many stale hosts were cleaned. Hosts of a live process are left alone, so two
    test processes can share the machine.
    """
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    cleaned = 0
    with _locked(STATE_LOCK):
        live_merged = set()
        for record in _records():
            if _owner_alive(record):
                live_merged.add(str(record.get("merged")))
                continue
            _destroy(record)
            cleaned += 1
        # Client key folders of dead runs (they hold no mount, only a key and an owner file).
        for folder in Path(tempfile.gettempdir()).glob(TMP_PREFIX + "client-*"):
            with contextlib.suppress(OSError, ValueError):
                owner = json.loads((folder / "owner.json").read_text())
                if _owner_alive(owner):
                    continue
            shutil.rmtree(folder, ignore_errors=True)
        # Overlays of this harness with no record (crash between mount and record write).
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts if len(line.split()) > 1]
        for point in points:
            if f"/{TMP_PREFIX}" in point and point.endswith("/merged") and point not in live_merged:
                _umount(Path(point))
                if not _is_mounted(Path(point)):
                    shutil.rmtree(Path(point).parent, ignore_errors=True)
                cleaned += 1
    return cleaned


# --------------------------------------------------------------------------------------------
# Stand-in hardware: fake NVIDIA GPUs on the PCI bus, a writable /sys/module

NVIDIA_PCI_VENDOR = "0x10de"
PCI_CLASS_3D = "0x030200"  # 3D controller: what data-centre GPUs (H100, A100) report
# An NVSwitch of an HGX board is an NVIDIA PCI function of class "bridge, other" (0x0680); its
# device id from the PCI ID database (Debian package pci.ids, /usr/share/misc/pci.ids).
NVSWITCH_DEVICE = "0x1af1"  # GA100 [A100 NVSwitch]
PCI_CLASS_BRIDGE = "0x068000"
_SLOT_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_DEVICE_RE = re.compile(r"^0x[0-9a-f]{4}$")


def check_gpus(gpus: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Validate (PCI slot, device id) pairs like ("0000:01:00.0", "0x2330"); lower-cased."""
    out = []
    for slot, device in gpus:
        slot, device = slot.lower(), device.lower()
        if not _SLOT_RE.match(slot) or not _DEVICE_RE.match(device):
            raise LabError(f"bad stand-in GPU {(slot, device)!r}: want ('0000:01:00.0', '0x2330')")
        out.append((slot, device))
    return tuple(out)


def _nouveau_blacklisted(root: Path) -> bool:
    """Whether modprobe.d in the host's root blacklists nouveau (the stand-in ignores initramfs)."""
    for folder in ("etc/modprobe.d", "lib/modprobe.d", "usr/lib/modprobe.d"):
        for conf in sorted((root / folder).glob("*.conf")):
            with contextlib.suppress(OSError):
                for line in conf.read_text(errors="replace").splitlines():
                    if line.split("#", 1)[0].split() == ["blacklist", "nouveau"]:
                        return True
    return False


@dataclass(frozen=True)
class StandinSys:
    """STAND-IN sysfs folders on the machine, bound into a booted host by systemd-nspawn.

    Real /sys inside the container is read-only and shows the machine's (GPU-less) devices, so a
    host with stand-in hardware gets, at every boot:
    - ``pci_devices`` bound READ-ONLY over /sys/bus/pci/devices: one folder per fake GPU holding
      ``vendor`` (0x10de), ``device`` and ``class`` (0x030200), as the kernel shows them (the
      machine's real devices are hidden there);
    - ``modules`` bound WRITABLE over /sys/module, holding an EMPTY ``nvidia/`` folder: "no
      nvidia module loaded" after a fresh boot. The stand-in driver package's boot unit writes
      ``nvidia/version`` (the kernel loading the module); the NVML stand-in reads it. With
      ``nouveau`` it also holds ``nouveau/`` (nouveau loaded), which the stand-in driver's unit
      respects like the real module (nvidia does not load while nouveau holds the GPU).
    Only the stand-in folders are visible under /sys/module (nothing in provision or the lab
    reads other modules there; /proc/modules stays the machine's).
    """

    root: Path

    @property
    def pci_devices(self) -> Path:
        return self.root / "pci-devices"

    @property
    def modules(self) -> Path:
        return self.root / "module"

    def reset(self, gpus: Sequence[tuple[str, str]], nouveau: bool = False) -> None:
        """Rebuild the folders for a fresh boot (called by the boot supervisor)."""
        shutil.rmtree(self.pci_devices, ignore_errors=True)
        shutil.rmtree(self.modules, ignore_errors=True)
        self.pci_devices.mkdir(parents=True)
        for slot, device in check_gpus(gpus):
            dev = self.pci_devices / slot
            dev.mkdir()
            for name, value in (
                ("vendor", NVIDIA_PCI_VENDOR),
                ("device", device),
                ("class", PCI_CLASS_BRIDGE if device == NVSWITCH_DEVICE else PCI_CLASS_3D),
                ("subsystem_vendor", NVIDIA_PCI_VENDOR),
            ):
                (dev / name).write_text(value + "\n")
        (self.modules / "nvidia").mkdir(parents=True)
        if nouveau:
            (self.modules / "nouveau").mkdir()
            (self.modules / "nouveau" / "initstate").write_text("live\n")

    def loaded_nvidia_version(self) -> str:
        """What the stand-in module reports as loaded ("" when not loaded)."""
        with contextlib.suppress(OSError):
            return (self.modules / "nvidia" / "version").read_text().strip()
        return ""


# --------------------------------------------------------------------------------------------
# One booted host


@dataclass
class BootedHost:
    """A booted container: SSH details for the code under test, nsenter access for assertions."""

    name: str
    address: str
    key_path: Path
    known_hosts_path: Path
    tmpdir: Path
    port: int = 22
    user: str = "root"
    sudo_user: str = LAB_USER
    sudo_password: str = LAB_PASSWORD
    boot_seconds: float = 0.0
    boots: int = 0  # completed boots: 1 after start, +1 per reboot
    # False: a reboot inside leaves the host down (fault tests: "a reboot that never comes back").
    restart_on_reboot: bool = True
    exit_statuses: list[int] = field(default_factory=list)
    # STAND-IN hardware (see StandinSys): fake NVIDIA GPUs on the PCI bus as (slot, device id),
    # e.g. (("0000:01:00.0", "0x2330"),), and a nouveau module "loaded" at boot unless blacklisted.
    gpus: tuple[tuple[str, str], ...] = ()
    standin_nouveau: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _stopping: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _record: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def merged(self) -> Path:
        return self.tmpdir / "merged"

    @property
    def log_path(self) -> Path:
        return self.tmpdir / "nspawn.log"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- boot supervisor ---------------------------------------------------------------------

    def _nspawn_argv(self) -> list[str]:
        return [
            "systemd-nspawn",
            "--register=no",
            "--keep-unit",
            "-D",
            str(self.merged),
            "-M",
            self.name,
            "-b",
            "--console=pipe",
            *self._standin_sys_argv(),
        ]

    # -- stand-in hardware -------------------------------------------------------------------

    @property
    def uses_standin_sys(self) -> bool:
        """True when this host sees stand-in sysfs folders instead of the machine's."""
        return bool(self.gpus) or self.standin_nouveau

    @property
    def standin_sys(self) -> StandinSys:
        return StandinSys(self.tmpdir / "standin-sys")

    def _standin_sys_argv(self) -> list[str]:
        if not self.uses_standin_sys:
            return []
        sysdir = self.standin_sys
        return [
            f"--bind-ro={sysdir.pci_devices}:/sys/bus/pci/devices",
            f"--bind={sysdir.modules}:/sys/module",
        ]

    def _reset_standin_sys(self) -> None:
        """Before every boot: the PCI devices as configured, no nvidia module loaded."""
        if self.uses_standin_sys:
            self.standin_sys.reset(
                self.gpus, nouveau=self.standin_nouveau and not _nouveau_blacklisted(self.merged)
            )

    def _supervise(self) -> None:
        """Boot, and boot again whenever the container rebooted itself (nspawn status 133)."""
        while True:
            with open(self.log_path, "ab") as log, self._lock:
                if self._stopping:
                    return
                self._reset_standin_sys()
                self._proc = subprocess.Popen(
                    self._nspawn_argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
                )
                self._record["nspawn_pid"] = self._proc.pid
                _write_record(self._record)
            status = self._proc.wait()
            self.exit_statuses.append(status)
            if status != NSPAWN_REBOOT_STATUS or self._stopping or not self.restart_on_reboot:
                return

    def start(self, timeout: float = 90.0) -> float:
        """Boot (again, after a poweroff or kill: the disk is kept) and wait until ready."""
        if self.running:
            raise LabError(f"{self.name}: already running")
        self._stopping = False
        self._thread = threading.Thread(target=self._supervise, name=f"nspawn-{self.name}")
        self._thread.daemon = True
        started = time.monotonic()
        self._thread.start()
        self.wait_ready(timeout)
        self.boot_seconds = time.monotonic() - started
        return self.boot_seconds

    # -- inside access -----------------------------------------------------------------------

    def leader_pid(self) -> int:
        """PID (on the machine) of the container's systemd: the nspawn child named systemd."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise LabError(f"{self.name}: not running")
        for child in _children(proc.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return child
        raise LabError(f"{self.name}: container init not found yet")

    def exec(
        self, command: str, *, check: bool = True, timeout: float = 120.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` with sh inside the container, without SSH (for test assertions)."""
        argv = ["nsenter", "-t", str(self.leader_pid()), "-a", "-r", "-w", "--", "/bin/sh", "-c"]
        done = subprocess.run(
            [*argv, command],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"},
            check=False,
        )
        if check and done.returncode != 0:
            raise LabError(
                f"{self.name}: {command!r} exited {done.returncode}: {done.stderr.strip()[-500:]}"
            )
        return done

    def boot_id(self) -> str:
        return self.exec("cat /proc/sys/kernel/random/boot_id").stdout.strip()

    def ssh_argv(self, command: str | Sequence[str] | None = None) -> list[str]:
        """The real OpenSSH client command line for this host (strict host key checking)."""
        argv = [
            "ssh",
            "-i",
            str(self.key_path),
            "-p",
            str(self.port),
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            f"{self.user}@{self.address}",
        ]
        if command is not None:
            argv.append(command if isinstance(command, str) else join(command))
        return argv

    # -- readiness ---------------------------------------------------------------------------

    def _system_state(self) -> str:
        try:
            return self.exec("systemctl is-system-running", check=False, timeout=10).stdout.strip()
        except (LabError, subprocess.TimeoutExpired):
            return ""

    def _sshd_answers(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=2) as conn:
                conn.settimeout(2)
                return conn.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until systemd says running (or degraded) and sshd sends its banner."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if not self.running:
                raise LabError(
                    f"{self.name}: nspawn exited {self.exit_statuses}; log:\n{self._log_tail()}"
                )
            state = self._system_state()
            if state in ("running", "degraded") and self._sshd_answers():
                self.boots = len(self.exit_statuses) + 1
                return
            time.sleep(0.2)
        raise LabError(f"{self.name}: not ready after {timeout:.0f} s (state {state!r})")

    def wait_rebooted(self, old_boot_id: str, timeout: float = 90.0) -> float:
        """After a reboot was triggered: wait for a new boot with a new boot id; seconds taken."""
        started = time.monotonic()
        boots_before = (
            self.boots - 1
        )  # exits seen when it was last ready: no race with a fast reboot
        deadline = started + timeout
        while time.monotonic() < deadline:
            if len(self.exit_statuses) > boots_before or not self.running:
                break
            time.sleep(0.05)
        else:
            raise LabError(f"{self.name}: did not go down within {timeout:.0f} s")
        self.wait_ready(max(1.0, deadline - time.monotonic()))
        new_id = self.boot_id()
        if new_id == old_boot_id:
            raise LabError(f"{self.name}: came back with the same boot id {new_id}")
        return time.monotonic() - started

    def reboot(self, timeout: float = 90.0) -> float:
        """Reboot from inside and wait for the new boot; seconds for the round trip."""
        old = self.boot_id()
        self.exec("systemctl reboot --no-block")
        return self.wait_rebooted(old, timeout)

    def kill(self) -> None:
        """Make the host vanish at once, like a power cut (fault tests); start() boots it again."""
        with self._lock:
            self._stopping = True
        with contextlib.suppress(LabError):
            _kill(self.leader_pid(), signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
        if self._thread is not None:
            self._thread.join(5)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    # -- teardown ----------------------------------------------------------------------------

    def stop(self, timeout: float = 20.0) -> None:
        """Power off (killing after `timeout`), unmount the overlay and remove the host's files."""
        with self._lock:
            self._stopping = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(LabError, subprocess.TimeoutExpired):
                self.exec("systemctl poweroff --no-block", check=False, timeout=10)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill(proc.pid, signal.SIGTERM)  # nspawn asks the container to power off
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        if self._thread is not None:
            self._thread.join(5)
        with _locked(STATE_LOCK):
            _destroy(self._record)  # kills whatever is left, unmounts, removes files and record


def _write_record(record: dict[str, object]) -> None:
    path = _record_path(str(record["name"]))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.rename(path)


# --------------------------------------------------------------------------------------------
# A set of hosts


def _ssh_keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


class BootedLab:
    """Boots N hosts in parallel from the cached base and tears all of them down."""

    def __init__(self) -> None:
        self.hosts: list[BootedHost] = []
        self.base: BaseImage | None = None
        # Under the lock cleanup_stale sweeps with: another worker's sweep must never see
        # this folder before its owner file (it would remove it as a dead run's).
        with _locked(STATE_LOCK):
            self.workdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "client-"))
            (self.workdir / "owner.json").write_text(json.dumps(_owner()))
        self.key_path = self.workdir / "id_ed25519"
        self.public_key = _ssh_keygen(self.key_path, "provision-lab-client")

    def start(
        self,
        count: int,
        prefix: str = "lab",
        timeout: float = 120.0,
        *,
        gpus: Sequence[tuple[str, str]] = (),
        host_gpus: Sequence[Sequence[tuple[str, str]]] | None = None,
        nouveau: bool = False,
    ) -> list[BootedHost]:
        """Boot `count` hosts in parallel.

        Stand-in hardware (see StandinSys): `gpus` gives every host these fake NVIDIA GPUs as
        (PCI slot, device id) pairs, e.g. ``[("0000:01:00.0", "0x2330")]`` (an H100);
        `host_gpus` gives each host its own list instead (one entry per host, ``[]`` = none);
        `nouveau` makes nouveau "loaded" at every boot until modprobe.d blacklists it.
        """
        if host_gpus is not None and len(host_gpus) != count:
            raise LabError(f"host_gpus has {len(host_gpus)} entries for {count} hosts")
        per_host = [check_gpus(g) for g in host_gpus] if host_gpus is not None else None
        cleanup_stale()
        self.base = ensure_base()
        new = []
        for index in range(count):
            new.append(self._prepare(prefix))
            self.hosts.append(new[-1])  # from here on close() cleans it up
            new[-1].gpus = per_host[index] if per_host is not None else check_gpus(gpus)
            new[-1].standin_nouveau = nouveau
        with ThreadPoolExecutor(max_workers=max(1, count)) as pool:
            list(pool.map(lambda host: host.start(timeout), new))
        return new

    def _prepare(self, prefix: str) -> BootedHost:
        """Reserve an address and name, mount the overlay and write the per-host files."""
        assert self.base is not None
        with _locked(STATE_LOCK):
            used = {int(str(r.get("octet"))) for r in _records() if r.get("octet") is not None}
            octet = next(n for n in range(FIRST_OCTET, 255) if n not in used)
            name = f"{prefix}{octet}"
            tmpdir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-"))
            record: dict[str, object] = {
                "name": name,
                "octet": octet,
                **_owner(),
                "tmpdir": str(tmpdir),
                "merged": str(tmpdir / "merged"),
            }
            _write_record(record)  # before mounting: a crash from here on is cleaned up later
        address = f"127.0.2.{octet}"
        host = BootedHost(
            name=name,
            address=address,
            key_path=self.key_path,
            known_hosts_path=tmpdir / "known_hosts",
            tmpdir=tmpdir,
            _record=record,
        )
        for part in ("upper", "work", "merged"):
            (tmpdir / part).mkdir()
        options = f"lowerdir={self.base.root},upperdir={tmpdir / 'upper'},workdir={tmpdir / 'work'}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(host.merged)], check=True
        )
        root = host.merged
        (root / "etc/hostname").write_text(name + "\n")
        (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n{address}\t{name}\n")
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        ssh_dir.chmod(0o700)
        (ssh_dir / "authorized_keys").write_text(self.public_key + "\n")
        (ssh_dir / "authorized_keys").chmod(0o600)
        host_key = _ssh_keygen(root / "etc/ssh/ssh_host_ed25519_key", f"root@{name}")
        (root / "etc/ssh/sshd_config.d/lab.conf").write_text(
            f"ListenAddress {address}:{host.port}\n"
            "HostKey /etc/ssh/ssh_host_ed25519_key\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "UseDNS no\n"
            "MaxStartups 100\n"
            "MaxSessions 100\n"
        )
        key_type, key_blob = host_key.split()[:2]
        host.known_hosts_path.write_text(f"{address} {key_type} {key_blob}\n")
        return host

    def known_hosts_text(self) -> str:
        return "".join(host.known_hosts_path.read_text() for host in self.hosts)

    def close(self) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(self.hosts))) as pool:
            list(pool.map(lambda host: host.stop(), self.hosts))
        self.hosts.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def write_inventory(hosts: Sequence[BootedHost], path: Path, group: str = "lab") -> Path:
    """Ansible INI inventory for the hosts (connect as root with the harness key)."""
    lines = [f"[{group}]"]
    for host in hosts:
        lines.append(
            f"{host.name} ansible_host={host.address} ansible_port={host.port} "
            f"ansible_user=root ansible_ssh_private_key_file={host.key_path}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def write_known_hosts(hosts: Sequence[BootedHost], path: Path) -> Path:
    """One known_hosts file for all hosts (for RunOptions.known_hosts or ssh -o)."""
    path.write_text("".join(host.known_hosts_path.read_text() for host in hosts))
    return path


def require_lab_tools() -> None:
    """Fail under CI (skip locally) when the machine cannot boot lab hosts."""
    need_root()
    need_binary("systemd-nspawn", "systemd-container")
    need_binary("debootstrap", "debootstrap")
    need_binary("ssh-keygen", "openssh-client")


@pytest.fixture(scope="module")
def booted_hosts() -> Iterator[Callable[..., list[BootedHost]]]:
    """Factory: `booted_hosts(n)` boots n fresh hosts, all torn down at the end of the module.

    `booted_hosts(1, prefix="gpu", gpus=[("0000:01:00.0", "0x2330")])` boots a host with a
    stand-in NVIDIA GPU on its PCI bus and an empty, writable /sys/module/nvidia stand-in."""
    labs: list[BootedLab] = []

    def boot(count: int = 2, prefix: str = "lab", **standin: Any) -> list[BootedHost]:
        """`standin`: BootedLab.start's gpus= / host_gpus= / nouveau= (stand-in hardware)."""
        require_lab_tools()
        lab = BootedLab()
        labs.append(lab)
        return lab.start(count, prefix, **standin)

    yield boot
    for lab in labs:
        lab.close()
