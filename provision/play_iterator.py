"""What runs next on one host (Ansible's ``play_iterator.py`` and the linear strategy's walk):
the play's task tree (tasks, blocks with rescue and always, includes, handlers, ``meta``), the
position in it, and the flat list of the tasks still to come, whose state reads the task
executor batches ahead into one round trip.

Blocks follow Ansible (docs.ansible.com/ansible/latest/playbook_guide/playbooks_blocks.html;
ansible-core's executor/play_iterator.py and plugins/strategy/__init__.py): a task of
``block`` that fails (not ignored) ends the block and runs ``rescue``; that failure then counts
``rescued`` instead of ``failed``, and a rescue that succeeds clears the host's failure, with
``ansible_failed_task`` and ``ansible_failed_result`` set for the rescue's tasks; ``always``
runs whatever happened, and the host stays failed after it when the block failed unrescued.
``meta: end_host``/``end_play`` end the host there, ``always`` included.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provision.loops import LoopError, item_scope, loop_items
from provision.modules import MODULES
from provision.playbook import (
    Block,
    Play,
    PlaybookError,
    Task,
    leaf_tasks,
    load_included_role,
    load_task_file,
    task_file,
)
from provision.results import TaskResult
from provision.ssh import Session
from provision.task_executor import TaskExecutor, TaskFailed, fact_variables, registered
from provision.templating import TemplateError, Vars, condition, render

if TYPE_CHECKING:
    from provision.engine import ApplyOptions

MAX_INCLUDE_DEPTH = 32  # include_tasks within include_tasks: deeper is a file including itself

Item = Task | Block


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


def selected(items: list[Item], options: ApplyOptions) -> list[Item]:
    """The items --tags/--skip-tags select: tasks by their tags (a block's are on its tasks),
    blocks with their selected tasks, a block with none left dropped."""
    out: list[Item] = []
    for item in items:
        if isinstance(item, Block):
            kept = dataclasses.replace(
                item,
                block=selected(item.block, options),
                rescue=selected(item.rescue, options),
                always=selected(item.always, options),
            )
            if kept.block or kept.rescue or kept.always:
                out.append(kept)
        elif task_selected(item, options.tags, options.skip_tags):
            out.append(item)
    return out


def run_order(items: list[Item]) -> list[Task]:
    """The tasks in the order they run when nothing fails: blocks and their ``always``
    (``rescue`` runs only after a failure, so its reads are not prepared ahead)."""
    out: list[Task] = []
    for item in items:
        if isinstance(item, Block):
            out += run_order(item.block) + run_order(item.always)
        else:
            out.append(item)
    return out


def with_vars(items: list[Item], scope: dict[str, Any]) -> list[Item]:
    """The items with ``scope`` under each task's own vars (an include's vars and item)."""
    out: list[Item] = []
    for item in items:
        if isinstance(item, Block):
            out.append(
                dataclasses.replace(
                    item,
                    block=with_vars(item.block, scope),
                    rescue=with_vars(item.rescue, scope),
                    always=with_vars(item.always, scope),
                )
            )
        else:
            out.append(dataclasses.replace(item, vars={**scope, **item.vars}))
    return out


@dataclass
class Included:
    """What an including task brings: the items to run and the handlers they may notify."""

    items: list[Item]
    handlers: list[Task] = field(default_factory=list)


# The content an including task brings, by its module's ``includes`` kind: a loader gets the
# task, its variables (the loop item's included) and the play, and returns what to run.
IncludeLoader = Callable[[Task, Vars, Play], Included]


def load_included_tasks(task: Task, variables: Vars, play: Play) -> Included:
    """``include_tasks``: the task file named (a template), beside the including file or the
    play's."""
    name = str(render(task.args.get("file"), variables, task.where))
    return Included(load_task_file(task_file(task.file, name, play.base_dir), False, task.where))


def load_included_role_items(task: Task, variables: Vars, play: Play) -> Included:
    """``include_role``: the role read now (provision.playbook.load_included_role), its
    tasks carrying the role's vars and params; its defaults sit at the lowest precedence, so
    each applies only where the host has no value of its own (inventory, play vars, facts)."""
    args = render(task.args, variables, task.where)
    role = load_included_role(args, task.file, task.line, play.base_dir)
    defaults = {k: v for k, v in role.defaults.items() if k not in variables}
    return Included(with_vars(role.tasks, defaults), role.handlers)


INCLUDE_LOADERS: dict[str, IncludeLoader] = {
    "tasks": load_included_tasks,
    "role": load_included_role_items,
}


@dataclass
class OnceSlot:
    """One ``run_once`` task of a batch: who runs it, then its result for every host."""

    running: bool = False
    result: TaskResult | None = None
    registered: dict[str, Any] | None = None  # the runner's registered value (before censor)


class BatchOnce:
    """``run_once`` across the hosts of one batch (Ansible: the first host of the batch runs
    the task, its result and registered value go to every host of the batch). Hosts run in
    their own threads, so the first host of the batch still running claims each run_once
    task and the others wait for its result; a host that stops leaves the batch, and the
    next one then claims what it did not reach."""

    def __init__(self, hosts: list[str]) -> None:
        self.active = list(hosts)
        self.changed = threading.Condition()
        self.slots: dict[tuple[str, int], OnceSlot] = {}

    def leave(self, host: str) -> None:
        with self.changed:
            if host in self.active:
                self.active.remove(host)
                self.changed.notify_all()

    def claim(self, host: str, key: tuple[str, int]) -> tuple[OnceSlot, bool]:
        """The slot of ``key`` and whether ``host`` runs it (else its result is there)."""
        with self.changed:
            slot = self.slots.setdefault(key, OnceSlot())
            while slot.result is None:
                if not slot.running and self.active and self.active[0] == host:
                    slot.running = True
                    return slot, True
                self.changed.wait(timeout=1.0)
            return slot, False

    def settle(self, slot: OnceSlot, result: TaskResult, value: dict[str, Any]) -> None:
        with self.changed:
            slot.result, slot.registered = result, value
            self.changed.notify_all()


@dataclass
class HostPlay:
    """One host's walk through one play (runs in that host's worker thread)."""

    executor: TaskExecutor
    once: BatchOnce = field(default_factory=lambda: BatchOnce([]))
    failed: bool = False  # the host failed (unrescued): it stops, the batch counts it
    ended: bool = False  # meta end_host / end_play ended this host's play
    notified: set[str] = field(default_factory=set)
    includes: list[str] = field(default_factory=list)  # the includes running, outermost first
    sequence: list[Task] = field(default_factory=list)  # the tasks to come, in run order
    numbers: dict[int, int] = field(default_factory=dict)  # id(task) -> its 1-based index
    total: int = 0
    last_failure: tuple[Task, TaskResult] | None = None
    failure_counted: bool = True  # False: a run_once failure another host counted
    once_seen: dict[str, int] = field(default_factory=dict)  # run_once tasks reached, by where
    rescue_depth: int = 0  # blocks with a rescue being run: a failure here is rescued
    handlers: list[Task] = field(default_factory=list)  # the play's, then included roles'
    # id(task) -> (the item list it runs in, its position there): see runs_next
    places: dict[int, tuple[list[Item], int]] = field(default_factory=dict)

    @property
    def play(self) -> Play:
        return self.executor.play

    def upcoming(self, task: Task) -> list[Task]:
        """The tasks after ``task`` in run order (none when it is not in the list: a rescue
        task, or a task whose keywords were rendered)."""
        position = next((i for i, t in enumerate(self.sequence) if t is task), None)
        return [] if position is None else self.sequence[position + 1 :]

    def runs_next(self, task: Task) -> list[Task]:
        """The tasks that run right after ``task`` when it succeeds: the tasks after it in its
        own list, up to the first block (the end of a block may stop the host: an always
        section after a failure). What a change batch may carry with it."""
        items, at = self.places.get(id(task), ([], 0))
        out: list[Task] = []
        for item in items[at + 1 :]:
            if isinstance(item, Block):
                break
            out.append(item)
        return out

    def run(self, session: Session) -> None:
        try:
            self.walk(session)
        finally:
            self.once.leave(self.executor.host)

    def walk(self, session: Session) -> None:
        ex = self.executor
        ex.reads.session = session
        ex.upcoming = self.upcoming
        ex.runs_next = self.runs_next
        ex.rescuable = lambda: self.rescue_depth > 0
        self.handlers = list(self.play.handlers)
        items = selected(self.play.tasks, ex.engine.options)
        self.sequence = run_order(items)
        self.numbers = {id(t): n for n, t in enumerate(leaf_tasks(items), 1)}
        self.total = len(self.numbers)
        if self.play_ended():
            return
        # gathered facts always hold the OS family; service_facts alone fills ansible_facts too
        facts_wanted = self.play.gather_facts and "ansible_os_family" not in ex.runtime
        if facts_wanted and not self.gather_facts():
            return
        if self.run_items(items, None) and not self.play_ended():
            self.run_handlers(self.total + 1, self.total + 1)

    def gather_facts(self) -> bool:
        """Ansible's "Gathering Facts" task, counted like one; False when it failed."""
        ex = self.executor
        try:
            ex.gather_facts(self.sequence)
        except TaskFailed as exc:
            self.failed = True
            ex.stats.failed += 1
            ex.engine.record(
                TaskResult(ex.host, self.play.name, "Gathering Facts", "failed", str(exc))
            )
            return False
        ex.stats.ok += 1
        ex.engine.record(TaskResult(ex.host, self.play.name, "Gathering Facts", "ok"))
        return True

    def stopped(self) -> bool:
        return self.ended or self.play_ended()

    def play_ended(self) -> bool:
        """A ``meta: end_play`` on any host of this play ends it for every host."""
        return id(self.play) in self.executor.engine.ended_plays

    # -- the tree ------------------------------------------------------------------------

    def run_items(self, items: list[Item], at: int | None) -> bool:
        """Run ``items`` in order (``at``: the index of the include they came from). False:
        the host stops here (a failure, or the play ended for it)."""
        for at_item, item in enumerate(items):
            self.places[id(item)] = (items, at_item)
        for item in items:
            if self.stopped():
                return False
            if isinstance(item, Block):
                done = self.run_block(item, at)
            else:
                index = at if at is not None else self.numbers.get(id(item), 0)
                done = self.run_one(item, index)
            if not done:
                return False
        return True

    def run_block(self, block: Block, at: int | None) -> bool:
        """``block``, then ``rescue`` if a task of it failed, then ``always``."""
        self.rescue_depth += bool(block.rescue)
        try:
            done = self.run_items(block.block, at)
        finally:
            self.rescue_depth -= bool(block.rescue)
        if not done and self.failed and block.rescue and not self.stopped():
            self.rescue()
            done = self.run_items(block.rescue, at)
        if self.stopped():
            return False
        failed, self.failed = self.failed, False  # always runs whatever happened
        done_always = self.run_items(block.always, at)
        self.failed = self.failed or failed
        return done and done_always and not self.failed

    def rescue(self) -> None:
        """The failure becomes ``rescued``; the rescue's tasks see what failed."""
        ex = self.executor
        if self.failure_counted:
            ex.stats.rescue()
        self.failed = False
        if self.last_failure is not None:
            task, result = self.last_failure
            ex.runtime["ansible_failed_task"] = {"name": task.name, "action": task.module}
            ex.runtime["ansible_failed_result"] = registered(result)

    def run_one(self, task: Task, index: int) -> bool:
        module = MODULES[task.module]
        if module.includes is not None:
            return self.run_include(task, index)
        if module.flow_control:
            return self.run_meta(task, index)
        if task.run_once:
            return self.run_once(task, index)
        return self.went_on(task, self.executor.run_task(task, index, self.total))

    def went_on(self, task: Task, result: TaskResult, counted: bool = True) -> bool:
        """After a task: its changes notify; a failure (not ignored) stops the host."""
        if result.status == "changed" and counted:
            self.notified.update(task.notify)
        if result.status == "failed" and not result.ignored:
            self.failed = True
            self.last_failure = (task, result)
            self.failure_counted = counted
            return False
        return True

    def run_once(self, task: Task, index: int) -> bool:
        """``run_once``: the batch's first running host runs the task (its ``when`` decides);
        every other host takes its result: the registered value and facts, a failure that
        stops it too (counted, shown and notifying on the host that ran it only, as in
        Ansible)."""
        ex = self.executor
        seen = self.once_seen[task.where] = self.once_seen.get(task.where, 0) + 1
        slot, runs = self.once.claim(ex.host, (task.where, seen))
        if runs:
            result = ex.failure(task, TaskFailed(f"{task.where}: the host running it stopped"))
            try:
                result = ex.run_task(task, index, self.total)
            finally:
                value = ex.runtime.get(task.register, {}) if task.register else {}
                self.once.settle(slot, result, value)
            return self.went_on(task, result)
        assert slot.result is not None
        if task.register:
            ex.runtime[task.register] = slot.registered or registered(slot.result)
        module = MODULES[task.module]
        if module.sets_facts and slot.result.status != "failed":
            ex.runtime.update(fact_variables(module, slot.result.data.get("ansible_facts", {})))
        return self.went_on(task, slot.result, counted=False)

    def settled_failure(self, task: Task, failed: TaskResult) -> bool:
        """A failure outside run_task (an include that cannot be read): counted, recorded."""
        self.failed = True
        self.last_failure = (task, failed)
        self.failure_counted = True
        self.executor.stats.failed += 1
        self.executor.engine.record(failed)
        return False

    # -- includes ------------------------------------------------------------------------

    def run_include(self, task: Task, index: int) -> bool:
        """An including task (``include_tasks``): per loop item whose ``when`` holds, the
        content is loaded now and run with the item and the include's vars."""
        ex, total = self.executor, self.total
        ex.emit(task, index, total, "start", None)
        try:
            runs = self.included(task)
        except (TaskFailed, TemplateError, PlaybookError, LoopError) as exc:
            failed = ex.failure(task, exc)
            ex.emit(task, index, total, "failed", failed)
            return self.settled_failure(task, failed)
        status = "ok" if runs else "skipped"  # Ansible counts each file included, per item
        done = TaskResult(ex.host, self.play.name, task.name, status)
        ex.engine.record(done)
        ex.emit(task, index, total, status, done)
        if runs:
            ex.stats.ok += len(runs)
        else:
            ex.stats.skipped += 1
        if len(self.includes) >= MAX_INCLUDE_DEPTH:
            failed = ex.failure(
                task, TaskFailed(f"{task.where}: includes nested over {MAX_INCLUDE_DEPTH} deep")
            )
            ex.emit(task, index, total, "failed", failed)
            return self.settled_failure(task, failed)
        for scope, items in runs:
            chosen = selected(with_vars(items, scope), ex.engine.options)
            outer, self.sequence = self.sequence, run_order(chosen)
            self.includes.append(task.where)
            try:
                if not self.run_items(chosen, index):
                    return False
            finally:
                self.includes.pop()
                self.sequence = outer
        return True

    def included(self, task: Task) -> list[tuple[dict[str, Any], list[Item]]]:
        """(the variables, the items) of each run of an include: one per loop item."""
        ex = self.executor
        base = ex.vars().child(task.vars)
        scopes: list[dict[str, Any]] = [{}]
        if task.loop is not None:
            items = loop_items(
                task.loop_kind,
                render(task.loop, base, task.where),
                self.play.base_dir,
                task.where,
                role_path=task.role_path,
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
        kind = MODULES[task.module].includes
        assert kind is not None
        load = INCLUDE_LOADERS[kind]
        runs = []
        for scope in scopes:
            scoped = base.child(scope)
            if not condition(task.when, scoped, task.where):
                continue
            included = load(task, scoped, self.play)
            self.add_handlers(included.handlers)
            reachable = {h.name for h in self.handlers} | {
                topic for h in self.handlers for topic in h.listen
            }
            for t in leaf_tasks(included.items):
                missing = [n for n in t.notify if n not in reachable]
                if missing:
                    raise TaskFailed(f"{t.where}: notify names no handler: '{missing[0]}'")
            runs.append(({**task.vars, **scope}, included.items))
        return runs

    def add_handlers(self, handlers: list[Task]) -> None:
        """An included role's handlers join this host's: notifiable by its tasks, run at the
        next flush like the play's (a role included twice keeps its last copy, as Ansible)."""
        for handler in handlers:
            self.handlers = [h for h in self.handlers if h.name != handler.name] + [handler]

    # -- handlers and meta ---------------------------------------------------------------

    def run_handlers(self, index: int, total: int) -> bool:
        """The handlers notified so far, in the play's order (a handler may notify a later
        one); the notifications are cleared. False when one failed and the host stops."""
        for handler in self.handlers:
            if handler.name in self.notified or self.notified & set(handler.listen):
                result = self.executor.run_task(handler, index, max(index, total))
                if result.status == "changed":
                    self.notified.update(handler.notify)
                if result.status == "failed" and not result.ignored:
                    self.failed = True
                    self.last_failure = (handler, result)
                    return False
        self.notified.clear()
        return True

    def run_meta(self, task: Task, index: int) -> bool:
        """``meta``: carried out here and, as in Ansible, counted in no recap column;
        end_host and end_play leave the notified handlers unrun. False: the host stops."""
        ex, total = self.executor, self.total
        action = str(task.args.get("free_form"))
        ex.emit(task, index, total, "start", None)
        try:
            held = action == "flush_handlers" or condition(
                task.when, ex.vars().child(task.vars), task.where
            )
        except TemplateError as exc:
            failed = ex.failure(task, exc)
            ex.emit(task, index, total, "failed", failed)
            return self.settled_failure(task, failed)
        ends = held and action in ("end_host", "end_play")
        status = "ok" if held else "skipped"
        shown = index if not ends else total
        ex.emit(task, shown, total, status, TaskResult(ex.host, self.play.name, task.name, status))
        if not held:
            return True
        if action == "flush_handlers":
            return self.run_handlers(index, total)
        if action == "end_play":
            ex.engine.ended_plays.add(id(self.play))
        self.ended = self.ended or ends
        return not ends
