"""One task on one host (Ansible's ``task_executor.py``): its templated keywords resolved,
``when``, loops, ``retries``/``until``, the arguments rendered and prepared, the state read,
the plan, carrying it out (on the host, or on the controller for ``acts_on_controller``
modules), ``changed_when``/``failed_when``, ``environment``, the check-mode tolerance, and the
result settled: registered, censored (no_log), counted and shown."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provision.ansible_filters import remove_omit
from provision.change_batch import MAX_COMMAND, Ran, batchable_step, frame_changes, split_changes
from provision.errors import ProvisionError
from provision.loops import LoopError, item_scope, loop_items
from provision.modules import MODULES, TaskSkipped
from provision.modules.base import (
    UNDEFINED,
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    coerce,
    is_template,
)
from provision.modules.control import TaskFailure
from provision.modules.facts import FACTS_SCRIPT, parse_facts
from provision.playbook import Play, Task
from provision.results import HIDDEN_SCRIPT, NO_LOG_MSG, Event, HostStats, TaskResult
from provision.shell import quote
from provision.ssh import CommandTimeout, Session
from provision.state_reads import FramedReads, Read, ReadFailed, StateReads, affects
from provision.templating import (
    TemplateError,
    Vars,
    condition,
    merge_vars,
    render,
    render_text,
    unsafe,
)

if TYPE_CHECKING:
    from provision.engine import Engine

# Boolean task keywords that may be ``{{ }}`` templates, rendered per host when the task runs.
TEMPLATED_KEYWORDS = ("become", "ignore_errors", "no_log")


class TaskFailed(Exception):
    """The task fails with this message (``data`` goes into its registered result)."""

    def __init__(self, msg: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.data = data or {}


def exports(env: Mapping[str, str]) -> str:
    """Shell lines exporting ``env`` (each value quoted) ahead of a task's commands."""
    return "".join(f"export {name}={quote(value)}\n" for name, value in env.items())


def value_of(name: str, variables: Vars, where: str) -> Any:
    """A variable's (or expression's) value for a module (debug's ``var``), or UNDEFINED."""
    try:
        return render("{{ " + name + " }}", variables, where)
    except TemplateError:
        return UNDEFINED


def retry_delays(retries: int, delay: float, backoff: bool) -> list[float]:
    """The pauses before each retry: ``delay`` each time, or doubling with ``backoff``."""
    return [delay * (2**k if backoff else 1) for k in range(retries)]


def censor(task: Task, result: TaskResult) -> None:
    """Hide what a no_log task's result says, as Ansible does: its message (a ``fail`` msg or an
    ``assert`` fail_msg may hold the secret) and its changes; the registered value keeps them."""
    if result.msg:
        result.msg = f"{task.where}: {NO_LOG_MSG}" if result.status == "failed" else NO_LOG_MSG
    result.changes = []


def registered(result: TaskResult) -> dict[str, Any]:
    """The value ``register`` stores: the result's data with changed/failed/skipped/msg."""
    data = dict(result.data)
    data.update(
        changed=result.status == "changed" or (result.status == "failed" and result.ran_and_failed),
        failed=result.status == "failed",
        skipped=result.status == "skipped",
        msg=result.msg,
    )
    return unsafe(data)  # what the host printed is never rendered as a template


def fact_variables(module: Module, facts: dict[str, Any]) -> dict[str, Any]:
    """A module's ``ansible_facts`` as host variables: templates only where the module says
    so (include_vars), else values marked never to be rendered again."""
    return facts if module.facts_are_templates else unsafe(facts)


def _framed_size(steps: list[tuple[str, bytes | None]]) -> int:
    """What a member adds to a change batch's command as it travels: framed, then quoted for
    the shell that runs it (a quote in a file costs five characters there)."""
    return len(quote(frame_changes([steps], "0" * 16)))


def resolved_later(task: Task) -> bool:
    """A task whose become/no_log is a template: its read waits until it runs."""
    return any(is_template(getattr(task, k)) for k in TEMPLATED_KEYWORDS)


def loop_status(statuses: list[str]) -> str:
    """A looped task's status from its items': failed, else changed, else skipped when every
    item was, else ok."""
    if "failed" in statuses:
        return "failed"
    if "changed" in statuses:
        return "changed"
    if all(s == "skipped" for s in statuses):
        return "skipped"
    return "ok"


@dataclass
class Member:
    """A task of a change batch (provision/change_batch.py), planned before its turn: its plan,
    its steps as sent, the paths it writes and whether its change may reach below them;
    ``ran``, once the batch has run, is what its steps did."""

    task: Task
    plan: Plan
    steps: list[tuple[str, bytes | None]]
    paths: tuple[str, ...]
    below: bool
    ran: Ran | None = None

    def writes_into(self, paths: tuple[str, ...]) -> bool:
        """Whether this member's change can alter what a read of ``paths`` printed."""
        return self.plan.changed and any(
            affects(w, r, self.below) for w in self.paths for r in paths
        )


@dataclass
class TaskExecutor:
    """Runs tasks on one host of one play (in that host's worker thread). ``upcoming`` gives
    the tasks after a task in the order they will run: the play iterator's flat list, whose
    reads join the batched read."""

    engine: Engine
    play: Play
    host: str
    stats: HostStats
    runtime: dict[str, Any]
    reads: StateReads = field(default_factory=StateReads)
    position: tuple[int, int] = (0, 0)  # (index, total) of the task running, for events
    upcoming: Callable[[Task], list[Task]] = lambda task: []
    # the tasks that run right after a task when it succeeds (what a change batch may carry)
    runs_next: Callable[[Task], list[Task]] = lambda task: []
    rescuable: Callable[[], bool] = lambda: False  # whether a block's rescue would take a failure
    # tasks already carried out in a change batch, by id, until their turn comes
    batched: dict[int, Member] = field(default_factory=dict)

    @property
    def session(self) -> Session | None:
        return self.reads.session

    # -- the host's variables and the task's resolved keywords ----------------------------

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
        templated = {k: v for k in TEMPLATED_KEYWORDS if is_template(v := getattr(task, k))}
        if not templated:
            return task
        variables = self.vars().child(task.vars)
        values = {}
        for key, value in templated.items():
            try:
                values[key] = coerce(Arg(key, "bool"), render(value, variables, task.where))
            except ArgError as exc:
                raise TaskFailed(f"{task.where}: {exc}") from None
        return dataclasses.replace(task, **values)

    # -- one task: run, settle -----------------------------------------------------------

    def emit(self, task: Task, index: int, total: int, status: str, result: TaskResult | None):
        self.engine.emit(Event(self.host, self.play.name, task.name, index, total, status, result))

    def run_task(self, task: Task, index: int, total: int) -> TaskResult:
        self.emit(task, index, total, "start", None)
        self.position = (index, total)
        try:
            task = self.resolved(task)
        except (TaskFailed, TemplateError) as exc:  # its keywords stay unknown: not ignored
            task = dataclasses.replace(task, ignore_errors=False, no_log=bool(task.no_log))
            return self.settled(task, index, total, self.failure(task, exc))
        try:
            gate = self.engine.throttle(task, self.vars)
            with gate if gate is not None else contextlib.nullcontext():
                result = self.execute(task)
        except (TaskFailed, TemplateError) as exc:  # undefined variable etc.: the task fails
            result = self.failure(task, exc)
        except CommandTimeout as exc:  # the host answered; this task ran past its bound
            after = f" after {exc.seconds:g}s" if exc.seconds is not None else ""
            result = self.failure(task, TaskFailed(f"{task.where}: timed out{after}"))
        return self.settled(task, index, total, result)

    def settled(self, task: Task, index: int, total: int, result: TaskResult) -> TaskResult:
        """A task's result registered, censored, counted, recorded and shown."""
        if result.status == "failed" and task.ignore_errors:
            result.ignored = True
        elif result.status == "failed" and self.rescuable():
            result.rescued = True
        if task.register:
            self.runtime[task.register] = registered(result)
        if task.no_log:
            censor(task, result)
        self.stats.count(result)
        self.stats.add_counters(MODULES[task.module].counters(result.data))
        self.engine.record(result)
        self.emit(task, index, total, result.status, result)
        return result

    def failure(self, task: Task, exc: Exception) -> TaskResult:
        data = exc.data if isinstance(exc, TaskFailed) else {}
        return TaskResult(self.host, self.play.name, task.name, "failed", str(exc), data=data)

    def skipped(self, task: Task, why: str) -> TaskResult:
        return TaskResult(self.host, self.play.name, task.name, "skipped", why)

    # -- when and loops ------------------------------------------------------------------

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
                task.loop_kind,
                render(task.loop, base, task.where),
                self.play.base_dir,
                task.where,
                role_path=task.role_path,
            )
        except LoopError as exc:
            raise TaskFailed(str(exc)) from None
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
        data = {
            "results": [
                {**registered(r), "item": sc[task.loop_var], **sc}
                for r, sc in zip(results, scopes, strict=True)
            ]
        }
        msgs = [r.msg for r in results if r.status == "failed" or r.shown]
        diffs = [r.diff for r in results if r.diff]
        return TaskResult(
            self.host,
            self.play.name,
            task.name,
            loop_status([r.status for r in results]),
            "; ".join(msgs),
            diff="".join(diffs) or None,
            changes=[c for r in results for c in r.changes],
            data=data,
            shown=any(r.shown for r in results),
        )

    # -- retries/until -------------------------------------------------------------------

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
            except (TaskFailed, TemplateError) as exc:
                result = self.failure(task, exc)
            if task.until is None or result.status == "skipped":
                done = result.status != "failed"
            else:
                scope = variables.child(
                    {task.register: registered(result)} if task.register else {}
                )
                done = condition(task.until, scope, task.where)
            if done or attempt > len(pauses):
                break
            self.announce_retry(task, result, attempt, len(pauses) - attempt + 1)
            self.reads.forget(None)  # what the task waits for may have changed: read afresh
            time.sleep(pauses[attempt - 1])
        result.data["attempts"] = attempt
        if not done and result.status != "failed":
            result.status = "failed"
            result.msg = f"{task.where}: 'until' still false after {attempt} attempts: {task.until}"
        return result

    def announce_retry(self, task: Task, result: TaskResult, attempt: int, left: int) -> None:
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

    def retry_number(
        self, task: Task, value: Any, variables: Vars, default: float, *, integer: bool
    ) -> float:
        if value is None:
            return default
        if is_template(value):
            value = render(value, variables, task.where)
        try:
            number = int(str(value)) if integer else float(str(value))
        except ValueError:
            raise TaskFailed(
                f"{task.where}: retries/delay must be a number, got {value!r}"
            ) from None
        return max(number, 0)

    # -- arguments, the state read, the plan ---------------------------------------------

    def prepared(self, task: Task, variables: Vars) -> tuple[dict[str, Any], Context, str | None]:
        """Rendered, typed, controller-prepared arguments, the context and the state script."""
        module = MODULES[task.module]
        opts = self.engine.options
        ctx = Context(
            check=self.check(task),
            diff=opts.diff,
            no_log=bool(task.no_log),  # an unrendered template hides, to be safe
            base_dir=self.play.base_dir,
            role_path=task.role_path,
            render=lambda text: render_text(text, variables, task.where),
            peers=self.engine.fanout.member(self.host, self.session, self.progress_of(task)),
            verbosity=opts.verbosity,
            value_of=lambda name: value_of(name, variables, task.where),
        )
        plain = {k: v for k, v in task.args.items() if k not in module.conditions}
        rendered = remove_omit(render(plain, variables, task.where))
        for key in module.conditions:
            if key in task.args:
                rendered[key] = self.evaluate(task, task.args[key], variables)
        try:
            args = module.finalize(rendered)
            args = module.prepare(args, ctx)
            script = module.state_script(args, ctx)
        except (ArgError, ModuleError) as exc:
            raise TaskFailed(f"{task.where}: {exc}") from None
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
        """The task's state: from the cache, else read with the reads of the tasks ahead."""
        become = self.become(task)
        cached = self.reads.cached(script, become)
        if cached is not None:
            return cached
        first = Read(script, paths, bool(task.no_log))
        (out,) = self.read_with_ahead(first, become, self.upcoming(task), task.where)
        if out is None:
            raise TaskFailed(f"{task.where}: reading the host's state failed")
        return out

    def read_with_ahead(
        self, first: Read, become: bool | None, tasks: list[Task], where: str
    ) -> list[str | None]:
        """``first`` and the reads of ``tasks`` that can be prepared now, as one command."""
        try:
            return self.reads.read([first], self.reads_ahead(tasks, become), become)
        except ReadFailed as exc:
            raise TaskFailed(f"{where}: {exc}") from None

    def reads_ahead(self, tasks: list[Task], become: bool | None) -> list[Read]:
        """The state reads of the tasks that can be prepared now (same become, no loop, no
        templated keyword, every variable known): a registered result a task needs is not
        known yet, so that task reads later."""
        out = []
        for other in tasks:
            module: Module = MODULES[other.module]
            if not module.reads_state or other.loop is not None or resolved_later(other):
                continue
            if self.become(other) != become:
                continue
            try:
                args, _, script = self.prepared(other, self.vars().child(other.vars))
            except (ProvisionError, TaskFailed):
                continue
            if script:
                out.append(Read(script, module.read_paths(args), bool(other.no_log)))
        return out

    def gather_facts(self, upcoming: list[Task]) -> None:
        """Facts ride along with the first batch of state reads: no extra round trip."""
        where = f"{self.play.file}:{self.play.line}: play '{self.play.name}': gathering facts"
        (out,) = self.read_with_ahead(Read(FACTS_SCRIPT), self.play.become, upcoming, where)
        self.add_host_facts(parse_facts(out or ""))

    def add_host_facts(self, facts: dict[str, Any]) -> None:
        """Host facts as Ansible injects them: host variables under their own names and in
        ``ansible_facts`` without the ``ansible_`` prefix (gathered facts, service_facts...)."""
        facts = unsafe(facts)  # read from the host: never rendered as templates
        self.runtime.update(facts)
        namespaced = dict(self.runtime.get("ansible_facts") or {})
        namespaced.update({k.removeprefix("ansible_"): v for k, v in facts.items()})
        self.runtime["ansible_facts"] = namespaced

    def attempt(self, task: Task, variables: Vars) -> TaskResult:
        module = MODULES[task.module]
        member = self.batched.pop(id(task), None)
        if member is None:
            self.batched.clear()  # the run went another way: what was batched is not next
        else:  # planned and carried out with an earlier task's changes: only its result now
            return self.carried_out(task, member.plan, variables, member.ran)
        args, ctx, script = self.prepared(task, variables)
        state = self.read_state(task, script, module.read_paths(args)) if script else None
        try:
            plan = module.plan(args, state, ctx)
        except TaskSkipped as exc:
            return self.skipped(task, str(exc))
        except (ArgError, ModuleError) as exc:
            if self.unmet_in_check(task, exc):
                return self.skipped(
                    task, f"cannot be checked until earlier changes are made: {exc}"
                )
            raise TaskFailed(f"{task.where}: {exc}", getattr(exc, "data", None)) from None
        if plan.changed and not self.check(task) and module.acts_on_controller:
            return self.carry_out_controller(task, module, args, plan, variables, ctx)
        paths = module.paths(args)
        result = self.carry_out(task, plan, variables, paths, module.changes_below(args))
        if module.gathers_facts and result.status != "failed":
            self.add_host_facts(result.data.get("ansible_facts", {}))
        elif module.sets_facts and result.status != "failed":
            self.runtime.update(fact_variables(module, result.data.get("ansible_facts", {})))
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

    # -- carrying the plan out -----------------------------------------------------------

    def carry_out_controller(
        self,
        task: Task,
        module: Module,
        args: dict[str, Any],
        plan: Plan,
        variables: Vars,
        ctx: Context,
    ) -> TaskResult:
        """A module that needs the controller while it acts (reboot: wait, reconnect;
        docker_image: a stream from another host)."""
        assert self.session is not None
        self.reads.forget(None)
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
            self.gather_facts(self.upcoming(task))
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
        below: bool = True,
    ) -> TaskResult:
        """The plan carried out (alone, or with the next tasks' changes in one batch)."""
        if not plan.changed or self.check(task):
            return self.carried_out(task, plan, variables, None)
        batch = self.change_batch(task, plan, variables, written, below)
        if batch is not None:
            return self.carried_out(task, plan, variables, self.run_change_batch(batch))
        assert self.session is not None
        opts = self.engine.options
        rc, stdout, stderr = 0, "", ""
        exported = exports(self.environment(task, variables))
        self.reads.forget(written, below=below)  # the host changes now: its reads go stale
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
        return self.carried_out(task, plan, variables, Ran(rc, stdout, stderr))

    def carried_out(self, task: Task, plan: Plan, variables: Vars, ran: Ran | None) -> TaskResult:
        """The task's result from its plan and what its steps did (``ran``; None: nothing
        had to run, or --check), judged by ``changed_when``/``failed_when``."""
        opts = self.engine.options
        data: dict[str, Any] = dict(plan.result)
        diff = plan.diff if opts.diff else None
        mk = lambda status, msg: TaskResult(  # noqa: E731
            self.host, self.play.name, task.name, status, msg, diff, plan.changes, data=data
        )
        if not plan.changed:
            return self.judge(task, mk("ok", plan.reason), variables)
        if ran is None:  # --check
            if not plan.predictable:
                return dataclasses.replace(mk("skipped", plan.reason), unpredictable=True)
            if plan.changed_if is not None and not plan.changed_if(""):
                return self.judge(task, mk("ok", plan.reason), variables)
            return self.judge(task, mk("changed", "would " + "; ".join(plan.changes)), variables)
        rc = ran.rc
        stdout, stderr = ran.stdout.rstrip("\r\n"), ran.stderr.rstrip("\r\n")  # as Ansible has them
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
            result.ran_and_failed = MODULES[task.module].failed_when_false_means_changed
        elif plan.changed_if is not None and not plan.changed_if(stdout):
            result = mk("ok", plan.reason)
        else:
            result = mk("changed", "; ".join(plan.changes))
        return self.judge(task, result, variables)

    # -- change batches ------------------------------------------------------------------

    def may_batch(self, task: Task) -> bool:
        """Whether a task may be carried out inside a change batch: its module only writes
        the files it names, and nothing about the task needs its result before the next task
        is planned (no loop, retries, failed_when, run_once, throttle or templated keyword;
        a ``register`` ends the batch after it)."""
        return (
            MODULES[task.module].batches_changes
            and task.loop is None
            and task.retries is None
            and task.until is None
            and task.failed_when is None
            and not task.run_once
            and not task.throttle
            and not resolved_later(task)
            and not self.check(task)
        )

    def member_steps(
        self, task: Task, plan: Plan, variables: Vars
    ) -> list[tuple[str, bytes | None]]:
        exported = exports(self.environment(task, variables))
        return [(exported + (step.inline or step.script), step.stdin) for step in plan.steps]

    def change_batch(
        self,
        task: Task,
        plan: Plan,
        variables: Vars,
        written: tuple[str, ...] | None,
        below: bool,
    ) -> list[Member] | None:
        """``task`` and the tasks after it that can be planned now from the cached state and
        write nothing an earlier one reads or writes, up to the command's size (a batch of
        one still reads again, in its command, what it made stale for the next tasks); None
        when the task cannot be in a batch (it then runs alone)."""
        if written is None or task.register or not self.may_batch(task):
            return None
        if not all(batchable_step(step) for step in plan.steps):
            return None
        first = Member(task, plan, self.member_steps(task, plan, variables), written, below)
        members = [first]
        size = _framed_size(first.steps)
        if size > MAX_COMMAND:
            return None
        for other in self.runs_next(task):
            member = self.planned_ahead(other, self.become(task), members)
            if member is None:
                break
            size += _framed_size(member.steps)
            if size > MAX_COMMAND:
                break
            members.append(member)
            if other.register:  # a later task may read it: plan that one once it is known
                break
        return members

    def planned_ahead(
        self, task: Task, become: bool | None, members: list[Member]
    ) -> Member | None:
        """``task`` planned now as the next member of a batch, or None when it cannot be:
        another become, a false ``when``, a read not cached or written by an earlier member,
        steps too big or too slow for a batch, or any error (it then meets it at its turn)."""
        if not self.may_batch(task) or self.become(task) != become:
            return None
        module: Module = MODULES[task.module]
        variables = self.vars().child(task.vars) if task.vars else self.vars()
        try:
            if not condition(task.when, variables, task.where):
                return None
            args, ctx, script = self.prepared(task, variables)
            paths = module.paths(args)
            if paths is None or any(m.writes_into(paths) for m in members):
                return None
            state = self.reads.cached(script, become) if script else None
            if script and state is None:
                return None
            plan = module.plan(args, state, ctx)
        except (ProvisionError, TaskFailed, TemplateError, TaskSkipped):
            return None
        if not all(batchable_step(step) for step in plan.steps):
            return None
        steps = self.member_steps(task, plan, variables) if plan.changed else []
        return Member(task, plan, steps, paths, module.changes_below(args))

    def run_change_batch(self, members: list[Member]) -> Ran:
        """Run the members' changes as one command, then, in the same command, read again
        what they made stale for the tasks after them; keep every later member's outcome for
        its turn. The first member's outcome."""
        assert self.session is not None
        become = self.become(members[0].task)
        changing = [m for m in members if m.plan.changed]
        token = secrets.token_hex(8)
        command = frame_changes([m.steps for m in changing], token)
        shown = frame_changes(
            [[(HIDDEN_SCRIPT if m.task.no_log else s, None) for s, _ in m.steps] for m in changing],
            token,
        )
        framed = self.reads_after(members, become, MAX_COMMAND - len(quote(command)))
        if framed is not None:
            command, shown = f"{command}\n{framed.command}", f"{shown}\n{framed.shown}"
        done = self.session.run(
            command, become=become, shown=shown, timeout=self.engine.options.command_timeout
        )
        outcomes = split_changes(done.stdout, done.stderr, token, len(changing))
        for member, ran in zip(changing, outcomes, strict=True):
            member.ran = ran
            self.reads.forget(member.paths, below=member.below)
        # a later member is kept for its turn only if the batch got to it: every change
        # before it succeeded (the members after a failure never ran)
        for before, member in itertools.pairwise(members):
            if before.plan.changed and (before.ran is None or before.ran.rc != 0):
                break
            if member.plan.changed and member.ran is None:
                break
            self.batched[id(member.task)] = member
        if (
            framed is not None
            and not done.truncated
            and all(m.ran and m.ran.rc == 0 for m in changing)
        ):
            self.reads.keep(framed, done.stdout, become)
        first = members[0].ran
        return first if first is not None else Ran(done.exit_code or 1, done.stdout, done.stderr)

    def reads_after(
        self, members: list[Member], become: bool | None, room: int
    ) -> FramedReads | None:
        """The reads of the tasks after the batch that its changes make stale (or that are not
        read yet), framed to run after the changes: the next tasks are then planned without
        another round trip."""
        after = self.upcoming(members[-1].task)
        reads = []
        for read in self.reads_ahead(after, become):
            cached = self.reads.cached(read.script, become) is not None
            if (
                cached
                and read.paths is not None
                and not any(m.writes_into(read.paths) for m in members)
            ):
                continue
            reads.append(read)
        while reads:
            framed = FramedReads.of(reads)
            if len(quote(framed.command)) < room:
                return framed
            reads = reads[: len(reads) // 2]
        return None

    def environment(self, task: Task, variables: Vars) -> dict[str, str]:
        """The play's ``environment`` with the task's over it, rendered for this host."""
        out: dict[str, str] = {}
        for value in (self.play.environment, task.environment):
            rendered = render(value, variables, task.where)
            for item in rendered if isinstance(rendered, list) else [rendered]:
                if item is None:
                    continue
                if not isinstance(item, dict):
                    raise TaskFailed(f"{task.where}: environment must be a mapping, got {item!r}")
                for key, val in item.items():
                    if not isinstance(key, str) or not key.isidentifier():
                        raise TaskFailed(f"{task.where}: environment: {key!r} is not a name")
                    out[key] = "" if val is None else str(val)
        return out

    def judge(self, task: Task, result: TaskResult, variables: Vars) -> TaskResult:
        """Apply ``failed_when`` and ``changed_when`` with the registered result visible."""
        if task.failed_when is None and task.changed_when is None:
            return result
        if result.status == "failed" and not result.data.get("rc"):
            return result  # a failure before anything ran: conditions cannot rescue it
        scope = variables.child({task.register: registered(result)} if task.register else {})
        if task.failed_when is not None:
            failed = condition(task.failed_when, scope, task.where)
            if failed:
                result.status = "failed"
                result.msg = result.msg or f"{task.where}: failed_when condition holds"
            elif result.status == "failed":
                changed = MODULES[task.module].failed_when_false_means_changed
                result.status = "changed" if changed else "ok"
        if task.changed_when is not None and result.status in ("ok", "changed"):
            changed = condition(task.changed_when, scope, task.where)
            result.status = "changed" if changed else "ok"
        return result
