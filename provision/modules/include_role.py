"""Ansible's ``include_role`` (docs.ansible.com/ansible/latest/collections/ansible/builtin/
include_role_module.html): a role read and run when the task runs, so its name may be a
template and the task may loop. Its options are role_include.py's VALID_ARGS. The play
iterator loads the role through ``provision.playbook.load_included_role`` (``includes =
"role"``); ``import_role``, the static form, is inlined when the playbook is read."""

from __future__ import annotations

from typing import Any

from provision.modules.base import Arg, Context, Module, Plan, noop


class IncludeRoleModule(Module):
    name = "include_role"
    reads_state = False
    includes = "role"
    spec = (
        Arg("name", "str", required=True, aliases=("role",)),
        Arg("tasks_from", "str"),
        Arg("vars_from", "str"),
        Arg("defaults_from", "str"),
        Arg("handlers_from", "str"),
        Arg("allow_duplicates", "bool", default=True),
        Arg("public", "bool"),
        Arg("rolespec_validate", "bool", default=True),
        Arg("apply", "dict"),
    )

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        return noop("")
