"""Light lab hosts: real OpenSSH daemons on 127.0.1.N, plus fault hosts (lab recipe section 1).

Usable from pytest (``tests/lab/fixtures.py``) and from plain scripts (``bench/``)::

    with SshdLab(n=50, faults=FAULT_KINDS) as lab:
        specs = lab.specs()
        lab.write_inventory("/tmp/inv.ini")

Each host is one ``sshd -D`` with its own ed25519 host key, config, pid file and
authorized_keys in a per-lab folder. Fault hosts: ``closed`` (nothing listens), ``tarpit``
(accepts, never sends a banner), ``garbage`` (sends junk instead of a banner), ``changed_key``
(known_hosts records another key), ``hang`` (every command sleeps an hour), ``junk`` (prints
MOTD-like junk, then still runs the command) and ``sudo`` (logs in as a user whose sudo needs
:data:`SUDO_PASSWORD`).

Several labs may run at once (parallel test runs, other test modules): addresses are allocated
under a lock in a registry, and daemons of a lab whose owner process died are killed at the next
start. Everything started here is stopped by :meth:`SshdLab.stop` (also on ``__exit__``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from provision.hostkeys import host_key_name
from provision.target import ConnSpec, conn_spec

SSHD = "/usr/sbin/sshd"
LAB_ROOT = os.environ.get("PROVISION_LAB_ROOT", "/run/provision-lab")
SUBNET = "127.0.1."
FIRST_OCTET = 10  # 127.0.1.10 ..
LAST_OCTET = 254  # .. 127.0.1.254; 127.0.2.x belongs to the booted-host harness
FAULT_KINDS = ("closed", "tarpit", "garbage", "changed_key", "hang", "junk", "sudo")
SUDO_USER = "provtest"
# A canary: tests grep logs, argv and `ps` for it to prove the password never leaks (G3).
SUDO_PASSWORD = "canary-sudo-Pw-7d41e9"
JUNK_MARK = "Welcome to junk host!"  # first line of what the junk host prints before any output


class LabError(RuntimeError):
    """The lab could not be started (a daemon died, no free addresses...)."""


@dataclass
class LabHost:
    """One lab host as a test sees it."""

    name: str
    kind: str  # "ok" or one of FAULT_KINDS
    address: str
    port: int
    user: str
    key_file: str
    dir: str
    host_key: str = ""  # "ssh-ed25519 AAAA..." the daemon really offers ("" for non-sshd kinds)
    rsa_host_key: str = ""  # "ssh-rsa AAAA..." when the lab was started with rsa_host_keys
    extra_config: list[str] = field(default_factory=list)

    @property
    def key_name(self) -> str:
        """The host's name in known_hosts (``[addr]:port`` off port 22)."""
        return host_key_name(self.address, self.port)

    def hostvars(self) -> dict[str, Any]:
        return {
            "ansible_host": self.address,
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": self.key_file,
        }

    def spec(self, **overrides: Any) -> ConnSpec:
        """A ConnSpec for this host (no ~/.ssh/config); ``overrides`` are extra hostvars."""
        return conn_spec(self.name, {**self.hostvars(), **overrides}, ssh_config_path="")


# -- key generation (in-process: ssh-keygen per host would cost a process each) ---------------


def _openssh_pair(key: Any) -> tuple[bytes, str]:
    """(OpenSSH private key PEM, "type AAAA..." public line) of a cryptography private key."""
    from cryptography.hazmat.primitives import serialization

    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode()


def generate_ed25519() -> tuple[bytes, str]:
    """A new ed25519 key: (OpenSSH private key PEM, "ssh-ed25519 AAAA..." public line)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    return _openssh_pair(key)


def generate_rsa(bits: int = 2048) -> tuple[bytes, str]:
    """A new RSA key, same shape as :func:`generate_ed25519` (for multi-key-type hosts)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _openssh_pair(key)


def _write(path: str, data: bytes | str, mode: int = 0o644) -> None:
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


# -- process bookkeeping -----------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids_with_env(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (sessions of one lab: SetEnv in sshd)."""
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _kill(pid: int, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _kill_lab_processes(lab_dir: str, lab_id: str) -> None:
    """Kill a lab's daemons (by pid file, checked against their command line) and sessions."""
    pids = []
    if os.path.isdir(lab_dir):
        for host in os.listdir(lab_dir):
            pid_file = os.path.join(lab_dir, host, "sshd.pid")
            try:
                with open(pid_file) as fh:
                    pid = int(fh.read().strip())
            except (OSError, ValueError):
                continue
            if lab_dir in _cmdline(pid):
                pids.append(pid)
    pids += _pids_with_env(f"PROVISION_LAB={lab_id}")
    for pid in pids:
        _kill(pid)
    deadline = time.monotonic() + 3
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if os.path.exists(f"/proc/{p}") and _start_time(p) is not None]
        pids = [p for p in pids if not _is_zombie(p)]
        if pids:
            time.sleep(0.02)
    for pid in pids:
        _kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def _registry_lock() -> Iterator[str]:
    os.makedirs(LAB_ROOT, mode=0o755, exist_ok=True)
    fd = os.open(os.path.join(LAB_ROOT, "registry.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield os.path.join(LAB_ROOT, "registry.json")
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _load_registry(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _save_registry(path: str, registry: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(registry, fh)
    os.replace(tmp, path)


def clean_stale_labs() -> list[str]:
    """Stop the daemons of labs whose owner process is gone; return their ids."""
    with _registry_lock() as path:
        registry = _load_registry(path)
        stale = _drop_stale(registry)
        _save_registry(path, registry)
    return stale


def _drop_stale(registry: dict[str, Any]) -> list[str]:
    stale = []
    for lab_id, entry in list(registry.items()):
        if _start_time(entry["pid"]) == entry["start"]:
            continue
        _kill_lab_processes(entry["dir"], lab_id)
        shutil.rmtree(entry["dir"], ignore_errors=True)
        del registry[lab_id]
        stale.append(lab_id)
    return stale


def _slot_address(slot: int) -> tuple[str, int]:
    """Slot -> (address, port): port 22 on .10-.254 first, then 2201, 2202... on the same range."""
    width = LAST_OCTET - FIRST_OCTET + 1
    octet = FIRST_OCTET + slot % width
    port = 22 if slot < width else 2200 + slot // width
    return f"{SUBNET}{octet}", port


# -- the sudo user -----------------------------------------------------------------------------


def ensure_sudo_user(user: str = SUDO_USER, password: str = SUDO_PASSWORD) -> None:
    """Create (once) a local user with ``password`` whose sudo asks for that password."""
    if shutil.which("sudo") is None:
        raise LabError("the sudo fault host needs sudo (Debian package sudo)")
    with _registry_lock():
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(
                ["useradd", "--create-home", "--shell", "/bin/bash", user],
                check=True,
                capture_output=True,
            )
        subprocess.run(
            ["chpasswd"], input=f"{user}:{password}\n".encode(), check=True, capture_output=True
        )
        sudoers = f"/etc/sudoers.d/provision-lab-{user}"
        if not os.path.exists(sudoers):
            _write(sudoers + ".tmp", f"{user} ALL=(ALL:ALL) ALL\n", 0o440)
            os.replace(sudoers + ".tmp", sudoers)


# -- fault listeners ---------------------------------------------------------------------------


class _Listener(threading.Thread):
    """A TCP listener for the tarpit (never answers) and garbage (junk instead of a banner)."""

    def __init__(self, address: str, port: int, garbage: bytes | None) -> None:
        super().__init__(daemon=True, name=f"lab-listener-{address}:{port}")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.garbage = garbage
        self.stop_event = threading.Event()
        self.held: list[socket.socket] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            if self.garbage is None:
                self.held.append(conn)  # tarpit: hold it open, say nothing
                continue
            with contextlib.suppress(OSError):
                conn.sendall(self.garbage)
            conn.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=2)
        self.sock.close()
        for conn in self.held:
            conn.close()


GARBAGE = b"HTTP/1.1 400 Bad Request\r\nServer: not-ssh\r\n\r\n\x00\xff\xfe garbage \x1b[0m\r\n" * 4


# -- the lab -----------------------------------------------------------------------------------


class SshdLab:
    """N ordinary sshd hosts (``lab01``...) plus the requested fault hosts (``fault-<kind>``)."""

    def __init__(
        self,
        n: int = 3,
        faults: Iterable[str] = (),
        *,
        extra_config: Mapping[str, Sequence[str]] | None = None,
        prefix: str = "lab",
        rsa_host_keys: bool = False,
        start_timeout: float = 20.0,
    ) -> None:
        """``rsa_host_keys`` gives every daemon an RSA host key too, recorded before the
        ed25519 one in known_hosts (as ``ssh-keyscan`` writes them)."""
        self.n = n
        self.faults = list(faults)
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.extra_config = {k: list(v) for k, v in (extra_config or {}).items()}
        self.prefix = prefix
        self.rsa_host_keys = rsa_host_keys
        self.start_timeout = start_timeout
        self.id = uuid.uuid4().hex[:12]
        self.dir = ""
        self.hosts: list[LabHost] = []
        self.client_key = ""
        self.client_pub = ""
        self.home = ""
        self.known_hosts = ""
        self._procs: list[subprocess.Popen[bytes]] = []
        self._listeners: list[_Listener] = []
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> SshdLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SshdLab:
        if not os.path.exists(SSHD):
            raise LabError(f"{SSHD} missing (Debian package openssh-server)")
        if "sudo" in self.faults:
            ensure_sudo_user()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        try:
            self._allocate()
            self._prepare()
            self._launch()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def _allocate(self) -> None:
        names = [f"{self.prefix}{i:02d}" for i in range(1, self.n + 1)]
        kinds = ["ok"] * self.n + self.faults
        names += [f"fault-{k.replace('_', '-')}" for k in self.faults]
        with _registry_lock() as path:
            registry = _load_registry(path)
            _drop_stale(registry)
            used = {s for entry in registry.values() for s in entry["slots"]}
            slots: list[int] = []
            slot = 0
            while len(slots) < len(kinds):
                if slot not in used:
                    slots.append(slot)
                slot += 1
                if slot > 20 * (LAST_OCTET - FIRST_OCTET + 1):
                    raise LabError("no free lab addresses")
            self.dir = tempfile.mkdtemp(prefix=f"lab-{self.id}-", dir=LAB_ROOT)
            os.chmod(self.dir, 0o755)
            registry[self.id] = {
                "pid": os.getpid(),
                "start": _start_time(os.getpid()),
                "dir": self.dir,
                "slots": slots,
            }
            _save_registry(path, registry)
        for name, kind, slot in zip(names, kinds, slots, strict=True):
            address, port = _slot_address(slot)
            user = SUDO_USER if kind == "sudo" else "root"
            host_dir = os.path.join(self.dir, name)
            extra = list(self.extra_config.get("*", [])) + list(self.extra_config.get(name, []))
            self.hosts.append(
                LabHost(name, kind, address, port, user, "", host_dir, extra_config=extra)
            )

    def _prepare(self) -> None:
        self.home = os.path.join(self.dir, "home")
        os.makedirs(os.path.join(self.home, ".ssh"), mode=0o700)
        private, self.client_pub = generate_ed25519()
        self.client_key = os.path.join(self.dir, "client_key")
        _write(self.client_key, private, 0o600)
        _write(self.client_key + ".pub", self.client_pub + "\n")
        self.known_hosts = os.path.join(self.home, ".ssh", "known_hosts")
        lines = []
        for host in self.hosts:
            host.key_file = self.client_key
            os.makedirs(host.dir, mode=0o755)
            if host.kind in ("closed", "tarpit", "garbage"):
                continue
            private, host.host_key = generate_ed25519()
            _write(os.path.join(host.dir, "hostkey"), private, 0o600)
            _write(os.path.join(host.dir, "authorized_keys"), self.client_pub + "\n")
            if self.rsa_host_keys:
                rsa_private, host.rsa_host_key = generate_rsa()
                _write(os.path.join(host.dir, "hostkey_rsa"), rsa_private, 0o600)
                if host.kind != "changed_key":
                    lines.append(f"{host.key_name} {host.rsa_host_key}\n")
            recorded = generate_ed25519()[1] if host.kind == "changed_key" else host.host_key
            lines.append(f"{host.key_name} {recorded}\n")
            _write(os.path.join(host.dir, "sshd_config"), self._sshd_config(host))
        _write(self.known_hosts, "".join(lines), 0o600)

    def _sshd_config(self, host: LabHost) -> str:
        # SHLVL=1: bash then skips ~/.bashrc for ssh commands; this machine's root .bashrc runs
        # `pyenv init` (~100 ms), which would otherwise dominate every lab command.
        env = [f"PROVISION_LAB={self.id}", "SHLVL=1"]
        other = []
        for line in host.extra_config:
            word, _, rest = line.strip().partition(" ")
            if word.lower() == "setenv":
                env += rest.split()  # sshd honours only the first SetEnv line: merge them
            else:
                other.append(line)
        lines = [
            f"ListenAddress {host.address}:{host.port}",
            f"HostKey {host.dir}/hostkey",
            *([f"HostKey {host.dir}/hostkey_rsa"] if host.rsa_host_key else []),
            f"PidFile {host.dir}/sshd.pid",
            f"AuthorizedKeysFile {host.dir}/authorized_keys",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PrintMotd no",
            "UseDNS no",
            "MaxStartups 200",
            "MaxSessions 200",
            "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp",
            "SetEnv " + " ".join(env),
        ]
        if host.kind == "hang":
            lines.append("ForceCommand sleep 3600")
        elif host.kind == "junk":
            script = os.path.join(host.dir, "junk.sh")
            _write(
                script,
                "#!/bin/sh\n"
                f"printf '{JUNK_MARK}\\n\\033[1;31m*** MOTD ***\\033[0m \\377\\376 binary\\n'\n"
                "printf 'stty: standard input: Inappropriate ioctl for device\\n' >&2\n"
                'if [ -n "$SSH_ORIGINAL_COMMAND" ]; then\n'
                '  exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
                "fi\n"
                "exec /bin/sh\n",
                0o755,
            )
            lines.append(f"ForceCommand {script}")
        return "\n".join(other + lines) + "\n"

    def _launch(self) -> None:
        for host in self.hosts:
            if host.kind in ("closed",):
                continue
            if host.kind in ("tarpit", "garbage"):
                listener = _Listener(
                    host.address, host.port, None if host.kind == "tarpit" else GARBAGE
                )
                listener.start()
                self._listeners.append(listener)
                continue
            proc = subprocess.Popen(
                [
                    SSHD,
                    "-D",
                    "-f",
                    os.path.join(host.dir, "sshd_config"),
                    "-E",
                    os.path.join(host.dir, "sshd.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._procs.append(proc)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        waiting = [h for h in self.hosts if h.host_key]
        by_dir = {os.path.join(self.dir, h.name): h for h in waiting}
        while waiting:
            for proc in self._procs:
                if proc.poll() is not None:
                    argv = proc.args  # [SSHD, "-D", "-f", HOST_DIR/sshd_config, ...]
                    assert isinstance(argv, list)
                    host_dir = os.path.dirname(str(argv[3]))
                    raise LabError(f"sshd for {by_dir[host_dir].name} exited: {_log(host_dir)}")
            waiting = [h for h in waiting if not os.path.exists(os.path.join(h.dir, "sshd.pid"))]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise LabError(f"sshd did not start in time for {[h.name for h in waiting]}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop every daemon, listener and session of this lab and remove its folder."""
        for listener in self._listeners:
            listener.stop()
        self._listeners.clear()
        for proc in self._procs:
            _kill(proc.pid)
        for proc in self._procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                _kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=3)
        self._procs.clear()
        if self.dir:
            _kill_lab_processes(self.dir, self.id)
            shutil.rmtree(self.dir, ignore_errors=True)
            with _registry_lock() as path:
                registry = _load_registry(path)
                registry.pop(self.id, None)
                _save_registry(path, registry)
        self._started = False

    # -- views -------------------------------------------------------------------------------
    def host(self, name_or_kind: str) -> LabHost:
        """A host by name (``lab03``) or, for faults, by kind (``tarpit``)."""
        for host in self.hosts:
            if name_or_kind in (host.name, host.kind) and (
                host.kind != "ok" or host.name == name_or_kind
            ):
                return host
        raise KeyError(name_or_kind)

    @property
    def ok_hosts(self) -> list[LabHost]:
        return [h for h in self.hosts if h.kind == "ok"]

    def specs(self, hosts: Iterable[LabHost] | None = None, **overrides: Any) -> list[ConnSpec]:
        return [h.spec(**overrides) for h in (self.hosts if hosts is None else hosts)]

    def env(self) -> dict[str, str]:
        """Environment for a CLI subprocess: HOME holds the lab's ``.ssh/known_hosts``."""
        return {**os.environ, "HOME": self.home}

    def write_inventory(
        self,
        path: str,
        hosts: Iterable[LabHost] | None = None,
        *,
        group: str = "lab",
        extra_vars: Mapping[str, Any] | None = None,
    ) -> str:
        """An Ansible INI inventory of the lab, usable by provision and by real ``ansible``.

        ``ansible_ssh_common_args`` points OpenSSH at the lab's known_hosts (OpenSSH ignores
        ``$HOME``), so real ansible checks host keys too.
        """
        lines = [f"[{group}]"]
        for host in self.hosts if hosts is None else hosts:
            vars_ = " ".join(f"{k}={v}" for k, v in host.hostvars().items())
            lines.append(f"{host.name} {vars_}")
        lines += [
            "",
            "[all:vars]",
            f"ansible_ssh_common_args='-o UserKnownHostsFile={self.known_hosts} "
            "-o StrictHostKeyChecking=yes'",
            "ansible_python_interpreter=/usr/bin/python3",
        ]
        lines += [f"{k}={v}" for k, v in (extra_vars or {}).items()]
        _write(path, "\n".join(lines) + "\n")
        return path


def _log(host_dir: str) -> str:
    try:
        with open(os.path.join(host_dir, "sshd.log"), errors="replace") as fh:
            return fh.read().strip()[-500:] or "no log"
    except OSError:
        return "no log"


if __name__ == "__main__":  # manual use: python -m tests.lab.sshd N
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with SshdLab(n=count, faults=FAULT_KINDS) as demo:
        inventory = demo.write_inventory(os.path.join(demo.dir, "inventory.ini"))
        sys.stdout.write(f"{len(demo.hosts)} hosts up; inventory {inventory}; Ctrl-C stops\n")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
