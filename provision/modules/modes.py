"""Ansible's symbolic file modes (``u=rw,g=r,o=r``, ``u+x``, ``go-w``, ``a=rX``, ``g=u``),
resolved against a path's current mode on the controller (pure).

The rules are those of Ansible's ``AnsibleModule._symbolic_mode_to_octal`` (ansible-core
module_utils/basic.py), which follow chmod(1): clauses separated by commas, each ``WHO`` (``u``,
``g``, ``o``, ``a`` or none) then one or more ``OP PERMS`` (``=``, ``+``, ``-``; ``r w x X s t``
or a copy of ``u``/``g``/``o``); ``X`` is ``x`` for a directory or for a path that already has
an execute bit. With no WHO the host's umask masks r, w and x, as in chmod.
"""

from __future__ import annotations

import re

_CLAUSE = re.compile(r"^(?P<who>[ugoa]*)(?P<rest>([=+-][rwxXstugo]*)+)$")
_ACTION = re.compile(r"([=+-])([rwxXstugo]*)")
_CLASS_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}  # what "=" clears for each class
DEFAULT_UMASK = 0o022


def is_symbolic(text: str) -> bool:
    """Whether ``text`` is a valid symbolic mode (every comma-separated clause)."""
    clauses = text.split(",")
    return bool(text) and all(_valid_clause(c) for c in clauses)


def _valid_clause(clause: str) -> bool:
    match = _CLAUSE.match(clause)
    # Ansible accepts "a" alone or letters of u, g, o (not "ua"), as its USERS_RE says
    return match is not None and ("a" not in match["who"] or match["who"] == "a")


def resolve(text: str, current: int, *, is_dir: bool, umask: int = DEFAULT_UMASK) -> int:
    """The mode ``text`` (octal digits or symbolic) gives a path whose mode is ``current``."""
    if all(c in "01234567" for c in text):
        return int(text, 8)
    mode = current & 0o7777
    for clause in text.split(","):
        match = _CLAUSE.match(clause)
        if match is None or not _valid_clause(clause):
            raise ValueError(f"bad symbolic permission for mode: {clause}")
        who = match["who"]
        masked = who == ""
        for op, perms in _ACTION.findall(match["rest"]):
            for user in "ugo" if who in ("", "a") else who:
                bits = _bits(user, perms, mode, is_dir, umask if masked else 0)
                if op == "=":
                    mode = (mode & ~_CLASS_BITS[user] & 0o7777) | bits
                elif op == "+":
                    mode |= bits
                else:
                    mode &= ~bits
    return mode


def _bits(user: str, perms: str, mode: int, is_dir: bool, umask: int) -> int:
    """The bits ``perms`` stands for in ``user``'s class (Ansible's table, per permission)."""
    shift = {"u": 6, "g": 3, "o": 0}[user]
    copy = {c: (mode >> s) & 0o7 for c, s in (("u", 6), ("g", 3), ("o", 0))}
    executable = is_dir or mode & 0o111 != 0
    out = 0
    for perm in perms:
        if perm in "rwx":
            bit = {"r": 4, "w": 2, "x": 1}[perm] << shift
            out |= bit & ~umask
        elif perm == "X":
            out |= (1 << shift) if executable else 0
        elif perm == "s":
            out |= {"u": 0o4000, "g": 0o2000, "o": 0}[user]
        elif perm == "t":
            out |= 0o1000 if user == "o" else 0
        else:  # u, g, o: a copy of that class's current bits
            out |= copy[perm] << shift
    return out


def wanted_mode(mode: str | None, state: dict[str, str], *, new: int = 0o644) -> str | None:
    """The octal mode (text, as chmod takes it) that ``mode`` asks of the path whose probe is
    ``state`` (:func:`provision.modules.base.parse_probe`); a path that does not exist yet
    starts from ``new`` (a new file's 0644, a new directory's 0755)."""
    if mode is None:
        return None
    exists = state.get("type", "absent") != "absent" and state.get("mode")
    current = int(state["mode"], 8) if exists else new
    is_dir = state.get("type") == "directory" if exists else new == 0o755
    umask = int(state["umask"], 8) if state.get("umask") else DEFAULT_UMASK
    return format(resolve(mode, current, is_dir=is_dir, umask=umask), "o")
