"""Pull once, fan out: for each image, one host pulls from the registry and every other host
receives it over the LAN from a host that already holds it (docs/lab-baseline.md, "Shared
images: fan-out").

The coordinator lives in the engine, shared by every host's worker thread. Hosts meet per image
reference: a host that holds the image *verified* offers itself as a source; a host that lacks
it asks for a role. The first request for an image waits (at most :data:`MEET_WAIT` seconds)
until every host of the batch has either reported on the image or finished its play, so a host
that already holds the image is found before anyone pulls, and the puller is the lacking host
with the most free space on Docker's data root (inventory order breaks ties). Every host that
ends with the image becomes a source in turn. A source serves one :class:`Transfer` at a time:
one ``docker save`` copied to up to k waiting hosts at once (:data:`RECEIVERS` by transport,
or the task's ``fanout_receivers``), so the holders grow (1 + k)-fold each round (k = 7 through
the controller: 1 -> 8 -> 64, its link carrying the image once in and k times out, (1 + k)·S
where k single transfers carried 2k·S; k = 1 host to host: a doubling tree): not a star.

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
SOURCE_STREAMS = 1  # transfers (docker saves) one source serves at once
# Receivers one transfer feeds at once, by transport (docs/performance.md: 1, 3, 7 measured).
# Through the controller, its link carries one copy per receiver whatever k is, and a larger k
# saves it the source's copy and the sources their saves; host to host, the source's own link
# carries k copies at once, so one receiver per transfer (a doubling tree) finishes first.
RECEIVERS = {"ssh": 7, "direct": 1}


class FanOutFailed(ProvisionError):
    """The host that pulled for the others failed for good; the others fail with its reason."""


@dataclass
class Source:
    host: str
    session: Any
    image_id: str
    size: int | None


@dataclass
class LanEnd:
    """Where a receiver listens for a direct transfer (``fanout_transport: direct``)."""

    address: str
    port: int = 0  # 0: any free port


@dataclass
class Receiver:
    """A host waiting for the image, with what the transfer that feeds it needs of it."""

    host: str
    session: Any
    become: bool | None
    on_progress: Callable[[str], None]
    exclude: set[str] = field(default_factory=set)  # sources whose side broke for it
    lan: LanEnd | None = None  # where a source reaches it directly (None: through the relay)
    width: int = RECEIVERS["ssh"]  # receivers of a transfer it leads, itself included


@dataclass
class Transfer:
    """One ``docker save`` on ``source`` into ``docker load`` on every receiver. The first
    receiver (the leader) runs it and :meth:`finish` es it with each receiver's outcome; the
    others :meth:`wait` for theirs."""

    source: Source
    receivers: list[Receiver]
    outcomes: dict[str, Any] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def leads(self, host: str) -> bool:
        return self.receivers[0].host == host

    def finish(self, outcomes: dict[str, Any]) -> None:
        self.outcomes.update(outcomes)
        self.done.set()

    def wait(self, host: str, timeout: float) -> Any:
        """This receiver's outcome; None when the leader never said (it died, or timed out)."""
        self.done.wait(timeout)
        return self.outcomes.get(host)


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
    waiting: list[Receiver] = field(default_factory=list)  # in arrival order
    assigned: dict[str, Transfer] = field(default_factory=dict)  # receiver -> its transfer
    received: dict[str, int] = field(default_factory=dict)  # bytes per pulling/receiving host
    expected_bytes: dict[str, int] = field(default_factory=dict)
    wanting: set[str] = field(default_factory=set)  # hosts that lacked it in this run


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
            img.wanting.add(host)
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

    def acquire(self, ref: str, me: Receiver) -> Transfer | None:
        """The transfer that feeds ``me``: one it leads, from a free source, taking along
        other waiting hosts, or one another receiver leads (blocks while every source is busy
        and a pull runs); None when ``me`` must pull itself: nobody holds the image and
        nobody pulls it."""
        with self.cond:
            img = self._image(ref)
            img.waiting.append(me)
            try:
                while True:
                    if me.host in img.assigned:
                        return img.assigned.pop(me.host)
                    if img.failure is not None:
                        raise FanOutFailed(img.failure)
                    usable = [s for h, s in img.sources.items() if h not in me.exclude]
                    free = [s for s in usable if img.busy.get(s.host, 0) < SOURCE_STREAMS]
                    if free:
                        return self._start(img, me, free)
                    if not usable and img.puller is None:
                        img.puller = me.host
                        return None
                    self.cond.wait(5.0)
            finally:
                if me in img.waiting:
                    img.waiting.remove(me)

    def _start(self, img: _Image, me: Receiver, free: list[Source]) -> Transfer:
        """A transfer from the least busy free source to ``me`` and the hosts waiting longest
        that may use that source (called with the lock held)."""
        chosen = min(free, key=lambda s: (img.busy[s.host], self.order.get(s.host, 0)))
        img.busy[chosen.host] += 1
        others = [
            r
            for r in img.waiting
            if r is not me and r.host not in img.assigned and chosen.host not in r.exclude
        ][: max(0, me.width - 1)]
        transfer = Transfer(chosen, [me, *others])
        for r in others:
            img.assigned[r.host] = transfer
        self.cond.notify_all()
        return transfer

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
            img.wanting.discard(host)  # no longer part of the lab-wide total
            img.received.pop(host, None)
            img.expected_bytes.pop(host, None)
            self.cond.notify_all()

    def count(self, ref: str, host: str, done: int, total: int | None) -> tuple[int, int]:
        """Record ``host``'s bytes pulled or received; returns the lab-wide (moved, expected).

        Expected counts every host that lacked the image in this run, those whose transfer
        has not started yet at the size of the image a source holds (else of a known one)."""
        with self.cond:
            img = self._image(ref)
            img.received[host] = done
            if total:
                img.expected_bytes[host] = total
            known = img.expected_bytes
            sizes = [s.size for s in img.sources.values() if s.size]
            guess = max(sizes or known.values() or [0])
            expected = sum(known.get(h, guess) for h in img.wanting | set(known))
            return sum(img.received.values()), max(expected, sum(img.received.values()))


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

    def acquire(
        self,
        ref: str,
        exclude: set[str],
        become: bool | None,
        lan: LanEnd | None = None,
        width: int = RECEIVERS["ssh"],
    ) -> Transfer | None:
        me = Receiver(self.host, self.session, become, self.on_progress, set(exclude), lan, width)
        return self.fanout.acquire(ref, me)

    def release(self, ref: str, source: str, broken: bool) -> None:
        self.fanout.release(ref, source, broken)

    def pull_failed(self, ref: str, why: str) -> None:
        self.fanout.pull_failed(ref, self.host, why)

    def gave_up(self, ref: str) -> None:
        self.fanout.gave_up(ref, self.host)

    def count(self, ref: str, done: int, total: int | None) -> tuple[int, int]:
        return self.fanout.count(ref, self.host, done, total)


__all__ = [
    "MEET_WAIT",
    "RECEIVERS",
    "FanOut",
    "FanOutFailed",
    "LanEnd",
    "Member",
    "Receiver",
    "Role",
    "Source",
    "Transfer",
]
