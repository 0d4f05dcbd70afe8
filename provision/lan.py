"""Direct host-to-host transfers on the LAN (fan-out's ``direct`` transport): the bytes of a
``docker save`` go from the source host straight to each receiver's ``docker load`` over one TCP
connection per receiver, and the controller carries only a few lines of control on the SSH
channels it already holds (docs/lab-baseline.md, "Fan-out").

The receiver runs :data:`_LISTENER` (python3, as the audit's probe; a host without it is relayed):
it binds a port (``port``, 0 for any free one), says which on stdout, and accepts exactly one
connection that starts with the transfer's token, 32 random bytes the controller sent it on the
SSH channel's stdin (never a command line); a connection without the token is closed and the
listener goes on waiting, at most ``wait`` seconds, or until the controller closes the channel.
It then replaces itself with the load script, the socket as its stdin, so no byte is copied by
Python on the receiving side. The source runs :data:`_SENDER`: it reads one ``index address
port token`` line per receiver from stdin, connects to each (a receiver it cannot reach is
reported and left to the SSH relay), runs ``docker save`` and writes every chunk to every
receiver's socket, reporting on stdout.

The bytes are not encrypted on the wire; they are verified: the load script names the image only
once its ID (the sha256 of its config, which ``docker load`` checks every layer against) is the
source's, so a wrong, cut or altered stream leaves nothing reported present.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from provision.shell import join
from provision.stream import Stream, StreamError, open_stream

LISTEN_WAIT = 60.0  # seconds a listener waits for its source's connection
CONNECT_TIMEOUT = 5.0  # seconds the source tries each receiver before it is left to the relay
NOBODY_CAME = 75  # the listener's exit status when no connection brought the token in time
COMMAND_NOT_FOUND = 127  # the shell's status for a missing python3

# Python 3.5+ (Debian 9, Ubuntu 18.04 on); -I -S: no user site, no PYTHON* variables.
_LISTENER = r"""
import hmac, os, select, socket, sys, time
token = bytes.fromhex(sys.stdin.readline().strip())
load, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", port))
except OSError:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("", port))
srv.listen(8)
sys.stdout.write("port %d\n" % srv.getsockname()[1])
sys.stdout.flush()
deadline = time.monotonic() + wait
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        sys.exit(75)
    ready = select.select([srv, sys.stdin], [], [], left)[0]
    if sys.stdin in ready:  # the controller closed the channel: the transfer is off
        sys.exit(75)
    if srv not in ready:
        continue
    conn = srv.accept()[0]
    conn.settimeout(3)  # the sender writes the token at once: a silent peer waits 3 s, no more
    got = b""
    try:
        while len(got) < len(token):
            part = conn.recv(len(token) - len(got))
            if not part:
                break
            got += part
    except OSError:
        pass
    if hmac.compare_digest(got, token):
        break
    conn.close()
srv.close()
conn.settimeout(None)  # blocking again: the fd becomes the load's stdin
os.dup2(conn.fileno(), 0)
conn.close()
os.execv("/bin/sh", ["sh", "-c", load])
"""

_SENDER = r"""
import os, socket, subprocess, sys, time
image = sys.argv[1]
rate, every, connect = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words).replace("\n", " ") + "\n")
    sys.stdout.flush()
socks = {}
for line in sys.stdin:
    parts = line.split()
    if not parts:
        break
    index, host, port, token = parts
    try:
        s = socket.create_connection((host, int(port)), timeout=connect)
        s.settimeout(120)
        s.sendall(bytes.fromhex(token))
        socks[index] = s
    except (OSError, ValueError) as exc:
        say("unreachable", index, exc)
if not socks:
    say("done", 0, 0)
    sys.exit(0)
save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
fd = save.stdout.fileno()
done, started = 0, time.monotonic()
last = started
while socks:
    chunk = os.read(fd, 1 << 18)
    if not chunk:
        break
    now = time.monotonic()
    if done and now - last >= every:  # before the chunk: a count is of a save still going
        last = now
        say("sent", done)
    for index, s in list(socks.items()):
        try:
            s.sendall(chunk)
        except OSError as exc:
            say("cut", index, exc)
            s.close()
            del socks[index]
    done += len(chunk)
    now = time.monotonic()
    if rate > 0 and done / rate > now - started:
        time.sleep(done / rate - (now - started))
if not socks:
    save.kill()
code = save.wait()
for s in socks.values():
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    s.close()
say("done", done, code)
sys.exit(0)
"""


def listen_command(load: str, port: int, wait: float = LISTEN_WAIT) -> str:
    """The receiver's command: listen, then run ``load`` with the connection as its stdin."""
    return join(["python3", "-I", "-S", "-c", _LISTENER, load, str(port), f"{wait:g}"])


def send_command(image_id: str, rate: float, every: float) -> str:
    """The source's command: ``docker save image_id`` into every receiver named on stdin,
    saying its byte count every ``every`` seconds."""
    connect = f"{CONNECT_TIMEOUT:g}"
    return join(
        ["python3", "-I", "-S", "-c", _SENDER, image_id, f"{rate:g}", f"{every:g}", connect]
    )


@dataclass
class Endpoint:
    """Where the source finds one receiver's listener, and the token that listener expects."""

    index: int
    address: str
    port: int
    token: str = field(default_factory=lambda: secrets.token_hex(32))


def target_lines(endpoints: Sequence[Endpoint]) -> bytes:
    """The sender's stdin: one ``index address port token`` line per receiver, then a blank one."""
    lines = [f"{e.index} {e.address} {e.port} {e.token}\n" for e in endpoints]
    return ("".join(lines) + "\n").encode()


@dataclass
class SendLog:
    """What the sender said (pure): bytes sent, receivers it could not reach or lost, and
    ``docker save``'s exit status once it is done (None until then)."""

    sent: int = 0
    unreachable: dict[int, str] = field(default_factory=dict)
    cut: dict[int, str] = field(default_factory=dict)
    save_code: int | None = None

    def feed(self, line: str) -> bool:
        """Take one line; True when it moved the byte count (a progress report is due)."""
        word, _, rest = line.strip().partition(" ")
        if word == "sent" and rest.isdigit():
            self.sent = int(rest)
            return True
        if word in ("unreachable", "cut"):
            index, _, why = rest.partition(" ")
            if index.isdigit():
                (self.unreachable if word == "unreachable" else self.cut)[int(index)] = why
            return False
        if word == "done":
            parts = rest.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].lstrip("-").isdigit():
                self.sent, self.save_code = int(parts[0]), int(parts[1])
        return False


def read_line(stream: Stream, limit: int = 256) -> str:
    """One line of ``stream``'s output (a listener's ``port N``), byte by byte: what follows
    is not ours to read."""
    got = b""
    while not got.endswith(b"\n") and len(got) < limit:
        byte = stream.read(1)
        if not byte:
            break
        got += byte
    return got.decode("utf-8", errors="replace").strip()


@dataclass
class Listener:
    """A receiver's running listener: its stream (the load's exit status comes on it) and the
    endpoint the source connects to."""

    stream: Stream
    endpoint: Endpoint


def start_listener(
    session: Any,
    load: str,
    *,
    index: int,
    address: str,
    port: int,
    become: bool | None,
    limit: float,
) -> Listener:
    """Start the listener on ``session``'s host and learn its port (StreamError when it
    cannot listen: no python3, the port taken)."""
    stream = open_stream(session, listen_command(load, port), become=become, limit=limit, idle=30)
    endpoint = Endpoint(index, address, port)
    try:  # stdin stays open: its end (the channel closed) tells the listener to give up
        with contextlib.suppress(StreamError):  # it ended at once: its stderr says why
            stream.write(f"{endpoint.token}\n".encode())
        said = read_line(stream)
    except StreamError:
        stream.abort()
        raise
    word, _, number = said.partition(" ")
    if word != "port" or not number.isdigit():
        code, err = stream.wait(5)
        stream.abort()
        detail = err.strip()[-300:] or said or f"exit {code}"
        raise StreamError(f"{stream.host}: cannot listen for the transfer: {detail}", stream.host)
    endpoint.port = int(number)
    return Listener(stream, endpoint)


def run_sender(
    session: Any,
    image_id: str,
    endpoints: Sequence[Endpoint],
    *,
    become: bool | None,
    limit: float,
    rate: float,
    on_sent: Callable[[int, float], None],
    every: float,
) -> tuple[SendLog, str]:
    """Run the sender on the source until ``docker save`` ends; what it said, and its stderr.
    ``on_sent(bytes, seconds)`` hears each byte count. StreamError when the source's side broke
    (its connection, or the sender died before saying it was done)."""
    started = time.monotonic()
    stream = open_stream(
        session, send_command(image_id, rate, every), become=become, limit=limit, idle=limit
    )
    said = SendLog()
    try:
        with contextlib.suppress(StreamError):  # it ended at once: its exit status says why
            stream.write(target_lines(endpoints))
        stream.close_input()
        rest = b""
        while chunk := stream.read(4096):
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                if said.feed(line.decode("utf-8", errors="replace")):
                    on_sent(said.sent, time.monotonic() - started)
        said.feed(rest.decode("utf-8", errors="replace"))
        code, err = stream.wait(60)
    finally:
        stream.abort()
    why = err.strip()[-300:] or f"exit {code}"
    if said.save_code is None and code == COMMAND_NOT_FOUND:  # no python3: relay them all
        said.unreachable = {e.index: f"{session.name} cannot send: {why}" for e in endpoints}
        said.save_code = 0
    if said.save_code is None:
        raise StreamError(f"{session.name}: the sender stopped: {why}", session.name)
    return said, err


__all__ = [
    "CONNECT_TIMEOUT",
    "LISTEN_WAIT",
    "NOBODY_CAME",
    "Endpoint",
    "Listener",
    "SendLog",
    "listen_command",
    "read_line",
    "run_sender",
    "send_command",
    "start_listener",
    "target_lines",
]
