"""``fail`` and ``assert``: stop a host on purpose, before it is touched.

Both decide on the controller from variables alone: no state read, no command, so a playbook
can refuse early (Secure Boot on, snap Docker, GPU processes running) at no round-trip cost.
``assert``'s conditions are evaluated by the engine like ``when`` (it lists them in
``conditions``), so the plan here stays pure: it gets ``[(expression, held), ...]``.
"""

from __future__ import annotations

from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, noop


class TaskFailure(ModuleError):
    """The task fails with this message on purpose; ``data`` goes into the registered result."""

    def __init__(self, msg: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.data = data or {}


class FailModule(Module):
    """Ansible's ``fail``: the host fails with ``msg`` (use it with ``when``)."""

    name = "fail"
    spec = (Arg("msg", "str", default="Failed as requested from task"),)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        raise TaskFailure(args["msg"])


class AssertModule(Module):
    """Ansible's ``assert``: every condition of ``that`` must hold, else the host fails."""

    name = "assert"
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
