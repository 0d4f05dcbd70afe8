"""Pull once, fan out: for each image, one host pulls from the registry and every other host
receives it over the LAN from a host that already holds it (docs/lab-baseline.md, "Shared
images: fan-out").

The coordinator lives in the engine, shared by every host's worker thread. Hosts meet per image
reference: a host that holds the image *verified* offers itself as a source; a host that lacks
it asks for a role. The first request for an image waits (at most :data:`MEET_WAIT` seconds)
until every host of the batch has either reported on the image or finished its play, so a host
that already holds the image is found before anyone pulls, and the puller is the lacking host
with the most free space on Docker's data root (inventory order breaks ties). Every host that
ends with the image becomes a source in turn, one stream at a time, so the sources double each
round (1 -> 2 -> 4 -> 8): a tree, not a star.

Only verified images are offered: for a reference pinned by digest, an image whose registry
digests (or provision's pin tag, see :func:`provision.audit.probe.pin_tag`) name the digest; for
a tag, only an image pulled or received in this run (a host's older image under the same tag is
not the registry's current one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from provision.errors import ProvisionError

MEET_WAIT = 60.0  # seconds the first request waits for the batch's other hosts to report
SOURCE_STREAMS = 1  # streams one source serves at once (each round doubles the sources)


class FanOutFailed(ProvisionError):
    """The host that pulled for the others failed for good; the others fail with its reason."""


@dataclass
class Source:
    host: str
    session: Any
    image_id: str
    size: int | None


@dataclass
class Role:
    """What a lacking host does: ``pull`` from the registry, or ``receive`` over the LAN (from
    ``via`` in --check, where no stream runs)."""

    pull: bool
    via: str = ""


@dataclass
class _Image:
    sources: dict[str, Source] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    lacking: dict[str, int] = field(default_factory=dict)  # host -> free bytes (-1: unknown)
    puller: str | None = None
    failure: str | None = None
    met: bool = False
    received: dict[str, int] = field(default_factory=dict)  # bytes per receiving host
    expected_bytes: dict[str, int] = field(default_factory=dict)


class FanOut:
    """The engine's coordinator: one per run, every image reference one :class:`_Image`."""

    def __init__(self, order: Sequence[str] = ()) -> None:
        self.cond = threading.Condition()
        self.images: dict[str, _Image] = {}
        self.expected: list[str] = []
        self.left: set[str] = set()
        self.order = {h: i for i, h in enumerate(order)}

    # -- the engine's calls -----------------------------------------------------------------
    def expect(self, hosts: Sequence[str]) -> None:
        """A new batch runs: its hosts are the ones the first request of an image waits for."""
        with self.cond:
            self.expected = list(hosts)
            self.left -= set(hosts)
            self.cond.notify_all()

    def leave(self, host: str) -> None:
        """``host`` finished its play (or never started it): nobody waits for it any more."""
        with self.cond:
            self.left.add(host)
            self.cond.notify_all()

    def member(self, host: str, session: Any, on_progress: Callable[[str], None]) -> Member:
        return Member(self, host, session, on_progress)

    # -- the hosts' calls (through Member) --------------------------------------------------
    def _image(self, ref: str) -> _Image:
        return self.images.setdefault(ref, _Image())

    def offer(self, ref: str, source: Source) -> None:
        with self.cond:
            img = self._image(ref)
            img.reported.add(source.host)
            img.sources[source.host] = source
            img.busy.setdefault(source.host, 0)
            if img.puller == source.host:
                img.puller = None
            img.lacking.pop(source.host, None)
            self.cond.notify_all()

    def report(self, ref: str, host: str) -> None:
        """``host`` has looked at ``ref`` and will neither offer nor ask (a tag it holds)."""
        with self.cond:
            self._image(ref).reported.add(host)
            self.cond.notify_all()

    def _all_met(self, img: _Image) -> bool:
        return all(h in img.reported or h in self.left for h in self.expected)

    def role(self, ref: str, host: str, free: int | None) -> Role:
        """Pull or receive; the first lacking host waits for the batch to meet (see above)."""
        with self.cond:
            img = self._image(ref)
            img.reported.add(host)
            img.lacking[host] = free if free is not None else -1
            self.cond.notify_all()
            deadline = time.monotonic() + MEET_WAIT
            while not img.met and not self._all_met(img):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            if not img.met:
                img.met = True
                if not img.sources and img.puller is None:
                    img.puller = self._choose_puller(img)
            if img.failure is not None:
                raise FanOutFailed(img.failure)
            if img.puller == host and not img.sources:
                return Role(True)
            via = next(iter(img.sources), None) or img.puller or ""
            return Role(False, via)

    def _choose_puller(self, img: _Image) -> str:
        """The lacking host with the most free space; inventory order breaks ties."""
        return min(img.lacking, key=lambda h: (-img.lacking[h], self.order.get(h, 1 << 30), h))

    def acquire(self, ref: str, host: str, exclude: set[str]) -> Source | None:
        """A free source for ``host`` (blocks while every source is busy and a pull runs);
        None when ``host`` must pull itself: nobody holds the image and nobody pulls it."""
        with self.cond:
            img = self._image(ref)
            while True:
                if img.failure is not None:
                    raise FanOutFailed(img.failure)
                usable = [s for h, s in img.sources.items() if h not in exclude]
                free = [s for s in usable if img.busy.get(s.host, 0) < SOURCE_STREAMS]
                if free:
                    chosen = min(free, key=lambda s: (img.busy[s.host], self.order.get(s.host, 0)))
                    img.busy[chosen.host] += 1
                    return chosen
                if not usable and img.puller is None:
                    img.puller = host
                    return None
                self.cond.wait(5.0)

    def release(self, ref: str, source: str, broken: bool) -> None:
        """A stream from ``source`` ended; a source whose own side broke is not used again."""
        with self.cond:
            img = self._image(ref)
            img.busy[source] = max(0, img.busy.get(source, 1) - 1)
            if broken:
                img.sources.pop(source, None)
            self.cond.notify_all()

    def pull_failed(self, ref: str, host: str, why: str) -> None:
        """The pull for the others failed for good: they fail too, with the same reason."""
        with self.cond:
            img = self._image(ref)
            if img.puller == host:
                img.puller = None
                if not img.sources:
                    img.failure = f"{host} could not pull the image for the others: {why}"
            self.cond.notify_all()

    def gave_up(self, ref: str, host: str) -> None:
        """A receiving host failed for good (or a pull-in-waiting host left): wake the rest."""
        with self.cond:
            img = self._image(ref)
            if img.puller == host:
                img.puller = None
            img.lacking.pop(host, None)
            self.cond.notify_all()

    def count(self, ref: str, host: str, done: int, total: int | None) -> tuple[int, int]:
        """Record ``host``'s bytes received; returns the lab-wide (received, expected)."""
        with self.cond:
            img = self._image(ref)
            img.received[host] = done
            if total:
                img.expected_bytes[host] = total
            return sum(img.received.values()), sum(img.expected_bytes.values())


@dataclass
class Member:
    """One host's handle on the coordinator (what a module sees in ``Context.peers``)."""

    fanout: FanOut
    host: str
    session: Any
    on_progress: Callable[[str], None]

    def offer(self, ref: str, image_id: str, size: int | None) -> None:
        self.fanout.offer(ref, Source(self.host, self.session, image_id, size))

    def report(self, ref: str) -> None:
        self.fanout.report(ref, self.host)

    def role(self, ref: str, free: int | None) -> Role:
        return self.fanout.role(ref, self.host, free)

    def acquire(self, ref: str, exclude: set[str]) -> Source | None:
        return self.fanout.acquire(ref, self.host, exclude)

    def release(self, ref: str, source: str, broken: bool) -> None:
        self.fanout.release(ref, source, broken)

    def pull_failed(self, ref: str, why: str) -> None:
        self.fanout.pull_failed(ref, self.host, why)

    def gave_up(self, ref: str) -> None:
        self.fanout.gave_up(ref, self.host)

    def count(self, ref: str, done: int, total: int | None) -> tuple[int, int]:
        return self.fanout.count(ref, self.host, done, total)


__all__ = ["MEET_WAIT", "FanOut", "FanOutFailed", "Member", "Role", "Source"]
