"""blockinfile and replace: Ansible's two other text-file edits (ansible.builtin.blockinfile,
ansible.builtin.replace), with their arguments and results.

Sources: docs.ansible.com/ansible/latest/collections/ansible/builtin/blockinfile_module.html
and replace_module.html (ansible-core 2.19). Like ``lineinfile`` the edit is computed on the
controller from the file's content (pure) and written by :func:`plan_edit`: atomic, backed up
with ``backup``, checked by ``validate`` before it replaces anything, a diff under --diff.
"""

from __future__ import annotations

import re
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, Plan, is_template, path_probe
from provision.modules.files import check_validate
from provision.modules.lineinfile import check_regexps, plan_edit

_ATTRS = (Arg("owner"), Arg("group"), Arg("mode", "mode"))


class BlockInFileModule(Module):
    name = "blockinfile"
    path_arg = "path"
    batches_changes = True
    spec = (
        Arg("path", required=True, aliases=("dest", "destfile", "name")),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("marker", default="# {mark} ANSIBLE MANAGED BLOCK"),
        Arg("block", default="", aliases=("content",)),
        Arg("insertafter"),  # EOF (the default) or a regular expression: after its last match
        Arg("insertbefore"),  # BOF or a regular expression: before its last match
        Arg("marker_begin", default="BEGIN"),
        Arg("marker_end", default="END"),
        Arg("append_newline", "bool", default=False),
        Arg("prepend_newline", "bool", default=False),
        Arg("create", "bool", default=False),
        Arg("backup", "bool", default=False),
        Arg("validate"),
        *_ATTRS,
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if args.get("insertafter") is not None and args.get("insertbefore") is not None:
            raise ArgError(f"module '{self.name}': give insertafter or insertbefore, not both")
        check_validate(self.name, args)
        check_regexps(self.name, args, ("insertafter", "insertbefore"))

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return path_probe(args["path"], content=True)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        def change(text: str) -> tuple[str, str]:
            return edit_block(
                text,
                block=args["block"] if args["state"] == "present" else "",
                begin=args["marker"].replace("{mark}", args["marker_begin"]),
                end=args["marker"].replace("{mark}", args["marker_end"]),
                insertafter=args["insertafter"],
                insertbefore=args["insertbefore"],
                prepend_newline=args["prepend_newline"] and args["state"] == "present",
                append_newline=args["append_newline"] and args["state"] == "present",
            )

        return plan_edit(args, state, ctx, change, missing_ok=args["state"] == "absent")


def edit_block(
    text: str,
    *,
    block: str,
    begin: str,
    end: str,
    insertafter: str | None,
    insertbefore: str | None,
    prepend_newline: bool = False,
    append_newline: bool = False,
) -> tuple[str, str]:
    """(new text, what was done) by Ansible's blockinfile rules: the lines from the last
    ``begin`` marker line to the last ``end`` marker line are replaced by the block between
    markers (an empty block removes them); without both markers the block goes after the last
    ``insertafter`` match, before the last ``insertbefore`` match (BOF: first), else at the end.
    """
    lines = text.splitlines(keepends=True)
    marker0, marker1 = begin + "\n", end + "\n"
    body = block if not block or block.endswith("\n") else block + "\n"
    new = [marker0, *body.splitlines(keepends=True), marker1] if block else []
    n0 = max((i for i, x in enumerate(lines) if x == marker0), default=None)
    n1 = max((i for i, x in enumerate(lines) if x == marker1), default=None)
    if n0 is None or n1 is None:
        at = _insertion_point(text, lines, insertafter, insertbefore)
    else:
        at = min(n0, n1)
        del lines[at : max(n0, n1) + 1]
    if at > 0 and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    if prepend_newline and at != 0 and lines[at - 1] != "\n":
        lines.insert(at, "\n")
        at += 1
    lines[at:at] = new
    after = at + len(new)
    if append_newline and after < len(lines) and lines[after] != "\n":
        lines.insert(after, "\n")
    result = "".join(lines)
    if result == text:
        return text, "block already as wanted" if block else "no block to remove"
    return result, "block inserted" if block else "block removed"


def _insertion_point(
    text: str, lines: list[str], insertafter: str | None, insertbefore: str | None
) -> int:
    """Where a new block goes (Ansible's rules, a (?m) pattern matched on the whole text)."""
    after = insertafter if insertafter is not None or insertbefore is not None else "EOF"
    pattern = after if after not in (None, "EOF") else insertbefore
    if pattern is None or pattern == "BOF":
        return 0 if pattern == "BOF" else len(lines)
    regex = re.compile(pattern)
    found: int | None = None
    if regex.flags & re.MULTILINE:
        match = regex.search(text)
        if match:
            found = text.count("\n", 0, match.end() if insertafter else match.start())
    else:
        found = max((i for i, x in enumerate(lines) if regex.search(x)), default=None)
    if found is None:
        return len(lines)
    return found + 1 if insertafter is not None else found


class ReplaceModule(Module):
    name = "replace"
    path_arg = "path"
    batches_changes = True
    spec = (
        Arg("path", required=True, aliases=("dest", "destfile", "name")),
        Arg("regexp", required=True),
        Arg("replace", default=""),
        Arg("after"),  # only the text after the first match of this expression
        Arg("before"),  # only the text before the last match of this expression
        Arg("backup", "bool", default=False),
        Arg("validate"),
        Arg("encoding", default="utf-8"),
        *_ATTRS,
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        check_validate(self.name, args)
        check_regexps(self.name, args, ("regexp", "after", "before"))
        encoding = args.get("encoding")
        if isinstance(encoding, str) and not is_template(encoding):
            try:
                "".encode(encoding)
            except LookupError:
                raise ArgError(f"module '{self.name}': unknown encoding {encoding!r}") from None

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return path_probe(args["path"], content=True)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        def change(text: str) -> tuple[str, str]:
            return replace_text(
                text, args["regexp"], args["replace"], after=args["after"], before=args["before"]
            )

        return plan_edit(args, state, ctx, change, missing_ok=False)


def replace_text(
    text: str, regexp: str, replacement: str, *, after: str | None, before: str | None
) -> tuple[str, str]:
    """(new text, what was done) by Ansible's replace rules: every match of ``regexp``
    (multiline: ^ and $ match at each line) is replaced with Python's replacement syntax
    (\\1, \\g<name>), within the section after ``after`` and before ``before`` when given."""
    if after and before:
        section = f"{after}(?P<subsection>.*?){before}"
    elif after:
        section = f"{after}(?P<subsection>.*)"
    elif before:
        section = f"(?P<subsection>.*){before}"
    else:
        section = ""
    start, stop = 0, len(text)
    if section:
        match = re.search(section, text, re.DOTALL)
        if match is None:
            return text, "the after/before expressions do not match the file"
        start, stop = match.start("subsection"), match.end("subsection")
    try:
        new, count = re.subn(regexp, replacement, text[start:stop], flags=re.MULTILINE)
    except (re.error, IndexError) as exc:
        raise ArgError(f"module 'replace': cannot replace: {exc}") from None
    if count == 0 or new == text[start:stop]:
        return text, "no match to replace" if count == 0 else "already replaced"
    return text[:start] + new + text[stop:], f"{count} replacement{'s' if count > 1 else ''} made"
