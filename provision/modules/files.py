"""file, copy, template and json_merge: files on the host, changed only where they differ.

Unchanged content is detected by the sha256 the state read reports, so an unchanged file is never
sent. Writes are atomic (temp file + rename, see :func:`atomic_write_script`).
"""

from __future__ import annotations

import hashlib
import json
import os
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
    attr_changes,
    content_of,
    noop,
    parse_probe,
    path_probe,
    unified_diff,
)
from provision.shell import quote

_ATTRS = (Arg("owner"), Arg("group"), Arg("mode", "mode"))


class FileModule(Module):
    name = "file"
    path_arg = "path"
    spec = (
        Arg("path", required=True),
        Arg("state", default="file", choices=("file", "directory", "absent", "touch")),
        *_ATTRS,
    )

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return path_probe(args["path"])

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        path, want = args["path"], args["state"]
        st = parse_probe(state)
        kind = st["type"]
        p = quote(path)
        if want == "absent":
            if kind == "absent":
                return noop(f"{path} is already absent")
            return Plan(True, changes=[f"remove {kind} {path}"], steps=[Step(f"rm -rf -- {p}")])
        if kind == "absent":
            if want == "file":
                raise ModuleError(
                    f"{path} does not exist (state=file never creates; use touch or copy)"
                )
            create = f"mkdir -p -- {p}" if want == "directory" else f"touch -- {p}"
            _, fix = attr_changes(path, {}, args["owner"], args["group"], args["mode"])
            return Plan(
                True,
                changes=[f"create {'directory' if want == 'directory' else 'file'} {path}"],
                steps=[Step("\n".join(["set -e", create, *fix]))],
            )
        expected = "directory" if want == "directory" else "file"
        if kind != expected:
            raise ModuleError(f"{path} exists and is a {kind}, not a {expected}")
        changes, fix = attr_changes(path, st, args["owner"], args["group"], args["mode"])
        if not changes:
            return noop(f"{path} is a {kind} with the wanted owner, group and mode")
        return Plan(True, changes=changes, steps=[Step("\n".join(["set -e", *fix]))])


class CopyModule(Module):
    name = "copy"
    path_arg = "dest"
    spec = (
        Arg("dest", required=True),
        Arg("content", "raw"),
        Arg("src"),
        *_ATTRS,
        Arg("backup", "bool", default=False),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if (args.get("content") is None) == (args.get("src") is None):
            raise ArgError(f"module '{self.name}': give exactly one of 'content' or 'src'")

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Turn src (a controller file) or content into bytes to compare and send."""
        args = dict(args)
        if args.get("src") is not None:
            args["data"] = _read_controller_file(args["src"], ctx, "files")
        else:
            content = args["content"]
            if not isinstance(content, str):  # a mapping/list given as content: JSON, as Ansible
                content = json.dumps(content, indent=4)
            args["data"] = content.encode()
        return args

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return path_probe(args["dest"], content=ctx.diff and not ctx.no_log)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        return plan_write(args, args["data"], state, ctx)


class TemplateModule(CopyModule):
    name = "template"
    spec = (
        Arg("src", required=True),
        Arg("dest", required=True),
        *_ATTRS,
        Arg("backup", "bool", default=False),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        return None

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Render the template on the controller with the task's variables."""
        args = dict(args)
        text = _read_controller_file(args["src"], ctx, "templates").decode("utf-8")
        assert ctx.render is not None
        args["data"] = ctx.render(text).encode()
        return args


def _read_controller_file(src: str, ctx: Context, subdir: str) -> bytes:
    candidates = (
        [src]
        if os.path.isabs(src)
        else [
            os.path.join(ctx.base_dir, subdir, src),
            os.path.join(ctx.base_dir, src),
        ]
    )
    for path in candidates:
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                return fh.read()
    raise ModuleError(f"source file {src} not found (looked in {', '.join(candidates)})")


def plan_write(args: dict[str, Any], data: bytes, state: str | None, ctx: Context) -> Plan:
    """Shared by copy, template and json_merge: same hash -> attributes only, else a write."""
    dest = args["dest"]
    st = parse_probe(state)
    kind = st["type"]
    if kind not in ("absent", "file"):
        raise ModuleError(f"{dest} exists and is a {kind}, not a regular file")
    owner, group, mode = args.get("owner"), args.get("group"), args.get("mode")
    digest = hashlib.sha256(data).hexdigest()
    if kind == "file" and st.get("sha256") == digest:
        changes, fix = attr_changes(dest, st, owner, group, mode)
        if not changes:
            return noop(f"{dest} already has this content (sha256 {digest[:12]})", checksum=digest)
        return Plan(
            True,
            changes=changes,
            steps=[Step("\n".join(["set -e", *fix]))],
            result={"checksum": digest},
        )
    changes = [f"{'create' if kind == 'absent' else 'update'} {dest} ({len(data)} bytes)"]
    diff = None
    if ctx.diff:
        diff = unified_diff(dest, content_of(st), data, ctx.no_log)
    script = atomic_write_script(
        dest, owner=owner, group=group, mode=mode, backup=bool(args.get("backup"))
    )
    return Plan(
        True, changes=changes, steps=[Step(script, data)], diff=diff, result={"checksum": digest}
    )


def deep_merge(base: Any, extra: Any) -> Any:
    """Mappings merge key by key (existing order kept, new keys appended); anything else in
    ``extra`` replaces what ``base`` had."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            out[key] = deep_merge(base[key], value) if key in base else value
        return out
    return extra


class JsonMergeModule(Module):
    name = "json_merge"
    path_arg = "path"
    spec = (
        Arg("path", required=True),
        Arg("data", "dict", required=True),
        *_ATTRS,
        Arg("backup", "bool", default=True),
        Arg("indent", "int", default=2),
    )

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return path_probe(args["path"], content=True)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        path = args["path"]
        st = parse_probe(state)
        old = content_of(st)
        current: Any = {}
        if st["type"] == "file":
            text = (old or b"").decode("utf-8", "replace")
            if text.strip():
                try:
                    current = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ModuleError(
                        f"{path} holds invalid JSON (line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}); refusing to merge into it, fix or remove it first"
                    ) from None
            if not isinstance(current, dict):
                raise ModuleError(f"{path} holds a JSON {type(current).__name__}, not an object")
        merged = deep_merge(current, args["data"])
        write_args = {**args, "dest": path}
        if st["type"] == "file" and merged == current:
            changes, fix = attr_changes(path, st, args["owner"], args["group"], args["mode"])
            if not changes:
                return noop(f"{path} already holds every key of data")
            return Plan(True, changes=changes, steps=[Step("\n".join(["set -e", *fix]))])
        data = (json.dumps(merged, indent=args["indent"]) + "\n").encode()
        return plan_write(write_args, data, state, ctx)
