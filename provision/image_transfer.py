"""Fan-out's LAN transfers for docker_image: one ``docker save`` on a source host into
``docker load`` on up to k receivers, straight host to host for receivers that listen for it
(:mod:`provision.lan`, ``fanout_transport: direct``) and through the controller's SSH channels
for the others (:mod:`provision.stream`), with progress reports and one outcome per receiver.
Who sends to whom is :mod:`provision.fanout`'s; retries are docker_image's ``receive``.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from provision import lan
from provision.audit.probe import pin_tag
from provision.fanout import LanEnd, Member, Receiver, Transfer
from provision.image_refs import short_ref, split_ref
from provision.results import human_bytes
from provision.shell import quote
from provision.stream import Progress, Stream, StreamError, open_stream, progress, relay_many

log = logging.getLogger(__name__)

REPORT_EVERY = 2.0  # seconds between two progress reports of a long transfer


def report_progress(peers: Member, ref: str, origin: str, p: Progress) -> None:
    """One transfer's bytes, rate and ETA and the lab-wide total, as a progress event (the
    live line; ``-v`` prints it) and in the log."""
    lab_done, lab_total = peers.count(ref, p.done, p.total)
    eta = f"{p.eta:.0f} s" if p.eta is not None else "?"
    of = f" of {human_bytes(p.total)}" if p.total else ""
    text = (
        f"{short_ref(ref)} from {origin}: {human_bytes(p.done)}{of} at {human_bytes(p.rate)}/s, "
        f"ETA {eta}; lab-wide {human_bytes(lab_done)} of {human_bytes(lab_total)}"
    )
    log.info("%s: %s", peers.host, text)
    peers.on_progress(text)


def load_script(ref: str, image_id: str) -> str:
    """``docker load`` from stdin, then the image ID checked, and only then the name given (the
    pin tag for a digest pin, else the reference's tag): a load cut halfway names nothing."""
    name, digest = split_ref(ref)
    tag = pin_tag(ref) if digest else name
    qid = quote(image_id)
    inspect = f"docker image inspect --format '{{{{.Id}}}}' {qid} 2>/dev/null"
    return (
        "docker load >/dev/null || exit 1; "
        f'[ "$({inspect})" = {qid} ] || '
        f"{{ echo 'the loaded image is not '{qid} >&2; exit 3; }}; "
        f"docker tag {qid} {quote(tag)}"
    )


class StreamFailed(Exception):
    """A transfer to one receiver failed; ``source_side``: the source's side broke (another
    source may do better), else the receiver's."""

    def __init__(self, message: str, source_side: bool) -> None:
        super().__init__(message)
        self.source_side = source_side


def lan_end(args: dict[str, Any], session: Any) -> LanEnd | None:
    """Where a source reaches this host directly (``fanout_transport: direct``): its
    ``fanout_address``, else the address provision connects to; None for the SSH relay."""
    if args["fanout_transport"] != "direct":
        return None
    address = str(args["fanout_address"] or "").strip() or session.spec.hostname
    return LanEnd(address, args["fanout_port"]) if address else None


def lead_transfer(args: dict[str, Any], transfer: Transfer, peers: Member) -> Outcome:
    """Run the transfer for all its receivers, hand each its outcome, free the source; this
    host's own outcome (bytes moved, or why not)."""
    outcomes: dict[str, Outcome] = {}
    try:
        outcomes = stream_transfer(args, transfer, peers)
    finally:  # whatever happened here, the others stop waiting and the source is free again
        src = transfer.source.host
        cut = [o for o in outcomes.values() if isinstance(o, StreamFailed)]
        peers.release(args["name"], src, bool(cut) and all(o.source_side for o in cut))
        transfer.finish(outcomes)
    return outcomes[peers.host]


@dataclass(frozen=True)
class Moved:
    """A receiver's image arrived: the bytes moved, and how (``direct`` or ``ssh``)."""

    bytes: int
    transport: str


Outcome = Moved | StreamFailed


def stream_transfer(args: dict[str, Any], transfer: Transfer, peers: Member) -> dict[str, Outcome]:
    """One ``docker save`` on the source into ``load_script`` on every receiver, straight over
    the LAN for receivers that listen for it (:mod:`provision.lan`), through the controller's
    channels for the others and for those the source could not reach: per receiver, what
    arrived or why not (StreamFailed says which side broke)."""
    hosts = {
        r.host: Member(peers.fanout, r.host, r.session, r.on_progress) for r in transfer.receivers
    }
    outcomes: dict[str, Outcome] = {}
    relayed = [r for r in transfer.receivers if r.lan is None]
    direct = [r for r in transfer.receivers if r.lan is not None]
    if direct:
        arrived, unreached = direct_transfer(args, transfer, direct, hosts)
        outcomes.update(arrived)
        relayed += unreached
    if relayed:
        outcomes.update(relay_transfer(args, transfer, relayed, hosts))
    return outcomes


def _counted(ref: str, outcomes: dict[str, Outcome], hosts: dict[str, Member]) -> None:
    """Every receiver whose image arrived has all its bytes in the lab-wide total."""
    for host, outcome in outcomes.items():
        if isinstance(outcome, Moved):
            hosts[host].count(ref, outcome.bytes, outcome.bytes)


def _save_failed(source: str, code: int, err: str) -> StreamFailed:
    return StreamFailed(f"docker save on {source} failed (exit {code}): {err[-300:]}", True)


def _load_outcome(code: int, err: str, moved: int, transport: str) -> Outcome:
    if code != 0:
        return StreamFailed(f"docker load failed (exit {code}): {err.strip()[-300:]}", False)
    return Moved(moved, transport)


def direct_transfer(
    args: dict[str, Any], transfer: Transfer, receivers: list[Receiver], hosts: dict[str, Member]
) -> tuple[dict[str, Outcome], list[Receiver]]:
    """The source sends straight to each receiver's listener; returns the outcomes, and the
    receivers that could not listen or be reached (for the relay)."""
    ref, src, started = args["name"], transfer.source, time.monotonic()
    listeners, unreached = _start_listeners(args, src.image_id, receivers)

    def report(done: int, seconds: float) -> None:
        for host in listeners:
            report_progress(hosts[host], ref, src.host, progress(done, src.size, seconds))

    try:
        if not listeners:
            return {}, unreached
        endpoints = [listener.endpoint for listener in listeners.values()]
        become, limit = transfer.receivers[0].become, float(args["timeout"])
        try:
            said, err = lan.run_sender(
                src.session,
                src.image_id,
                endpoints,
                become=become,
                limit=limit,
                rate=args["fanout_rate"],
                on_sent=report,
                every=REPORT_EVERY,
            )
        except StreamError as exc:
            return {h: StreamFailed(str(exc), True) for h in listeners}, unreached
        for host, listener in list(listeners.items()):
            if listener.endpoint.index in said.unreachable:
                why = said.unreachable[listener.endpoint.index]
                log.warning(
                    "%s: %s cannot reach it (%s); through the controller", host, src.host, why
                )
                listener.stream.abort()
                del listeners[host]
                unreached.append(receivers[listener.endpoint.index])
        outcomes = {
            host: _direct_outcome(
                listener, said, err, src.host, limit - (time.monotonic() - started)
            )
            for host, listener in listeners.items()
        }
    finally:  # a listener left waiting would hold its port until its channel closes
        for listener in listeners.values():
            listener.stream.abort()
    _counted(ref, outcomes, hosts)
    return outcomes, unreached


def _start_listeners(
    args: dict[str, Any], image_id: str, receivers: list[Receiver]
) -> tuple[dict[str, lan.Listener], list[Receiver]]:
    """A listener on every receiver that can run one, all started at once (each waits for its
    host's python3); those that cannot, for the relay."""
    load = load_script(args["name"], image_id)

    def start(index: int, r: Receiver) -> lan.Listener | None:
        assert r.lan is not None
        try:
            return lan.start_listener(
                r.session,
                load,
                index=index,
                address=r.lan.address,
                port=r.lan.port,
                become=r.become,
                limit=float(args["timeout"]),
            )
        except StreamError as exc:
            log.warning("%s: no direct transfer (%s); through the controller", r.host, exc)
            return None

    with ThreadPoolExecutor(max_workers=len(receivers)) as pool:
        started = list(pool.map(start, range(len(receivers)), receivers))
    listeners = {r.host: got for r, got in zip(receivers, started, strict=True) if got}
    return listeners, [r for r, got in zip(receivers, started, strict=True) if got is None]


def _direct_outcome(
    listener: lan.Listener, said: lan.SendLog, save_err: str, source: str, left: float
) -> Outcome:
    """One receiver's outcome, from what the sender said and its load's exit status."""
    code, load_err = listener.stream.wait(max(60.0, left))
    index = listener.endpoint.index
    if said.save_code:
        return _save_failed(source, said.save_code, save_err)
    if index in said.cut:
        return StreamFailed(f"the direct stream from {source} broke: {said.cut[index]}", False)
    if code == lan.NOBODY_CAME:
        return StreamFailed(f"{source} never connected to this host's listener", False)
    return _load_outcome(code, load_err, said.sent, "direct")


def relay_transfer(
    args: dict[str, Any], transfer: Transfer, receivers: list[Receiver], hosts: dict[str, Member]
) -> dict[str, Outcome]:
    """``docker save`` on the source copied by the controller into every receiver's
    ``docker load``, on channels of the connections it holds."""
    ref, limit = args["name"], float(args["timeout"])
    src, started = transfer.source, time.monotonic()
    save = f"docker save {quote(src.image_id)}"
    try:
        source = open_stream(src.session, save, become=transfer.receivers[0].become, limit=limit)
    except StreamError as exc:
        return {r.host: StreamFailed(str(exc), True) for r in receivers}
    outcomes: dict[str, Outcome] = {}
    targets: dict[str, Stream] = {}
    load = load_script(ref, src.image_id)
    for r in receivers:
        try:
            targets[r.host] = open_stream(r.session, load, become=r.become, limit=limit)
        except StreamError as exc:
            outcomes[r.host] = StreamFailed(str(exc), False)

    def report(p: Progress) -> None:
        for host in targets:
            report_progress(hosts[host], ref, src.host, p)

    try:
        moved, cut = relay_many(
            source,
            list(targets.values()),
            total=src.size,
            rate=args["fanout_rate"],
            every=REPORT_EVERY,
            on_progress=report,
        )
    except StreamError as exc:  # the source's side broke: every receiver's transfer did
        for stream in [source, *targets.values()]:
            stream.abort()
        return {**outcomes, **{h: StreamFailed(str(exc), True) for h in targets}}
    if len(cut) == len(targets):  # every receiver broke: the save, unread, would never end
        source.abort()
        return {**outcomes, **{h: StreamFailed(str(e), False) for h, e in cut.items()}}
    s_code, s_err = source.wait(60)
    source.abort()
    for host, target in targets.items():
        t_code, t_err = target.wait(max(60.0, limit - (time.monotonic() - started)))
        target.abort()
        if s_code != 0:
            outcomes[host] = _save_failed(src.host, s_code, s_err)
        elif host in cut:
            outcomes[host] = StreamFailed(str(cut[host]), False)
        else:
            outcomes[host] = _load_outcome(t_code, t_err, moved, "ssh")
    _counted(ref, outcomes, hosts)
    return outcomes


__all__ = [
    "REPORT_EVERY",
    "Moved",
    "Outcome",
    "StreamFailed",
    "lan_end",
    "lead_transfer",
    "load_script",
    "report_progress",
]
