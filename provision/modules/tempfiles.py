"""tempfile: a new temporary file or directory on the host, its path registered
(ansible.builtin.tempfile: docs.ansible.com/ansible/latest/collections/ansible/builtin/
tempfile_module.html).

As in Ansible: ``prefix`` (``ansible.``) + 8 random characters + ``suffix`` in ``path`` (the
host's temp directory: TMPDIR, TEMP, TMP, else /tmp), a file 0600 or a directory 0700, created
exclusively; ``changed`` on every run. The name is drawn on the controller before the plan, so
the plan and the registered ``path`` are known before anything runs; Ansible's tempfile does
not support check mode, so --check skips the task.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, Plan, Step, is_template
from provision.shell import quote

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # Python's tempfile draws from these


class TempfileModule(Module):
    name = "tempfile"
    spec = (
        Arg("state", default="file", choices=("file", "directory")),
        Arg("path"),
        Arg("prefix", default="ansible."),
        Arg("suffix", default=""),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        for key in ("prefix", "suffix"):
            value = args.get(key)
            if isinstance(value, str) and not is_template(value) and "/" in value:
                raise ArgError(
                    f"module '{self.name}': {key} must be a valid file name component, "
                    f"got {value!r}"
                )

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        return (args["path"],) if args["path"] else None

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        name = "".join(secrets.choice(_NAME_CHARS) for _ in range(8))
        return {**args, "name": f"{args['prefix']}{name}{args['suffix']}"}

    def state_script(self, args: dict[str, Any], ctx: Context) -> str | None:
        if args["path"]:
            return None
        return 'printf "tmpdir=%s\\n" "${TMPDIR:-${TEMP:-${TMP:-/tmp}}}"'

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        where = args["path"] or _tmpdir(state)
        path = os.path.join(where, args["name"])
        p = quote(path)
        if args["state"] == "directory":
            script = f"mkdir -m 700 -- {p}"
        else:  # noclobber: an existing file is never reused
            script = f"set -C; umask 077; : > {p}"
        return Plan(
            True,
            changes=[f"create the temporary {args['state']} {path}"],
            steps=[Step(script)],
            result={"path": path},
            predictable=False,
            reason="tempfile does not run in check mode (as in Ansible)",
        )


def _tmpdir(state: str | None) -> str:
    for line in (state or "").splitlines():
        if line.startswith("tmpdir="):
            return line.removeprefix("tmpdir=") or "/tmp"
    return "/tmp"
