"""file, copy, template and json_merge: files on the host, changed only where they differ.

Unchanged content is detected by the sha256 the state read reports, so an unchanged file is never
sent. Writes are atomic (temp file + rename, see :func:`atomic_write_script`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import posixpath
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
from provision.modules.modes import is_symbolic, wanted_mode
from provision.shell import quote

_ATTRS = (Arg("owner"), Arg("group"), Arg("mode", "mode"))


def _made_directories(
    path: str, owner: str | None, group: str | None, mode: str | None
) -> list[str]:
    """Commands making ``path`` and each missing directory above it, each given the owner,
    group and mode, as Ansible's file module does for every directory it creates
    (``ensure_directory``: intermediate directories get the task's attributes too)."""
    chain: list[str] = []
    current = posixpath.normpath(path)
    while current not in ("/", ".", ""):
        chain.append(current)
        current = posixpath.dirname(current)
    lines = []
    for directory in reversed(chain):
        q = quote(directory)
        fix = attr_changes(directory, {}, owner, group, mode)[1]
        # another process may make it meanwhile: as Ansible, a directory there is no error
        # (and the second mkdir says why, when it is not one)
        made = f"mkdir -- {q} 2>/dev/null || [ -d {q} ] || mkdir -- {q}"
        lines.append(f"if [ ! -e {q} ]; then {made}{''.join('; ' + c for c in fix)}; fi")
    return lines


class FileModule(Module):
    name = "file"
    path_arg = "path"
    batches_changes = True
    spec: tuple[Arg, ...] = (
        Arg("path", required=True, aliases=("dest", "name")),
        Arg(
            "state",
            default="file",
            choices=("file", "directory", "absent", "touch", "link", "hard"),
        ),
        *_ATTRS,
        Arg("src"),  # what a link points to (state link or hard)
        Arg(
            "force", "bool", default=False
        ),  # a link replaces a file; a symlink's src may be absent
        Arg("recurse", "bool", default=False),  # a directory's owner/group/mode for all inside
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        linking = args.get("state") in ("link", "hard")
        if linking != (args.get("src") is not None):
            raise ArgError(f"module '{self.name}': src is given with state link or hard, only")
        if args.get("recurse") is True and args.get("state") != "directory":
            raise ArgError(f"module '{self.name}': recurse needs state: directory")
        mode = args.get("mode")
        if args.get("recurse") is True and isinstance(mode, str) and is_symbolic(mode):
            raise ArgError(
                f"module '{self.name}': recurse with a symbolic mode ({mode}) is not supported; "
                "give an octal mode"
            )

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        """A link's read depends on its src too; a recursive one on all inside (a prefix)."""
        if args.get("state") in ("link", "hard"):
            src = os.path.join(os.path.dirname(args["path"]), args["src"])
            return (args["path"], os.path.normpath(src))
        return (args["path"],)

    def changes_below(self, args: dict[str, Any]) -> bool:
        """Making a directory, touching a file or setting one path's attributes leaves what
        lies under it as it was; removing, linking and ``recurse`` reach inside."""
        return args.get("state") not in ("directory", "file", "touch") or bool(args.get("recurse"))

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        lines = [path_probe(args["path"])]
        p = quote(args["path"])
        if args.get("state") in ("link", "hard"):
            # src as the link will see it: relative to the link's directory
            lines.append(f'if [ -L {p} ]; then printf "target=%s\\n" "$(readlink -- {p})"; fi')
            src = quote(args["src"])
            lines.append(f'if (cd "$(dirname -- {p})" && [ -e {src} ]); then echo src=1; fi')
            lines.append(f"echo inode=$(stat -c %d:%i -- {p} 2>/dev/null)")
            lines.append(
                f'echo src_inode=$(cd "$(dirname -- {p})" && stat -c %d:%i -- {src} 2>/dev/null)'
            )
        if args.get("recurse"):
            lines.append(f"echo recurse_differs=$({_find_differing(args)} | wc -l)")
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        path, want = args["path"], args["state"]
        st = parse_probe(state)
        if want in ("link", "hard"):
            return _plan_link(args, st)
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
            # a symbolic mode applies to what mkdir/touch make: 0755 / 0644 (umask 022)
            mode = wanted_mode(args["mode"], {}, new=0o755 if want == "directory" else 0o644)
            if want == "directory":
                made = _made_directories(path, args["owner"], args["group"], mode)
            else:
                made = [
                    f"touch -- {p}",
                    *attr_changes(path, {}, args["owner"], args["group"], mode)[1],
                ]
            return Plan(
                True,
                changes=[f"create {'directory' if want == 'directory' else 'file'} {path}"],
                steps=[Step("\n".join(["set -e", *made]))],
            )
        expected = "directory" if want == "directory" else "file"
        if kind != expected:
            raise ModuleError(f"{path} exists and is a {kind}, not a {expected}")
        changes, fix = attr_changes(path, st, args["owner"], args["group"], args["mode"])
        if args["recurse"] and st.get("recurse_differs", "0").strip() not in ("", "0"):
            changes.append(f"owner, group or mode of what is inside {path}")
            fix = [c.replace(" ", " -R ", 1) for c in _attr_commands(args)]
        if not changes:
            return noop(f"{path} is a {kind} with the wanted owner, group and mode")
        return Plan(True, changes=changes, steps=[Step("\n".join(["set -e", *fix]))])


def _attr_commands(args: dict[str, Any]) -> list[str]:
    p = quote(args["path"])
    commands = []
    if args["owner"] is not None:
        commands.append(f"chown {quote(args['owner'])} {p}")
    if args["group"] is not None:
        commands.append(f"chgrp {quote(args['group'])} {p}")
    if args["mode"] is not None:
        commands.append(f"chmod {quote(args['mode'])} {p}")
    return commands


def _find_differing(args: dict[str, Any]) -> str:
    """A find printing the first path under a directory whose owner, group or mode differs."""
    tests = []
    if args["owner"] is not None:
        tests.append(f"! -user {quote(args['owner'])}")
    if args["group"] is not None:
        tests.append(f"! -group {quote(args['group'])}")
    if args["mode"] is not None:
        # a symbolic link's own mode is always 777 and chmod -R leaves links alone
        tests.append(f"\\( ! -type l ! -perm {quote(args['mode'].zfill(4))} \\)")
    if not tests:
        return "true"
    return f"find {quote(args['path'])} \\( {' -o '.join(tests)} \\) -print -quit 2>/dev/null"


def _plan_link(args: dict[str, Any], st: dict[str, str]) -> Plan:
    """state link (symbolic) or hard: made beside the path and renamed over it (atomic)."""
    path, src, want = args["path"], args["src"], args["state"]
    kind = st["type"]
    if want == "link" and kind == "link" and st.get("target") == src:
        return noop(f"{path} already links to {src}")
    if want == "hard" and st.get("inode") and st.get("inode") == st.get("src_inode"):
        return noop(f"{path} is already a hard link to {src}")
    if st.get("src") != "1" and (want == "hard" or not args["force"]):
        raise ModuleError(
            f"src {src} does not exist"
            + ("" if want == "hard" else "; set force: true to link to it anyway")
        )
    if kind == "directory" or (kind in ("file", "other") and not args["force"]):
        raise ModuleError(
            f"refusing to replace the {kind} {path} with a "
            f"{'symbolic' if want == 'link' else 'hard'} link; "
            + ("remove it first" if kind == "directory" else "set force: true to replace it")
        )
    p = quote(path)
    ln = "ln -s" if want == "link" else "ln"
    script = "\n".join(
        [
            "set -e",
            f't="$(dirname -- {p})/.provision.$$.link"',
            f'cd "$(dirname -- {p})"',
            f'{ln} -- {quote(src)} "$t"',
            f'mv -Tf -- "$t" {p}',
        ]
    )
    verb = "create" if kind == "absent" else "replace"
    return Plan(True, changes=[f"{verb} {path} -> {src} ({want})"], steps=[Step(script)])


class CopyModule(Module):
    name = "copy"
    path_arg = "dest"
    batches_changes = True
    spec: tuple[Arg, ...] = (
        Arg("dest", required=True),
        Arg("content", "raw"),
        Arg("src"),
        *_ATTRS,
        Arg("backup", "bool", default=False),
        Arg("force", "bool", default=True),  # false: an existing dest is left as it is
        Arg("validate"),  # a command with %s, run on the new file before it replaces dest
        Arg("remote_src", "bool", default=False),  # src is a file on the host, not here
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if (args.get("content") is None) == (args.get("src") is None):
            raise ArgError(f"module '{self.name}': give exactly one of 'content' or 'src'")
        if args.get("remote_src") is True and args.get("src") is None:
            raise ArgError(f"module '{self.name}': remote_src needs 'src' (a file on the host)")
        check_validate(self.name, args)

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        if args.get("remote_src"):
            return (args["dest"], args["src"])
        return (args["dest"],)

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Turn src (a controller file) or content into bytes to compare and send."""
        args = dict(args)
        if args.get("remote_src"):
            args["data"] = b""  # read on the host by the state read
        elif args.get("src") is not None:
            args["data"] = read_controller_file(args["src"], ctx, "files")
        else:
            content = args["content"]
            if isinstance(content, dict | list):  # a mapping/list given as content: JSON
                content = json.dumps(content, indent=4)
            elif not isinstance(content, str):  # a number or boolean as Python writes it
                content = str(content)
            args["data"] = content.encode()
        return args

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        probe = path_probe(args["dest"], content=ctx.diff and not ctx.no_log)
        if not args.get("remote_src"):
            return probe
        return probe + "\n" + _host_file_probe(args["src"], content=ctx.diff and not ctx.no_log)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        if not args.get("remote_src"):
            return plan_write(args, args["data"], state, ctx)
        src = parse_probe("\n".join(_prefixed(state, "src_")))
        if src["type"] == "absent":
            raise ModuleError(f"Source {args['src']} not found")
        if src["type"] != "file":
            raise ModuleError(
                f"remote_src {args['src']} is a {src['type']}: only a regular file is copied"
            )
        remote = HostFile(args["src"], src.get("sha256", ""), src.get("mode", "644"))
        if "content" in src:
            remote = dataclasses.replace(remote, content=content_of(src))
        return plan_write(args, b"", state, ctx, remote=remote)


def _host_file_probe(path: str, *, content: bool) -> str:
    """src_ lines for copy's remote_src: what the file (a link followed, as Ansible does) is,
    its sha256 and mode."""
    p = quote(path)
    lines = [
        f"s={p}",
        'if [ -f "$s" ]; then echo src_type=file; elif [ -d "$s" ]; then echo src_type=directory;'
        ' elif [ -e "$s" ]; then echo src_type=other; else echo src_type=absent; fi',
        'if [ -f "$s" ]; then printf "src_sha256="; sha256sum < "$s"; '
        "stat -L --printf 'src_mode=%a\\n' \"$s\"; fi",
    ]
    if content:
        lines.append('if [ -f "$s" ]; then echo "src_content=$(base64 -w0 < "$s")"; fi')
    return "\n".join(lines)


def _prefixed(state: str | None, prefix: str) -> list[str]:
    return [x.removeprefix(prefix) for x in (state or "").splitlines() if x.startswith(prefix)]


class TemplateModule(CopyModule):
    name = "template"
    spec: tuple[Arg, ...] = (
        Arg("src", required=True),
        Arg("dest", required=True),
        *_ATTRS,
        Arg("backup", "bool", default=False),
        Arg("force", "bool", default=True),
        Arg("validate"),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        check_validate(self.name, args)

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Render the template on the controller with the task's variables."""
        args = dict(args)
        text = read_controller_file(args["src"], ctx, "templates").decode("utf-8")
        assert ctx.render is not None
        args["data"] = ctx.render(text).encode()
        return args


def check_validate(module: str, args: dict[str, Any]) -> None:
    validate = args.get("validate")
    if isinstance(validate, str) and "%s" not in validate and "{{" not in validate:
        raise ArgError(
            f"module '{module}': validate must name the file to check as %s "
            f"(validate: 'visudo -cf %s')"
        )


def read_controller_file(src: str, ctx: Context, subdir: str) -> bytes:
    candidates = (
        [src]
        if os.path.isabs(src)
        else [os.path.join(d, sub, src) for d in ctx.search_dirs() for sub in (subdir, "")]
    )
    for path in candidates:
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                return fh.read()
    raise ModuleError(f"source file {src} not found (looked in {', '.join(candidates)})")


@dataclasses.dataclass(frozen=True)
class HostFile:
    """copy's ``remote_src``: the file on the host that is copied, as its state read says."""

    path: str
    sha256: str
    mode: str
    content: bytes | None = None  # read for --diff only


def plan_write(
    args: dict[str, Any],
    data: bytes,
    state: str | None,
    ctx: Context,
    *,
    remote: HostFile | None = None,
) -> Plan:
    """Shared by copy, template and json_merge: same hash -> attributes only, else a write
    (of ``data``, or of the host's file ``remote``). A symbolic mode is resolved against the
    mode the new file would have: the old file's (a copied host file's own), else 0644."""
    dest = args["dest"]
    st = parse_probe(state)
    kind = st["type"]
    if kind != "absent" and args.get("force") is False:  # Ansible: only create, never replace
        return noop(f"{dest} exists and force is false: left as it is")
    if kind not in ("absent", "file"):
        raise ModuleError(f"{dest} exists and is a {kind}, not a regular file")
    owner, group, mode = args.get("owner"), args.get("group"), args.get("mode")
    digest = remote.sha256 if remote else hashlib.sha256(data).hexdigest()
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
    verb = "create" if kind == "absent" else "update"
    what = f"from {remote.path}" if remote else f"({len(data)} bytes)"
    changes = [f"{verb} {dest} {what}"]
    diff = None
    if ctx.diff:
        new = remote.content if remote else data
        diff = unified_diff(dest, content_of(st), new, ctx.no_log)
    before = {**st, "mode": remote.mode} if remote and kind == "file" else st
    write = functools.partial(
        atomic_write_script,
        dest,
        data,
        owner=owner,
        group=group,
        mode=wanted_mode(mode, before),
        backup=bool(args.get("backup")),
        validate=args.get("validate"),
    )
    if remote:
        step = Step(write(copied_from=(remote.path, remote.sha256)))
    else:
        step = Step(write(), data, inline=write(check_received=False))
    return Plan(True, changes=changes, steps=[step], diff=diff, result={"checksum": digest})


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
    batches_changes = True
    spec: tuple[Arg, ...] = (
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
