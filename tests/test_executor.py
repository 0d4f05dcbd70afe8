"""run_hosts on real sshd hosts: typed states per host, deadline, scale, one connection per host."""

from __future__ import annotations

import os
import resource
import sys
import time

from provision.executor import HostOutcome, HostState, RunOptions, classify, run_hosts
from provision.hostkeys import UnknownHostKey
from provision.ssh import (
    BecomeError,
    CommandFailed,
    CommandResult,
    CommandTimeout,
    ConnectError,
    Session,
    SSHSession,
)
from provision.target import conn_spec
from tests.lab.fixtures import *  # noqa: F403
from tests.lab.sshd import SshdLab


def _true(session: Session) -> str:
    result = session.run("true")
    if not result.ok:
        raise CommandFailed(result)
    return "done"


def test_classify_maps_exceptions_to_states() -> None:
    result = CommandResult("x", 3, "", "line\n" * 1000, 0.1)
    failed = classify("h", CommandFailed(result))
    assert (failed.state, failed.exit_code) == (HostState.FAILED, 3)
    assert failed.stderr_tail.endswith("line") and len(failed.stderr_tail) <= 2000
    assert classify("h", UnknownHostKey("k")).state is HostState.HOSTKEY_REFUSED
    assert classify("h", ConnectError("c")).state is HostState.UNREACHABLE
    assert classify("h", CommandTimeout("t")).state is HostState.TIMED_OUT
    assert classify("h", BecomeError("b")).state is HostState.FAILED
    bug = classify("h", KeyError("oops"))
    assert bug.state is HostState.FAILED and "internal error: KeyError" in bug.reason


def test_every_fault_host_gets_its_own_state(sshd_lab: SshdLab) -> None:
    def task(session: Session) -> str:
        result = session.run(
            "echo out; echo oops >&2; exit 7" if session.name == "lab03" else "true"
        )
        if not result.ok:
            raise CommandFailed(result)
        return "ok"

    done: list[HostOutcome] = []
    opts = RunOptions(known_hosts=(sshd_lab.known_hosts,), connect_timeout=2, command_timeout=2)
    start = time.monotonic()
    outcomes = run_hosts(sshd_lab.specs(), task, opts, on_done=done.append)
    elapsed = time.monotonic() - start
    states = {name: o.state for name, o in outcomes.items()}
    expected = {
        "lab01": HostState.OK,
        "lab02": HostState.OK,
        "lab03": HostState.FAILED,
        "fault-closed": HostState.UNREACHABLE,
        "fault-tarpit": HostState.UNREACHABLE,
        "fault-garbage": HostState.UNREACHABLE,
        "fault-changed-key": HostState.HOSTKEY_REFUSED,
        "fault-hang": HostState.TIMED_OUT,
        "fault-junk": HostState.OK,
    }
    if "fault-sudo" in states:
        expected["fault-sudo"] = HostState.OK  # logs in as the sudo user; no become asked
    assert states == expected
    assert list(outcomes) == [s.name for s in sshd_lab.specs()]
    assert sorted(o.host for o in done) == sorted(outcomes)
    lab03 = outcomes["lab03"]
    assert (lab03.exit_code, lab03.stderr_tail, lab03.round_trips) == (7, "oops", 1)
    assert "connection refused" in outcomes["fault-closed"].reason
    assert "banner" in outcomes["fault-tarpit"].reason
    assert all(o.reason for o in outcomes.values() if o.state is not HostState.OK)
    assert elapsed < 6  # faults run in parallel, each bounded by its 2 s timeout


def test_deadline_returns_on_time_with_hanging_host_timed_out(sshd_lab: SshdLab) -> None:
    specs = [sshd_lab.host(n).spec() for n in ("lab01", "hang", "tarpit", "lab02")]
    opts = RunOptions(
        known_hosts=(sshd_lab.known_hosts,), connect_timeout=30, command_timeout=60, deadline=2.0
    )
    start = time.monotonic()
    outcomes = run_hosts(specs, _true, opts)
    elapsed = time.monotonic() - start
    assert 2.0 <= elapsed < 3.0
    assert outcomes["lab01"].state is HostState.OK and outcomes["lab02"].state is HostState.OK
    for name in ("fault-hang", "fault-tarpit"):
        assert outcomes[name].state is HostState.TIMED_OUT
        assert "deadline of 2s" in outcomes[name].reason


def test_forks_limit_queues_hosts_and_deadline_covers_unstarted(sshd_lab: SshdLab) -> None:
    specs = [sshd_lab.host(n).spec() for n in ("hang", "lab01", "lab02")]
    opts = RunOptions(known_hosts=(sshd_lab.known_hosts,), forks=1, deadline=1.5)
    outcomes = run_hosts(specs, _true, opts)
    assert outcomes["fault-hang"].state is HostState.TIMED_OUT
    assert outcomes["lab02"].state is HostState.TIMED_OUT
    assert "before this host was started" in outcomes["lab02"].reason


def test_local_connection_and_duplicates() -> None:
    spec = conn_spec("localhost", {"ansible_connection": "local"})
    outcomes = run_hosts([spec, spec], _true, RunOptions())
    assert list(outcomes) == ["localhost"] and outcomes["localhost"].state is HostState.OK


def test_fifty_hosts_one_connection_each(sshd_lab50: SshdLab) -> None:
    def task(session: Session) -> str:
        for _ in range(2):
            session.run("true")
        return session.run("hostname").stdout.strip()

    opts = RunOptions(known_hosts=(sshd_lab50.known_hosts,), forks=64, deadline=60)
    specs = sshd_lab50.specs()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    outcomes = run_hosts(specs, task, opts)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    assert len(outcomes) == 50
    assert {o.state for o in outcomes.values()} == {HostState.OK}
    assert {o.round_trips for o in outcomes.values()} == {3}
    for host in sshd_lab50.hosts:
        with open(os.path.join(host.dir, "sshd.log")) as fh:
            assert fh.read().count("Accepted publickey") == 1, host.name
    sys.stderr.write(f"\n50 hosts x 3 commands: wall {wall:.2f}s, controller CPU {cpu:.2f}s\n")
    assert wall < 30


def test_exit_255_is_failed_and_lost_transport_is_unreachable(sshd_lab: SshdLab) -> None:
    import socket

    def task(session: Session) -> str:
        if session.name == "lab01":
            result = session.run("exit 255")
            raise CommandFailed(result)
        assert isinstance(session, SSHSession)  # lab hosts are reached over SSH
        session.transport.sock.shutdown(socket.SHUT_RDWR)  # the network goes away mid-run
        session.run("true")
        return "unreachable"

    specs = [sshd_lab.host("lab01").spec(), sshd_lab.host("lab02").spec()]
    outcomes = run_hosts(specs, task, RunOptions(known_hosts=(sshd_lab.known_hosts,)))
    assert (outcomes["lab01"].state, outcomes["lab01"].exit_code) == (HostState.FAILED, 255)
    assert outcomes["lab02"].state is HostState.UNREACHABLE
    assert "connection" in outcomes["lab02"].reason
