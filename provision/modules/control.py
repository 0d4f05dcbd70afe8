"""``fail`` and ``assert``: stop a host on purpose, before it is touched.

Both decide on the controller from variables alone: no state read, no command, so a playbook
can refuse early (Secure Boot on, snap Docker, GPU processes running) at no round-trip cost.
``assert``'s conditions are evaluated by the engine like ``when`` (it lists them in
``conditions``), so the plan here stays pure: it gets ``[(expression, held), ...]``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from provision.modules.base import (
    UNDEFINED,
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    noop,
)
from provision.modules.reboot import TaskSkipped


class TaskFailure(ModuleError):
    """The task fails with this message on purpose; ``data`` goes into the registered result."""

    def __init__(self, msg: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.data = data or {}


class FailModule(Module):
    """Ansible's ``fail``: the host fails with ``msg`` (use it with ``when``)."""

    name = "fail"
    reads_state = False
    spec = (Arg("msg", "str", default="Failed as requested from task"),)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        raise TaskFailure(args["msg"])


class AssertModule(Module):
    """Ansible's ``assert``: every condition of ``that`` must hold, else the host fails."""

    name = "assert"
    reads_state = False
    spec = (
        Arg("that", "raw", required=True),
        Arg("fail_msg", "str"),
        Arg("msg", "str"),  # Ansible's older name for fail_msg
        Arg("success_msg", "str", default="All assertions passed"),
        Arg("quiet", "bool", default=False),
    )
    # Arguments the engine evaluates as conditions (like ``when``) before calling ``plan``:
    # each becomes a list of (expression, held) pairs, evaluation stopping at the first false.
    conditions = ("that",)

    def check_combination(self, args: dict[str, Any]) -> None:
        that = args.get("that")
        items = that if isinstance(that, list) else [that]
        if not items or not all(isinstance(i, str | bool) or _is_pair(i) for i in items):
            raise ArgError("module 'assert': 'that' must be a condition or a list of conditions")

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        checked = [tuple(pair) for pair in args["that"]]
        for expression, held in checked:
            if not held:
                msg = args["fail_msg"] or args["msg"] or "Assertion failed"
                raise TaskFailure(msg, {"assertion": expression, "evaluated_to": False})
        reason = "" if args["quiet"] else args["success_msg"]
        return noop(reason, assertion_count=len(checked))


def _is_pair(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2


_FACT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SetFactModule(Module):
    """Ansible's ``set_fact``: every argument (but ``cacheable``) becomes a host variable for
    the rest of the run, above play vars and below extra vars (docs.ansible.com/ansible/latest/
    collections/ansible/builtin/set_fact_module.html). Decided on the controller: no state read.
    The engine merges the result's ``ansible_facts`` into the host's variables."""

    name = "set_fact"
    reads_state = False
    sets_facts = True
    spec = (Arg("cacheable", "bool", default=False),)

    def check_static(self, args: dict[str, Any]) -> None:
        facts = [k for k in args if k != "cacheable"]
        if not facts:
            raise ArgError("module 'set_fact': give at least one variable (name: value)")
        for key in facts:
            if not isinstance(key, str) or not _FACT_NAME.match(key):
                raise ArgError(f"module 'set_fact': {key!r} is not a valid variable name")

    def finalize(self, args: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in args.items() if k != "cacheable"}
        self.check_static(out)
        return out

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        return noop("", ansible_facts=dict(args))


class DebugModule(Module):
    """Ansible's ``debug``: show ``msg`` or the value of the variable ``var`` (undefined shows
    "VARIABLE IS NOT DEFINED!", as in Ansible); with ``verbosity`` N it is skipped unless the
    run has at least N ``-v`` (docs.ansible.com/ansible/latest/collections/ansible/builtin/
    debug_module.html)."""

    name = "debug"
    reads_state = False
    shows_result = True
    spec = (
        Arg("msg", "raw"),
        Arg("var", "str"),
        Arg("verbosity", "int", default=0),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if args.get("msg") is not None and args.get("var") is not None:
            raise ArgError("module 'debug': 'msg' and 'var' are mutually exclusive; give one")

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        if args["verbosity"] > ctx.verbosity:
            raise TaskSkipped(f"verbosity threshold not met (needs -{'v' * args['verbosity']})")
        if args["var"] is not None:
            value = ctx.value_of(args["var"]) if ctx.value_of else UNDEFINED
            if value is UNDEFINED:
                value = "VARIABLE IS NOT DEFINED!"  # what Ansible's debug shows
            return noop(f"{args['var']}: {_shown(value)}", **{args["var"]: value})
        msg = "Hello world!" if args["msg"] is None else args["msg"]
        return noop(_shown(msg), msg=msg)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


class MetaModule(Module):
    """Ansible's ``meta``: act on the run itself, not on the host (docs.ansible.com/ansible/
    latest/collections/ansible/builtin/meta_module.html). The engine carries the action out
    (``flow_control``): ``flush_handlers`` runs the handlers notified so far, ``end_host`` ends
    the play for this host, ``end_play`` for every host, ``noop`` does nothing."""

    name = "meta"
    reads_state = False
    free_form = "free_form"
    flow_control = True
    spec = (
        Arg(
            "free_form",
            "str",
            required=True,
            choices=("noop", "flush_handlers", "end_play", "end_host"),
        ),
    )

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        return noop("")


class IncludeTasksModule(Module):
    """Ansible's ``include_tasks``: a task file read when the task runs, so its name may be a
    template and the task may loop (docs.ansible.com/ansible/latest/collections/ansible/
    builtin/include_tasks_module.html). The play iterator reads and runs the file
    (``includes = "tasks"``); like Ansible it counts ``ok`` once per file included (per loop
    item), ``skipped`` when none is."""

    name = "include_tasks"
    reads_state = False
    free_form = "file"
    includes = "tasks"
    spec = (Arg("file", "str", required=True), Arg("apply", "dict"))

    def check_combination(self, args: dict[str, Any]) -> None:
        if args.get("apply"):
            raise ArgError("module 'include_tasks': 'apply' is not supported yet")

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        return noop("")


class IncludeVarsModule(Module):
    """Ansible's ``include_vars``: a YAML file's variables, read on the controller when the
    task runs, become host variables like ``set_fact``'s (``name``: all under one variable).
    A relative file is looked for under ``vars/`` beside the play, then beside it
    (docs.ansible.com/ansible/latest/collections/ansible/builtin/include_vars_module.html)."""

    name = "include_vars"
    reads_state = False
    free_form = "file"
    sets_facts = True
    facts_are_templates = True
    spec = (Arg("file", "str", required=True), Arg("name", "str"))

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        from provision.playbook import PlaybookError, read_vars_file

        places = [args["file"]]
        if not os.path.isabs(args["file"]):
            places = [
                os.path.join(base, d, args["file"])
                for base in ctx.search_dirs()
                for d in ("vars", ".")
            ]
        path = next((p for p in places if os.path.isfile(p)), places[-1])
        try:
            data = read_vars_file(path)
        except PlaybookError as exc:
            raise ModuleError(str(exc)) from None
        return {**args, "vars": {args["name"]: data} if args["name"] else data}

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        return noop("", ansible_facts=dict(args["vars"]))
