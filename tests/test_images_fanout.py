"""Shared images with fan-out (issue 17): each layer crosses the uplink once.

Four booted Debian hosts with real dockerd (Debian's docker.io); the first also runs the real
registry (Debian's docker-registry), reached only through a rate-limited proxy (tests/lab/
uplink.py, 20 MB/s) that stands for the lab's internet link. The shipped playbooks/images.yml runs
through the CLI as a user runs it, with ``images_fanout: true``. Every expectation is read from
the hosts (``docker image inspect`` over nsenter), from the registry's own access log and from
the proxy's byte count, never through the code under test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from provision.audit.probe import pin_tag
from provision.engine import ApplyOptions, Event, PlaybookResult, run_playbook
from provision.inventory import load_inventory
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.lab.images import Upstream, prepare_upstream
from tests.lab.uplink import Uplink
from tests.test_cli import cli

REPO = Path(__file__).resolve().parent.parent
IMAGES_YML = str(REPO / "playbooks" / "images.yml")
UPLINK_RATE = 20e6  # bytes per second: a slow internet link
IMAGE_MB = 32  # one incompressible layer of this many MB (random data) plus busybox


@dataclass
class FanLab:
    hosts: list[BootedHost]
    workdir: Path
    uplink: Uplink
    upstream: Upstream
    ref: str  # through the uplink, pinned by digest

    @property
    def image_id(self) -> str:
        return self.upstream.image_id

    @property
    def layers(self) -> list[str]:
        return self.upstream.layers

    @property
    def layer_bytes(self) -> int:
        return self.upstream.layer_bytes

    def blob_gets(self) -> dict[str, int]:
        return self.upstream.blob_gets()

    def run(self, check: bool = False, **extra: Any) -> tuple[PlaybookResult, list[Event]]:
        """images.yml through the engine (the CLI's own path), with every progress event."""
        events: list[Event] = []
        opts = ApplyOptions(
            check=check,
            known_hosts=(str(self.workdir / "known_hosts"),),
            extra_vars={"shared_images": [self.ref], "images_fanout": True, **extra},
            on_event=events.append,
        )
        inventory = load_inventory(str(self.workdir / "inventory.ini"))
        return run_playbook(inventory, IMAGES_YML, opts), events

    def changes(self, result: PlaybookResult) -> dict[str, list[str]]:
        """The image task's changes per host (what the report says each host did)."""
        return {r.host: r.changes for r in result.results if r.task == "shared images"}

    def apply(self, *args: str, **extra: Any) -> Any:
        """images.yml through the CLI, as a user runs it."""
        vars_file = self.workdir / "vars.json"
        doc = {"shared_images": [self.ref], "images_fanout": True, **extra}
        vars_file.write_text(json.dumps(doc))
        env = {**os.environ, "HOME": str(self.workdir)}
        return cli(
            "apply",
            str(self.workdir / "inventory.ini"),
            "-p",
            IMAGES_YML,
            "-e",
            f"@{vars_file}",
            "--known-hosts",
            str(self.workdir / "known_hosts"),
            "--retry-file",
            str(self.workdir / "images.retry"),
            *args,
            env=env,
        )

    def audit(self) -> dict[str, Any]:
        env = {**os.environ, "HOME": str(self.workdir)}
        r = cli(
            "audit",
            str(self.workdir / "inventory.ini"),
            "--known-hosts",
            str(self.workdir / "known_hosts"),
            "--require-image",
            self.ref,
            "--format",
            "json",
            env=env,
        )
        assert r.stdout.strip(), r.stderr
        return {h["host"]: h for h in json.loads(r.stdout)["hosts"]}

    def held_id(self, host: BootedHost) -> str | None:
        """The image ID the host holds under the pin (by registry digest or the pin tag)."""
        for candidate in (self.ref, pin_tag(self.ref)):
            done = host.exec(
                f"docker image inspect --format '{{{{.Id}}}}' {candidate}", check=False
            )
            if done.returncode == 0:
                return done.stdout.strip()
        return None

    def drop(self, host: BootedHost) -> None:
        self.upstream.drop(host)
        assert self.held_id(host) is None

    def recap_line(self, out: str, host: str) -> str:
        lines = [ln for ln in out.splitlines() if ln.startswith(host) and "changed=" in ln]
        assert lines, out[-2000:]
        return lines[-1]


P = TypeVar("P", bound="Poller")


class Poller:
    """Runs ``look`` every 0.1 s in a thread while the ``with`` block runs."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def look(self) -> None:
        raise NotImplementedError

    def _poll(self) -> None:
        while not self.stop.is_set():
            self.look()
            time.sleep(0.1)

    def __enter__(self: P) -> P:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


class SaveCounter(Poller):
    """The ``docker save`` processes that ran on the hosts while it was open (polled with
    pgrep, so transfers must last a few seconds: ``images_fanout_rate``)."""

    def __init__(self, hosts: list[BootedHost]) -> None:
        super().__init__()
        self.hosts, self.seen = hosts, set[tuple[str, str]]()

    def look(self) -> None:
        for host in self.hosts:
            for pid in host.exec("pgrep -f '^docker save' || true").stdout.split():
                self.seen.add((host.name, pid))

    def per_host(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for host, _ in self.seen:
            out[host] = out.get(host, 0) + 1
        return out


def _kill_docker_load(victim: BootedHost, killed: list[str]) -> None:
    """Wait for `docker load` on the victim, let it take about half the image, kill it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ps = victim.exec("pgrep -f '^docker load' || true").stdout.split()
        if ps:
            time.sleep(3.0)  # about half of the stream, at 6 MB/s
            victim.exec("pkill -KILL -f '^docker load' || true")
            killed.append(ps[0])
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fan(booted_hosts, tmp_path_factory) -> Iterator[FanLab]:  # noqa: F811
    hosts = booted_hosts(4, prefix="fan")
    upstream = prepare_upstream(hosts, IMAGE_MB)
    workdir = tmp_path_factory.mktemp("fanout")
    write_inventory(hosts, workdir / "inventory.ini")
    write_known_hosts(hosts, workdir / "known_hosts")
    host, port = upstream.registry.rsplit(":", 1)
    with Uplink((host, int(port)), UPLINK_RATE) as uplink:
        yield FanLab(
            hosts, workdir, uplink, upstream, f"{uplink.endpoint}/lab/fan@{upstream.digest}"
        )
    upstream.origin.exec("systemctl stop docker-registry", check=False)


def test_check_says_which_host_pulls_and_which_receive(fan: FanLab) -> None:
    for host in fan.hosts:
        assert fan.held_id(host) is None
    result, _ = fan.run(check=True)
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    changes = fan.changes(result)
    pullers = [
        h
        for h, c in changes.items()
        if c == [f"pull {fan.ref} (fan-out: the source for the others)"]
    ]
    assert len(pullers) == 1, changes
    (puller,) = pullers
    for host in fan.hosts:
        if host.name != puller:
            assert changes[host.name] == [
                f"receive {fan.ref} over the LAN from {puller} (fan-out)"
            ], changes
    assert fan.uplink.down < 1e6  # --check asked for manifests only, never a layer
    for host in fan.hosts:
        assert fan.held_id(host) is None


def test_each_layer_crosses_the_uplink_once_and_all_end_at_the_pinned_digest(fan: FanLab) -> None:
    fan.uplink.reset()
    before = fan.blob_gets()
    started = time.monotonic()
    with SaveCounter(fan.hosts) as saves:  # 6 MB/s per LAN transfer: ~6 s, seen by pgrep
        result, _ = fan.run(images_fanout_rate=6e6)
    wall = time.monotonic() - started
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    after = fan.blob_gets()
    # The registry served every layer once, and the uplink carried about one image.
    assert {d: after.get(d, 0) - before.get(d, 0) for d in fan.layers} == {d: 1 for d in fan.layers}
    assert fan.layer_bytes <= fan.uplink.down < 1.2 * fan.layer_bytes, (fan.uplink.down, wall)
    for host in fan.hosts:
        assert fan.held_id(host) == fan.image_id, host.name
    changes = fan.changes(result)
    pulled = [h for h, c in changes.items() if c and c[0].startswith(f"pull {fan.ref} (fan-out")]
    received = {
        h: m.group(1)
        for h, c in changes.items()
        if c
        and (
            m := re.fullmatch(
                rf"receive {re.escape(fan.ref)} from (\S+) over the LAN \(fan-out\)", c[0]
            )
        )
    }
    assert len(pulled) == 1 and len(received) == 3, changes
    # One `docker save` on the puller fed all three at once (up to 7 through the controller).
    assert set(received.values()) == set(pulled), received
    assert saves.per_host() == {pulled[0]: 1}, saves.seen
    for r in result.results:
        if r.task == "shared images":
            (item,) = r.data["results"]
            assert item["bytes"] > fan.layer_bytes and item["attempts"] == 1, item
    print(f"\nfan-out, 4 hosts: uplink {fan.uplink.down / 1e6:.1f} MB in {wall:.1f} s")

    # Converged: nothing moves, no layer is asked of the registry.
    fan.uplink.reset()
    again, _ = fan.run()
    assert again.exit_code == 0
    assert {h: s.changed for h, s in again.stats.items()} == {h.name: 0 for h in fan.hosts}
    assert fan.blob_gets() == after and fan.uplink.down == 0

    # The audit finds the pinned image on all four, digest verified.
    report = fan.audit()
    for host in fan.hosts:
        images = report[host.name]["facts"]["docker"]["images"]
        (img,) = [i for i in images if i["ref"] == fan.ref]
        assert img["present"] is True and img["digest_match"] is True, (host.name, img)
        assert img["id"] == fan.image_id
        statuses = [c for c in report[host.name]["checks"] if c["id"] == "docker.image"]
        assert [(c["status"], c["message"]) for c in statuses] == [("OK", f"{fan.ref}: present")]


def test_with_one_receiver_per_stream_the_holders_double_a_tree(fan: FanLab) -> None:
    for host in fan.hosts:
        fan.drop(host)
    with SaveCounter(fan.hosts) as saves:
        result, _ = fan.run(images_fanout_rate=6e6, images_fanout_receivers=1)
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    changes = fan.changes(result)
    received = {
        h: m.group(1)
        for h, c in changes.items()
        if c and (m := re.fullmatch(r"receive \S+ from (\S+) over the LAN \(fan-out\)", c[0]))
    }
    assert len(received) == 3, changes
    # A tree, not a star: a host that received became a source for another in the next round.
    assert set(received.values()) & set(received), received
    assert sum(saves.per_host().values()) == 3, saves.seen  # one save per receiver
    for host in fan.hosts:
        assert fan.held_id(host) == fan.image_id, host.name


def test_a_load_killed_halfway_leaves_nothing_present_and_the_rerun_completes(
    fan: FanLab,
) -> None:
    victim = fan.hosts[-1]
    fan.drop(victim)
    killed: list[str] = []
    killer = threading.Thread(target=_kill_docker_load, args=(victim, killed))
    killer.start()
    # 6 MB/s over the LAN: the ~34 MB stream takes ~6 s; no retries, so the kill shows.
    r = fan.apply("-v", images_fanout_rate=6e6, images_pull_retries=0)
    killer.join()
    assert killed, "docker load never ran on the victim"
    assert r.returncode == 2, r.stdout[-3000:]
    assert re.search(rf"failed: \[{victim.name}\] .*receiving {re.escape(fan.ref)} from", r.stdout)
    assert "failed=1" in fan.recap_line(r.stdout, victim.name)
    # -v showed the transfer's bytes, rate, ETA and the lab-wide total while it ran.
    progress = rf"progress: \[{victim.name}\] .* from \S+: [\d.]+ MB of [\d.]+ MB at [\d.]+ MB/s, "
    assert re.search(progress + r"ETA \d+ s; lab-wide [\d.]+ MB of [\d.]+ MB", r.stdout), r.stdout
    # Nothing half-loaded is reported present: not by docker, not by the module, not the audit.
    assert fan.held_id(victim) is None
    checked, _ = fan.run(check=True)
    assert fan.changes(checked)[victim.name][0].startswith(f"receive {fan.ref} over the LAN")
    img = [i for i in fan.audit()[victim.name]["facts"]["docker"]["images"] if i["ref"] == fan.ref]
    assert img and img[0]["present"] is False

    fan.uplink.reset()
    rerun = fan.apply()
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "changed=1" in fan.recap_line(rerun.stdout, victim.name)
    assert fan.held_id(victim) == fan.image_id
    assert fan.uplink.down < 1e6  # received over the LAN, not pulled again


def test_a_load_killed_halfway_is_retried_in_the_same_run(fan: FanLab) -> None:
    victim = fan.hosts[1]
    fan.drop(victim)
    killed: list[str] = []
    killer = threading.Thread(target=_kill_docker_load, args=(victim, killed))
    killer.start()
    result, events = fan.run(images_fanout_rate=6e6, images_pull_retry_delay=1)
    killer.join()
    assert killed, "docker load never ran on the victim"
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    (item,) = next(
        r for r in result.results if r.host == victim.name and r.task == "shared images"
    ).data["results"]
    assert item["attempts"] == 2 and item["received"] is True, item
    assert fan.held_id(victim) == fan.image_id
    # The progress events carried bytes, rate, ETA and the lab-wide total.
    mine = [e for e in events if e.status == "progress" and e.host == victim.name]
    texts = [e.result.msg for e in mine if e.result is not None]
    assert texts and all(re.search(r" [kM]B/s, ETA \d+ s; lab-wide", t) for t in texts), texts
    # The receiver's side broke, not the source's: the retry came from the same source.
    sources = {m[1] for t in texts if (m := re.search(r" from (\S+): ", t))}
    assert sources == {item["source"]}, texts


def _mb(text: str) -> float:
    return float(text)


def _short(fan: FanLab) -> str:
    """The image as the progress lines name it: no registry host, the digest cut to 12."""
    return re.escape(f"lab/fan@{fan.upstream.digest[:19]}")


_OF = (
    r"([\d.]+) MB of ([\d.]+) MB at ([\d.]+) [kM]B/s, ETA (\d+) s; "
    r"lab-wide ([\d.]+) MB of ([\d.]+) MB"
)


def test_the_registry_pull_and_the_transfers_show_progress_in_verbose_output(fan: FanLab) -> None:
    for host in fan.hosts:
        fan.drop(host)
    fan.uplink.rate = 5e6  # the 34 MB pull takes about 7 s: several reports, 2 s apart
    try:
        r = fan.apply("-v", images_fanout_rate=6e6)
    finally:
        fan.uplink.rate = UPLINK_RATE
    assert r.returncode == 0, r.stdout[-3000:]
    pulled = re.findall(
        rf"^progress: \[(\S+)\] .*? {_short(fan)} from the registry: {_OF}$", r.stdout, re.M
    )
    assert len(pulled) >= 2, r.stdout[-3000:]
    assert len({line[0] for line in pulled}) == 1  # one host pulls, the others wait
    image_mb = fan.layer_bytes / 1e6
    done = [_mb(line[1]) for line in pulled]
    assert done == sorted(done) and 0 < done[0] < image_mb, pulled
    for _, _, of, rate, _, lab_done, lab_of in pulled:
        assert _mb(of) == round(image_mb, 1)  # of the manifest's size, as it travels
        assert 1 < _mb(rate) < 6.5  # the 5 MB/s uplink (and a loaded machine)
        # lab-wide: every host that lacks the image is counted from the start
        assert _mb(lab_of) > 3.9 * image_mb and _mb(lab_done) <= _mb(lab_of)
    received = re.findall(
        rf"^progress: \[(\S+)\] .*? {_short(fan)} from (\S+): {_OF}$", r.stdout, re.M
    )
    assert received, r.stdout[-3000:]
    for host, source, part, *_, lab_done, lab_of in received:
        assert host != pulled[0][0] and source != host
        assert _mb(lab_done) > image_mb and _mb(lab_done) > _mb(part)  # the pull counts too
        assert _mb(lab_of) > 3.9 * image_mb
    for host in fan.hosts:
        assert fan.held_id(host) == fan.image_id, host.name


def test_a_digest_the_registry_lacks_fails_every_host_with_the_registry_s_message(
    fan: FanLab,
) -> None:
    missing = f"{fan.uplink.endpoint}/lab/fan@sha256:{'0' * 64}"
    result, _ = fan.run(shared_images=[missing], images_pull_retry_delay=1)
    assert result.exit_code == 2
    failed = {r.host: r.msg for r in result.results if r.status == "failed"}
    assert set(failed) == {h.name for h in fan.hosts}, failed
    pullers = [h for h, m in failed.items() if "could not pull" not in m]
    assert len(pullers) == 1, failed
    assert re.search(r"manifest unknown|not found", failed[pullers[0]]), failed
    assert "after" not in failed[pullers[0]]  # final at once: no retries
    for host, msg in failed.items():
        if host != pullers[0]:
            assert f"{pullers[0]} could not pull the image for the others" in msg, msg


def _established(options: str) -> list[tuple[str, str, str]]:
    """(local address:port, peer address:port, the rest) of each established TCP socket, as
    ``ss -Ht<options>`` prints them (with ``i``, each socket's info line is joined to it)."""
    out = subprocess.run(
        ["ss", f"-Ht{options}", "state", "established"], capture_output=True, text=True
    ).stdout
    lines = out.splitlines()
    if "i" in options:
        lines = [f"{a} {b}" for a, b in zip(lines[::2], lines[1::2], strict=False)]
    sockets = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 4:
            sockets.append((fields[2], fields[3], line))
    return sockets


class SocketBytes(Poller):
    """The most bytes each established TCP socket received, by (local, peer): ``ss -i``
    without ``-p``, which reads no /proc and so keeps up with a transfer's last second."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes: dict[tuple[str, str], int] = {}

    def look(self) -> None:
        for local, peer, info in _established("ni"):
            got = re.search(r"bytes_received:(\d+)", info)
            if got:
                key = (local, peer)
                self.bytes[key] = max(self.bytes.get(key, 0), int(got[1]))


class DockerSockets(Poller):
    """The (local, peer) sockets a ``docker`` process owned: ``ss -p``, which walks every
    process's file descriptors (a second or more on a loaded machine), polled apart."""

    def __init__(self) -> None:
        super().__init__()
        self.owned: set[tuple[str, str]] = set()

    def look(self) -> None:
        for local, peer, process in _established("np"):
            if '(("docker",' in process:
                self.owned.add((local, peer))


class DirectStreams:
    """The TCP connections a ``docker load`` reads from, seen from outside (the lab hosts share
    this machine's network namespace): the most bytes each receiving address took on a socket
    owned by a ``docker`` process (the load that the listener became; the docker CLI talks to
    dockerd over a unix socket, never TCP). Bytes and owners are polled by two threads: a
    single ``ss -pi`` under load could take longer than a transfer's last seconds and miss
    them."""

    def __init__(self) -> None:
        self.counts, self.owners = SocketBytes(), DockerSockets()

    def __enter__(self) -> DirectStreams:
        self.counts.__enter__()
        self.owners.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.owners.__exit__(*exc)
        self.counts.__exit__(*exc)

    @property
    def received(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (local, peer), n in self.counts.bytes.items():
            if (local, peer) in self.owners.owned:
                address = local.rsplit(":", 1)[0].removeprefix("[::ffff:").rstrip("]")
                out[address] = max(out.get(address, 0), n)
        return out


def test_the_direct_transport_moves_the_image_host_to_host(fan: FanLab) -> None:
    for host in fan.hosts:
        fan.drop(host)
    before = fan.blob_gets()
    with DirectStreams() as streams:
        result, events = fan.run(images_fanout_transport="direct", images_fanout_rate=6e6)
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    after = fan.blob_gets()
    assert {d: after.get(d, 0) - before.get(d, 0) for d in fan.layers} == {d: 1 for d in fan.layers}
    items = {r.host: r.data["results"][0] for r in result.results if r.task == "shared images"}
    receivers = {h: i for h, i in items.items() if i.get("received")}
    assert len(receivers) == 3, items
    assert {i["transport"] for i in receivers.values()} == {"direct"}, receivers
    by_name = {h.name: h for h in fan.hosts}
    for name in receivers:
        # the image's bytes reached the receiver's docker load on a TCP socket of its own
        # address: host to host, not through the controller's SSH channels
        assert streams.received.get(by_name[name].address, 0) > 0.8 * fan.layer_bytes, (
            name,
            streams.received,
        )
    for host in fan.hosts:
        assert fan.held_id(host) == fan.image_id, host.name
    texts = [e.result.msg for e in events if e.status == "progress" and e.result is not None]
    assert any(re.search(r" from \S+: .* MB/s, ETA \d+ s; lab-wide", t) for t in texts), texts


def test_a_receiver_the_source_cannot_reach_gets_the_image_through_the_controller(
    fan: FanLab,
) -> None:
    victim = fan.hosts[2]
    fan.drop(victim)
    # 192.0.2.1 (TEST-NET-1, RFC 5737) answers nobody: the source cannot reach the listener
    result, _ = fan.run(images_fanout_transport="direct", images_fanout_address="192.0.2.1")
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    (item,) = next(
        r for r in result.results if r.host == victim.name and r.task == "shared images"
    ).data["results"]
    assert item["received"] is True and item["transport"] == "ssh", item
    assert item["attempts"] == 1  # a fallback, not a retry
    assert fan.held_id(victim) == fan.image_id


def test_a_direct_load_killed_halfway_is_retried_in_the_same_run(fan: FanLab) -> None:
    victim = fan.hosts[3]
    fan.drop(victim)
    killed: list[str] = []
    killer = threading.Thread(target=_kill_docker_load, args=(victim, killed))
    killer.start()
    result, _ = fan.run(
        images_fanout_transport="direct", images_fanout_rate=6e6, images_pull_retry_delay=1
    )
    killer.join()
    assert killed, "docker load never ran on the victim"
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    (item,) = next(
        r for r in result.results if r.host == victim.name and r.task == "shared images"
    ).data["results"]
    assert item["attempts"] == 2 and item["transport"] == "direct", item
    assert fan.held_id(victim) == fan.image_id


def _curl_pull_seen(hosts: list[BootedHost], seen: list[str], stop: threading.Event) -> None:
    while not stop.is_set() and not seen:
        for host in hosts:
            ps = host.exec("pgrep -af 'curl -sS -N --unix-socket' || true").stdout
            if "/images/create" in ps:
                seen.append(host.name)
        time.sleep(0.2)


def test_the_live_line_shows_the_pull_and_the_lab_wide_total_with_curl(fan: FanLab) -> None:
    """Last in this file: it installs curl on the hosts (the tests above pull with python3)."""
    from tests.terminal import Tmux

    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl"
    for host in fan.hosts:
        host.exec(f"{install} || {{ apt-get update -q && {install}; }}", timeout=300)
        fan.drop(host)
    vars_file = fan.workdir / "live.json"
    vars_file.write_text(json.dumps({"shared_images": [fan.ref], "images_fanout": True}))
    argv = [
        *(sys.executable, "-m", "provision", "apply", str(fan.workdir / "inventory.ini")),
        *("-p", IMAGES_YML, "-e", f"@{vars_file}"),
        *("--known-hosts", str(fan.workdir / "known_hosts")),
        *("--retry-file", str(fan.workdir / "live.retry")),
    ]
    env = {"HOME": str(fan.workdir), "PYTHONPATH": str(REPO), "TERM": "xterm"}
    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_curl_pull_seen, args=(fan.hosts, seen, stop))
    fan.uplink.rate = 5e6
    watcher.start()
    term = Tmux(argv, env=env, cwd=str(fan.workdir), width=250, height=40)
    try:
        line = rf"\| (\S+): {_short(fan)} from the registry: {_OF} \|"
        screen = term.wait(lambda s: re.search(line, s) is not None, timeout=90)
        m = re.search(line, screen)
        assert m is not None and _mb(m[7]) > 3.9 * fan.layer_bytes / 1e6, screen
        assert term.exit_status() == 0, term.screen()
        assert "lab-wide" not in term.screen()  # the line is erased at the end
    finally:
        term.close()
        stop.set()
        watcher.join()
        fan.uplink.rate = UPLINK_RATE
    assert seen == [m[1]]  # the host the line named pulled through curl
    for host in fan.hosts:
        assert fan.held_id(host) == fan.image_id, host.name
