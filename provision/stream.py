"""Byte streams through the controller's open connections: one command's stdout piped into
another host's command's stdin (``docker save`` on a source into ``docker load`` on a target),
with a rate limit, an idle bound and progress callbacks.

A stream rides the host's existing SSH transport as one more channel (paramiko transports carry
many channels at once, from several threads), so fanning an image out opens no new connection.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from provision.errors import ProvisionError
from provision.ssh import LocalSession, SSHSession

CHUNK = 1 << 18  # bytes per read/write; large enough that Python's per-call cost stays small


class StreamError(ProvisionError):
    """A stream stopped before its end: a command died, a side went quiet, a link dropped;
    ``host`` names the side that broke."""

    def __init__(self, message: str, host: str = "") -> None:
        super().__init__(message)
        self.host = host


class Stream(Protocol):
    """One running remote (or local) command with its stdin and stdout open to us."""

    host: str

    def read(self, size: int) -> bytes: ...  # b"" at end of output
    def write(self, data: bytes) -> None: ...
    def close_input(self) -> None: ...
    def wait(self, timeout: float) -> tuple[int, str]: ...  # exit code (-1: unknown), stderr
    def abort(self) -> None: ...


class _ChannelStream:
    """A command on its own channel of the host's SSH transport."""

    def __init__(
        self, session: SSHSession, command: str, become: bool | None, limit: float, idle: float
    ) -> None:
        self.host = session.name
        wire, prefix = session.wire(command, become=become, limit=limit)
        transport = session.transport
        if transport is None or not transport.is_active():
            raise StreamError(f"{self.host}: connection is not open", self.host)
        try:
            self.chan = transport.open_session(timeout=session.connect_timeout)
            self.chan.settimeout(idle)
            self.chan.exec_command(wire)
            if prefix:
                self.chan.sendall(prefix)
        except Exception as exc:
            raise StreamError(f"{self.host}: cannot start `{command}`: {exc}", self.host) from None
        session.round_trips += 1
        self.idle = idle

    def read(self, size: int) -> bytes:
        try:
            return bytes(self.chan.recv(size))
        except TimeoutError:
            raise StreamError(f"{self.host}: no data for {self.idle:g} s", self.host) from None
        except Exception as exc:
            raise StreamError(f"{self.host}: stream broke: {exc}", self.host) from None

    def write(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
        except TimeoutError:
            raise StreamError(f"{self.host}: took no data for {self.idle:g} s", self.host) from None
        except Exception as exc:
            raise StreamError(
                f"{self.host}: the receiving command stopped ({exc})", self.host
            ) from None

    def close_input(self) -> None:
        with contextlib.suppress(Exception):
            self.chan.shutdown_write()

    def wait(self, timeout: float) -> tuple[int, str]:
        self.chan.status_event.wait(timeout)
        code = self.chan.recv_exit_status() if self.chan.exit_status_ready() else -1
        err = b""
        with contextlib.suppress(Exception):
            while self.chan.recv_stderr_ready():
                err += self.chan.recv_stderr(CHUNK)
        return code, err.decode("utf-8", errors="replace")

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.chan.close()


class _ProcessStream:
    """The same on the control machine itself (``ansible_connection=local``)."""

    def __init__(
        self, session: LocalSession, command: str, become: bool | None, limit: float, idle: float
    ) -> None:
        self.host = session.name
        wire, prefix = session.wire(command, become=become, limit=limit)
        session.round_trips += 1
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", wire],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.stdout = os.fdopen(self.proc.stdout.fileno(), "rb", buffering=0, closefd=False)
        if prefix:
            self.write(prefix)

    def read(self, size: int) -> bytes:
        return self.stdout.read(size) or b""

    def write(self, data: bytes) -> None:
        try:
            self.stdin.write(data)
            self.stdin.flush()
        except OSError as exc:
            raise StreamError(
                f"{self.host}: the receiving command stopped ({exc})", self.host
            ) from None

    def close_input(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()

    def wait(self, timeout: float) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return -1, ""
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read().decode("utf-8", errors="replace")

    def abort(self) -> None:
        # stdin closed as well, as sshd closes it with the channel: a command that waits on
        # its input (a fan-out listener) ends even when it is not the shell that is killed
        self.close_input()
        with contextlib.suppress(OSError):
            self.proc.kill()


def open_stream(
    session: Any, command: str, *, become: bool | None, limit: float, idle: float = 120.0
) -> Stream:
    """Start ``command`` on ``session``'s host with stdin and stdout streamed by the caller."""
    if isinstance(session, SSHSession):
        return _ChannelStream(session, command, become, limit, idle)
    if isinstance(session, LocalSession):
        return _ProcessStream(session, command, become, limit, idle)
    raise StreamError(f"{getattr(session, 'name', '?')}: this connection cannot stream")


@dataclass
class Progress:
    """One progress report of a stream: bytes so far, of about ``total``, rate and ETA."""

    done: int
    total: int | None
    rate: float  # bytes per second since the start
    eta: float | None  # seconds left at that rate; None when the total is unknown


class _Pacer:
    """Keeps a stream under ``rate`` bytes per second (0: no limit) by sleeping."""

    def __init__(self, rate: float) -> None:
        self.rate, self.started = rate, time.monotonic()

    def pace(self, done: int) -> None:
        if self.rate > 0:
            ahead = done / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


def relay(
    source: Stream,
    target: Stream,
    *,
    total: int | None,
    rate: float = 0,
    every: float = 2.0,
    on_progress: Callable[[Progress], None] | None = None,
) -> int:
    """Copy ``source``'s output into ``target``'s input until the source ends; returns the
    bytes copied. Raises StreamError when either side breaks (the caller judges the result
    from the target's exit status and its own verification, never from the byte count)."""
    done, broken = relay_many(
        source, [target], total=total, rate=rate, every=every, on_progress=on_progress
    )
    if broken:
        raise broken[target.host]
    return done


def relay_many(
    source: Stream,
    targets: Sequence[Stream],
    *,
    total: int | None,
    rate: float = 0,
    every: float = 2.0,
    on_progress: Callable[[Progress], None] | None = None,
) -> tuple[int, dict[str, StreamError]]:
    """Copy ``source``'s output into every target's input (one read, several writes) until
    the source ends; returns the bytes copied and the targets that broke on the way, by
    host (the others went on without them; all broken ends the copy). Raises StreamError
    when the source breaks."""
    pacer = _Pacer(rate)
    started = last = time.monotonic()
    done = 0
    live, broken = list(targets), dict[str, StreamError]()
    while live:
        chunk = source.read(CHUNK)
        if not chunk:
            break
        for target in list(live):
            try:
                target.write(chunk)
            except StreamError as exc:
                broken[target.host] = exc
                live.remove(target)
                target.abort()
        done += len(chunk)
        pacer.pace(done)
        now = time.monotonic()
        if on_progress is not None and now - last >= every:
            last = now
            on_progress(progress(done, total, now - started))
    for target in live:
        target.close_input()
    return done, broken


def progress(done: int, total: int | None, seconds: float) -> Progress:
    """Rate since the start and the ETA it gives (pure)."""
    speed = done / seconds if seconds > 0 else 0.0
    eta = None
    if total and speed > 0:
        eta = max(0.0, (total - done) / speed)
    return Progress(done, total, speed, eta)


__all__ = ["Progress", "Stream", "StreamError", "open_stream", "progress", "relay", "relay_many"]
