"""kernel_module_blacklist: keep a kernel module (nouveau) from loading, initramfs included.

A blacklist in /etc/modprobe.d only takes effect at early boot once it is in the initramfs, so
when the file changes the initramfs is rebuilt (``update-initramfs -u``) where the host has that
tool; where it has none the task says so instead of pretending. The file is written with the
same atomic, backed-up write as ``copy`` (:func:`provision.modules.files.plan_write`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from provision.modules.base import (
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    Step,
    is_template,
    noop,
    parse_probe,
    path_probe,
)
from provision.modules.files import plan_write
from provision.shell import quote

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_PARAM = re.compile(r"^[A-Za-z0-9_.-]+(=\S*)?$")
INITRAMFS = "update-initramfs -u"


class KernelModuleBlacklistModule(Module):
    name = "kernel_module_blacklist"
    path_arg = "path"
    spec = (
        Arg("module", required=True),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("path"),
        Arg("options", "list", default=[]),
        Arg("update_initramfs", "bool", default=True),
        Arg("backup", "bool", default=True),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        module = args.get("module")
        if isinstance(module, str) and not is_template(module) and not _NAME.match(module):
            raise ArgError(f"module '{self.name}': {module!r} is not a kernel module name")
        options = args.get("options") or []
        for opt in options if isinstance(options, list) else [options]:
            if isinstance(opt, str) and not is_template(opt) and not _PARAM.match(opt):
                raise ArgError(
                    f"module '{self.name}': option {opt!r} is not a module parameter like "
                    "'modeset=0'"
                )

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        args = dict(args)
        if args["path"] is None:
            args["path"] = f"/etc/modprobe.d/blacklist-{args['module']}.conf"
        args["data"] = blacklist_text(args["module"], [str(o) for o in args["options"]])
        return args

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return "\n".join(
            [
                path_probe(args["path"], content=ctx.diff and not ctx.no_log),
                "if command -v update-initramfs >/dev/null 2>&1; then echo initramfs=1; "
                "else echo initramfs=0; fi",
            ]
        )

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        path, module = args["path"], args["module"]
        st = parse_probe(state)
        if args["state"] == "absent":
            if st["type"] == "absent":
                return noop(f"{path} is already absent: {module} is not blacklisted there")
            if st["type"] != "file":
                raise ModuleError(f"{path} exists and is a {st['type']}, not a regular file")
            script = "set -e\n"
            if args["backup"]:
                script += (
                    f"p={quote(path)}\n"
                    'b="$p.$(date +%Y-%m-%d@%H:%M:%S)~"; cp -p "$p" "$b"; echo "backup=$b"\n'
                )
            plan = Plan(
                True, changes=[f"remove {path}"], steps=[Step(script + f"rm -f -- {quote(path)}")]
            )
        else:
            data: bytes = args["data"]
            write_args = {
                "dest": path,
                "owner": "root",
                "group": "root",
                "mode": "644",
                "backup": args["backup"],
            }
            plan = plan_write(write_args, data, state, ctx)
            if not plan.changed:
                return noop(f"{path} already blacklists {module}", checksum=plan.result["checksum"])
            if st.get("sha256") == hashlib.sha256(data).hexdigest():
                return plan  # only owner or mode differed: nothing for the initramfs
        if args["update_initramfs"]:
            if st.get("initramfs") == "1":
                plan.changes.append(f"rebuild the initramfs ({INITRAMFS})")
                plan.steps.append(Step(INITRAMFS))
                plan.result["initramfs"] = "rebuilt"
            else:
                plan.changes.append("initramfs not rebuilt: update-initramfs is not on the host")
                plan.result["initramfs"] = "missing"
        return plan


def blacklist_text(module: str, options: list[str]) -> bytes:
    """The file's content: a header saying who wrote it, the blacklist, then the options."""
    lines = [
        f"# Managed by provision (kernel_module_blacklist): keep {module} from loading.",
        f"blacklist {module}",
    ]
    if options:
        lines.append(f"options {module} {' '.join(options)}")
    return ("\n".join(lines) + "\n").encode()
