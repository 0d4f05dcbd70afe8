"""apply's result lines, shaped to scale to a lab: the same result on many hosts is one line
(``changed on 6 hosts [ws01 ... ws06]: play / task msg``, its diff once), printed when every host
of the play is past that task; a failure is one line as it happens, message first, with the
task's file:line short (no site-packages path). Pure: engine events in, lines out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# playbook.Task.where, the prefix of every message about a task: "FILE:LINE: task 'NAME'"
_WHERE = re.compile(r"(?P<file>.+?):(?P<line>\d+): task '(?P<task>.*?)': (?P<msg>.*)", re.S)
ENDED = {"ok", "changed", "skipped", "failed"}
UNREACHED = {"unreachable", "timed out", "host key refused"}


def short_path(path: str, bases: Sequence[str]) -> str:
    """``path`` relative to the first of ``bases`` (the shipped playbooks, the working
    directory) that holds it; as given otherwise."""
    for base in bases:
        rel = os.path.relpath(path, base)
        if not rel.startswith(".."):
            return rel
    return path


def message_first(msg: str, bases: Sequence[str]) -> str:
    """``FILE:LINE: task 'x': what`` -> ``what (FILE:LINE)``, FILE short."""
    m = _WHERE.fullmatch(msg)
    if m is None:
        return msg
    return f"{m['msg']} ({short_path(m['file'], bases)}:{m['line']})"


@dataclass
class Group:
    status: str
    play: str
    task: str
    index: int
    msg: str
    diff: str | None
    hosts: list[str] = field(default_factory=list)

    def line(self) -> str:
        msg = f" {self.msg}" if self.msg else ""
        if len(self.hosts) == 1:
            return f"{self.status}: [{self.hosts[0]}] {self.play} / {self.task}{msg}"
        who = f"{self.status} on {len(self.hosts)} hosts [{' '.join(self.hosts)}]"
        return f"{who}: {self.play} / {self.task}{msg}"


class ResultGroups:
    """Holds the printable results of a task until every host of its play is past it."""

    def __init__(self) -> None:
        self.plays: dict[str, list[str]] = {}
        self.last: dict[tuple[str, str], int] = {}  # (play, host) -> index of its last result
        self.out: set[tuple[str, str]] = set()  # (play, host) that will run no further task
        self.pending: dict[tuple[Any, ...], Group] = {}

    def set_plays(self, plays: Sequence[tuple[str, Sequence[str]]]) -> None:
        for name, hosts in plays:
            self.plays.setdefault(name, []).extend(h for h in hosts if h not in self.plays[name])

    def add(self, ev: Any, printable: bool) -> list[Group]:
        """Record one event; the groups that can be printed now."""
        key = (ev.play, ev.host)
        if ev.status in UNREACHED:
            self.out.add(key)
        elif ev.status in ENDED:
            self.last[key] = ev.index
            goes_on = ev.result is not None and (ev.result.ignored or ev.result.rescued)
            if (ev.status == "failed" and not goes_on) or ev.index >= ev.total:
                self.out.add(key)
        if printable:
            result = ev.result
            msg, diff = (result.msg, result.diff) if result is not None else ("", None)
            group_key = (ev.play, ev.index, ev.task, ev.status, msg, diff)
            group = self.pending.setdefault(
                group_key, Group(ev.status, ev.play, ev.task, ev.index, msg, diff)
            )
            group.hosts.append(ev.host)
        return self._ready()

    def _past(self, play: str, index: int) -> bool:
        hosts = self.plays.get(play)
        if not hosts:
            return True  # a play we were not told about: print at once
        return all((play, h) in self.out or self.last.get((play, h), 0) >= index for h in hosts)

    def _ready(self) -> list[Group]:
        ready = [k for k, g in self.pending.items() if self._past(g.play, g.index)]
        return [self._ordered(self.pending.pop(k)) for k in ready]

    def _ordered(self, group: Group) -> Group:
        """Hosts in inventory order, not in the order they happened to finish."""
        order = {h: i for i, h in enumerate(self.plays.get(group.play, []))}
        group.hosts.sort(key=lambda h: order.get(h, len(order)))
        return group

    def drain(self) -> list[Group]:
        groups = [self._ordered(g) for g in self.pending.values()]
        self.pending.clear()
        return groups
