"""Ansible INI inventories, read unchanged, with ansible-core 2.19's semantics.

Why a reimplementation: users keep their existing ``hosts.ini``, ``group_vars/`` and
``host_vars/``, and expect every host, group and variable to come out exactly as
``ansible-inventory --list`` shows them. The parser is a single pass over the lines (a state
machine like Ansible's), followed by the same "reconcile" step Ansible runs (implicit
``all``/``ungrouped``) and the same variable merge order. Pure apart from reading the inventory
and its variable files; importing Ansible is not needed (it is a test dependency only).

Variable precedence, lowest first (what ansible-core does for ``ansible-inventory --list``):
``[all:vars]`` < ``[group:vars]`` of the host's groups in (depth, ansible_group_priority, name)
order < ``group_vars/all`` < ``group_vars/<group>`` in the same order < variables on the host
lines (a later line wins) < ``host_vars/<host>``. Dicts are replaced, never merged.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import string
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from provision.errors import InventoryError, PatternError
from provision.varparse import parse_value, split_host_line, split_var_line
from provision.vault import (
    Locked,
    VaultedText,
    VaultError,
    VaultSecret,
    as_secrets,
    decrypt,
    decrypt_text,
    is_vaulted,
    secrets_in,
)

__all__ = [
    "Group",
    "Host",
    "Inventory",
    "expand_host_range",
    "load_inventory",
    "localhost_inventory",
    "parse_address",
]


# --------------------------------------------------------------------------- public model


@dataclass
class Host:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)  # merged, Ansible's precedence
    groups: list[str] = field(default_factory=list)  # every group incl. ancestors and "all"


@dataclass
class Group:
    name: str
    hosts: list[str] = field(default_factory=list)  # direct members, in file order
    children: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)  # [g:vars] with group_vars/ over them


# Variables ansible-inventory never prints (ansible.constants.INTERNAL_STATIC_VARS): a user
# variable with one of these names is dropped from --list output by Ansible as well.
_INTERNAL_VARS = frozenset(
    {
        "ansible_async_path",
        "ansible_collection_name",
        "ansible_config_file",
        "ansible_dependent_role_names",
        "ansible_diff_mode",
        "ansible_facts",
        "ansible_forks",
        "ansible_inventory_sources",
        "ansible_limit",
        "ansible_play_batch",
        "ansible_play_hosts",
        "ansible_play_hosts_all",
        "ansible_play_role_names",
        "ansible_playbook_python",
        "ansible_role_name",
        "ansible_role_names",
        "ansible_run_tags",
        "ansible_skip_tags",
        "ansible_verbosity",
        "ansible_version",
        "inventory_dir",
        "inventory_file",
        "inventory_hostname",
        "inventory_hostname_short",
        "groups",
        "group_names",
        "hostvars",
        "playbook_dir",
        "play_hosts",
        "role_name",
        "role_names",
        "role_path",
        "role_uuid",
    }
)


@dataclass
class Inventory:
    path: str | None
    hosts: dict[str, Host]  # insertion (file) order
    groups: dict[str, Group]  # always has "all" and "ungrouped"

    def group_hosts(self, name: str) -> list[str]:
        """Hosts of a group and of all its descendants, each once (direct members first)."""
        seen: set[str] = set()
        result: list[str] = []
        for gname in self._descendants(name):
            for h in self.groups[gname].hosts:
                if h not in seen:
                    seen.add(h)
                    result.append(h)
        return result

    def _descendants(self, name: str) -> list[str]:
        """The group and its descendants, breadth first, each once."""
        order = [name]
        seen = {name}
        i = 0
        while i < len(order):
            for child in self.groups[order[i]].children:
                if child not in seen:
                    seen.add(child)
                    order.append(child)
            i += 1
        return order

    def to_list_json(self, selected: Collection[str] | None = None) -> dict[str, Any]:
        """Exactly what ``ansible-inventory -i FILE --list`` prints, as a JSON-ready dict; with
        ``selected`` (the hosts a --limit chose) what ``--list --limit`` prints: each group's
        hosts and the hostvars cut to those (ansible-core's cli/inventory.py json_inventory).
        Walked with a work list, not recursion: a chain of hundreds of nested groups is fine."""
        keep = set(self.hosts) if selected is None else set(selected)
        result: dict[str, Any] = {}
        todo, seen = ["all"], {"all"}
        while todo:
            name = todo.pop()
            group = self.groups[name]
            entry: dict[str, Any] = {}
            if name != "all":
                entry["hosts"] = [h for h in group.hosts if h in keep]
            entry["children"] = list(group.children)
            for child in group.children:
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
            entry = {k: v for k, v in entry.items() if v}
            if entry:
                result[name] = entry
        hostvars = {}
        for host in self.hosts.values():
            shown = {k: _jsonable(v) for k, v in host.vars.items() if k not in _INTERNAL_VARS}
            if shown and host.name in keep:
                hostvars[host.name] = shown
        result["_meta"] = {"hostvars": hostvars, "profile": "inventory_legacy"}
        return result

    def vault_secrets(self) -> list[str]:
        """Every vault-decrypted string in the hosts' and groups' variables, to mask them."""
        found: list[str] = []
        for host in self.hosts.values():
            found += secrets_in(host.vars)
        for group in self.groups.values():
            found += secrets_in(group.vars)
        # A template in a command's free form splits a value with spaces into shell words:
        # each longer word is masked too.
        words = [w for secret in found for w in secret.split() if len(w) >= 4]
        return sorted({*found, *words}, key=len, reverse=True)  # longest first

    def graph(self, group: str = "all") -> str:
        """Exactly what ``ansible-inventory -i FILE --graph [GROUP]`` prints (no final newline)."""
        if group not in self.groups:
            raise PatternError(
                f"--graph needs a group name, and {group!r} is not a group of "
                f"{self.path or 'the inventory'}; groups: {', '.join(self.groups)}"
            )
        lines: list[str] = []
        # (is a group, name, depth), popped in print order: a group's line, its children's
        # subtrees, then its own hosts, as ansible-inventory's recursive walk prints them.
        todo: list[tuple[bool, str, int]] = [(True, group, 0)]
        while todo:
            is_group, name, depth = todo.pop()
            if not is_group:
                lines.append(_graph_line(name, depth))
                continue
            lines.append(_graph_line(f"@{name}:", depth))
            below = [(True, c, depth + 1) for c in self.groups[name].children]
            if name != "all":
                below += [(False, h, depth + 1) for h in self.groups[name].hosts]
            todo.extend(reversed(below))
        return "\n".join(lines)


def _graph_line(text: str, depth: int) -> str:
    return "  |" * depth + "--" + text if depth else text


def _jsonable(value: Any) -> Any:
    """YAML can give dates, sets and bytes; render them the way ansible-inventory does."""
    if isinstance(value, (VaultedText, Locked)):
        # shown as ansible-inventory shows it, whether a password was given or not
        return {"__ansible_vault": value.ciphertext}
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def localhost_inventory() -> Inventory:
    """The inventory used without ``-i``: this machine, reached without SSH."""
    host = Host("localhost", {"ansible_connection": "local"}, ["all", "ungrouped"])
    return Inventory(
        path=None,
        hosts={"localhost": host},
        groups={
            "all": Group("all", [], ["ungrouped"], {}),
            "ungrouped": Group("ungrouped", ["localhost"], [], {}),
        },
    )


# --------------------------------------------------------------------------- host addresses

# Ansible's grammar for a host pattern with an optional port (parsing/utils/addresses.py):
# which strings are "host[:port]" decides whether a trailing ":NN" is a port or part of the name.
_NUMERIC_RANGE = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_HEX_RANGE = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]"
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_IPV6_PART = rf"(?:[0-9a-f]{{1,4}}|{_HEX_RANGE})"
_IPV4_PART = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUMERIC_RANGE})"
_LABEL = rf"(?:[\w]|{_ALNUM_RANGE})(?:[\w_-]|{_ALNUM_RANGE})*(?<![_-])"

_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_IPV4 = re.compile(rf"^(?:{_IPV4_PART}\.){{3}}{_IPV4_PART}$", re.I)
# IPv6 in all its compressed forms, with X standing for one 16-bit part (or a range).
_IPV6_FORMS = (
    "(?:X:){7}X|(?:X:){1,6}:|(?:X:)(?::X){1,6}|(?:X:){2}(?::X){1,5}|(?:X:){3}(?::X){1,4}|"
    "(?:X:){4}(?::X){1,3}|(?:X:){5}(?::X){1,2}|(?:X:){6}(?::X)|:(?::X){1,6}|X?::|"
    "(?:0:){6}(?:X\\.){3}X|::(?:ffff:)?(?:X\\.){3}X|(?:0:){5}ffff:(?:X\\.){3}X"
)
_IPV6 = re.compile("^(" + _IPV6_FORMS.replace("X", _IPV6_PART) + ")$", re.I)
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.I)


def parse_address(address: str) -> tuple[str, int | None] | None:
    """Split ``host[:port]`` like Ansible (ranges allowed); None if it is no valid address.

    ``[x]:NN`` is the only way to give a port to an IPv6 address; a bare IPv6 address keeps
    its colons.
    """
    port: int | None = None
    # Ansible tries both forms in turn without stopping at the first (so "[h]:1" then "h").
    for pattern in (_BRACKETED_HOSTPORT, _HOSTPORT):
        m = pattern.match(address)
        if m:
            address, port = m.group(1), int(m.group(2))
    if any(p.match(address) for p in (_IPV4, _IPV6, _HOSTNAME)):
        return address, port
    return None


class RangeError(ValueError):
    """A ``[beg:end(:step)]`` host range that cannot be expanded; the text says why."""


def expand_host_range(pattern: str) -> list[str]:
    """Expand every ``[beg:end]`` / ``[beg:end:step]`` in a host name, left to right.

    Numeric ranges with a leading zero are zero-padded, which needs begin and end of the same
    width (``[01:10]``, not ``[01:100]``); single letters give alphabetic ranges (``[a:f]``).
    """
    if "[" not in pattern:
        return [pattern]
    parts = pattern.replace("[", "|", 1).replace("]", "|", 1).split("|")
    if len(parts) != 3:
        raise RangeError("a range needs a closing ']' and no '|' in the name")
    head, inner, tail = parts
    bounds = inner.split(":")
    if len(bounds) not in (2, 3):
        raise RangeError("a range is [begin:end] or [begin:end:step]")
    beg, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise RangeError("the range has no end value")
    width = len(beg) if beg[0] == "0" and len(beg) > 1 else 0
    if width and width != len(end):
        raise RangeError(f"zero-padded begin {beg!r} and end {end!r} must have the same width")
    try:
        step = int(step_text)
    except ValueError:
        raise RangeError(f"step {step_text!r} is not a number") from None
    if step <= 0:
        raise RangeError("the step must be a positive number")
    seq: Iterable[str]
    if beg in string.ascii_letters and end in string.ascii_letters and len(beg) == len(end) == 1:
        i_beg, i_end = string.ascii_letters.index(beg), string.ascii_letters.index(end)
        if i_beg > i_end:
            raise RangeError(f"begin {beg!r} comes after end {end!r}")
        seq = string.ascii_letters[i_beg : i_end + 1 : step]
    else:
        try:
            i_beg, i_end = int(beg), int(end)
        except ValueError:
            raise RangeError(
                f"[{inner}] is neither numeric nor a single-letter alphabetic range"
            ) from None
        seq = (str(i).zfill(width) for i in range(i_beg, i_end + 1, step))
    hosts: list[str] = []
    for item in seq:
        hosts.extend(expand_host_range(head + item + tail))
    return hosts


# --------------------------------------------------------------------------- the INI parser

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:\#.*)?$")
_GROUPNAME = re.compile(r"^([^:\]\s]+)\s*(?:\#.*)?$")
_COMMENT = ("#", ";")


class _G:
    """A group while parsing: Ansible's Group, with the edges both ways."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hosts: list[str] = []
        self.children: list[str] = []
        self.parents: list[str] = []
        self.vars: dict[str, Any] = {}
        self.priority = 1


class _H:
    """A host while parsing: its variables from host lines, in the order they were set."""

    def __init__(self, name: str, port: int | None) -> None:
        self.name = name
        # Ansible's Host() skips a falsy port, so "h:0" sets no ansible_port either.
        self.vars: dict[str, Any] = {"ansible_port": port} if port else {}


class _Parser:
    """One pass over the lines, like ansible-core's ini plugin (same states, same errors)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lineno = 0
        self.groups: dict[str, _G] = {}
        self.hosts: dict[str, _H] = {}
        self.member_of: dict[str, list[str]] = {}  # host -> groups listing it directly
        self._ancestor_cache: dict[str, set[str]] = {}  # filled only once the groups are final
        for name in ("all", "ungrouped"):
            self.groups[name] = _G(name)
        self._add_child("all", "ungrouped")

    def fail(self, what: str, lineno: int | None = None) -> InventoryError:
        return InventoryError(f"{self.path}:{lineno or self.lineno}: {what}")

    # -- structure

    def _ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.groups[name].parents)
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo.extend(self.groups[g].parents)
        return seen

    def _add_child(self, parent: str, child: str) -> None:
        if parent == child:
            raise self.fail(f"group {child!r} cannot be a child of itself")
        p, c = self.groups[parent], self.groups[child]
        if child in p.children:
            return
        if child in self._ancestors(parent) or child == "all":
            raise self.fail(
                f"making {child!r} a child of {parent!r} creates a loop of groups; "
                f"remove one of the [..:children] entries"
            )
        p.children.append(child)
        if parent not in c.parents:
            c.parents.append(parent)

    def _add_host(self, name: str, group: str, port: int | None) -> None:
        if not name:
            raise self.fail("empty host name; remove the line or name the host")
        if name not in self.hosts:
            # Like Ansible, a port only counts where the host first appears.
            self.hosts[name] = _H(name, port)
        g = self.groups[group]
        direct = self.member_of.setdefault(name, [])
        if group not in direct:
            direct.append(group)
            g.hosts.append(name)

    def _set_host_var(self, host: str, key: str, value: Any) -> None:
        # Ansible looks the name up among groups first: a host named like a group sets a
        # group variable from its host line. Reproduced so --list output stays identical.
        if host in self.groups:
            self._set_group_var(host, key, value)
        else:
            self.hosts[host].vars[key] = value

    def _set_group_var(self, group: str, key: str, value: Any) -> None:
        g = self.groups[group]
        if key == "ansible_group_priority":
            try:
                g.priority = int(value)
            except TypeError:
                pass  # Ansible ignores a priority that is not a number-like value
            except ValueError:
                raise self.fail(
                    f"ansible_group_priority must be an integer, got {value!r}"
                ) from None
        else:
            g.vars[key] = value

    # -- lines

    def parse(self, lines: list[str]) -> None:
        pending: dict[str, dict[str, Any]] = {}
        group, state = "ungrouped", "hosts"
        for self.lineno, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line[0] in _COMMENT:
                continue
            m = _SECTION.match(line)
            if m:
                group, tag = m.group(1), m.group(2) or "hosts"
                if tag not in ("hosts", "children", "vars"):
                    raise self.fail(
                        f"section [{group}:{tag}] has unknown type {tag!r}; "
                        f"use [{group}], [{group}:vars] or [{group}:children]"
                    )
                if group not in self.groups:
                    # [g] or [g:children] declares a group; [g:vars] alone does not, but
                    # may come first: remember it and check at the end.
                    if tag == "vars" and group not in pending:
                        pending[group] = {"line": self.lineno, "state": "vars"}
                    self.groups[group] = _G(group)
                if group in pending and tag != "vars":
                    if pending[group]["state"] == "children":
                        self._resolve_pending(group, pending)
                    else:
                        del pending[group]
                state = tag
                continue
            if line.startswith("[") and line.endswith("]"):
                raise self.fail(
                    f"invalid section header {line!r}; a section name cannot contain spaces "
                    f"or ':' other than before vars/children: write [name], [name:vars] "
                    f"or [name:children]"
                )
            if state == "hosts":
                self._host_line(line, group)
            elif state == "vars":
                kv = split_var_line(line)
                if kv is None:
                    raise self.fail(
                        f"expected key=value in [{group}:vars], got {line!r}; "
                        f"write one variable per line as name=value"
                    )
                self._set_group_var(group, kv[0], parse_value(kv[1]))
            else:
                gm = _GROUPNAME.match(line)
                if not gm:
                    raise self.fail(
                        f"expected a group name in [{group}:children], got {line!r}; "
                        f"list one group per line (hosts go in [{group}])"
                    )
                child = gm.group(1)
                if child not in self.groups:
                    if child not in pending:
                        pending[child] = {
                            "line": self.lineno,
                            "state": "children",
                            "parents": [group],
                        }
                    else:
                        pending[child].setdefault("parents", []).append(group)
                else:
                    self._add_child(group, child)
        for name, decl in pending.items():  # Ansible reports the first unresolved one
            if decl["state"] == "vars":
                raise self.fail(
                    f"section [{name}:vars] is for group {name!r}, which is never defined; "
                    f"add a [{name}] section or fix the name",
                    decl["line"],
                )
            raise self.fail(
                f"[{decl['parents'][-1]}:children] names group {name!r}, which is never "
                f"defined; add a [{name}] section (it may be empty) or fix the name",
                decl["line"],
            )

    def _resolve_pending(self, group: str, pending: dict[str, dict[str, Any]]) -> None:
        line = self.lineno
        for parent in pending[group]["parents"]:
            self.lineno = pending[group]["line"]
            self._add_child(parent, group)
            if parent in pending and pending[parent]["state"] == "children":
                self._resolve_pending(parent, pending)
        self.lineno = line
        del pending[group]

    def _host_line(self, line: str, group: str) -> None:
        try:
            tokens = split_host_line(line)
        except ValueError as exc:
            raise self.fail(f"cannot split host line {line!r}: {exc}; check the quotes") from None
        if not tokens:
            return
        names, port = self._expand(tokens[0])
        variables: dict[str, Any] = {}
        for tok in tokens[1:]:
            if "=" not in tok:
                raise self.fail(
                    f"expected key=value host variable assignment, got {tok!r}; "
                    f'quote values that contain spaces (key="a b")'
                )
            key, value = tok.split("=", 1)
            variables[key] = parse_value(value)
        for name in names:
            self._add_host(name, group, port)
            for key, value in variables.items():
                self._set_host_var(name, key, value)

    def _expand(self, pattern: str) -> tuple[list[str], int | None]:
        parsed = parse_address(pattern)
        name, port = parsed if parsed else (pattern, None)
        if pattern.strip().endswith(":") and port is None:
            raise self.fail(
                f"host {pattern!r} ends in ':'; this looks like a YAML inventory, and "
                f"provision reads Ansible INI inventories only (a ':' after a host must be "
                f"followed by a port)"
            )
        try:
            names = expand_host_range(name) if "[" in name else [name]
        except RangeError as exc:
            raise self.fail(f"bad host range {pattern!r}: {exc}") from None
        if any(n.strip() == "---" for n in names):
            raise self.fail(
                "'---' starts a YAML document; provision reads Ansible INI inventories only"
            )
        return names, port

    # -- Ansible's reconcile step

    def reconcile(self) -> None:
        """Attach parentless groups to ``all`` and fix up ``ungrouped`` exactly like Ansible."""
        for name in list(self.groups):
            if name != "all" and not self.groups[name].parents:
                self._add_child("all", name)
        ungrouped = self.groups["ungrouped"]
        for host in self.hosts:
            mine = self.host_groups(host)
            if "ungrouped" in mine:
                if mine - {"all", "ungrouped"} and "ungrouped" in self.member_of[host]:
                    ungrouped.hosts.remove(host)
                    self.member_of[host].remove("ungrouped")
            elif mine <= {"all"}:
                ungrouped.hosts.append(host)
                self.member_of[host].append("ungrouped")

    def host_groups(self, host: str) -> set[str]:
        result = set(self.member_of.get(host, ()))
        for g in list(result):
            if g not in self._ancestor_cache:
                self._ancestor_cache[g] = self._ancestors(g)
            result |= self._ancestor_cache[g]
        return result

    def depths(self) -> dict[str, int]:
        """Longest path from ``all``: what Ansible's incremental depth updates converge to."""
        depth: dict[str, int] = {}
        for start in self.groups:  # depth-first with a work list: no recursion limit
            todo = [start]
            while todo:
                name = todo[-1]
                parents = self.groups[name].parents
                pending = [p for p in parents if p not in depth]
                if name in depth or not pending:
                    depth.setdefault(name, max((depth[p] + 1 for p in parents), default=0))
                    todo.pop()
                else:
                    todo.extend(pending)
        return depth


# --------------------------------------------------------------------------- vars files

_VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")


class _VarsLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus the tags Ansible adds that inventories use (``!unsafe``,
    ``!vault``); the file and the vault passwords, for ``!vault`` values."""

    vault_path = "?"
    vault_secrets: tuple[VaultSecret, ...] = ()


def _construct_unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]


def _construct_vault(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """An inline ``!vault |`` value: decrypted when a password fits, else kept locked (listed
    as Ansible lists it, refused where the value is needed)."""
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    assert isinstance(loader, _VarsLoader)
    where = f"{loader.vault_path}:{node.start_mark.line + 1}"
    secrets = loader.vault_secrets
    if not secrets:
        return Locked(text, where)
    try:
        return VaultedText(decrypt(text, secrets).decode("utf-8"), text)
    except VaultError as exc:  # a wrong password: refused where the value is used
        return Locked(text, where, str(exc))
    except UnicodeDecodeError:
        return Locked(text, where, "the decrypted value is not UTF-8 text")


def _construct_set(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    # A YAML !!set becomes a list, in document order (a Python set would reorder it).
    return [loader.construct_object(k) for k, _ in node.value]


_VarsLoader.add_constructor("!unsafe", _construct_unsafe)
_VarsLoader.add_constructor("!vault", _construct_vault)
_VarsLoader.add_constructor("tag:yaml.org,2002:set", _construct_set)


def _find_vars_files(directory: str, name: str) -> list[str]:
    """Ansible's lookup: NAME, then NAME.yml/.yaml/.json; the first that exists wins.

    A directory is read recursively in sorted order, skipping hidden files, backups (``~``)
    and files with other extensions.
    """
    base = os.path.join(directory, name)
    for ext in _VARS_EXTENSIONS:
        path = base + ext
        if os.path.exists(path):
            if os.path.isdir(path):
                return _dir_vars_files(path)
            return [path]
    return []


def _dir_vars_files(directory: str) -> list[str]:
    found: list[str] = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        full = os.path.join(directory, entry)
        ext = os.path.splitext(entry)[1]
        if os.path.isdir(full) and not ext:
            found.extend(_dir_vars_files(full))
        elif os.path.isfile(full) and (not ext or ext in _VARS_EXTENSIONS):
            found.append(full)
    return found


def _yaml_vars(text: str, path: str, secrets: list[VaultSecret]) -> Any:
    loader = _VarsLoader(text)  # a SafeLoader subclass
    loader.vault_path = path
    loader.vault_secrets = tuple(secrets)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _load_vars_file(path: str, secrets: list[VaultSecret] | None = None) -> dict[str, Any]:
    secrets = secrets or []
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{path}:1: cannot read variables file: {exc}") from None
    vaulted = is_vaulted(text)
    if vaulted:  # a whole file encrypted with ansible-vault
        try:
            text = decrypt_text(text, secrets, f"{path}:1")
        except VaultError as exc:
            raise InventoryError(str(exc)) from None
    data: Any
    try:
        data = json.loads(text)  # Ansible tries JSON first, then YAML
    except ValueError:
        try:
            data = _yaml_vars(text, path, secrets)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = mark.line + 1 if mark is not None else 1
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InventoryError(
                f"{path}:{line}: invalid YAML ({problem}); fix the file or move it out of "
                f"group_vars/host_vars"
            ) from None
    if not data:
        return {}  # an empty file (or an empty list) adds nothing, as in Ansible
    if not isinstance(data, dict):
        raise InventoryError(
            f"{path}:1: expected a mapping of variable names to values, got a "
            f"{type(data).__name__}; write it as 'name: value' lines"
        )
    return as_secrets(data) if vaulted else data


class _VarsFiles:
    """group_vars/ and host_vars/ beside the inventory, each file read once."""

    def __init__(self, inventory_dir: str, secrets: list[VaultSecret] | None = None) -> None:
        self.base = os.path.realpath(inventory_dir)
        self.secrets = secrets or []
        self._cache: dict[str, dict[str, Any]] = {}

    def get(self, kind: str, name: str) -> dict[str, Any]:
        if name.startswith(os.sep):  # Ansible skips chroot-style names
            return {}
        directory = os.path.join(self.base, kind)
        if not os.path.isdir(directory):
            return {}
        merged: dict[str, Any] = {}
        for path in _find_vars_files(directory, name):
            if path not in self._cache:
                self._cache[path] = _load_vars_file(path, self.secrets)
            merged |= self._cache[path]
        return merged


# --------------------------------------------------------------------------- loading


def _read_lines(path: str, secrets: list[VaultSecret]) -> tuple[list[str], bool]:
    """The inventory's lines, and whether the file was vault-encrypted."""
    data = _read_bytes(path)
    if is_vaulted(data):
        try:
            text = decrypt_text(data.decode("ascii", "replace"), secrets, path)
        except VaultError as exc:
            raise InventoryError(str(exc)) from None
        return text.splitlines(), True
    return _decode_lines(path, data), False


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise InventoryError(
            f"{path}: inventory file not found; give the path of an Ansible INI inventory"
        ) from None
    except IsADirectoryError:
        raise InventoryError(
            f"{path}: is a directory; give the INI inventory file inside it"
        ) from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc.strerror}") from None


def _decode_lines(path: str, data: bytes) -> list[str]:
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        pass
    # Like Ansible, tolerate other encodings in comment lines only.
    lines: list[str] = []
    for lineno, raw in enumerate(data.splitlines(), start=1):
        if raw[:1] in (b"#", b";"):
            lines.append("")
            continue
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InventoryError(
                f"{path}:{lineno}: line is not valid UTF-8; save the inventory as UTF-8"
            ) from None
    return lines


def load_inventory(
    path: str,
    secrets: list[VaultSecret] | None = None,
    playbook_dir: str | None = None,
) -> Inventory:
    """Read an Ansible INI inventory and the group_vars/ and host_vars/ beside it, and beside
    the playbook (``playbook_dir``) as ansible-playbook does; ``secrets`` open vaults."""
    secrets = secrets or []
    parser = _Parser(path)
    lines, vaulted = _read_lines(path, secrets)
    parser.parse(lines)
    parser.reconcile()
    if vaulted:  # every value of a vault-encrypted inventory is a secret
        for group in parser.groups.values():
            group.vars = as_secrets(group.vars)
        for host in parser.hosts.values():
            host.vars = as_secrets(host.vars)
    # Ansible's layers, lowest first: the inventory's group_vars/host_vars, then the
    # playbook's (its group_vars/all over the inventory's, its group_vars/<g> over theirs).
    layers = [_VarsFiles(os.path.dirname(os.path.abspath(path)), secrets)]
    if playbook_dir is not None and os.path.realpath(playbook_dir) != layers[0].base:
        layers.append(_VarsFiles(playbook_dir, secrets))
    depth = parser.depths()

    def order(names: Iterable[str]) -> list[str]:
        return sorted(names, key=lambda n: (depth[n], parser.groups[n].priority, n))

    def from_files(kind: str, names: Iterable[str]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for layer in layers:
            for name in names:
                merged |= layer.get(kind, name)
        return merged

    groups: dict[str, Group] = {}
    for name, parsed in parser.groups.items():
        groups[name] = Group(
            name,
            list(parsed.hosts),
            list(parsed.children),
            parsed.vars | from_files("group_vars", [name]),
        )

    all_vars = parser.groups["all"].vars
    all_file_vars = from_files("group_vars", ["all"])
    hosts: dict[str, Host] = {}
    for name, h in parser.hosts.items():
        member_of = parser.host_groups(name)
        ranked = order(member_of - {"all"})
        merged: dict[str, Any] = dict(all_vars)
        for g in ranked:
            merged |= parser.groups[g].vars
        merged |= all_file_vars
        merged |= from_files("group_vars", ranked)
        merged |= h.vars
        merged |= from_files("host_vars", [name])
        in_order = ["all", *(g for g in parser.groups if g in member_of and g != "all")]
        hosts[name] = Host(name, merged, in_order)
    return Inventory(path=path, hosts=hosts, groups=groups)


def variable_location(path: str, name: str) -> str:
    """Where variable ``name`` is written, as "FILE:LINE" for an error message: the inventory's
    own lines first, then group_vars/ and host_vars/ beside it; the inventory path if unseen."""
    ini = re.compile(rf"(^|\s){re.escape(name)}\s*=")
    yml = re.compile(rf"^\s*{re.escape(name)}\s*:")
    candidates = [(path, ini)]
    base = os.path.dirname(os.path.abspath(path))
    for kind in ("group_vars", "host_vars"):
        for root, _dirs, files in sorted(os.walk(os.path.join(base, kind))):
            candidates += [(os.path.join(root, f), yml) for f in sorted(files)]
    for file, pattern in candidates:
        try:
            with open(file, encoding="utf-8", errors="replace") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if pattern.search(line) and not line.lstrip().startswith(("#", ";")):
                        return f"{file}:{lineno}"
        except OSError:
            continue
    return path
