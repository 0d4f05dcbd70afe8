"""What a run reports: each task's result, the progress events, the per-host stats of the
recap, the run's result, and its exit code and retry file (pure). Ansible's ``stats.py`` and
its callbacks' result events are the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from provision.executor import ansible_exit_code

# Ansible's words for a no_log result (TaskResult.clean_copy, ansible/executor/task_result.py).
NO_LOG_MSG = (
    "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
)
HIDDEN_SCRIPT = "(hidden: no_log: true)"  # a no_log task's command in logs and messages


@dataclass
class TaskResult:
    host: str
    play: str
    task: str
    status: str  # ok | changed | skipped | failed
    msg: str = ""
    diff: str | None = None
    changes: list[str] = field(default_factory=list)
    ignored: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    unpredictable: bool = False  # skipped by --check: its effect cannot be known beforehand
    shown: bool = False  # printed even when ok (debug: the user asked to see it)
    rescued: bool = False  # a failure a block's rescue takes over: the host goes on
    # a failed command that ran: Ansible's result says changed too (its registered
    # ``changed``, and the recap's changed column when the failure is ignored)
    ran_and_failed: bool = False


@dataclass
class Event:
    """Progress: ``status`` is "start" before a task, then ok/changed/skipped/failed;
    "retrying" (``result.msg`` "retrying (N left): why") before each retry of a task."""

    host: str
    play: str
    task: str
    index: int  # 1-based position in the play's task list (handlers continue the count)
    total: int
    status: str
    result: TaskResult | None = None


@dataclass
class HostStats:
    """One host's recap line, in Ansible's column order; then the counters modules add
    (``Module.counters``: docker_image's pulls)."""

    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    pulls: int = 0  # task results that carried ``bytes`` and ``seconds`` (image pulls)
    pulled_bytes: int = 0
    pull_seconds: float = 0.0

    def count(self, result: TaskResult) -> None:
        """A settled task's result in the columns Ansible counts it in: an ignored failure is
        ``ok`` and ``ignored`` (and ``changed`` for a command that ran), a change is ``ok``
        and ``changed``."""
        if result.status == "failed":
            if result.ignored:
                self.ignored += 1
                self.ok += 1
                self.changed += result.ran_and_failed  # Ansible: the result said changed
            else:
                self.failed += 1
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.ok += 1
            if result.status == "changed":
                self.changed += 1

    def rescue(self) -> None:
        """A failure that a block's ``rescue`` takes over counts as ``rescued``, not
        ``failed`` (Ansible's strategy increments one or the other when the task fails)."""
        self.failed -= 1
        self.rescued += 1

    def add_counters(self, counters: Mapping[str, float]) -> None:
        """A module's own counters (``Module.counters``), each one of :data:`MODULE_COUNTERS`."""
        for name, value in counters.items():
            if name not in MODULE_COUNTERS:
                raise ValueError(f"HostStats has no module counter {name!r}")
            setattr(self, name, getattr(self, name) + value)


# The columns a module may add to (Module.counters): everything after Ansible's recap columns.
MODULE_COUNTERS = frozenset(f.name for f in fields(HostStats)) - {
    "ok",
    "changed",
    "unreachable",
    "failed",
    "skipped",
    "rescued",
    "ignored",
}


@dataclass
class PlaybookResult:
    stats: dict[str, HostStats]
    results: list[TaskResult]
    host_reasons: dict[str, str] = field(default_factory=dict)  # why a host was not "ok"
    aborted: str = ""
    round_trips: dict[str, int] = field(default_factory=dict)  # remote commands per host
    warnings: list[str] = field(default_factory=list)  # e.g. a play whose hosts match nothing

    @property
    def exit_code(self) -> int:
        return exit_code(self.stats)

    @property
    def retry_text(self) -> str:
        return retry_text(self.stats)


def exit_code(stats: Mapping[str, HostStats]) -> int:
    """Ansible's codes: 4 when a host was unreachable, else 2 when one failed, else 0."""
    return ansible_exit_code(
        any(s.unreachable for s in stats.values()), any(s.failed for s in stats.values())
    )


def retry_text(stats: Mapping[str, HostStats]) -> str:
    """Failed and unreachable hosts, one per line: usable as ``--limit @file``."""
    names = [h for h, s in stats.items() if s.failed or s.unreachable]
    return "".join(f"{name}\n" for name in names)


def human_bytes(count: float) -> str:
    """Decimal units as docker prints sizes: ``950 B``, ``12.3 MB``, ``1.2 GB``."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
