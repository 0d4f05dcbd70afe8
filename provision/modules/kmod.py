"""kernel_module_blacklist: keep a kernel module (nouveau) from loading, initramfs included.

A blacklist in /etc/modprobe.d only takes effect at early boot once it is in the initramfs, so
when the file changes the initramfs is rebuilt (``update-initramfs -u``) where the host has that
tool; where it has none the task says so instead of pretending. The file is written with the
same atomic, backed-up write as ``copy`` (:func:`provision.modules.files.plan_write`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
from typing import Any

from provision.modules.base import (
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    Step,
    atomic_write_script,
    is_template,
    noop,
    parse_probe,
    path_probe,
    unified_diff,
)
from provision.modules.files import plan_write
from provision.shell import join, quote

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


class KernelBlacklistModule(Module):
    """community.general.kernel_blacklist: one ``blacklist NAME`` line in a shared file
    (docs.ansible.com/ansible/latest/collections/community/general/kernel_blacklist_module.html).

    As in Ansible, the line is added to (or removed from) ``blacklist_file`` and nothing else is
    done: no initramfs rebuild (``kernel_module_blacklist`` is the module that also rebuilds it).
    The file is written by :func:`provision.modules.lineinfile.plan_edit` (atomic, backed up)."""

    name = "kernel_blacklist"
    path_arg = "blacklist_file"
    spec = (
        Arg("name", required=True),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("blacklist_file", default="/etc/modprobe.d/blacklist-ansible.conf"),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        name = args.get("name")
        if isinstance(name, str) and not is_template(name) and not _NAME.match(name):
            raise ArgError(f"module '{self.name}': {name!r} is not a kernel module name")

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return path_probe(args["blacklist_file"], content=True)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        from provision.modules.lineinfile import plan_edit

        name, present = args["name"], args["state"] == "present"

        def change(text: str) -> tuple[str, str]:
            return blacklist_lines(text, name, present)

        write = {"path": args["blacklist_file"], "create": True, "backup": True}
        return plan_edit(write, state, ctx, change, missing_ok=not present)


def blacklist_lines(text: str, name: str, present: bool) -> tuple[str, str]:
    """kernel_blacklist's edit: a line ``blacklist NAME`` (spaces around it ignored, comments
    not counted) added at the end or every such line removed; a changed file is written with
    each line's trailing blanks dropped, as Ansible writes it."""
    pattern = re.compile(rf"^blacklist\s+{re.escape(name)}$")
    lines = [line.rstrip() for line in text.splitlines()]
    listed = any(pattern.match(x.strip()) for x in lines if not x.strip().startswith("#"))
    if present == listed:
        return text, f"{name} is {'already' if listed else 'not'} blacklisted"
    if present:
        lines.append(f"blacklist {name}")
    else:
        lines = [x for x in lines if not pattern.match(x.strip())]
    verb = "blacklisted" if present else "no longer blacklisted"
    return "".join(f"{x}\n" for x in lines), f"{name} {verb}"


MODULES_LOAD_D = "/etc/modules-load.d"
MODPROBE_D = "/etc/modprobe.d"


class ModprobeModule(Module):
    """community.general.modprobe: a kernel module loaded (with ``params``) or unloaded, and
    with ``persistent`` its /etc/modules-load.d and /etc/modprobe.d lines
    (docs.ansible.com/ansible/latest/collections/community/general/modprobe_module.html).

    Loaded means listed in /proc/modules (``-`` read as ``_``) or built into the kernel
    (/lib/modules/$(uname -r)/modules.builtin), Ansible's test. ``persistent: present`` writes
    ``NAME`` to /etc/modules-load.d/NAME.conf unless a file there lists it, and when the
    ``options NAME p=v`` lines under /etc/modprobe.d are not exactly ``params`` comments them out
    and writes /etc/modprobe.d/NAME.conf; ``absent`` comments out both kinds of line."""

    name = "modprobe"
    spec = (
        Arg("name", required=True),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("params", default=""),
        Arg("persistent", default="disabled", choices=("disabled", "present", "absent")),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        name = args.get("name")
        if isinstance(name, str) and not is_template(name) and not _NAME.match(name):
            raise ArgError(f"module '{self.name}': {name!r} is not a kernel module name")
        params = args.get("params")
        if isinstance(params, str) and not is_template(params):
            for param in params.split():
                if not _PARAM.match(param):
                    raise ArgError(
                        f"module '{self.name}': {param!r} is not a module parameter like "
                        "'numdummies=2'"
                    )

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        return (MODULES_LOAD_D, MODPROBE_D)

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        name = args["name"]
        lines = [
            f"if grep -q {quote('^' + name.replace('-', '_') + ' ')} /proc/modules; then "
            "echo loaded=1; elif grep -qsE "
            f'{quote("/" + name + "[.]ko$")} "/lib/modules/$(uname -r)/modules.builtin"; '
            "then echo loaded=1; else echo loaded=0; fi"
        ]
        if args["persistent"] != "disabled":
            # every file that mentions the module, with its content: the plan edits them. Only
            # *.conf, the files modprobe.d(5) and modules-load.d(5) read: backups are not
            lines.append(
                f"for f in {MODULES_LOAD_D}/*.conf {MODPROBE_D}/*.conf; do "
                f'if [ -f "$f" ] && grep -qF -- {quote(name)} "$f"; then '
                'printf \'file\\t%s\\t%s\\n\' "$f" "$(base64 -w0 < "$f")"; fi; done'
            )
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        name, params = args["name"], args["params"]
        loaded, files = _modprobe_state(state)
        changes: list[str] = []
        steps: list[Step] = []
        if args["state"] == "present" and not loaded:
            changes.append(f"load {name}" + (f" ({params})" if params else ""))
            steps.append(Step(join(["modprobe", name, *shlex.split(params)])))
        elif args["state"] == "absent" and loaded:
            changes.append(f"unload {name}")
            steps.append(Step(join(["modprobe", "-r", name])))
        wanted = persistent_files(name, params, args["persistent"], files)
        diffs = []
        for path, data in wanted.items():
            old = files.get(path)
            changes.append(f"{'update' if old is not None else 'create'} {path}")
            script = atomic_write_script(
                path, data, owner="root", group="root", mode="644", backup=old is not None
            )
            steps.append(Step(f"mkdir -p -- {quote(os.path.dirname(path))}\n{script}", data))
            diffs.append(unified_diff(path, old, data, ctx.no_log))
        result = {"name": name, "params": params, "state": args["state"]}
        if not changes:
            return noop(f"{name} is {'loaded' if loaded else 'not loaded'} as wanted", **result)
        diff = "".join(diffs) if ctx.diff and diffs else None
        return Plan(True, changes=changes, steps=steps, diff=diff, result=result)


def _modprobe_state(state: str | None) -> tuple[bool, dict[str, bytes]]:
    loaded = False
    files: dict[str, bytes] = {}
    for line in (state or "").splitlines():
        if line == "loaded=1":
            loaded = True
        elif line.startswith("file\t"):
            _, path, data = line.split("\t", 2)
            files[path] = base64.b64decode(data)
    return loaded, files


def persistent_files(
    name: str, params: str, persistent: str, files: dict[str, bytes]
) -> dict[str, bytes]:
    """The files ``persistent`` changes, with their new content (pure; Ansible's rules)."""
    module_line = re.compile(rf"^ *{re.escape(name)} *(?:[#;].*)?\n?\Z")
    option_line = re.compile(rf"^options {re.escape(name)} (\w+=\S+) *(?:[#;].*)?\n?\Z")

    def lines_of(prefix: str, pattern: re.Pattern[str]) -> dict[str, list[str]]:
        return {
            path: _lines(data)
            for path, data in files.items()
            if path.startswith(prefix + "/") and any(pattern.match(x) for x in _lines(data))
        }

    listed = lines_of(MODULES_LOAD_D, module_line)
    optioned = lines_of(MODPROBE_D, option_line)
    current = {m.group(1) for ls in optioned.values() for x in ls if (m := option_line.match(x))}
    out: dict[str, bytes] = {}
    if persistent == "present":
        if not listed:
            out[f"{MODULES_LOAD_D}/{name}.conf"] = f"{name}\n".encode()
        if set(params.split()) != current:
            out.update(_commented(optioned, option_line))
            if params.split():
                text = "".join(f"options {name} {p}\n" for p in params.split())
                out[f"{MODPROBE_D}/{name}.conf"] = text.encode()
    elif persistent == "absent":
        out.update(_commented(listed, module_line))
        out.update(_commented(optioned, option_line))
    return {p: d for p, d in out.items() if files.get(p) != d}


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").splitlines(keepends=True)


def _commented(found: dict[str, list[str]], pattern: re.Pattern[str]) -> dict[str, bytes]:
    """Each file with its matching lines commented out (``#`` in front), as Ansible does."""
    return {
        path: "".join("#" + x if pattern.match(x) else x for x in lines).encode()
        for path, lines in found.items()
    }
