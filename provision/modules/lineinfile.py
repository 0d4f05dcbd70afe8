"""lineinfile: one line of a config file present (or replaced) or absent, the rest untouched.

For drop-ins like /etc/ssh/sshd_config.d/*.conf where the site owns the other lines. The edit is
computed on the controller from the file's content (pure), then written with the same atomic,
optionally backed-up write as ``copy`` (:func:`provision.modules.files.plan_write`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from provision.modules.base import (
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    content_of,
    is_template,
    noop,
    parse_probe,
    path_probe,
)
from provision.modules.files import check_validate, plan_write
from provision.shell import quote


class LineInFileModule(Module):
    name = "lineinfile"
    path_arg = "path"
    batches_changes = True
    spec = (
        Arg("path", required=True, aliases=("dest", "destfile", "name")),
        Arg("line"),
        Arg("regexp"),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("insertafter", default="EOF"),  # EOF, BOF or a regular expression
        Arg("insertbefore"),  # BOF or a regular expression (not with insertafter)
        Arg("validate"),  # a command with %s, run on the new file before it replaces path
        Arg("create", "bool", default=False),
        Arg("backup", "bool", default=False),
        Arg("owner"),
        Arg("group"),
        Arg("mode", "mode"),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        state = args.get("state") or "present"
        if state == "present" and args.get("line") is None:
            raise ArgError(f"module '{self.name}': state=present needs 'line'")
        if state == "absent" and args.get("line") is None and args.get("regexp") is None:
            raise ArgError(f"module '{self.name}': state=absent needs 'line' or 'regexp'")
        if args.get("insertafter") not in (None, "EOF") and args.get("insertbefore") is not None:
            raise ArgError(f"module '{self.name}': give insertafter or insertbefore, not both")
        check_validate(self.name, args)
        check_regexps(self.name, args, ("regexp", "insertafter", "insertbefore"))

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return path_probe(args["path"], content=True)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        def change(text: str) -> tuple[str, str]:
            return edit(
                text,
                line=args["line"],
                regexp=args["regexp"],
                present=args["state"] == "present",
                insertafter=args["insertafter"],
                insertbefore=args["insertbefore"],
            )

        return plan_edit(args, state, ctx, change, missing_ok=args["state"] == "absent")


def plan_edit(
    args: dict[str, Any],
    state: str | None,
    ctx: Context,
    change: Callable[[str], tuple[str, str]],
    *,
    missing_ok: bool,
) -> Plan:
    """The plan of an edit of the text file ``args["path"]`` (lineinfile, blockinfile, replace,
    kernel_blacklist): ``change`` turns the old text into (new text, what it did); the result
    is written with copy's atomic, optionally backed-up and validated write. A missing file is
    a no-op when ``missing_ok`` (nothing to remove), created from "" when ``create`` is true,
    else an error; ``args["encoding"]`` (replace) decodes it, UTF-8 by default."""
    path = args["path"]
    st = parse_probe(state)
    kind = st["type"]
    if kind not in ("absent", "file"):
        raise ModuleError(f"{path} exists and is a {kind}, not a regular file")
    if kind == "absent":
        if missing_ok:
            return noop(f"{path} does not exist")
        if not args.get("create"):
            hint = " (create: true creates it)" if "create" in args else ""
            raise ModuleError(f"{path} does not exist{hint}")
    encoding = args.get("encoding") or "utf-8"
    old = content_of(st) or b""
    new, what = change(old.decode(encoding, "surrogateescape"))
    data = new.encode(encoding, "surrogateescape")
    plan = plan_write({**args, "dest": path}, data, state, ctx)
    if not plan.changed:
        return noop(f"{path}: {what}")
    if data != old or kind == "absent":
        plan.changes = [f"{path}: {what}", *plan.changes[1:]]
    if kind == "absent":  # Ansible creates the missing directories of a created file
        plan.steps[0] = plan.steps[0].after(f"mkdir -p -- {quote(os.path.dirname(path) or '.')}")
    return plan


def edit(
    text: str,
    *,
    line: str | None,
    regexp: str | None,
    present: bool,
    insertafter: str,
    insertbefore: str | None = None,
) -> tuple[str, str]:
    """(new text, what was done or why nothing was) — Ansible's lineinfile rules: with
    ``regexp`` the last matching line is replaced (or every match removed); without it the exact
    line is looked for; a new line goes after the last ``insertafter`` match (before the last
    ``insertbefore`` match; ``BOF``: first), else at the end."""
    lines = text.splitlines(keepends=True)
    bare = [item.rstrip("\r\n") for item in lines]
    pattern = re.compile(regexp) if regexp is not None else None

    def matches(item: str) -> bool:
        return bool(pattern.search(item)) if pattern is not None else item == line

    if not present:
        kept = [item for item, b in zip(lines, bare, strict=True) if not matches(b)]
        removed = len(lines) - len(kept)
        if not removed:
            return text, "no line to remove"
        return "".join(kept), f"removed {removed} line{'s' if removed > 1 else ''}"
    assert line is not None
    hits = [i for i, b in enumerate(bare) if matches(b)]
    if pattern is not None and hits:
        i = hits[-1]
        if bare[i] == line:
            return text, "line already present"
        ending = lines[i][len(bare[i]) :] or "\n"
        lines[i] = line + ending
        return "".join(lines), f"replaced line {i + 1}"
    if line in bare:
        return text, "line already present"
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    at = len(lines)
    if "BOF" in (insertafter, insertbefore):
        at = 0
    elif insertbefore is not None:
        before = [i for i, b in enumerate(bare) if re.search(insertbefore, b)]
        if before:
            at = before[-1]
    elif insertafter != "EOF":
        after = [i for i, b in enumerate(bare) if re.search(insertafter, b)]
        if after:
            at = after[-1] + 1
    lines.insert(at, line + "\n")
    where = "at the end" if at == len(lines) - 1 else f"as line {at + 1}"
    return "".join(lines), f"added line {where}"


def check_regexps(module: str, args: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Each of ``keys`` that is a literal regular expression compiles (EOF/BOF are places)."""
    for key in keys:
        value = args.get(key)
        if isinstance(value, str) and not is_template(value) and value not in ("EOF", "BOF"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ArgError(
                    f"module '{module}': argument '{key}' is not a valid regular expression: {exc}"
                ) from None
