"""Sessions: one open connection per host that runs commands and writes files.

:class:`SSHSession` opens one fabric ``Connection`` (paramiko underneath) per host and reuses it
for every command of a run; commands go straight onto paramiko channels (``exec_command``), which
costs far less controller CPU than invoke's runner threads. :class:`LocalSession` offers the same
API on this machine through ``subprocess`` (``ansible_connection=local``, no inventory).

Decisions that matter (field notes section 6): ``TCP_NODELAY`` on our own socket (paramiko leaves
it off and each command stalls ~40 ms); host keys checked against our own known_hosts parser with
fabric's ``AutoAddPolicy`` replaced on every connection; a timeout on connect, banner, auth and
every command; the become password only ever travels on stdin.
"""

from __future__ import annotations

import collections
import contextlib
import getpass
import hashlib
import logging
import os
import posixpath
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from provision.errors import ProvisionError
from provision.hostkeys import (
    ChangedHostKey,
    HostKeyError,
    KnownHosts,
    RevokedHostKey,
    VerifyingPolicy,
    changed_message,
    host_key_name,
)
from provision.localfile import replace_file
from provision.shell import bounded, join, mask, quote, sudo_wrap, verify_received
from provision.target import ConnSpec, ssh_config_lookup

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 16


@dataclass
class CommandResult:
    """What one command did; ``command`` is the user-facing text (never holds a secret)."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float
    truncated: bool = False  # output beyond the limits was dropped (its tail is kept)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Session(Protocol):
    """What a task gets: an open connection to one host."""

    name: str
    round_trips: int

    def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        become: bool | None = None,
        shown: str | None = None,
    ) -> CommandResult: ...

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None: ...
    def reopen(self) -> Session: ...

    def close(self) -> None: ...


class CommandFailed(Exception):
    """Raised by a task to mark its host "failed"; carries the command's result."""

    def __init__(self, result: CommandResult, message: str | None = None) -> None:
        self.result = result
        super().__init__(message or f"`{result.command}` exited with status {result.exit_code}")


class ConnectError(ProvisionError):
    """The host cannot be reached or logged into: state "unreachable"."""


class AuthenticationFailed(ConnectError):
    """The host answered but refused the login (key, agent or password): state "unreachable"."""


class TransportLost(ConnectError):
    """The connection died while a command ran: state "unreachable", the command's fate unknown."""


class CommandTimeout(ProvisionError):
    """A command ran past its timeout (``seconds``, when one command's): state "timed out"."""

    def __init__(self, message: str, seconds: float | None = None) -> None:
        super().__init__(message)
        self.seconds = seconds


class BecomeError(ProvisionError):
    """sudo refused: wrong or missing password, no sudo rights, no sudo. State "failed"."""


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


MAX_OUTPUT = 64 << 20  # per stream; beyond it output is drained and dropped, never a crash (G14)
RUN_OUTPUT = 64 << 20  # every stream of every host of one run together (OutputBudget)
TAIL_OUTPUT = 64 << 10  # what a stream keeps once the run's budget is spent: its last bytes


class OutputBudget:
    """The bytes of command output one run may hold, over all its hosts and streams: a capture
    draws from it as it grows past :data:`TAIL_OUTPUT`. Without it 5 hosts printing 200 MB
    each held 10 x 64 MiB (2.09 GB peak with the decoding copies). Thread-safe; never refilled
    within a run, as the results it paid for are kept until the run ends."""

    def __init__(self, total: int | None = None) -> None:
        self.left = RUN_OUTPUT if total is None else total
        self._lock = threading.Lock()

    def draw(self, wanted: int) -> int:
        with self._lock:
            granted = max(0, min(wanted, self.left))
            self.left -= granted
            return granted


class _Capture:
    """A stream's output: its last bytes, up to :data:`MAX_OUTPUT` and what the run's
    :class:`OutputBudget` allows (at least :data:`TAIL_OUTPUT`); what was dropped is counted."""

    def __init__(self, budget: OutputBudget) -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.allowed = TAIL_OUTPUT
        self.dropped = 0
        self.budget = budget

    def add(self, chunk: bytes) -> None:
        want = min(self.size + len(chunk), MAX_OUTPUT) - self.allowed
        if want > 0:
            self.allowed += self.budget.draw(want)
        self.chunks.append(chunk)
        self.size += len(chunk)
        while self.size > self.allowed:  # keep the tail: an error is usually at the end
            excess = self.size - self.allowed
            first = self.chunks[0]
            if len(first) <= excess:
                self.chunks.popleft()
                cut = len(first)
            else:
                self.chunks[0] = first[excess:]
                cut = excess
            self.size -= cut
            self.dropped += cut

    def text(self) -> str:
        """The kept bytes as text, headed by what was dropped: one join and one decode, so a
        big stream's peak is its bytes plus its text (the chunks go as they are joined)."""
        head = b""
        if self.dropped:
            head = (
                f"[provision: {self.dropped} more bytes of output dropped (output limit); "
                f"the last {self.size} follow]\n"
            ).encode()
        data = b"".join([head, *self.chunks])
        self.chunks.clear()
        return _decode(data)


def _become_error(stderr: str, user: str, host: str, had_password: bool) -> BecomeError | None:
    """Recognise sudo's own refusals in stderr and turn them into one clear line."""
    text = stderr.lower()
    if "incorrect password" in text or "sorry, try again" in text:
        return BecomeError(f"{host}: sudo rejected the become password for user {user}")
    if "a password is required" in text or "a terminal is required" in text:
        if had_password:
            return BecomeError(f"{host}: sudo asked for a password again for user {user}")
        return BecomeError(
            f"{host}: sudo needs a password for user {user}; "
            "pass --ask-become-pass or a become password file"
        )
    if "not in the sudoers file" in text or "is not allowed to execute" in text:
        return BecomeError(f"{host}: user {user} may not use sudo here")
    if "sudo: command not found" in text or "sudo: not found" in text:
        return BecomeError(f"{host}: sudo is not installed")
    return None


# ``with SSHSession(...).open() as s`` keeps the subclass type (typing.Self needs Python 3.11).
_SessionT = TypeVar("_SessionT", bound="_BaseSession")


class _BaseSession:
    """Shared become handling, ``put`` and bookkeeping; subclasses provide ``_exec``."""

    def __init__(
        self,
        spec: ConnSpec,
        *,
        command_timeout: float = 60.0,
        become_password: str | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.round_trips = 0
        self.command_timeout = command_timeout
        self._password = become_password
        self._sudo_mode: str | None = None  # "none" | "nopasswd" | "password", probed once

    # -- subclass hook -----------------------------------------------------------------------
    def _exec(self, shown: str, wire: str, data: bytes | None, timeout: float) -> CommandResult:
        raise NotImplementedError

    def _login_user(self) -> str:
        return self.spec.user or getpass.getuser()

    def _ended_on_host(self, command: str, limit: float) -> str:
        """``command`` as sent: SSH wraps it so the host itself ends it after ``limit``."""
        return command

    # -- public API --------------------------------------------------------------------------
    def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        become: bool | None = None,
        shown: str | None = None,
    ) -> CommandResult:
        """Run a shell command; non-zero exits are returned, not raised (tasks decide).

        ``shown`` replaces the command in logs, error messages and the result (a no_log
        task's command holds its secrets)."""
        use_become = self.spec.become if become is None else become
        limit = self.command_timeout if timeout is None else timeout
        text = command if shown is None else shown
        ended = self._ended_on_host(command, limit)
        if not use_become or self._sudo_needed() is False:
            return self._exec(text, ended, stdin, limit)
        mode = self._sudo_probe(limit)
        if mode == "password":
            assert self._password is not None
            wire = sudo_wrap(ended, self.spec.become_user, password=True)
            data: bytes | None = self._password.encode() + b"\n" + (stdin or b"")
        else:
            wire = sudo_wrap(ended, self.spec.become_user, password=False)
            data = stdin
        result = self._exec(text, wire, data, limit)
        if result.exit_code == 1:
            err = _become_error(result.stderr, self._login_user(), self.name, mode == "password")
            if err is not None and not result.stdout:
                raise err
        return result

    def wire(self, command: str, *, become: bool | None, limit: float) -> tuple[str, bytes]:
        """``command`` as :meth:`run` would send it (bounded on the host, through sudo when
        needed) and what must go first on its stdin (the sudo password, or nothing), for a
        caller that streams stdin/stdout itself (provision.stream)."""
        use_become = self.spec.become if become is None else become
        ended = self._ended_on_host(command, limit)
        if not use_become or self._sudo_needed() is False:
            return ended, b""
        if self._sudo_probe(limit) == "password":
            assert self._password is not None
            wire = sudo_wrap(ended, self.spec.become_user, password=True)
            return wire, self._password.encode() + b"\n"
        return sudo_wrap(ended, self.spec.become_user, password=False), b""

    def put(self, data: bytes, path: str, mode: int = 0o644, *, become: bool | None = None) -> None:
        """Write ``data`` to ``path`` atomically: temp file next to it, chmod, rename."""
        tmp = posixpath.join(
            posixpath.dirname(path) or ".",
            f".{posixpath.basename(path)}.provision-{secrets.token_hex(4)}.tmp",
        )
        qp = quote(path)
        check = verify_received('"$t"', len(data), hashlib.sha256(data).hexdigest(), qp)
        # Renamed only once complete and verified; on a cut connection or a signal the temp
        # file goes and the old file stays.
        command = (
            f"t={quote(tmp)}; trap 'rm -f \"$t\"' EXIT; trap 'exit 1' HUP INT TERM PIPE; "
            f'umask 077; cat > "$t" || exit 1; {check}; '
            f'chmod {mode:o} "$t" && mv -f "$t" {qp} || exit 1; trap - EXIT'
        )
        result = self.run(command, stdin=data, become=become)
        if not result.ok:
            raise CommandFailed(result, f"writing {path} failed: {result.stderr.strip()[-300:]}")

    def close(self) -> None:
        """Nothing to release here; subclasses close their transport."""

    def __enter__(self: _SessionT) -> _SessionT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- become ------------------------------------------------------------------------------
    def _sudo_needed(self) -> bool:
        return self._login_user() != self.spec.become_user

    def _sudo_probe(self, timeout: float) -> str:
        """Learn once per session whether sudo wants a password, and check the one we have.

        One round trip: ``sudo -n`` first (NOPASSWD or no password given), else one password
        attempt with stdin closed after it, so a wrong password fails after a single try
        instead of three (account lockouts) and never reaches a command's stdin.
        """
        if self._sudo_mode is not None:
            return self._sudo_mode
        user = self.spec.become_user
        if self._password is None:
            self._sudo_mode = "nopasswd"
            return self._sudo_mode
        probe = (
            f"sudo -n -u {quote(user)} true 2>/dev/null && echo NOPASSWD || "
            f"{{ sudo -k -S -p '' -u {quote(user)} true && echo PASSWORD; }}"
        )
        result = self._exec(
            "sudo (checking become password)", probe, self._password.encode() + b"\n", timeout
        )
        words = result.stdout.split()
        if "NOPASSWD" in words:
            self._sudo_mode = "nopasswd"
        elif "PASSWORD" in words:
            self._sudo_mode = "password"
        else:
            err = _become_error(result.stderr, self._login_user(), self.name, True)
            tail = mask(result.stderr.strip(), [self._password]).splitlines()[-1:] or ["no output"]
            raise err or BecomeError(f"{self.name}: sudo failed: {tail[0][:200]}")
        return self._sudo_mode


# -- SSH ---------------------------------------------------------------------------------------

_FABRIC_CONFIG: Any = None


def _quiet_paramiko() -> None:
    """paramiko logs every failed handshake with a traceback at ERROR; we report it ourselves.

    Only when nobody chose a level for the "paramiko" logger (the CLI sets it for -vvv).
    """
    logger = logging.getLogger("paramiko")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


_FABRIC_LOCK = threading.Lock()


def _fabric_config() -> Any:
    """The base fabric Config, ssh_config loading off (target.py already resolved it); callers
    clone it under _FABRIC_LOCK."""
    global _FABRIC_CONFIG
    if _FABRIC_CONFIG is None:
        from fabric import Config

        _FABRIC_CONFIG = Config(overrides={"load_ssh_configs": False})
    return _FABRIC_CONFIG


def _split_jump(hop: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` or ``[user@][v6addr]:port`` -> (user, host, port)."""
    user, _, rest = hop.rpartition("@")
    host, port = rest, None
    if rest.startswith("[") and "]" in rest:
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, _, p = rest.partition(":")
        port = int(p)
    return (user or None), host, port


# Host key algorithms each known_hosts key type allows (paramiko's own order picks among them).
_KEY_ALGORITHMS = {"ssh-rsa": {"ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"}}


class SSHSession(_BaseSession):
    """One fabric ``Connection`` to one host, opened once by :meth:`open`, reused for all."""

    def __init__(
        self,
        spec: ConnSpec,
        *,
        known_hosts: KnownHosts | None = None,
        accept_new_host_keys: bool = False,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
        become_password: str | None = None,
        via: SSHSession | None = None,
        login_password: str | None = None,
        key_files_only: bool = False,
        output_budget: OutputBudget | None = None,
    ) -> None:
        super().__init__(spec, command_timeout=command_timeout, become_password=become_password)
        self._via = via  # an open session to tunnel through (a ProxyJump hop)
        # onboard: first contact by password only (paramiko's own password auth, no keys or
        # agent tried first), or a login proven with exactly spec.key_filenames (no agent).
        self._login_password = login_password
        self._key_files_only = key_files_only
        self.output_budget = output_budget if output_budget is not None else OutputBudget()
        self.known_hosts = known_hosts if known_hosts is not None else KnownHosts()
        self.accept_new = accept_new_host_keys
        self.connect_timeout = connect_timeout
        self.connection: Any = None  # fabric.Connection once open
        self._sock: Any = None
        self._jumps: list[SSHSession] = []
        self._closed = False

    def _ended_on_host(self, command: str, limit: float) -> str:
        # inside sudo, so that timeout runs as the become user and can end what it started
        return bounded(command, limit)

    @property
    def transport(self) -> Any:
        return self.connection.transport if self.connection is not None else None

    def reopen(self) -> SSHSession:
        """A fresh connection in place of this one (after a reboot); host keys checked again."""
        self.close()
        self.connection, self._sock, self._jumps, self._closed = None, None, [], False
        return self.open()

    def open(self) -> SSHSession:
        """Connect, verify the host key, authenticate; raise a typed error on any failure."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        spec = self.spec
        if self._via is not None:
            sock = self._via.channel_to(spec.hostname, spec.port, self.name)
        elif spec.proxy_jump:
            sock = self._jump_channel()
        else:
            sock = self._tcp_connect()
        if self._closed:
            raise ConnectError(f"{self.name}: connection closed while connecting")
        import paramiko
        from fabric import Connection

        _quiet_paramiko()

        name = host_key_name(spec.hostname, spec.port)
        t = self.connect_timeout
        kwargs: dict[str, Any] = {
            "sock": sock,
            "timeout": t,
            "banner_timeout": t,
            "auth_timeout": t,
            "channel_timeout": t,
        }
        if spec.key_filenames:
            kwargs["key_filename"] = list(spec.key_filenames)
        if self._login_password is not None:
            kwargs.pop("key_filename", None)
            kwargs.update(password=self._login_password, look_for_keys=False, allow_agent=False)
        elif self._key_files_only:
            kwargs.update(look_for_keys=False, allow_agent=False)
        elif spec.password is not None:
            # ansible_password: paramiko tries the keys first, then this, inside the protocol
            kwargs["password"] = spec.password
        known = self.known_hosts.known(name)
        if known:
            # Like OpenSSH: negotiate only host key types on record, or a host with an ed25519
            # key on record and an RSA one too would look "changed" when paramiko picks RSA.
            allowed: set[str] = set()
            for entry in known:
                allowed |= _KEY_ALGORITHMS.get(entry.keytype, {entry.keytype})
            kwargs["disabled_algorithms"] = {
                "keys": [k for k in paramiko.Transport._preferred_keys if k not in allowed]
            }
        # fabric merges into the Config it is given, emptying it for a moment: a Config shared
        # between threads then read as empty elsewhere ("No attribute or config key found for
        # 'gateway'", seen about once in 500 hosts under load). Each connection gets its own
        # clone, made under a lock (0.15 ms).
        with _FABRIC_LOCK:
            conn = Connection(
                spec.hostname,
                user=self._login_user(),
                port=spec.port,
                config=_fabric_config().clone(),
                connect_kwargs=kwargs,
            )
        # fabric installs AutoAddPolicy: replace it. paramiko is given no host keys of its own, so
        # every server key, after the key exchange and before authentication, goes to our
        # store, which judges it as OpenSSH does: @revoked refused first, then any matching key
        # on record accepted (paramiko keeps one key per type, so a second key of a type on
        # record would hide the first and read as "changed").
        conn.client.set_missing_host_key_policy(VerifyingPolicy(self.known_hosts, self.accept_new))
        self.connection = conn
        opened_at = time.monotonic()
        try:
            conn.open()
        except HostKeyError:
            raise
        except paramiko.BadHostKeyException as exc:
            key = exc.key
            raise ChangedHostKey(
                changed_message(
                    name, key.get_name(), key.get_base64(), self.known_hosts.known(name)
                )
            ) from None
        except paramiko.AuthenticationException as exc:
            raise AuthenticationFailed(
                f"{self.name}: authentication failed for user {self._login_user()} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        except paramiko.IncompatiblePeer as exc:
            if known and "host key" in str(exc):
                types = ", ".join(sorted({e.keytype for e in known}))
                raise ChangedHostKey(
                    f"HOST KEY CHANGED for {name}: it offers none of the key types on record "
                    f"({types}); refusing. If the host was reinstalled, remove the old key with "
                    f"`ssh-keygen -R '{name}' -f {known[0].source.rsplit(':', 1)[0]}`"
                ) from None
            raise ConnectError(
                f"{self.name}: no common SSH algorithms ({exc}); very old servers offering only "
                "ssh-rsa (SHA-1) or ssh-dss host keys need an ed25519 or ecdsa host key"
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport = conn.client.get_transport()
            banner = bool(transport is not None and transport.remote_version)
            waited = time.monotonic() - opened_at >= t * 0.9
            raise ConnectError(
                f"{self.name}: {_describe_connect_error(exc, t, banner, waited)}"
            ) from None
        server_key = conn.transport.get_remote_server_key()
        if self.known_hosts.is_revoked(name, server_key.get_name(), server_key.get_base64()):
            raise RevokedHostKey(f"host key for {name} is marked @revoked")
        log.debug("%s: connected to %s as %s", self.name, name, self._login_user())

    def _tcp_connect(self) -> socket.socket:
        spec = self.spec
        try:
            infos = socket.getaddrinfo(spec.hostname, spec.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectError(
                f"{self.name}: cannot resolve {spec.hostname}: {exc.strerror}"
            ) from None
        last: str = "no address"
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            self._sock = sock
            sock.settimeout(self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.connect(addr)
                return sock
            except TimeoutError:
                last = f"TCP connect to port {spec.port} timed out after {self.connect_timeout:g}s"
            except ConnectionRefusedError:
                last = f"connection refused on port {spec.port}"
            except OSError as exc:
                last = f"cannot connect to port {spec.port}: {exc.strerror or exc}"
            sock.close()
        raise ConnectError(f"{self.name}: {last}")

    def _jump_channel(self) -> Any:
        """Open each ProxyJump hop in turn, each through the one before; return a direct-tcpip
        channel from the last hop to the target. Hops are resolved through ~/.ssh/config like
        OpenSSH does; a hop without a user gets the target's user (labs use one account)."""
        spec = self.spec
        assert spec.proxy_jump
        previous: SSHSession | None = None
        for hop in spec.proxy_jump.split(","):
            try:
                user, host, port = _split_jump(hop.strip())
            except ValueError:
                raise ConnectError(f"{self.name}: bad ProxyJump {spec.proxy_jump!r}") from None
            cfg = ssh_config_lookup(host)
            hop_spec = ConnSpec(
                name=f"{spec.name} (jump {host})",
                hostname=cfg.get("hostname", host),
                port=port or int(cfg.get("port", 22)),
                user=user or cfg.get("user") or spec.user,
                key_filenames=tuple(os.path.expanduser(k) for k in cfg.get("identityfile", []))
                + spec.key_filenames,
                proxy_jump=None,
                connection="ssh",
                become=False,
                become_user="root",
            )
            hop_session = SSHSession(
                hop_spec,
                known_hosts=self.known_hosts,
                accept_new_host_keys=self.accept_new,
                connect_timeout=self.connect_timeout,
                via=previous,
            )
            self._jumps.append(hop_session)
            hop_session.open()
            previous = hop_session
        assert previous is not None
        return previous.channel_to(spec.hostname, spec.port, self.name)

    def channel_to(self, hostname: str, port: int, for_host: str) -> Any:
        """A direct-tcpip channel from this host to ``hostname:port`` (we are the jump host)."""
        try:
            return self.transport.open_channel(
                "direct-tcpip",
                (hostname, port),
                ("127.0.0.1", 0),
                timeout=self.connect_timeout,
            )
        except Exception as exc:
            raise ConnectError(
                f"{for_host}: jump host {self.spec.hostname} could not reach "
                f"{hostname}:{port}: {exc}"
            ) from None

    def _exec(self, shown: str, wire: str, data: bytes | None, timeout: float) -> CommandResult:
        transport = self.transport
        if transport is None or not transport.is_active():
            raise TransportLost(f"{self.name}: connection is not open")
        start = time.monotonic()
        deadline = start + timeout
        log.debug("%s: run %s", self.name, shown)
        try:
            chan = transport.open_session(timeout=self.connect_timeout)
        except Exception as exc:
            raise TransportLost(
                f"{self.name}: connection lost (cannot open a channel: "
                f"{str(exc) or type(exc).__name__})"
            ) from None
        self.round_trips += 1
        out, err = _Capture(self.output_budget), _Capture(self.output_budget)
        try:
            chan.exec_command(wire)
            pending = memoryview(data or b"")
            if not pending:
                chan.shutdown_write()
            fd = chan.fileno()
            while True:
                if chan.recv_ready():
                    out.add(chan.recv(_READ_SIZE))
                    continue
                if chan.recv_stderr_ready():
                    err.add(chan.recv_stderr(_READ_SIZE))
                    continue
                if pending:
                    # stdin goes out as the window allows, interleaved with reading, so a
                    # command that writes before it reads can never deadlock against us
                    if chan.closed or chan.eof_received:
                        pending = memoryview(b"")  # the command stopped reading: drop the rest
                    elif chan.send_ready():
                        pending = pending[chan.send(pending[:_READ_SIZE]) :]
                        if not pending:
                            chan.shutdown_write()
                        continue
                remaining = deadline - time.monotonic()
                if chan.eof_received or chan.closed:
                    if chan.exit_status_ready() or chan.closed:
                        break
                    if remaining <= 0 or not chan.status_event.wait(remaining):
                        raise CommandTimeout(
                            f"{self.name}: `{shown}` timed out after {timeout:g}s", timeout
                        )
                    continue
                if remaining <= 0:
                    raise CommandTimeout(
                        f"{self.name}: `{shown}` timed out after {timeout:g}s", timeout
                    )
                select.select([fd], [], [], min(remaining, 0.005 if pending else 1.0))
            # Data that arrived between the ready checks and the close is still buffered.
            while chan.recv_ready():
                out.add(chan.recv(_READ_SIZE))
            while chan.recv_stderr_ready():
                err.add(chan.recv_stderr(_READ_SIZE))
            code = chan.recv_exit_status() if chan.exit_status_ready() else -1
            if code == -1 and not transport.is_active():
                raise TransportLost(f"{self.name}: connection lost while running `{shown}`")
        except (CommandTimeout, TransportLost):
            raise
        except (OSError, EOFError) as exc:
            raise TransportLost(
                f"{self.name}: connection lost while running `{shown}`: {exc}"
            ) from None
        except Exception as exc:
            if type(exc).__module__.startswith("paramiko"):
                raise TransportLost(
                    f"{self.name}: SSH error while running `{shown}`: {exc}"
                ) from None
            raise
        finally:
            # Closing sends a message: on a dead link it raises (EOFError), which must not
            # replace the TransportLost above or escape as an internal error.
            with contextlib.suppress(Exception):
                chan.close()
        truncated = bool(out.dropped or err.dropped)
        elapsed = time.monotonic() - start
        return CommandResult(shown, code, out.text(), err.text(), elapsed, truncated)

    def close(self) -> None:
        """Close the connection and any jump connections; safe from another thread."""
        self._closed = True
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # closing a half-open connection may raise; it is gone anyway
                log.debug("%s: error while closing", self.name, exc_info=True)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        for hop in reversed(self._jumps):
            hop.close()


def _describe_connect_error(
    exc: BaseException, timeout: float, got_banner: bool, waited: bool
) -> str:
    """One line for a failed handshake; ``waited``: it failed only when the timeout ran out."""
    text = str(exc) or type(exc).__name__
    if not got_banner and waited:
        return f"no SSH banner within {timeout:g}s"
    if "banner" in text.lower():
        detail = text.replace("banner'", "banner: '")[:160]
        return f"invalid SSH banner: the port answers, but not as an SSH server ({detail})"
    if waited or isinstance(exc, TimeoutError) or "no existing session" in text.lower():
        return f"SSH handshake timed out after {timeout:g}s"
    if isinstance(exc, EOFError):
        return "connection closed by the host during the SSH handshake"
    return f"SSH handshake failed: {text[:200]}"


# -- local -------------------------------------------------------------------------------------


class LocalSession(_BaseSession):
    """The same API on this machine through ``subprocess`` (no SSH, same timeouts and become)."""

    def _login_user(self) -> str:
        return getpass.getuser()

    def open(self) -> LocalSession:
        return self

    def reopen(self) -> LocalSession:
        return self

    def _exec(self, shown: str, wire: str, data: bytes | None, timeout: float) -> CommandResult:
        log.debug("%s: run %s", self.name, shown)
        self.round_trips += 1
        start = time.monotonic()
        proc = subprocess.Popen(
            ["/bin/sh", "-c", wire],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(data or b"", timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(
                f"{self.name}: `{shown}` timed out after {timeout:g}s", timeout
            ) from None
        code = proc.returncode if proc.returncode >= 0 else -1
        return CommandResult(shown, code, _decode(out), _decode(err), time.monotonic() - start)

    def put(self, data: bytes, path: str, mode: int = 0o644, *, become: bool | None = None) -> None:
        """Atomic local write; through sudo (same shell path as SSH) when become is needed."""
        use_become = self.spec.become if become is None else become
        if use_become and self._sudo_needed():
            super().put(data, path, mode, become=True)
            return
        self.round_trips += 1
        replace_file(path, data, mode)


def open_session(
    spec: ConnSpec,
    *,
    known_hosts: KnownHosts | None = None,
    accept_new_host_keys: bool = False,
    connect_timeout: float = 10.0,
    command_timeout: float = 60.0,
    become_password: str | None = None,
) -> Session:
    """Open the right kind of session for ``spec`` (``connection`` "ssh" or "local")."""
    if spec.connection == "local":
        return LocalSession(spec, command_timeout=command_timeout, become_password=become_password)
    return SSHSession(
        spec,
        known_hosts=known_hosts,
        accept_new_host_keys=accept_new_host_keys,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        become_password=become_password,
    ).open()


__all__ = [
    "AuthenticationFailed",
    "BecomeError",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConnectError",
    "LocalSession",
    "SSHSession",
    "Session",
    "TransportLost",
    "join",
    "open_session",
]
