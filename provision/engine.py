"""Run a playbook's plays over hosts: tasks in order, handlers, --check, --diff, a recap.

One connection per host per play batch (``provision.executor.run_hosts``). Before a task needs
the host's state, the state reads of every remaining task of that host are sent as ONE command
whose output is framed by markers; the snapshot is used until something changes on the host, so
an idempotent second run costs one round trip per host for all its reads.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from provision import defaults
from provision.errors import PatternError, ProvisionError
from provision.executor import (
    HostOutcome,
    HostState,
    RunOptions,
    SessionPool,
    ansible_exit_code,
    run_hosts,
)
from provision.fanout import FanOut
from provision.inventory import Inventory
from provision.loops import LoopError, item_scope, loop_items
from provision.modules import MODULES, TaskSkipped
from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, coerce
from provision.modules.control import TaskFailure
from provision.modules.facts import FACTS_SCRIPT, parse_facts
from provision.patterns import select_hosts
from provision.playbook import (
    Play,
    Playbook,
    PlaybookError,
    Task,
    load_playbook,
    load_task_file,
    parse_serial,
    task_file,
)
from provision.shell import quote
from provision.ssh import CommandTimeout, OutputBudget, Session
from provision.target import conn_spec
from provision.templating import (
    TemplateError,
    Vars,
    condition,
    merge_vars,
    render,
    render_text,
)


@dataclass
class ApplyOptions:
    """Everything ``provision apply`` passes down from its command line."""

    check: bool = False
    diff: bool = False
    limit: str | None = None
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()
    extra_vars: dict[str, Any] = field(default_factory=dict)
    forks: int = defaults.FORKS
    become: bool | None = None
    become_password: str | None = field(default=None, repr=False)
    known_hosts: tuple[str, ...] = ()
    accept_new_host_keys: bool = False
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    command_timeout: float = defaults.COMMAND_TIMEOUT
    deadline: float | None = None  # seconds for the whole run, all plays together
    ssh_config_path: str | None = None
    default_user: str | None = None
    default_key: str | None = None
    limit_base_dir: str = "."
    verbosity: int = 0  # the -v count (debug's ``verbosity``)
    # Live progress; called from worker threads, one call at a time (the engine serialises).
    on_event: Callable[[Event], None] | None = None


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


@dataclass
class HostStats:
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


# Ansible's words for a no_log result (TaskResult.clean_copy, ansible/executor/task_result.py).
NO_LOG_MSG = (
    "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
)
HIDDEN_SCRIPT = "(hidden: no_log: true)"  # a no_log task's command in logs and messages


class EngineError(ProvisionError):
    """The playbook cannot run at all (no hosts matched a --limit, bad connection vars)."""


# -- pure rendering of the end of a run -------------------------------------------------------


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


def pull_totals(data: Mapping[str, Any]) -> tuple[int, int, float]:
    """(pulls, bytes, seconds) in a task's result data, loop items included."""
    items = [data, *[r for r in data.get("results", []) if isinstance(r, Mapping)]]
    pulls, size, seconds = 0, 0, 0.0
    for item in items:
        if "bytes" in item and "seconds" in item:
            try:
                size += int(item["bytes"])
                seconds += float(item["seconds"])
            except (TypeError, ValueError):
                continue
            pulls += 1
    return pulls, size, seconds


# -- selection helpers (pure) ----------------------------------------------------------------


def task_selected(task: Task, tags: tuple[str, ...], skip_tags: tuple[str, ...]) -> bool:
    """Ansible's --tags/--skip-tags: "always" runs unless skipped by name, "never" only when
    asked for, "all" selects every task not tagged "never"."""
    own = set(task.tags)
    if skip_tags and own & set(skip_tags):
        return False
    if not tags:
        return "never" not in own
    wanted = set(tags)
    if "always" in own:
        return True
    if "all" in wanted and "never" not in own:
        return True
    return bool(own & wanted)


def batches(hosts: list[str], serial: list[int | str]) -> list[list[str]]:
    """Split hosts into rollout batches: numbers, percentages, the last size repeating."""
    if not serial:
        return [hosts] if hosts else []
    out: list[list[str]] = []
    i = 0
    step = 0
    while i < len(hosts):
        spec = serial[min(step, len(serial) - 1)]
        if isinstance(spec, str):
            size = max(1, math.floor(len(hosts) * float(spec[:-1]) / 100))
        else:
            size = spec
        out.append(hosts[i : i + size])
        i += size
        step += 1
    return out


def frame_reads(scripts: list[str], token: str) -> str:
    """One command that runs every state snippet in its own subshell between markers."""
    parts = []
    for k, script in enumerate(scripts):
        parts.append(f"echo '@@{token} {k}'\n(\n{script}\n) </dev/null 2>/dev/null")
    parts.append(f"echo '@@{token} end'")
    return "\n".join(parts)


def split_reads(stdout: str, token: str, count: int) -> list[str | None]:
    """The output of :func:`frame_reads` -> each snippet's output (None where missing)."""
    out: list[str | None] = [None] * count
    current: int | None = None
    buf: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(f"@@{token} "):
            if current is not None:
                out[current] = "\n".join(buf)
            tail = line.split(" ", 1)[1]
            current = int(tail) if tail.isdigit() and int(tail) < count else None
            buf = []
        elif current is not None:
            buf.append(line)
    return out


# -- running ---------------------------------------------------------------------------------


MAX_INCLUDE_DEPTH = 32  # include_tasks within include_tasks: deeper is a file including itself

# Boolean task keywords that may be ``{{ }}`` templates, rendered per host when the task runs.
TEMPLATED_KEYWORDS = ("become", "ignore_errors", "no_log")


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def exports(env: Mapping[str, str]) -> str:
    """Shell lines exporting ``env`` (each value quoted) ahead of a task's commands."""
    return "".join(f"export {name}={quote(value)}\n" for name, value in env.items())


def _value_of(name: str, variables: Vars, where: str) -> Any:
    """debug's ``var``: the variable's value, or Ansible's "VARIABLE IS NOT DEFINED!"."""
    try:
        return render("{{ " + name + " }}", variables, where)
    except TemplateError:
        return "VARIABLE IS NOT DEFINED!"


def retry_delays(retries: int, delay: float, backoff: bool) -> list[float]:
    """The pauses before each retry: ``delay`` each time, or doubling with ``backoff``."""
    return [delay * (2**k if backoff else 1) for k in range(retries)]


class _HostVars(Mapping[str, Any]):
    """``hostvars``: each host's inventory variables (read-only, rendered lazily). A fresh
    :class:`Vars` per lookup: host threads share this object, and a Vars' render cache and loop
    guard are not for sharing between threads."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def __getitem__(self, host: str) -> Vars:
        inv_host = self.inventory.hosts[host]
        own = {"inventory_hostname": host, "inventory_hostname_short": host.split(".")[0]}
        return Vars([own, inv_host.vars])

    def __iter__(self) -> Iterator[str]:
        return iter(self.inventory.hosts)

    def __len__(self) -> int:
        return len(self.inventory.hosts)


def group_members(inventory: Inventory) -> dict[str, list[str]]:
    """``groups``: every group (``all`` and ``ungrouped`` included) -> its hosts, in inventory
    order, members of child groups included."""
    out: dict[str, list[str]] = {name: [] for name in inventory.groups}
    for host in inventory.hosts.values():
        for group in host.groups:
            out.setdefault(group, []).append(host.name)
    out["all"] = list(inventory.hosts)
    return out


def keyword_vars(
    play: Play, inventory: Inventory | None, extra: Mapping[str, Any], host: str | None = None
) -> Vars:
    """Variables for play keywords (``hosts``, ``serial``): the play's defaults < the
    inventory's ``all`` vars (or, given a host, that host's inventory vars) < play vars < -e;
    plus ``groups``. Facts and registered results do not exist yet."""
    if inventory is None:  # --list-tasks needs no inventory
        return merge_vars({}, play.vars, {}, extra, defaults=play.defaults)
    inv = inventory.hosts[host].vars if host is not None else inventory.groups["all"].vars
    magic = {"groups": group_members(inventory)}
    return merge_vars({**magic, **inv}, play.vars, {}, extra, defaults=play.defaults)


def play_pattern(play: Play, inventory: Inventory | None, extra: Mapping[str, Any]) -> str:
    """The play's host pattern, rendered when it is a template (``"{{ baseline_hosts }}"``);
    a list renders joined with ":". Raises EngineError on a template error."""
    if not _is_template(play.hosts):
        return play.hosts
    where = f"{play.file}:{play.line}: play '{play.name}': hosts"
    try:
        value = render(play.hosts, keyword_vars(play, inventory, extra), where)
    except TemplateError as exc:
        raise EngineError(str(exc)) from None
    return ":".join(str(v) for v in value) if isinstance(value, list) else str(value)


def play_serial(
    play: Play, inventory: Inventory, extra: Mapping[str, Any], hosts: list[str]
) -> list[int | str]:
    """The play's batch sizes; a templated ``serial`` is rendered with the variables of the
    play's first host, so the group vars of the hosts it runs on apply."""
    if play.serial_template is None:
        return play.serial
    where = f"{play.file}:{play.line}: play '{play.name}'"
    first = hosts[0] if hosts else None
    try:
        value = render(play.serial_template, keyword_vars(play, inventory, extra, first), where)
        return parse_serial(value, where)
    except (TemplateError, PlaybookError) as exc:
        raise EngineError(str(exc)) from None


def _overlap(a: str, b: str) -> bool:
    """Whether two host paths are the same or one contains the other."""
    a, b = a.rstrip("/") or "/", b.rstrip("/") or "/"
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def censor(task: Task, result: TaskResult) -> None:
    """Hide what a no_log task's result says, as Ansible does: its message (a ``fail`` msg or an
    ``assert`` fail_msg may hold the secret) and its changes; the registered value keeps them."""
    if result.msg:
        result.msg = f"{task.where}: {NO_LOG_MSG}" if result.status == "failed" else NO_LOG_MSG
    result.changes = []


class _TaskFailed(Exception):
    def __init__(self, msg: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.data = data or {}


@dataclass
class _HostRun:
    """One host's walk through one play (runs in a worker thread)."""

    engine: _Engine
    play: Play
    host: str
    stats: HostStats
    runtime: dict[str, Any]
    cache: dict[tuple[str, bool | None], str] = field(default_factory=dict)
    cache_paths: dict[tuple[str, bool | None], tuple[str, ...] | None] = field(default_factory=dict)
    failed: bool = False
    session: Session | None = None
    position: tuple[int, int] = (0, 0)  # (index, total) of the task running, for events
    sequence: list[Task] = field(default_factory=list)  # the tasks running: play's or included
    includes: list[str] = field(
        default_factory=list
    )  # the include_tasks being run, outermost first

    def vars(self) -> Vars:
        inv_host = self.engine.inventory.hosts[self.host]
        magic = {
            "inventory_hostname": self.host,
            "inventory_hostname_short": self.host.split(".")[0],
            "group_names": sorted(g for g in inv_host.groups if g not in ("all", "ungrouped")),
            "groups": self.engine.groups,
            "hostvars": self.engine.hostvars,
            "playbook_dir": self.engine.playbook.base_dir,
            "ansible_check_mode": self.engine.options.check,
            "ansible_diff_mode": self.engine.options.diff,
        }
        return merge_vars(
            {**magic, **inv_host.vars},
            self.play.vars,
            self.runtime,
            self.engine.options.extra_vars,
            defaults=self.play.defaults,
        )

    def check(self, task: Task) -> bool:
        """Check mode for this task: its ``check_mode`` keyword, else the run's ``--check``."""
        return task.check_mode if task.check_mode is not None else self.engine.options.check

    def become(self, task: Task) -> bool | None:
        """The task's ``become`` (a resolved task's: see :meth:`resolved`), else the play's."""
        return task.become if isinstance(task.become, bool) else self.play.become

    def resolved(self, task: Task) -> Task:
        """The task with its templated boolean keywords (``become: "{{ x }}"``) rendered for
        this host; the task itself when it has none."""
        templated = {k: v for k in TEMPLATED_KEYWORDS if _is_template(v := getattr(task, k))}
        if not templated:
            return task
        variables = self.vars().child(task.vars)
        values = {}
        for key, value in templated.items():
            try:
                values[key] = coerce(Arg(key, "bool"), render(value, variables, task.where))
            except ArgError as exc:
                raise _TaskFailed(f"{task.where}: {exc}") from None
        return dataclasses.replace(task, **values)

    def run(self, session: Session) -> None:
        self.session = session
        self.sequence = self.engine.selected_tasks(self.play)  # what the first read batches
        if self.play_ended():
            return
        if self.play.gather_facts and "ansible_facts" not in self.runtime:
            try:
                self.gather_facts()
            except _TaskFailed as exc:
                self.failed = True
                self.stats.failed += 1
                fail = TaskResult(self.host, self.play.name, "Gathering Facts", "failed", str(exc))
                self.engine.record(fail)
                return
            self.stats.ok += 1  # counted like Ansible's "Gathering Facts" task
            self.engine.record(TaskResult(self.host, self.play.name, "Gathering Facts", "ok"))
        tasks = self.engine.selected_tasks(self.play)
        total = len(tasks)
        notified: set[str] = set()
        if self.run_sequence(tasks, notified, None) and not self.play_ended():
            self.run_handlers(notified, total + 1, total + 1)

    def run_sequence(self, tasks: list[Task], notified: set[str], at: int | None) -> bool:
        """Run ``tasks`` in order (the play's, or an included file's at the include's position
        ``at``); their state reads are batched together. False: the host stops here."""
        outer, self.sequence = self.sequence, tasks
        try:
            total = len(self.engine.selected_tasks(self.play))
            for number, task in enumerate(tasks, 1):
                index = at if at is not None else number
                if self.play_ended():
                    return False
                module = MODULES[task.module]
                if module.flow_control or module.includes_tasks:
                    run = self.run_include if module.includes_tasks else self.run_meta
                    if not run(task, index, total, notified):
                        return False
                    continue
                result = self.run_task(task, index, total)
                if result.status == "changed":
                    notified.update(task.notify)
                if result.status == "failed" and not result.ignored:
                    self.failed = True
                    return False
            return True
        finally:
            self.sequence = outer

    def run_include(self, task: Task, index: int, total: int, notified: set[str]) -> bool:
        """``include_tasks``: per loop item whose ``when`` holds, the file named (a template)
        is read now and its tasks run with the item and the include's vars."""
        self.emit(task, index, total, "start", None)
        try:
            runs = self.included(task)
        except (_TaskFailed, TemplateError, PlaybookError, LoopError) as exc:
            failed = self.failure(task, exc)
            self.emit(task, index, total, "failed", failed)
            return self.settled_failure(failed)
        status = "ok" if runs else "skipped"  # Ansible counts each file included, per item
        done = TaskResult(self.host, self.play.name, task.name, status)
        self.engine.record(done)
        self.emit(task, index, total, status, done)
        if runs:
            self.stats.ok += len(runs)
        else:
            self.stats.skipped += 1
        if len(self.includes) >= MAX_INCLUDE_DEPTH:
            failed = self.failure(
                task, _TaskFailed(f"{task.where}: includes nested over {MAX_INCLUDE_DEPTH} deep")
            )
            self.emit(task, index, total, "failed", failed)
            return self.settled_failure(failed)
        opts = self.engine.options
        for scope, tasks in runs:
            selected = [
                dataclasses.replace(t, vars={**scope, **t.vars})
                for t in tasks
                if task_selected(t, opts.tags, opts.skip_tags)
            ]
            self.includes.append(task.where)
            try:
                if not self.run_sequence(selected, notified, index):
                    return False
            finally:
                self.includes.pop()
        return True

    def included(self, task: Task) -> list[tuple[dict[str, Any], list[Task]]]:
        """(the variables, the tasks) of each run of an include: one per loop item."""
        base = self.vars().child(task.vars)
        scopes: list[dict[str, Any]] = [{}]
        if task.loop is not None:
            items = loop_items(
                task.loop_kind, render(task.loop, base, task.where), self.play.base_dir, task.where
            )
            scopes = [
                item_scope(
                    items,
                    i,
                    loop_var=task.loop_var,
                    index_var=task.index_var,
                    extended=task.loop_extended,
                )
                for i in range(len(items))
            ]
        runs = []
        handlers = {h.name for h in self.play.handlers} | {
            topic for h in self.play.handlers for topic in h.listen
        }
        for scope in scopes:
            scoped = base.child(scope)
            if not condition(task.when, scoped, task.where):
                continue
            name = str(render(task.args.get("file"), scoped, task.where))
            path = task_file(task.file, name, self.play.base_dir)
            tasks = load_task_file(path, False, task.where)
            for t in tasks:
                missing = [n for n in t.notify if n not in handlers]
                if missing:
                    raise _TaskFailed(f"{t.where}: notify names no handler: '{missing[0]}'")
            runs.append(({**task.vars, **scope}, tasks))
        return runs

    def settled_failure(self, failed: TaskResult) -> bool:
        """A failure outside run_task (an include that cannot be read): counted, recorded."""
        self.failed = True
        self.stats.failed += 1
        self.engine.record(failed)
        return False

    @staticmethod
    def resolved_later(task: Task) -> bool:
        """A task whose become/no_log is a template: its read waits until it runs."""
        return any(_is_template(getattr(task, k)) for k in TEMPLATED_KEYWORDS)

    def play_ended(self) -> bool:
        """A ``meta: end_play`` on any host of this play ends it for every host."""
        return id(self.play) in self.engine.ended_plays

    def run_handlers(self, notified: set[str], index: int, total: int) -> bool:
        """The handlers notified so far, in the play's order (a handler may notify a later
        one); ``notified`` is emptied. False when one failed and the host stops."""
        for handler in self.play.handlers:
            if handler.name in notified or notified & set(handler.listen):
                result = self.run_task(handler, index, max(index, total))
                if result.status == "changed":
                    notified.update(handler.notify)
                if result.status == "failed" and not result.ignored:
                    self.failed = True
                    return False
        notified.clear()
        return True

    def run_meta(self, task: Task, index: int, total: int, notified: set[str]) -> bool:
        """``meta``: carried out by the engine and, as in Ansible, counted in no recap column;
        end_host and end_play leave the notified handlers unrun. False: the host stops."""
        action = str(task.args.get("free_form"))
        self.emit(task, index, total, "start", None)
        try:
            held = action == "flush_handlers" or condition(task.when, self.vars(), task.where)
        except TemplateError as exc:
            failed = self.failure(task, exc)
            self.emit(task, index, total, "failed", failed)
            return self.settled_failure(failed)
        ends = held and action in ("end_host", "end_play")
        status = "ok" if held else "skipped"
        shown = index if not ends else total
        self.emit(
            task, shown, total, status, TaskResult(self.host, self.play.name, task.name, status)
        )
        if not held:
            return True
        if action == "flush_handlers":
            return self.run_handlers(notified, index, total)
        if action == "end_play":
            self.engine.ended_plays.add(id(self.play))
        return not ends

    def emit(self, task: Task, index: int, total: int, status: str, result: TaskResult | None):
        self.engine.emit(Event(self.host, self.play.name, task.name, index, total, status, result))

    def run_task(self, task: Task, index: int, total: int) -> TaskResult:
        self.emit(task, index, total, "start", None)
        self.position = (index, total)
        try:
            task = self.resolved(task)
        except (_TaskFailed, TemplateError) as exc:  # its keywords stay unknown: not ignored
            task = dataclasses.replace(task, ignore_errors=False, no_log=bool(task.no_log))
            return self.settled(task, index, total, self.failure(task, exc))
        try:
            gate = self.engine.throttle(task, self.vars)
            if gate is not None:
                gate.acquire()
            try:
                result = self.execute(task)
            finally:
                if gate is not None:
                    gate.release()
        except (_TaskFailed, TemplateError) as exc:  # undefined variable etc.: the task fails
            result = self.failure(task, exc)
        except CommandTimeout as exc:  # the host answered; this task ran past its bound
            after = f" after {exc.seconds:g}s" if exc.seconds is not None else ""
            result = self.failure(task, _TaskFailed(f"{task.where}: timed out{after}"))
        return self.settled(task, index, total, result)

    def settled(self, task: Task, index: int, total: int, result: TaskResult) -> TaskResult:
        """A task's result registered, censored, counted, recorded and shown."""
        if result.status == "failed" and task.ignore_errors:
            result.ignored = True
        if task.register:
            self.runtime[task.register] = self.registered(result)
        if task.no_log:
            censor(task, result)
        s = self.stats
        if result.status == "failed":
            if result.ignored:
                s.ignored += 1
                s.ok += 1
            else:
                s.failed += 1
        elif result.status == "skipped":
            s.skipped += 1
        else:
            s.ok += 1
            if result.status == "changed":
                s.changed += 1
        pulls, size, seconds = pull_totals(result.data)
        s.pulls += pulls
        s.pulled_bytes += size
        s.pull_seconds += seconds
        self.engine.record(result)
        self.emit(task, index, total, result.status, result)
        return result

    def failure(self, task: Task, exc: Exception) -> TaskResult:
        data = exc.data if isinstance(exc, _TaskFailed) else {}
        return TaskResult(self.host, self.play.name, task.name, "failed", str(exc), data=data)

    @staticmethod
    def registered(result: TaskResult) -> dict[str, Any]:
        data = dict(result.data)
        data.update(
            changed=result.status == "changed",
            failed=result.status == "failed",
            skipped=result.status == "skipped",
            msg=result.msg,
        )
        return data

    def execute(self, task: Task) -> TaskResult:
        base = self.vars()
        if task.vars:
            base = base.child(task.vars)
        if task.loop is None:
            if not condition(task.when, base, task.where):
                return self.skipped(task, "conditional result was false")
            return self.execute_one(task, base)
        try:
            items = loop_items(
                task.loop_kind, render(task.loop, base, task.where), self.play.base_dir, task.where
            )
        except LoopError as exc:
            raise _TaskFailed(str(exc)) from None
        results = []
        scopes = []
        for index in range(len(items)):
            if index and task.loop_pause:
                time.sleep(task.loop_pause)
            scope = item_scope(
                items,
                index,
                loop_var=task.loop_var,
                index_var=task.index_var,
                extended=task.loop_extended,
            )
            item_vars = base.child(scope)
            if task.loop_label is not None:
                scope["_ansible_item_label"] = render(task.loop_label, item_vars, task.where)
            scopes.append(scope)
            if not condition(task.when, item_vars, task.where):
                results.append(self.skipped(task, "conditional result was false"))
                continue
            results.append(self.execute_one(task, item_vars))
        if not results:
            return self.skipped(task, "no items in loop")
        statuses = [r.status for r in results]
        data = {
            "results": [
                {**self.registered(r), "item": sc[task.loop_var], **sc}
                for r, sc in zip(results, scopes, strict=True)
            ]
        }
        if "failed" in statuses:
            status = "failed"
        elif "changed" in statuses:
            status = "changed"
        elif all(s == "skipped" for s in statuses):
            status = "skipped"
        else:
            status = "ok"
        msgs = [r.msg for r in results if r.status == "failed" or r.shown]
        diffs = [r.diff for r in results if r.diff]
        return TaskResult(
            self.host,
            self.play.name,
            task.name,
            status,
            "; ".join(msgs),
            diff="".join(diffs) or None,
            changes=[c for r in results for c in r.changes],
            data=data,
            shown=any(r.shown for r in results),
        )

    def skipped(self, task: Task, why: str) -> TaskResult:
        return TaskResult(self.host, self.play.name, task.name, "skipped", why)

    def prepared(self, task: Task, variables: Vars) -> tuple[dict[str, Any], Context, str | None]:
        """Rendered, typed, controller-prepared arguments, the context and the state script."""
        module = MODULES[task.module]
        opts = self.engine.options
        ctx = Context(
            check=self.check(task),
            diff=opts.diff,
            no_log=bool(task.no_log),  # an unrendered template hides, to be safe
            base_dir=self.play.base_dir,
            render=lambda text: render_text(text, variables, task.where),
            peers=self.engine.fanout.member(self.host, self.session, self.progress_of(task)),
            verbosity=opts.verbosity,
            value_of=lambda name: _value_of(name, variables, task.where),
        )
        conditions = getattr(module, "conditions", ())
        plain = {k: v for k, v in task.args.items() if k not in conditions}
        rendered = render(plain, variables, task.where)
        for key in conditions:
            if key in task.args:
                rendered[key] = self.evaluate(task, task.args[key], variables)
        try:
            args = module.finalize(rendered)
            args = module.prepare(args, ctx)
            script = module.state_script(args, ctx)
        except (ArgError, ModuleError) as exc:
            raise _TaskFailed(f"{task.where}: {exc}") from None
        return args, ctx, script

    @staticmethod
    def evaluate(task: Task, exprs: Any, variables: Vars) -> list[tuple[str, bool]]:
        """Conditions of a module argument (assert's ``that``), in order, up to the first that
        does not hold (later ones are not evaluated, as in Ansible)."""
        out = []
        for expr in exprs if isinstance(exprs, list) else [exprs]:
            held = condition(expr, variables, task.where)
            out.append((str(expr), held))
            if not held:
                break
        return out

    def read_state(self, task: Task, script: str, paths: tuple[str, ...] | None = None) -> str:
        key = (script, self.become(task))
        if key in self.cache:
            return self.cache[key]
        tasks = self.sequence
        position = next((i for i, t in enumerate(tasks) if t is task), None)
        after = position + 1 if position is not None else len(tasks)
        hidden = {script} if task.no_log else set()
        (out,) = self.batch_read([script], key[1], after, task.where, [paths], hidden)
        if out is None:
            raise _TaskFailed(f"{task.where}: reading the host's state failed")
        return out

    def batch_read(
        self,
        first: list[str],
        become: bool | None,
        after: int,
        where: str,
        first_paths: list[tuple[str, ...] | None] | None = None,
        hidden: set[str] | None = None,
    ) -> list[str | None]:
        """Run ``first`` plus the state reads of every task from position ``after`` on that can
        be prepared now (same become, no loop) as ONE command; cache the task reads, with the
        paths each depends on (see :meth:`forget`). The reads of no_log tasks (``hidden``; an
        ``unless`` guard holds what its task holds) never appear in logs or messages."""
        scripts = list(first)
        hidden = set(hidden or ())
        paths: dict[str, tuple[str, ...] | None] = dict(
            zip(first, first_paths or [None] * len(first), strict=True)
        )
        for other in self.sequence[after:]:
            if other.loop is not None or self.resolved_later(other):
                continue
            if self.become(other) != become:
                continue
            if type(MODULES[other.module]).state_script is Module.state_script:
                continue  # reads no state (fail, assert): nothing to prepare
            try:
                other_args, _, other_script = self.prepared(other, self.vars().child(other.vars))
            except (ProvisionError, _TaskFailed):
                continue  # needs a value not known yet (a registered result): read it later
            if other_script and other_script not in scripts:
                scripts.append(other_script)
                paths[other_script] = MODULES[other.module].paths(other_args)
            if other_script and other.no_log:
                hidden.add(other_script)
        token = secrets.token_hex(8)
        assert self.session is not None
        shown = frame_reads([HIDDEN_SCRIPT if s in hidden else s for s in scripts], token)
        done = self.session.run(frame_reads(scripts, token), become=become, shown=shown)
        if done.truncated:  # a cut read (a file's content) must never be planned from
            raise _TaskFailed(
                f"{where}: reading the host's state printed more than the run's output limit "
                "(provision.ssh.RUN_OUTPUT, MAX_OUTPUT); refusing to act on a partial read"
            )
        outputs = split_reads(done.stdout, token, len(scripts))
        if outputs[0] is None:
            raise _TaskFailed(
                f"{where}: reading the host's state failed (exit {done.exit_code}): "
                f"{done.stderr.strip()[-300:]}"
            )
        for s, out in zip(scripts, outputs, strict=True):
            if out is not None:
                self.cache[(s, become)] = out
                self.cache_paths[(s, become)] = paths.get(s)
        return outputs[: len(first)]

    def forget(self, written: tuple[str, ...] | None) -> None:
        """Drop the cached reads a change can affect: every read when ``written`` is None (a
        package, a service, a command: anything may move), else the reads of paths equal to,
        under or above a written path, and every read that did not name its paths. A converged
        run never gets here; a first run then re-reads only what its changes touched."""
        if written is None:
            self.cache.clear()
            self.cache_paths.clear()
            return
        for key in list(self.cache):
            read = self.cache_paths.get(key)
            if read is None or any(_overlap(r, w) for r in read for w in written):
                self.cache.pop(key, None)
                self.cache_paths.pop(key, None)

    def gather_facts(self) -> None:
        """Facts ride along with the first batch of state reads: no extra round trip."""
        where = f"{self.play.file}:{self.play.line}: play '{self.play.name}': gathering facts"
        (out,) = self.batch_read([FACTS_SCRIPT], self.play.become, 0, where)
        facts = parse_facts(out or "")
        self.runtime.update(facts)
        self.runtime["ansible_facts"] = {k.removeprefix("ansible_"): v for k, v in facts.items()}

    def execute_one(self, task: Task, variables: Vars) -> TaskResult:
        """One run of the task, or several with ``retries``/``until`` (Ansible's semantics:
        up to retries + 1 attempts; ``until`` defaults to "the task succeeded")."""
        if task.retries is None and task.until is None:
            return self.attempt(task, variables)
        retries = self.retry_number(task, task.retries, variables, 3, integer=True)
        delay = self.retry_number(task, task.delay, variables, 5, integer=False)
        pauses = retry_delays(int(retries), delay, task.backoff)
        attempt = 0
        while True:
            attempt += 1
            try:
                result = self.attempt(task, variables)
            except (_TaskFailed, TemplateError) as exc:
                result = self.failure(task, exc)
            if task.until is None or result.status == "skipped":
                done = result.status != "failed"
            else:
                scope = variables.child(
                    {task.register: self.registered(result)} if task.register else {}
                )
                done = condition(task.until, scope, task.where)
            if done or attempt > len(pauses):
                break
            left = len(pauses) - attempt + 1
            if task.no_log:
                censor(task, result)
            note = TaskResult(
                self.host,
                self.play.name,
                task.name,
                "retrying",
                f"retrying ({left} left)" + (f": {result.msg}" if result.msg else ""),
                data={"attempts": attempt},
            )
            self.emit(task, *self.position, "retrying", note)
            self.forget(None)  # what the task waits for may have changed: read afresh
            time.sleep(pauses[attempt - 1])
        result.data["attempts"] = attempt
        if not done and result.status != "failed":
            result.status = "failed"
            result.msg = f"{task.where}: 'until' still false after {attempt} attempts: {task.until}"
        return result

    def retry_number(
        self, task: Task, value: Any, variables: Vars, default: float, *, integer: bool
    ) -> float:
        if value is None:
            return default
        if _is_template(value):
            value = render(value, variables, task.where)
        try:
            number = int(str(value)) if integer else float(str(value))
        except ValueError:
            raise _TaskFailed(
                f"{task.where}: retries/delay must be a number, got {value!r}"
            ) from None
        return max(number, 0)

    def attempt(self, task: Task, variables: Vars) -> TaskResult:
        module = MODULES[task.module]
        args, ctx, script = self.prepared(task, variables)
        state = self.read_state(task, script, module.paths(args)) if script else None
        try:
            plan = module.plan(args, state, ctx)
        except TaskSkipped as exc:
            return self.skipped(task, str(exc))
        except (ArgError, ModuleError) as exc:
            if self.unmet_in_check(task, exc):
                return self.skipped(
                    task, f"cannot be checked until earlier changes are made: {exc}"
                )
            raise _TaskFailed(f"{task.where}: {exc}", getattr(exc, "data", None)) from None
        if plan.changed and not self.check(task) and hasattr(module, "execute"):
            return self.carry_out_controller(task, module, args, plan, variables, ctx)
        result = self.carry_out(task, plan, variables, module.paths(args))
        if module.sets_facts and result.status != "failed":
            self.runtime.update(result.data.get("ansible_facts", {}))
        result.shown = module.shows_result and result.status == "ok"
        return result

    def unmet_in_check(self, task: Task, exc: Exception) -> bool:
        """In --check, a host refusal that may only mean "an earlier task would have made this
        possible" (a unit or group its package would create) skips instead of failing, once
        this host has pending changes; ``fail``/``assert`` and argument errors still fail."""
        return (
            self.check(task)
            and self.stats.changed > 0
            and isinstance(exc, ModuleError)
            and not isinstance(exc, TaskFailure)
        )

    def carry_out_controller(
        self,
        task: Task,
        module: Any,
        args: dict[str, Any],
        plan: Plan,
        variables: Vars,
        ctx: Context,
    ) -> TaskResult:
        """A module that needs the controller while it acts (reboot: wait, reconnect;
        docker_image: a stream from another host)."""
        assert self.session is not None
        self.forget(None)
        try:
            data = module.execute(args, plan, self.session, self.reconnect, self.become(task), ctx)
        except TaskSkipped as exc:
            return self.skipped(task, str(exc))
        except ModuleError as exc:
            failed = TaskResult(
                self.host,
                self.play.name,
                task.name,
                "failed",
                f"{task.where}: {exc}",
                data={**plan.result, **(getattr(exc, "data", None) or {})},
            )
            return self.judge(task, failed, variables)
        result = TaskResult(
            self.host,
            self.play.name,
            task.name,
            "changed",
            "; ".join(plan.changes),
            changes=plan.changes,
            data={**plan.result, **data},
        )
        if self.play.gather_facts:  # the kernel may be new after a reboot: read facts again
            self.gather_facts()
        return self.judge(task, result, variables)

    def progress_of(self, task: Task) -> Callable[[str], None]:
        """A callback that shows a long transfer's progress as a "progress" event."""

        def emit(text: str) -> None:
            note = TaskResult(self.host, self.play.name, task.name, "progress", text)
            self.emit(task, *self.position, "progress", note)

        return emit

    def reconnect(self) -> None:
        """Open this host's connection again (after a reboot), in place."""
        assert self.session is not None, "reconnect before the host's session was opened"
        self.session.reopen()

    def carry_out(
        self,
        task: Task,
        plan: Plan,
        variables: Vars,
        written: tuple[str, ...] | None = None,
    ) -> TaskResult:
        opts = self.engine.options
        data: dict[str, Any] = dict(plan.result)
        diff = plan.diff if opts.diff else None
        mk = lambda status, msg: TaskResult(  # noqa: E731
            self.host, self.play.name, task.name, status, msg, diff, plan.changes, data=data
        )
        if not plan.changed:
            return self.judge(task, mk("ok", plan.reason), variables)
        if self.check(task):
            if not plan.predictable:
                return dataclasses.replace(mk("skipped", plan.reason), unpredictable=True)
            return self.judge(task, mk("changed", "would " + "; ".join(plan.changes)), variables)
        assert self.session is not None
        rc, stdout, stderr = 0, "", ""
        exported = exports(self.environment(task, variables))
        self.forget(written)  # the host changes now: what this may touch is read afresh
        for step in plan.steps:
            done = self.session.run(
                exported + step.script,
                stdin=step.stdin,
                timeout=None if step.timeout is None else max(step.timeout, opts.command_timeout),
                become=self.become(task),
                shown=HIDDEN_SCRIPT if task.no_log else None,
            )
            rc, stdout, stderr = done.exit_code, done.stdout, done.stderr
            if rc != 0:
                break
        stdout, stderr = stdout.rstrip("\r\n"), stderr.rstrip("\r\n")  # as Ansible registers them
        data.update(
            rc=rc,
            stdout=stdout,
            stderr=stderr,
            stdout_lines=stdout.splitlines(),
            stderr_lines=stderr.splitlines(),
        )
        for line in stdout.splitlines():
            if line.startswith("backup="):
                data["backup_file"] = line.split("=", 1)[1]
        if rc != 0:
            detail = "output hidden (no_log: true)" if task.no_log else stderr.strip()[-500:]
            result = mk("failed", f"{task.where}: exit status {rc}: {detail}")
        else:
            result = mk("changed", "; ".join(plan.changes))
        return self.judge(task, result, variables)

    def environment(self, task: Task, variables: Vars) -> dict[str, str]:
        """The play's ``environment`` with the task's over it, rendered for this host."""
        out: dict[str, str] = {}
        for value in (self.play.environment, task.environment):
            rendered = render(value, variables, task.where)
            for item in rendered if isinstance(rendered, list) else [rendered]:
                if item is None:
                    continue
                if not isinstance(item, dict):
                    raise _TaskFailed(f"{task.where}: environment must be a mapping, got {item!r}")
                for key, val in item.items():
                    if not isinstance(key, str) or not key.isidentifier():
                        raise _TaskFailed(f"{task.where}: environment: {key!r} is not a name")
                    out[key] = "" if val is None else str(val)
        return out

    def judge(self, task: Task, result: TaskResult, variables: Vars) -> TaskResult:
        """Apply ``failed_when`` and ``changed_when`` with the registered result visible."""
        if task.failed_when is None and task.changed_when is None:
            return result
        if result.status == "failed" and not result.data.get("rc"):
            return result  # a failure before anything ran: conditions cannot rescue it
        scope = variables.child({task.register: self.registered(result)} if task.register else {})
        if task.failed_when is not None:
            failed = condition(task.failed_when, scope, task.where)
            if failed:
                result.status = "failed"
                result.msg = result.msg or f"{task.where}: failed_when condition holds"
            elif result.status == "failed":
                result.status = "changed" if task.module in ("command", "shell") else "ok"
        if task.changed_when is not None and result.status in ("ok", "changed"):
            changed = condition(task.changed_when, scope, task.where)
            result.status = "changed" if changed else "ok"
        return result


class _Engine:
    def __init__(self, inventory: Inventory, playbook: Playbook, options: ApplyOptions) -> None:
        self.inventory = inventory
        self.playbook = playbook
        self.options = options
        self.lock = threading.Lock()
        self.results: list[TaskResult] = []
        self.stats: dict[str, HostStats] = {}
        self.runtime: dict[str, dict[str, Any]] = {}
        self.reasons: dict[str, str] = {}
        self.dead: set[str] = set()
        self.round_trips: dict[str, int] = {}
        self.warnings: list[str] = []
        self.groups = group_members(inventory)
        self.hostvars = _HostVars(inventory)
        self.gates: dict[int, threading.BoundedSemaphore] = {}
        self.pool = SessionPool()  # one connection per host for the whole run
        self.started = time.monotonic()  # --deadline counts from here, over every play
        self.output = OutputBudget()  # the command output the whole run may hold
        self.fanout = FanOut(list(inventory.hosts))  # hosts sharing images (docker_image)
        self.ended_plays: set[int] = set()  # id() of the plays a ``meta: end_play`` ended

    def throttle(
        self, task: Task, variables: Callable[[], Vars]
    ) -> threading.BoundedSemaphore | None:
        """The semaphore that lets at most ``task.throttle`` hosts run ``task`` at once (a
        templated throttle takes the value the first host renders)."""
        if not task.throttle:
            return None
        with self.lock:
            gate = self.gates.get(id(task))
            if gate is not None:
                return gate
            value = task.throttle
            if _is_template(value):
                value = render(value, variables(), task.where)
            try:
                size = int(str(value).strip())
            except ValueError:
                raise _TaskFailed(
                    f"{task.where}: 'throttle' must be a number of hosts, got {value!r}"
                ) from None
            if size <= 0:
                return None
            gate = self.gates[id(task)] = threading.BoundedSemaphore(size)
            return gate

    def emit(self, event: Event) -> None:
        if self.options.on_event is not None:
            with self.lock:
                self.options.on_event(event)

    def record(self, result: TaskResult) -> None:
        with self.lock:
            self.results.append(result)

    def selected_tasks(self, play: Play) -> list[Task]:
        o = self.options
        return [t for t in play.tasks if task_selected(t, o.tags, o.skip_tags)]

    def run(self) -> PlaybookResult:
        opts = self.options
        limit: set[str] | None = None
        if opts.limit:
            limit = set(select_hosts(self.inventory, opts.limit, opts.limit_base_dir))
        aborted = ""
        # Every play's hosts and serial first: a broken template stops the run before any
        # host is contacted.
        selected: list[tuple[Play, list[str], list[int | str]]] = []
        for play in self.playbook.plays:
            try:
                pattern = play_pattern(play, self.inventory, opts.extra_vars)
                hosts = select_hosts(self.inventory, pattern, self.playbook.base_dir)
            except PatternError as exc:  # like Ansible: warn and skip the play
                self.warnings.append(f"{play.file}:{play.line}: play '{play.name}': {exc}")
                continue
            hosts = [h for h in hosts if limit is None or h in limit]
            selected.append(
                (play, hosts, play_serial(play, self.inventory, opts.extra_vars, hosts))
            )
        try:
            aborted = self.run_plays(selected)
        finally:
            self.pool.close()
        return PlaybookResult(
            self.stats, self.results, self.reasons, aborted, self.round_trips, self.warnings
        )

    def run_plays(self, selected: list[tuple[Play, list[str], list[int | str]]]) -> str:
        """The plays in order over one pool of connections; returns why the run was aborted
        ("" when it was not)."""
        aborted = ""
        for play, all_hosts, serial in selected:
            hosts = [h for h in all_hosts if h not in self.dead]
            for host in hosts:
                self.stats.setdefault(host, HostStats())
                self.runtime.setdefault(host, {})
            for batch in batches(hosts, serial):
                failed = self.run_batch(play, batch)
                pct = 100.0 * len(failed) / len(batch)
                if play.max_fail_percentage is not None and pct > play.max_fail_percentage:
                    aborted = (
                        f"play '{play.name}': {len(failed)} of {len(batch)} hosts failed, more "
                        f"than max_fail_percentage {play.max_fail_percentage:g}%"
                    )
                    break
                if len(failed) == len(batch) and serial:
                    aborted = f"play '{play.name}': every host of a batch failed"
                    break
            if aborted:
                break
        return aborted

    def host_done(self, play: Play, outcome: HostOutcome) -> None:
        """A host's part of a batch ended: its share of the image fan-out is released, and one
        that was unreachable, refused its key or timed out is reported now, not at the end."""
        self.fanout.leave(outcome.host)
        if outcome.state not in (HostState.OK, HostState.FAILED):
            status = outcome.state.value
            result = TaskResult(outcome.host, play.name, "", status, outcome.reason)
            self.emit(Event(outcome.host, play.name, "", 0, 0, status, result))

    def run_batch(self, play: Play, batch: list[str]) -> list[str]:
        opts = self.options
        specs = []
        for host in batch:
            try:
                spec = conn_spec(
                    host,
                    self.inventory.hosts[host].vars,
                    ssh_config_path=opts.ssh_config_path,
                    default_user=opts.default_user,
                    default_key=opts.default_key,
                    become=opts.become,
                )
            except ProvisionError as exc:
                raise EngineError(str(exc)) from None
            if play.become_user:
                spec = dataclasses.replace(spec, become_user=play.become_user)
            specs.append(spec)
        runs = {h: _HostRun(self, play, h, self.stats[h], self.runtime[h]) for h in batch}
        run_opts = RunOptions(
            forks=opts.forks,
            connect_timeout=opts.connect_timeout,
            command_timeout=opts.command_timeout,
            deadline=opts.deadline,
            deadline_at=None if opts.deadline is None else self.started + opts.deadline,
            output_budget=self.output,
            known_hosts=opts.known_hosts,
            accept_new_host_keys=opts.accept_new_host_keys,
            become_password=opts.become_password,
            pool=self.pool,
        )
        self.fanout.expect(batch)
        outcomes = run_hosts(
            specs,
            lambda session: runs[session.name].run(session),
            run_opts,
            on_done=lambda outcome: self.host_done(play, outcome),
        )
        failed = []
        for host, outcome in outcomes.items():
            self.round_trips[host] = self.round_trips.get(host, 0) + outcome.round_trips
            if outcome.state == HostState.OK:
                if runs[host].failed:
                    failed.append(host)
                    self.dead.add(host)
                continue
            self.dead.add(host)
            failed.append(host)
            self.reasons[host] = outcome.reason
            if outcome.state == HostState.FAILED:
                self.stats[host].failed += 1
            else:
                self.stats[host].unreachable += 1
        return failed


def unknown_settings(
    playbook: Playbook, inventory: Inventory, extra: Mapping[str, Any]
) -> list[str]:
    """Warnings for inventory or ``-e`` variables that look like a play's defaults (same first
    word: ``nvidia_``, ``docker_``...) but are none of them: a typo such as
    ``nvidia_driver_brnch`` would otherwise be ignored in silence, as Ansible does."""
    known: set[str] = set()
    for play in playbook.plays:
        known |= set(play.defaults) | set(play.vars)
    prefixes = {n.split("_", 1)[0] + "_" for n in known if "_" in n and not n.startswith("_")}
    seen: dict[str, str] = {}
    sources = [("-e", extra)] + [(f"host {h.name}", h.vars) for h in inventory.hosts.values()]
    for where, variables in sources:
        for name in variables:
            if name in known or name in seen or not name.startswith(tuple(prefixes)):
                continue
            seen[name] = where
    out = []
    for name, where in seen.items():
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        out.append(f"{where}: variable '{name}' is not a setting of this playbook{hint}")
    return out


def parse_extra_vars(values: list[str], base_dir: str = ".") -> dict[str, Any]:
    """``-e`` values in order, later ones winning: ``k=v k2=v2`` (strings, split like a shell),
    a YAML/JSON mapping (``'{"a": 1}'``), or ``@file`` (YAML/JSON, relative to ``base_dir``)."""
    out: dict[str, Any] = {}
    for value in values:
        text = value.strip()
        if text.startswith("@"):
            path = os.path.join(base_dir, text[1:])
            try:
                with open(path, encoding="utf-8") as fh:
                    data = yaml.safe_load(fh)
            except OSError as exc:
                raise EngineError(f"-e {text}: cannot read {path}: {exc.strerror}") from None
            except yaml.YAMLError as exc:
                raise EngineError(f"-e {text}: invalid YAML: {exc}") from None
            if not isinstance(data, dict):
                raise EngineError(f"-e {text}: the file must hold a mapping")
            out.update(data)
        elif text.startswith(("{", "[")):
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise EngineError(f"-e: invalid YAML/JSON: {exc}") from None
            if not isinstance(data, dict):
                raise EngineError("-e: a YAML/JSON value must be a mapping")
            out.update(data)
        else:
            try:
                words = shlex.split(text)
            except ValueError as exc:
                raise EngineError(f"-e: cannot split {text!r}: {exc}") from None
            for word in words:
                key, sep, val = word.partition("=")
                if not sep or not key:
                    raise EngineError(f"-e: expected key=value, got {word!r}")
                out[key] = val
    return out


def run_playbook(
    inventory: Inventory, playbook_path: str, options: ApplyOptions | None = None
) -> PlaybookResult:
    """Load, validate and run a playbook. Raises PlaybookError/TemplateError-free validation
    errors before any host is contacted; per-task errors end up in the result instead."""
    playbook = load_playbook(playbook_path)
    return run_loaded(inventory, playbook, options or ApplyOptions())


def run_loaded(inventory: Inventory, playbook: Playbook, options: ApplyOptions) -> PlaybookResult:
    """Run an already loaded playbook (``--syntax-check`` loads without running)."""
    return _Engine(inventory, playbook, options).run()


def list_tasks(playbook: Playbook, options: ApplyOptions | None = None) -> list[str]:
    """``--list-tasks`` lines: play headers and the selected task names with their tags."""
    o = options or ApplyOptions()
    lines = []
    for play in playbook.plays:
        try:
            pattern = play_pattern(play, None, o.extra_vars)
        except EngineError:
            pattern = play.hosts
        lines.append(f"play: {play.name} (hosts: {pattern})")
        for task in play.tasks:
            if task_selected(task, o.tags, o.skip_tags):
                tags = f"\tTAGS: [{', '.join(task.tags)}]" if task.tags else ""
                lines.append(f"  {task.name}{tags}")
    return lines


def list_hosts(inventory: Inventory, playbook: Playbook, options: ApplyOptions | None = None):
    """``--list-hosts``: each play's name with the hosts it would run on."""
    o = options or ApplyOptions()
    limit = set(select_hosts(inventory, o.limit, o.limit_base_dir)) if o.limit else None
    out: list[tuple[str, list[str]]] = []
    for play in playbook.plays:
        pattern = play_pattern(play, inventory, o.extra_vars)
        hosts = select_hosts(inventory, pattern, playbook.base_dir)
        out.append((play.name, [h for h in hosts if limit is None or h in limit]))
    return out


__all__ = [
    "ApplyOptions",
    "Event",
    "HostStats",
    "PlaybookResult",
    "TaskResult",
    "TemplateError",
    "exit_code",
    "list_hosts",
    "list_tasks",
    "parse_extra_vars",
    "retry_text",
    "run_loaded",
    "run_playbook",
]
