"""Fan-out's direct transport (provision.lan) between real local processes: the receiver's
listener, the token it demands, the sender's fan to several listeners, a receiver it cannot
reach, a receiver that dies, and the listener that gives up when its channel closes.

``docker save`` is a STAND-IN here (a script named ``docker`` on PATH that prints a file): the
booted end-to-end tests with real dockerd are in tests/test_images_fanout.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from provision import lan
from provision.ssh import LocalSession
from provision.stream import StreamError
from provision.target import conn_spec


def _local(name: str) -> LocalSession:
    return LocalSession(conn_spec(name, {"ansible_connection": "local"}, ssh_config_path=""))


def _listen(out: Path, index: int = 0, load: str = "") -> lan.Listener:
    """A listener whose load writes what arrives to ``out`` (or runs ``load``)."""
    return lan.start_listener(
        _local(f"dst{index}"),
        load or f"cat > {out}",
        index=index,
        address="127.0.0.1",
        port=0,
        become=False,
        limit=30,
    )


def _send(image: str, endpoints: list[lan.Endpoint], **options: Any) -> lan.SendLog:
    """The sender on this machine (unpaced, every 2 s, no progress callback unless given)."""
    kwargs: dict[str, Any] = {"rate": 0, "on_sent": lambda *_: None, "every": 2.0, **options}
    said, _ = lan.run_sender(_local("src"), image, endpoints, become=False, limit=30, **kwargs)
    return said


def _without_python3(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH is ``bin_dir`` alone, with coreutils' timeout (the commands' bound) but no python3."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "timeout").symlink_to(shutil.which("timeout") or "/usr/bin/timeout")
    monkeypatch.setenv("PATH", str(bin_dir))


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_the_listener_loads_only_what_the_token_bearer_sends(tmp_path: Path) -> None:
    out = tmp_path / "out"
    listener = _listen(out)
    port = listener.endpoint.port
    assert port > 0
    intruder = _connect(port)
    intruder.sendall(b"x" * 64 + b"not the image")
    assert _closed_by_peer(intruder)  # refused, and the listener goes on waiting
    data = os.urandom(3 << 20)
    with _connect(port) as peer:
        peer.sendall(bytes.fromhex(listener.endpoint.token) + data)
    code, _ = listener.stream.wait(10)
    listener.stream.abort()
    assert code == 0 and out.read_bytes() == data


def test_a_silent_peer_delays_the_real_sender_by_seconds_not_more(tmp_path: Path) -> None:
    out = tmp_path / "out"
    listener = _listen(out)
    silent = _connect(listener.endpoint.port)  # connects first and never sends a byte
    started = time.monotonic()
    with _connect(listener.endpoint.port) as peer:
        peer.sendall(bytes.fromhex(listener.endpoint.token) + b"image")
    code, _ = listener.stream.wait(15)
    listener.stream.abort()
    assert code == 0 and out.read_bytes() == b"image"
    assert time.monotonic() - started < 8  # the silent one was dropped after 3 s
    assert _closed_by_peer(silent)


def test_a_listener_whose_channel_closes_stops_listening(tmp_path: Path) -> None:
    listener = _listen(tmp_path / "out")
    port = listener.endpoint.port
    listener.stream.abort()  # the controller gave the transfer up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _connect(port).close()
        except ConnectionRefusedError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"port {port} still listening after the channel closed")
    assert not (tmp_path / "out").exists()


def test_a_listener_that_cannot_bind_says_so_in_one_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(StreamError, match="cannot listen for the transfer"):
            lan.start_listener(
                _local("dst"),
                "cat >/dev/null",
                index=0,
                address="127.0.0.1",
                port=port,
                become=False,
                limit=30,
            )


@pytest.fixture
def standin_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """STAND-IN for ``docker save IMAGE``: prints tmp_path/IMAGE (exit 1 if it is missing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(f'#!/bin/sh\n[ "$1" = save ] && exec cat {tmp_path}/"$2"\nexit 2\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def test_one_save_reaches_every_listener_and_an_unreachable_one_is_named(
    standin_docker: Path,
) -> None:
    image = standin_docker / "img"
    image.write_bytes(os.urandom(2 << 20))
    outs = [standin_docker / "out0", standin_docker / "out1"]
    listeners = [_listen(out, i) for i, out in enumerate(outs)]
    with socket.socket() as closed:  # a port nobody listens on: a receiver behind a firewall
        closed.bind(("127.0.0.1", 0))
        nowhere = lan.Endpoint(2, "127.0.0.1", closed.getsockname()[1])
    sent: list[int] = []
    said = _send(
        "img",
        [*[x.endpoint for x in listeners], nowhere],
        rate=4e6,
        on_sent=lambda done, _: sent.append(done),
        every=0.1,
    )
    codes = [x.stream.wait(10)[0] for x in listeners]
    assert codes == [0, 0] and [o.read_bytes() for o in outs] == [image.read_bytes()] * 2
    assert said.save_code == 0 and said.sent == image.stat().st_size
    assert list(said.unreachable) == [2] and "refused" in said.unreachable[2].lower()
    assert not said.cut
    assert sent and all(0 < n < said.sent for n in sent)  # paced at 4 MB/s: counts while it ran


def test_a_receiver_that_dies_is_cut_and_the_others_go_on(standin_docker: Path) -> None:
    image = standin_docker / "img"
    image.write_bytes(os.urandom(24 << 20))
    good = _listen(standin_docker / "out0", 0)
    dying = _listen(standin_docker / "unused", 1, load="head -c 1000 >/dev/null")
    said = _send("img", [good.endpoint, dying.endpoint])
    assert good.stream.wait(10)[0] == 0
    assert (standin_docker / "out0").read_bytes() == image.read_bytes()
    assert list(said.cut) == [1] and said.save_code == 0


def test_a_failed_save_reaches_the_controller_as_its_exit_status(standin_docker: Path) -> None:
    listener = _listen(standin_docker / "out0")
    said = _send("missing", [listener.endpoint])
    listener.stream.wait(10)
    assert said.save_code == 1


def test_a_source_without_python3_leaves_every_receiver_to_the_relay(
    standin_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = _listen(standin_docker / "out0")
    _without_python3(standin_docker / "bin", monkeypatch)  # the stand-in docker stays
    said = _send("img", [listener.endpoint])
    listener.stream.abort()
    assert said.save_code == 0 and list(said.unreachable) == [0]
    assert "src cannot send" in said.unreachable[0] and "python3" in said.unreachable[0]


def test_a_receiver_without_python3_cannot_listen_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_python3(tmp_path / "bin", monkeypatch)
    with pytest.raises(StreamError, match=r"cannot listen for the transfer: .*python3"):
        _listen(tmp_path / "out")


def test_the_sender_s_lines_are_read_into_one_log() -> None:
    log = lan.SendLog()
    assert log.feed("sent 1000") and log.sent == 1000
    assert not log.feed("unreachable 2 [Errno 111] Connection refused")
    assert not log.feed("cut 0 [Errno 32] Broken pipe")
    assert not log.feed("garbage line")
    assert log.save_code is None
    log.feed("done 5000 0")
    assert (log.sent, log.save_code) == (5000, 0)
    assert log.unreachable == {2: "[Errno 111] Connection refused"}
    assert log.cut == {0: "[Errno 32] Broken pipe"}
    assert lan.target_lines([lan.Endpoint(0, "10.0.0.2", 4000, "ab")]) == b"0 10.0.0.2 4000 ab\n\n"
