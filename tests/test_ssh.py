"""Sessions against real sshd hosts and the local machine: commands, put, become, timeouts."""

from __future__ import annotations

import logging
import os
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.hostkeys import KnownHosts
from provision.ssh import (
    BecomeError,
    CommandTimeout,
    ConnectError,
    LocalSession,
    SSHSession,
    TransportLost,
)
from provision.target import conn_spec
from tests.conftest import need_binary
from tests.lab.fixtures import *  # noqa: F403
from tests.lab.sshd import JUNK_MARK, SUDO_PASSWORD, SUDO_USER, SshdLab


def _open(lab: SshdLab, name: str, **kwargs) -> SSHSession:
    overrides = kwargs.pop("hostvars", {})
    return SSHSession(
        lab.host(name).spec(**overrides),
        known_hosts=KnownHosts([lab.known_hosts], include_user=False),
        connect_timeout=kwargs.pop("connect_timeout", 5),
        **kwargs,
    ).open()


@pytest.fixture
def session(sshd_lab: SshdLab) -> Iterator[SSHSession]:
    s = _open(sshd_lab, "lab01")
    yield s
    s.close()


def test_commands_share_one_connection_with_nodelay(session: SSHSession) -> None:
    transport = session.transport
    assert session.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    results = [session.run(f"echo {i}; echo e{i} >&2; exit {i % 3}") for i in range(10)]
    assert [(r.stdout, r.stderr, r.exit_code) for r in results] == [
        (f"{i}\n", f"e{i}\n", i % 3) for i in range(10)
    ]
    assert session.transport is transport and session.round_trips == 10
    # with TCP_NODELAY a small command costs a few ms, not the ~40 ms Nagle stall
    assert statistics.median(session.run("true").duration for _ in range(15)) < 0.03


def test_exit_255_is_a_command_failure_not_a_lost_connection(session: SSHSession) -> None:
    result = session.run("echo bye >&2; exit 255")
    assert (result.exit_code, result.ok, result.stderr) == (255, False, "bye\n")
    assert session.run("true").ok


def test_stdin_and_large_output_on_both_streams(session: SSHSession) -> None:
    payload = os.urandom(3 << 20)
    result = session.run("cat; head -c 3000000 /dev/zero | tr '\\0' e >&2", stdin=payload)
    assert result.ok
    assert len(result.stdout) > 0 and len(result.stderr) == 3_000_000
    digest = session.run("sha256sum | cut -c1-64", stdin=payload).stdout.strip()
    import hashlib

    assert digest == hashlib.sha256(payload).hexdigest()


def test_put_is_atomic_and_sets_mode(session: SSHSession, tmp_path: Path) -> None:
    target = tmp_path / "sub dir; $(touch x)" / "file 'q'.conf"
    target.parent.mkdir()
    target.write_text("old")
    inode = target.stat().st_ino
    session.put(b"new\x00content\n", str(target), 0o640)
    assert target.read_bytes() == b"new\x00content\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert target.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert sorted(os.listdir(target.parent)) == ["file 'q'.conf"]
    assert not (tmp_path / "x").exists()
    with pytest.raises(Exception, match="writing"):
        session.put(b"x", str(tmp_path / "missing" / "f"))


def test_command_timeout_leaves_session_usable(session: SSHSession) -> None:
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"timed out after 0\.5s"):
        session.run("sleep 5", timeout=0.5)
    assert time.monotonic() - start < 2
    assert session.run("echo still here").stdout == "still here\n"


def test_transport_loss_mid_command_is_transport_lost(session: SSHSession) -> None:
    def cut() -> None:
        time.sleep(0.3)
        session.transport.sock.shutdown(socket.SHUT_RDWR)

    threading.Thread(target=cut, daemon=True).start()
    with pytest.raises(TransportLost):
        session.run("sleep 3")


def test_junk_host_still_runs_the_command(sshd_lab: SshdLab) -> None:
    with _open(sshd_lab, "junk") as s:
        result = s.run("echo real-output")
    assert result.ok and result.stdout.startswith(JUNK_MARK)
    assert result.stdout.endswith("real-output\n")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("closed", "connection refused"),
        ("tarpit", "no SSH banner within 1s"),
        ("garbage", "banner"),
    ],
)
def test_fault_hosts_fail_to_connect_with_a_reason(
    sshd_lab: SshdLab, kind: str, reason: str
) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectError, match=reason):
        _open(sshd_lab, kind, connect_timeout=1)
    assert time.monotonic() - start < 3


def test_proxy_jump_through_another_lab_host(sshd_lab: SshdLab) -> None:
    import paramiko

    jump = sshd_lab.host("lab01")
    hostvars = {"ansible_ssh_common_args": f"-o ProxyJump=root@{jump.address}:{jump.port}"}
    with _open(sshd_lab, "lab02", hostvars=hostvars) as s:
        assert isinstance(s.transport.sock, paramiko.Channel)  # tunnelled, not a TCP socket
        assert s.run("echo via jump").stdout == "via jump\n"
        assert len(s._jumps) == 1 and s._jumps[0].transport.is_active()
    two_hops = {"ansible_ssh_common_args": f"-J {jump.address},{sshd_lab.host('lab02').address}"}
    with _open(sshd_lab, "lab03", hostvars=two_hops) as s:
        assert s.run("echo two hops").stdout == "two hops\n"
        assert [j.spec.hostname for j in s._jumps] == [jump.address, sshd_lab.host("lab02").address]
        assert isinstance(s._jumps[1].transport.sock, paramiko.Channel)
    closed = sshd_lab.host("closed")
    bad = {"ansible_ssh_common_args": f"-J root@{jump.address}"}
    bad_spec = closed.spec(**bad)
    with pytest.raises(ConnectError, match="jump host"):
        SSHSession(
            bad_spec, known_hosts=KnownHosts([sshd_lab.known_hosts], include_user=False)
        ).open()


# -- become --------------------------------------------------------------------------------


def _sudo_session(lab: SshdLab, password: str | None) -> SSHSession:
    need_binary("sudo", "sudo")
    return _open(lab, "sudo", hostvars={"ansible_become": True}, become_password=password)


def test_become_with_password_runs_as_root_and_keeps_stdin(sshd_lab: SshdLab) -> None:
    with _sudo_session(sshd_lab, SUDO_PASSWORD) as s:
        assert s.run("id -un").stdout == "root\n"
        assert s.run("id -un", become=False).stdout == f"{SUDO_USER}\n"
        assert s.run("cat", stdin=b"line1\nline2\n").stdout == "line1\nline2\n"
        path = "/root/provision-become-put-test"
        s.put(b"secret-free\n", path, 0o600)
        assert Path(path).read_bytes() == b"secret-free\n"
        assert Path(path).stat().st_uid == 0
        os.unlink(path)


def test_wrong_password_fails_fast_and_clearly(sshd_lab: SshdLab) -> None:
    with _sudo_session(sshd_lab, "not-the-password") as s:
        start = time.monotonic()
        with pytest.raises(BecomeError, match="rejected the become password") as err:
            s.run("id -un")
        assert time.monotonic() - start < 5  # one attempt (PAM's ~2 s delay), not three
        assert "not-the-password" not in str(err.value)
        assert s.round_trips == 1


def test_missing_password_gives_a_clear_error(sshd_lab: SshdLab) -> None:
    with _sudo_session(sshd_lab, None) as s, pytest.raises(BecomeError, match="needs a password"):
        s.run("id -un")


def test_password_never_in_argv_logs_or_ps(
    sshd_lab: SshdLab, caplog: pytest.LogCaptureFixture
) -> None:
    """G3: canary password at full verbosity; sample every process's argv during the run."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("paramiko").setLevel(logging.DEBUG)
    seen: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            seen.append(out)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with _sudo_session(sshd_lab, SUDO_PASSWORD) as s:
            result = s.run("sleep 1; id -un")
            commands = [result.command]
    finally:
        stop.set()
        sampler.join()
        logging.getLogger("paramiko").setLevel(logging.NOTSET)
    assert result.stdout == "root\n"
    assert any("sleep 1" in snapshot for snapshot in seen)  # we did catch the command running
    assert not [snap for snap in seen if SUDO_PASSWORD in snap]
    assert SUDO_PASSWORD not in caplog.text and caplog.text
    assert SUDO_PASSWORD not in " ".join(commands)


# -- local ---------------------------------------------------------------------------------


def test_local_session_runs_puts_and_times_out(tmp_path: Path) -> None:
    spec = conn_spec("localhost", {"ansible_connection": "local"})
    with LocalSession(spec, command_timeout=5).open() as s:
        result = s.run("printf '%s' \"$0\"; echo err >&2; exit 4", stdin=b"")
        assert (result.stdout, result.stderr, result.exit_code) == ("/bin/sh", "err\n", 4)
        assert s.run("cat", stdin=b"abc").stdout == "abc"
        target = tmp_path / "f.conf"
        s.put(b"data", str(target), 0o600)
        assert target.read_bytes() == b"data" and target.stat().st_mode & 0o777 == 0o600
        start = time.monotonic()
        with pytest.raises(CommandTimeout):
            s.run(f"sleep 30 & echo $! > {tmp_path}/pid; wait", timeout=0.5)
        assert time.monotonic() - start < 3
        pid = int((tmp_path / "pid").read_text())
        time.sleep(0.1)
        assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text()
        assert s.round_trips == 4


def test_local_become_as_root_needs_no_sudo() -> None:
    if os.geteuid() != 0:
        pytest.skip("checks the root shortcut")
    spec = conn_spec("localhost", {"ansible_connection": "local", "ansible_become": True})
    with LocalSession(spec).open() as s:
        assert s.run("id -u").stdout == "0\n"


def test_stdin_never_deadlocks_or_breaks_the_session(session: SSHSession) -> None:
    big = b"x" * (4 << 20)
    # the command ignores stdin entirely: the rest is dropped, the result is still the command's
    assert session.run("exit 3", stdin=big).exit_code == 3
    # the command writes more than the SSH window before it reads its stdin
    result = session.run("head -c 5000000 /dev/zero; wc -c", stdin=big, timeout=30)
    assert result.ok and result.stdout.endswith(f"{len(big)}\n")
    assert session.run("echo fine").stdout == "fine\n"


def test_huge_output_is_capped_not_a_crash(
    session: SSHSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    import provision.ssh

    monkeypatch.setattr(provision.ssh, "MAX_OUTPUT", 1 << 20)
    result = session.run("head -c 6000000 /dev/urandom; echo done >&2", timeout=30)
    assert result.ok and result.stderr == "done\n"
    assert "more bytes of output dropped" in result.stdout
    assert len(result.stdout.encode("utf-8", "surrogateescape")) < 4 << 20
