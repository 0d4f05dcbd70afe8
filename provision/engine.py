"""Run a playbook's plays over hosts: plays in order, rollout batches (``serial``,
``max_fail_percentage``), one pool of connections for the whole run, ``throttle``, the image
fan-out, and the public entry points (run, --list-tasks, --list-hosts, -e parsing).

The work on each host is split along Ansible's seams: :mod:`provision.play_iterator` (what
runs next on a host: tasks, blocks, includes, handlers), :mod:`provision.task_executor` (one
task on one host), :mod:`provision.state_reads` (the batched state read and its cache) and
:mod:`provision.results` (results, events, stats, exit code). Their public names stay
importable from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
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
    run_hosts,
)
from provision.fanout import FanOut
from provision.inventory import Inventory
from provision.modules.base import is_template
from provision.patterns import select_hosts
from provision.play_iterator import BatchOnce, HostPlay, selected, task_selected
from provision.playbook import (
    FLUSH_HANDLERS,
    Play,
    Playbook,
    PlaybookError,
    Task,
    leaf_tasks,
    load_playbook,
    parse_serial,
)
from provision.results import (
    HIDDEN_SCRIPT,
    NO_LOG_MSG,
    Event,
    HostStats,
    PlaybookResult,
    TaskResult,
    exit_code,
    human_bytes,
    retry_text,
)
from provision.ssh import OutputBudget
from provision.state_reads import frame_reads, split_reads
from provision.target import conn_spec
from provision.task_executor import TaskExecutor, TaskFailed, retry_delays
from provision.templating import TemplateError, Vars, merge_vars, render


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


class EngineError(ProvisionError):
    """The playbook cannot run at all (no hosts matched a --limit, bad connection vars)."""


# -- selection helpers (pure) ----------------------------------------------------------------


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


# -- running ---------------------------------------------------------------------------------


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
    if not is_template(play.hosts):
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


class Engine:
    """One run: the plays over the hosts, and what the hosts' runs share (the lock, the
    results, the stats, the connection pool, the throttles, the image fan-out)."""

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
            if is_template(value):
                value = render(value, variables(), task.where)
            try:
                size = int(str(value).strip())
            except ValueError:
                raise TaskFailed(
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

    def host_done(self, play: Play, outcome: HostOutcome, once: BatchOnce) -> None:
        """A host's part of a batch ended: its share of the image fan-out is released, the
        batch's run_once tasks are left to the others, and one that was unreachable, refused
        its key or timed out is reported now, not at the end."""
        self.fanout.leave(outcome.host)
        once.leave(outcome.host)
        if outcome.state not in (HostState.OK, HostState.FAILED):
            status = outcome.state.value
            result = TaskResult(outcome.host, play.name, "", status, outcome.reason)
            self.emit(Event(outcome.host, play.name, "", 0, 0, status, result))

    def run_batch(self, play: Play, batch: list[str]) -> list[str]:
        opts = self.options
        specs = []
        for host in batch:
            try:
                host_vars = self.inventory.hosts[host].vars
                if play.connection:  # the play's ``connection``; a host's own setting wins
                    host_vars = {"ansible_connection": play.connection, **host_vars}
                spec = conn_spec(
                    host,
                    host_vars,
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
        once = BatchOnce(batch)  # run_once: the batch's first host runs, all get the result
        runs = {
            h: HostPlay(TaskExecutor(self, play, h, self.stats[h], self.runtime[h]), once)
            for h in batch
        }
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
            on_done=lambda outcome: self.host_done(play, outcome, once),
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
    return Engine(inventory, playbook, options).run()


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
        for task in leaf_tasks(selected(play.tasks, o)):  # blocks: block, rescue, always
            if task.name == FLUSH_HANDLERS:  # Ansible lists no implicit flush either
                continue
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
    "HIDDEN_SCRIPT",
    "NO_LOG_MSG",
    "ApplyOptions",
    "EngineError",
    "Event",
    "HostStats",
    "PlaybookResult",
    "TaskResult",
    "TemplateError",
    "batches",
    "exit_code",
    "frame_reads",
    "human_bytes",
    "list_hosts",
    "list_tasks",
    "parse_extra_vars",
    "retry_delays",
    "retry_text",
    "run_loaded",
    "run_playbook",
    "split_reads",
    "task_selected",
    "unknown_settings",
]
