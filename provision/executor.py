"""Run one task on many hosts in parallel; every host ends in a typed state.

Each host gets its own session (one connection for the whole task) in a pool of ``forks`` daemon
worker threads. Results come back through a queue to the calling thread, which calls ``on_done``
as each host finishes (live progress) and stops waiting at the overall deadline: unfinished hosts
are then "timed out" and their connections are closed from here, so a hanging host can delay
neither the others nor the return of this function (nor interpreter exit: workers are daemons).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from provision import defaults
from provision.errors import ProvisionError
from provision.hostkeys import HostKeyError, KnownHosts
from provision.ssh import (
    BecomeError,
    CommandFailed,
    CommandTimeout,
    ConnectError,
    LocalSession,
    OutputBudget,
    Session,
    SSHSession,
)
from provision.target import ConnSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

STDERR_TAIL_CHARS = 2000


class HostState(str, Enum):
    OK = "ok"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    HOSTKEY_REFUSED = "host key refused"
    TIMED_OUT = "timed out"


@dataclass
class HostOutcome:
    host: str
    state: HostState
    value: Any = None
    reason: str = ""
    exit_code: int | None = None
    stderr_tail: str = ""
    duration: float = 0.0
    round_trips: int = 0


@dataclass
class RunOptions:
    forks: int = defaults.FORKS
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    command_timeout: float = defaults.COMMAND_TIMEOUT
    deadline: float | None = None
    # The same deadline shared by several calls (apply's plays): the time.monotonic() by which
    # this call returns, ``deadline`` being the whole run's figure that reasons name.
    deadline_at: float | None = None
    # What command output the run may hold, all hosts together (None: one budget per call).
    output_budget: OutputBudget | None = None
    known_hosts: tuple[str, ...] = ()
    accept_new_host_keys: bool = False
    become_password: str | None = field(default=None, repr=False)
    # Keep each host's connection open after its task, for the next run_hosts call (the plays
    # of one playbook run share one connection per host); the owner closes the pool.
    pool: SessionPool | None = None


class SessionPool:
    """Open sessions by host name, handed from one ``run_hosts`` call to the next.

    A playbook of several plays (site.yml has seven) then costs one SSH connection per host,
    not one per play. A session whose host failed in a way that may have broken the
    connection is closed, not kept."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[ConnSpec, Session]] = {}
        self._lock = threading.Lock()

    def take(self, spec: ConnSpec) -> Session | None:
        """The host's open session, if it was opened with exactly this spec (a play with
        another become_user gets a fresh connection)."""
        with self._lock:
            kept = self._sessions.pop(spec.name, None)
        if kept is None:
            return None
        if kept[0] != spec:
            kept[1].close()
            return None
        return kept[1]

    def keep(self, spec: ConnSpec, session: Session) -> None:
        with self._lock:
            self._sessions[spec.name] = (spec, session)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = [s for _, s in self._sessions.values()], {}
        for session in sessions:
            session.close()


def ansible_exit_code(any_unreachable: bool, any_failed: bool) -> int:
    """Ansible's run codes (checked against ansible 2.19): 4 when a host was unreachable,
    else 2 when one failed, else 0. Ad-hoc commands and playbooks share the rule."""
    return 4 if any_unreachable else 2 if any_failed else 0


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _tail(text: str) -> str:
    return text[-STDERR_TAIL_CHARS:].strip()


def classify(host: str, exc: BaseException) -> HostOutcome:
    """Map an exception from connecting or from the task to the host's state (pure)."""
    if isinstance(exc, CommandFailed):
        r = exc.result
        return HostOutcome(
            host,
            HostState.FAILED,
            value=r,
            reason=_one_line(str(exc)),
            exit_code=r.exit_code,
            stderr_tail=_tail(r.stderr),
        )
    if isinstance(exc, HostKeyError):
        return HostOutcome(host, HostState.HOSTKEY_REFUSED, reason=_one_line(str(exc), 500))
    if isinstance(exc, CommandTimeout):
        return HostOutcome(host, HostState.TIMED_OUT, reason=_one_line(str(exc)))
    if isinstance(exc, ConnectError):
        return HostOutcome(host, HostState.UNREACHABLE, reason=_one_line(str(exc)))
    if isinstance(exc, BecomeError | ProvisionError):
        return HostOutcome(host, HostState.FAILED, reason=_one_line(str(exc)))
    return HostOutcome(
        host, HostState.FAILED, reason=_one_line(f"internal error: {type(exc).__name__}: {exc}")
    )


class _Run:
    """State shared by the workers of one ``run_hosts`` call."""

    def __init__(self, task: Callable[[Session], Any], opts: RunOptions) -> None:
        self.task = task
        self.opts = opts
        self.known_hosts: KnownHosts | None = None
        self.results: queue.Queue[HostOutcome] = queue.Queue()
        self.sessions: dict[str, Any] = {}
        self.output = opts.output_budget if opts.output_budget is not None else OutputBudget()
        self.abandoned = threading.Event()
        self.lock = threading.Lock()

    def abandon(self) -> None:
        """Start no more hosts and close open connections (from helper threads, as closing a
        half-open connection can block): their workers then end promptly."""
        self.abandoned.set()
        with self.lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            threading.Thread(target=session.close, daemon=True).start()

    def store(self) -> KnownHosts:
        with self.lock:
            if self.known_hosts is None:
                self.known_hosts = KnownHosts(self.opts.known_hosts)
            return self.known_hosts

    def work(self, spec: ConnSpec) -> HostOutcome:
        opts = self.opts
        start = time.monotonic()
        pooled = opts.pool.take(spec) if opts.pool is not None else None
        if pooled is not None:
            return self.work_on(spec, pooled, start, is_open=True)
        session: SSHSession | LocalSession
        # the host's ansible_become_password beats -K, as a connection variable does in Ansible
        become_password = spec.become_password or opts.become_password
        if spec.connection == "local":
            session = LocalSession(
                spec, command_timeout=opts.command_timeout, become_password=become_password
            )
        else:
            session = SSHSession(
                spec,
                known_hosts=self.store(),
                accept_new_host_keys=opts.accept_new_host_keys,
                connect_timeout=opts.connect_timeout,
                command_timeout=opts.command_timeout,
                become_password=become_password,
                output_budget=self.output,
            )
        return self.work_on(spec, session, start, is_open=False)

    def work_on(self, spec: ConnSpec, session: Any, start: float, *, is_open: bool) -> HostOutcome:
        """Open the session unless it came open from the pool, run the task, then close it or
        hand it back to the pool (only after a task that ended normally)."""
        with self.lock:
            self.sessions[spec.name] = session
        if self.abandoned.is_set():  # deadline passed meanwhile: never start a late host
            if is_open:
                session.close()
            return HostOutcome(spec.name, HostState.TIMED_OUT, reason="deadline reached")
        trips_before = session.round_trips
        keep = False
        try:
            if not is_open:
                session.open()
            value = self.task(session)
            outcome = HostOutcome(spec.name, HostState.OK, value=value)
            keep = self.opts.pool is not None
        except Exception as exc:
            outcome = classify(spec.name, exc)
            log.debug("%s: %s: %s", spec.name, outcome.state.value, outcome.reason)
        finally:
            if keep and self.opts.pool is not None:
                self.opts.pool.keep(spec, session)
            else:
                session.close()
        outcome.duration = time.monotonic() - start
        outcome.round_trips = session.round_trips - trips_before
        return outcome


def run_hosts(
    specs: Sequence[ConnSpec],
    task: Callable[[Session], T],
    opts: RunOptions,
    on_done: Callable[[HostOutcome], None] | None = None,
) -> dict[str, HostOutcome]:
    """Run ``task`` once per host, in parallel; return every host's outcome in ``specs`` order.

    ``on_done`` is called in the calling thread as each host finishes. With ``opts.deadline``
    the call returns by then (plus a little) whatever the hosts do.
    """
    started = time.monotonic()
    unique: dict[str, ConnSpec] = {}
    for spec in specs:
        unique.setdefault(spec.name, spec)  # a host listed twice runs once
    specs = list(unique.values())
    deadline = started + opts.deadline if opts.deadline is not None else None
    if opts.deadline_at is not None:
        deadline = opts.deadline_at if deadline is None else min(deadline, opts.deadline_at)
    run = _Run(task, opts)
    pending: queue.Queue[ConnSpec | None] = queue.Queue()
    for spec in specs:
        pending.put(spec)

    if any(spec.connection != "local" for spec in specs):
        run.store()  # an unreadable known_hosts stops the run here, in one line

    def worker() -> None:
        while not run.abandoned.is_set():
            try:
                spec = pending.get_nowait()
            except queue.Empty:
                return
            if spec is None:
                return
            try:
                outcome = run.work(spec)
            except Exception as exc:  # a dead worker would leave the caller waiting forever
                outcome = classify(spec.name, exc)
            run.results.put(outcome)

    workers = max(1, min(opts.forks, len(specs)))
    for i in range(workers):
        threading.Thread(target=worker, name=f"provision-host-{i}", daemon=True).start()

    outcomes: dict[str, HostOutcome] = {}
    try:
        while len(outcomes) < len(specs):
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            try:
                outcome = run.results.get(timeout=timeout)
            except queue.Empty:
                break
            outcomes[outcome.host] = outcome
            if on_done is not None:
                on_done(outcome)
    except BaseException:  # Ctrl-C or a failing on_done: stop every host, then re-raise
        run.abandon()
        raise

    if len(outcomes) < len(specs):
        run.abandoned.set()
        elapsed = time.monotonic() - started
        with run.lock:
            sessions = dict(run.sessions)
        for spec in specs:
            if spec.name in outcomes:
                continue
            session = sessions.get(spec.name)
            outcome = HostOutcome(
                spec.name,
                HostState.TIMED_OUT,
                reason=f"overall deadline of {opts.deadline:g}s reached"
                + ("" if session is not None else " before this host was started"),
                duration=elapsed,
                round_trips=getattr(session, "round_trips", 0),
            )
            outcomes[spec.name] = outcome
            if on_done is not None:
                on_done(outcome)
        run.abandon()
    return {spec.name: outcomes[spec.name] for spec in specs}
