"""Ansible host patterns (``--limit``, ``hosts:``), pure apart from reading ``@file``.

Why: users type the patterns they know from Ansible (``web:&gpu:!ws03``, ``~ws0[1-3]``,
``@site.retry``) and must get the same hosts. The evaluation follows ansible-core's
InventoryManager: plain and glob/regex patterns are unions, ``&`` patterns intersect and ``!``
patterns exclude, applied in that order whatever the order written. One deliberate difference:
a pattern element that matches nothing is an error here (Ansible only warns), because running
a fleet change on fewer hosts than the user meant is worse than stopping.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re

from provision.errors import PatternError
from provision.inventory import Inventory, parse_address

__all__ = ["select_hosts", "split_pattern"]

# name[3], name[-1], name[1:3], name[2:] (Ansible's PATTERN_WITH_SUBSCRIPT)
_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
# ':'-separated patterns; a [..] range keeps its colons
_COLON_PARTS = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")


def split_pattern(pattern: str) -> list[str]:
    """Split on ``,`` or, when there is none, on ``:`` (but not inside an address or range)."""
    if "," in pattern:
        parts = pattern.split(",")
    elif parse_address(pattern) is not None:
        parts = [pattern]
    else:
        parts = _COLON_PARTS.findall(pattern)
    return [p.strip() for p in parts if p.strip()]


def _expand_files(parts: list[str], base_dir: str) -> list[str]:
    """Replace each ``@file`` by its lines (one host or pattern per line, as in a retry file)."""
    result: list[str] = []
    for part in parts:
        if not part.startswith("@"):
            result.append(part)
            continue
        path = os.path.join(base_dir, part[1:])
        if not os.path.exists(path):
            raise PatternError(f"limit file {part[1:]!r} not found (looked for {path})")
        if not os.path.isfile(path):
            raise PatternError(f"limit {part!r} must name a file, not a directory")
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise PatternError(f"cannot read limit file {path}: {exc}") from None
        result.extend(line.strip() for line in lines if line.strip())
    return result


def _ordered(parts: list[str]) -> list[str]:
    """Plain patterns first, then ``&``, then ``!``; only modifiers means ``all`` first."""
    plain = [p for p in parts if p[0] not in "&!"]
    inter = [p for p in parts if p[0] == "&"]
    excl = [p for p in parts if p[0] == "!"]
    return (plain or ["all"]) + inter + excl


def _compile(expr: str) -> re.Pattern[str]:
    try:
        return re.compile(expr[1:] if expr.startswith("~") else fnmatch.translate(expr))
    except re.error as exc:
        raise PatternError(f"invalid host pattern {expr!r}: {exc}") from None


def _match_one(inv: Inventory, pattern: str) -> list[str]:
    """Hosts for one pattern element without its ``&``/``!`` prefix (may be empty)."""
    expr, subscript = pattern, None
    if not pattern.startswith("~"):
        m = _SUBSCRIPT.match(pattern)
        if m:
            expr, idx, start, _sep, end = m.groups()
            subscript = (int(idx), None) if idx else (int(start), int(end) if end else -1)
    rx = _compile(expr)
    hosts: list[str] = []
    groups = [g for g in inv.groups if rx.match(g)]
    for g in groups:
        hosts.extend(inv.group_hosts(g))
    if not groups or expr.startswith("~") or any(c in expr for c in ".?*["):
        hosts.extend(h for h in inv.hosts if rx.match(h))
    if not hosts and not groups and expr != "all":
        why = _no_match(inv, expr)
        if subscript:
            why += (
                f" ([..] after a name selects by position, as in Ansible: write"
                f" '~{expr}[...]' for a regex character class)"
            )
        raise PatternError(why)
    if subscript and hosts:
        start_i, end_i = subscript
        try:
            if end_i:  # like Ansible, [n:0] selects just host n
                hosts = hosts[start_i : (len(hosts) if end_i == -1 else end_i + 1)]
            else:
                hosts = [hosts[start_i]]
        except IndexError:
            raise PatternError(f"no hosts matched the subscripted pattern {pattern!r}") from None
    return hosts


def _no_match(inv: Inventory, expr: str) -> str:
    names = list(inv.groups) + list(inv.hosts)
    near = difflib.get_close_matches(expr, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else "; check it against the inventory"
    return f"host pattern {expr!r} matches no host or group in {inv.path or 'the inventory'}{hint}"


def select_hosts(inv: Inventory, pattern: str | None, base_dir: str = ".") -> list[str]:
    """Hosts selected by an Ansible pattern, in inventory (file) order, each once.

    ``None``, ``all`` and ``*`` select every host. ``@file`` paths are relative to base_dir.
    """
    if pattern is None or pattern.strip() in ("all", "*"):
        return list(inv.hosts)
    parts = _expand_files(split_pattern(pattern), base_dir)
    if not parts:
        raise PatternError(f"empty host pattern {pattern!r}")
    selected: list[str] = []
    for part in _ordered(parts):
        if part in inv.hosts:
            selected.append(part)
            continue
        hosts = _match_one(inv, part[1:] if part[0] in "&!" else part)
        if part[0] == "!":
            drop = set(hosts)
            selected = [h for h in selected if h not in drop]
        elif part[0] == "&":
            keep = set(hosts)
            selected = [h for h in selected if h in keep]
        else:
            selected.extend(hosts)
    chosen = set(selected)
    return [h for h in inv.hosts if h in chosen]
