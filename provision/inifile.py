"""Add one host to a group of an Ansible INI inventory, every other byte kept as it was.

``provision onboard`` edits the admin's own inventory, so the edit is the smallest one that does
the job: one host line at the end of the group's last ``[group]`` section (or a new section at the
end of the file), comments, blank lines, order and line endings untouched. Planning is pure
(:func:`plan_host`); :func:`write_inventory` replaces the file atomically after a backup.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass

from provision.errors import InventoryError
from provision.inventory import _COMMENT, _SECTION, Inventory
from provision.localfile import replace_file
from provision.varparse import split_host_line

# What a host name may be here: what an inventory line and a --limit pattern take as one word.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class HostEntry:
    """The host as onboarding wants it in the inventory."""

    name: str
    hostname: str  # the address it is reached at
    port: int
    user: str

    def line(self, inherited_user: str | None) -> str:
        """``name [ansible_host=...] [ansible_port=...] [ansible_user=...]``, only what differs."""
        words = [self.name]
        if self.hostname != self.name:
            words.append(f"ansible_host={self.hostname}")
        if self.port != 22:
            words.append(f"ansible_port={self.port}")
        if self.user != inherited_user:
            words.append(f"ansible_user={self.user}")
        return " ".join(words)


@dataclass(frozen=True)
class Plan:
    """What onboarding does to the inventory: nothing (``text`` None) or the new text."""

    text: str | None
    line: str  # the host line added, or the reason nothing is written
    lineno: int  # where the line is (added or already there); 0 when unknown


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InventoryError(
            f"host name {name!r} cannot be an inventory name: use letters, digits, '.', '_', '-'"
        )


def host_lines(text: str) -> dict[str, int]:
    """First line number of each plainly named host in a host section (ranges not expanded)."""
    found: dict[str, int] = {}
    state = "hosts"
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in _COMMENT:
            continue
        m = _SECTION.match(line)
        if m:
            state = m.group(2) or "hosts"
            continue
        if state == "hosts":
            with contextlib.suppress(ValueError, IndexError):
                found.setdefault(split_host_line(line)[0], lineno)
    return found


def _where(path: str, lineno: int | None) -> str:
    return f"{path}:{lineno}" if lineno else path


def plan_host(inv: Inventory | None, text: str, path: str, group: str, entry: HostEntry) -> Plan:
    """Decide the edit; raise :class:`InventoryError` (one line, ``file:line``) on a conflict.

    ``inv`` is the parsed inventory (None for a new file). A host already in ``group`` with the
    same address, port and user means nothing to write; the same name with other values, or the
    address under another name, is a conflict the admin must resolve by hand.
    """
    check_name(entry.name)
    check_name(group)
    lines = host_lines(text)
    if inv is not None and entry.name in inv.hosts:
        host = inv.hosts[entry.name]
        have = (
            str(host.vars.get("ansible_host", entry.name)),
            int(host.vars.get("ansible_port", 22)),
            host.vars.get("ansible_user"),
        )
        at = _where(path, lines.get(entry.name))
        if have[0] != entry.hostname or have[1] != entry.port:
            raise InventoryError(
                f"{at}: host {entry.name} is already in the inventory for {have[0]}:{have[1]}, "
                f"not {entry.hostname}:{entry.port}; onboard under another name or fix that line"
            )
        if have[2] is not None and str(have[2]) != entry.user:
            raise InventoryError(
                f"{at}: host {entry.name} is already in the inventory with ansible_user="
                f"{have[2]}, not {entry.user}; pass --user {have[2]} or fix that line"
            )
        if group in host.groups:
            return Plan(None, f"{entry.name} is already in [{group}]", lines.get(entry.name, 0))
        # Listed elsewhere: its variables stay on that line; the group gets the bare name.
        return _insert(text, group, entry.name)
    if inv is not None:
        for other, host in inv.hosts.items():
            address = str(host.vars.get("ansible_host", other))
            port = int(host.vars.get("ansible_port", 22))
            if (address, port) == (entry.hostname, entry.port):
                raise InventoryError(
                    f"{_where(path, lines.get(other))}: {entry.hostname}:{entry.port} is already "
                    f"in the inventory as host {other}; onboard it as {other} or fix that line"
                )
    inherited = _inherited_user(inv, group)
    return _insert(text, group, entry.line(inherited))


def _inherited_user(inv: Inventory | None, group: str) -> str | None:
    """The ansible_user a new host in ``group`` gets from group or all vars (None: none set)."""
    if inv is None:
        return None
    value = inv.groups["all"].vars.get("ansible_user")
    if group in inv.groups:
        value = inv.groups[group].vars.get("ansible_user", value)
    return None if value is None else str(value)


def _insert(text: str, group: str, line: str) -> Plan:
    """Put ``line`` after the last host line of the last ``[group]`` section, or append one."""
    newline = "\r\n" if "\r\n" in text else "\n"
    rows = text.splitlines(keepends=True)
    header: int | None = None
    last_entry: int | None = None
    current = None
    for index, raw in enumerate(rows):
        line_text = raw.strip()
        m = _SECTION.match(line_text)
        if m:
            current = (m.group(1), m.group(2) or "hosts")
            if current == (group, "hosts"):
                header, last_entry = index, index
            continue
        if current == (group, "hosts") and line_text and line_text[0] not in _COMMENT:
            last_entry = index
    if last_entry is None:
        prefix = text
        if prefix and not prefix.endswith(("\n", "\r")):
            prefix += newline
        if prefix.strip():
            prefix += newline
        new = f"{prefix}[{group}]{newline}{line}{newline}"
        return Plan(new, line, len(new.splitlines()))
    assert header is not None
    if not rows[last_entry].endswith(("\n", "\r")):
        rows[last_entry] += newline
    rows.insert(last_entry + 1, line + newline)
    return Plan("".join(rows), line, last_entry + 2)


def write_inventory(path: str, text: str) -> str | None:
    """Replace ``path`` with ``text`` atomically (temp file, fsync, rename; mode kept).

    The old file is copied to ``PATH.YYYYmmdd-HHMMSS.bak`` first; returns that path (None for
    a new file).
    """
    backup: str | None = None
    mode = 0o644
    try:
        if os.path.exists(path):
            mode = os.stat(path).st_mode & 0o777
            backup = f"{path}.{time.strftime('%Y%m%d-%H%M%S')}.bak"
            shutil.copy2(path, backup)
        replace_file(path, text, mode)
    except OSError as exc:
        raise InventoryError(f"{path}: cannot write the inventory: {exc.strerror}") from None
    return backup
