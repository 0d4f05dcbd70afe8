"""The live progress line on stderr, drawn from executor outcomes and engine events.

On a terminal the line is redrawn a few times a second in place (``\\r`` and ANSI erase-line,
no library: the line must not slow the start and degrade to nothing special), cut to the
terminal's width. Under ``TERM=dumb``, ``NO_COLOR`` or when stderr is not a terminal there are
no redraws: a plain "still running" line every :data:`PLAIN_EVERY` seconds while hosts work,
so a CI log shows a long task is alive without thousands of redraws.

The states (:class:`AdhocState`, :class:`ApplyState`) are pure: events in, a line out for a
given ``now``; :class:`Live` does the drawing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

REFRESH = 0.25  # seconds between redraws on a terminal
PLAIN_EVERY = 10.0  # seconds between plain "still running" lines elsewhere
ERASE_LINE = "\x1b[K"  # ECMA-48 EL: erase from the cursor to the end of the line


def is_live(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Redraw in place only on a real terminal that is not dumb and without NO_COLOR."""
    try:
        tty = stream.isatty()
    except ValueError:  # closed
        return False
    return tty and environ.get("TERM", "") != "dumb" and not environ.get("NO_COLOR")


def width_of(stream: TextIO, environ: Mapping[str, str]) -> int:
    """The terminal's width (what the line must fit in); COLUMNS, then 80, elsewhere."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        try:
            return int(environ.get("COLUMNS", "80"))
        except ValueError:
            return 80


def fit(text: str, width: int) -> str:
    """At most ``width - 1`` characters (the last column would wrap on some terminals)."""
    room = max(width - 1, 10)
    return text if len(text) <= room else text[: room - 1] + "~"


def age(seconds: float) -> str:
    """12s, 3m05s, 1h02m: short enough for a status line."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def names(hosts: Sequence[str], shown: int = 3) -> str:
    more = f" +{len(hosts) - shown} more" if len(hosts) > shown else ""
    return ", ".join(hosts[:shown]) + more


class AdhocState:
    """ping, run, audit: which hosts answered; the rest are running since the start."""

    def __init__(self, hosts: Sequence[str], started: float) -> None:
        self.hosts, self.started = list(hosts), started
        self.done: set[str] = set()

    def finish(self, host: str) -> None:
        self.done.add(host)

    def running(self) -> list[str]:
        return [h for h in self.hosts if h not in self.done]

    def line(self, now: float) -> str:
        text = f"[{len(self.done)}/{len(self.hosts)}]"
        running = self.running()
        if running:
            text += f" running {now - self.started:.0f}s: {names(running)}"
        return text


@dataclass
class _Running:
    task: str
    index: int
    total: int
    since: float
    detail: str = ""  # a long transfer's bytes, rate and ETA ("progress" events)
    detail_at: float = 0.0


class ApplyState:
    """apply: the play i/N, hosts done/total in it, the task running longest with its age
    and hosts (stragglers named), and the time since the run began."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.plays: list[tuple[str, list[str]]] = []  # (name, hosts) in run order
        self.play = -1  # index into plays of the play the events are in
        self.play_name = ""
        self.running: dict[str, _Running] = {}
        self.done: set[str] = set()

    def set_plays(self, plays: Sequence[tuple[str, Sequence[str]]]) -> None:
        self.plays = [(name, list(hosts)) for name, hosts in plays]

    def _enter(self, play: str) -> None:
        if play == self.play_name:
            return
        later = [i for i in range(self.play + 1, len(self.plays)) if self.plays[i][0] == play]
        self.play = later[0] if later else self.play
        self.play_name = play
        self.running.clear()
        self.done.clear()

    def feed(self, ev: Any, now: float) -> None:
        """One engine.Event: start, progress, retrying, or a task's end on a host."""
        self._enter(ev.play)
        if ev.status == "start":
            self.running[ev.host] = _Running(ev.task, ev.index, ev.total, now)
        elif ev.status in ("progress", "retrying"):
            if ev.host in self.running and ev.result is not None:
                self.running[ev.host].detail = ev.result.msg
                self.running[ev.host].detail_at = now
        else:
            self.running.pop(ev.host, None)
            goes_on = ev.result is not None and (ev.result.ignored or ev.result.rescued)
            if (ev.status == "failed" and not goes_on) or ev.index >= ev.total:
                self.done.add(ev.host)

    def _play_part(self) -> str:
        if 0 <= self.play < len(self.plays):
            name, hosts = self.plays[self.play]
            done = f"{len(self.done)}/{len(hosts)} hosts done"
            return f"play {self.play + 1}/{len(self.plays)} {name} | {done}"
        return f"play {self.play_name}" if self.play_name else "starting"

    def line(self, now: float) -> str:
        parts = [self._play_part()]
        if self.running:
            oldest = min(self.running.values(), key=lambda r: r.since)
            on = sorted(
                (h for h, r in self.running.items() if r.task == oldest.task),
                key=lambda h: self.running[h].since,
            )
            count = f"{len(on)} host{'s' if len(on) != 1 else ''}"
            task = f"task {oldest.index}/{oldest.total} {oldest.task}"
            parts.append(f"{task} {age(now - oldest.since)} on {count}: {names(on)}")
            others = len(self.running) - len(on)
            if others:
                parts.append(f"{others} on other tasks")
            # the freshest transfer report of the task's hosts (most of them may be waiting)
            told = [h for h in on if self.running[h].detail]
            if told:
                latest = max(told, key=lambda h: self.running[h].detail_at)
                parts.append(f"{latest}: {self.running[latest].detail}")
        parts.append(age(now - self.started))
        return " | ".join(parts)


class Live:
    """Draws ``render(now)`` on ``stream``: redrawn in place on a live terminal, a plain line
    every PLAIN_EVERY seconds elsewhere (only while ``busy()``)."""

    def __init__(
        self,
        render: Callable[[float], str],
        busy: Callable[[], bool],
        stream: TextIO,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        live: bool | None = None,
        width: int = 0,
    ) -> None:
        """``live`` and ``width``: as the CLI's Environment decided them; without ``live``
        both are read from ``stream`` and ``environ``."""
        self.render, self.busy, self.stream, self.clock = render, busy, stream, clock
        if live is None:
            environ = os.environ if environ is None else environ
            live = is_live(stream, environ)
            width = width_of(stream, environ) if live else 0
        self.live, self.width = live, width
        self.lock = threading.RLock()  # feeders, the ticker and paused() take it
        self._drawn = False
        self._last_plain = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="provision-progress", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(REFRESH if self.live else 1.0):
            self.draw()

    def draw(self) -> None:
        with self.lock:
            now = self.clock()
            if self.live:
                self.stream.write("\r" + fit(self.render(now), self.width) + ERASE_LINE)
                self._drawn = True
            elif self.busy() and now - self._last_plain >= PLAIN_EVERY:
                self.stream.write(f"still running: {self.render(now)}\n")
                self._last_plain = now
            else:
                return
            self.stream.flush()

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write("\r" + ERASE_LINE)
            self.stream.flush()
            self._drawn = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Print something else (a result line) where the progress line was."""
        with self.lock:
            self._erase()
            yield

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            self._erase()
