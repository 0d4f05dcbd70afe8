"""The fan-out coordinator (provision.fanout) and the streams it moves images with
(provision.stream): who pulls, who waits for whom, how the sources grow, what a failure does;
a real relay between two local commands, paced, with progress, and a receiver that dies.

The booted end-to-end tests (real dockerd, registry, uplink) are in tests/test_images_fanout.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from provision import fanout as fo
from provision.audit.probe import pin_tag
from provision.fanout import FanOut, FanOutFailed, Source
from provision.image_transfer import load_script
from provision.modules import MODULES
from provision.modules.base import Context, ModuleError, Plan
from provision.ssh import LocalSession
from provision.stream import Progress, StreamError, open_stream, progress, relay, relay_many
from provision.target import conn_spec

REF = "reg.lab:5000/lab/pytorch@sha256:" + "a" * 64
ID = "sha256:" + "c" * 64


def _roles(fan: FanOut, free: dict[str, int]) -> dict[str, fo.Role]:
    out: dict[str, fo.Role] = {}
    threads = [
        threading.Thread(target=lambda h=h: out.__setitem__(h, fan.role(REF, h, free[h])))
        for h in free
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_the_lacking_host_with_the_most_free_disk_pulls_once_all_have_met() -> None:
    fan = FanOut(["a", "b", "c"])
    fan.expect(["a", "b", "c"])
    roles = _roles(fan, {"a": 10, "b": 30, "c": 20})
    assert roles == {"a": fo.Role(False, "b"), "b": fo.Role(True), "c": fo.Role(False, "b")}


def test_a_host_that_holds_the_image_is_waited_for_and_nobody_pulls() -> None:
    fan = FanOut(["a", "b", "c"])
    fan.expect(["a", "b", "c"])
    roles: dict[str, fo.Role] = {}
    t = threading.Thread(target=lambda: roles.update(a=fan.role(REF, "a", 99)))
    t.start()
    time.sleep(0.3)
    assert not roles  # a waits: b and c have not reported yet
    fan.leave("c")  # c finished its play without the task (skipped, failed earlier)
    fan.offer(REF, Source("b", None, ID, 5))
    t.join(5)
    assert roles == {"a": fo.Role(False, "b")}


def test_the_meeting_waits_at_most_meet_wait(monkeypatch) -> None:
    monkeypatch.setattr(fo, "MEET_WAIT", 0.3)
    fan = FanOut(["a", "late"])
    fan.expect(["a", "late"])
    started = time.monotonic()
    assert fan.role(REF, "a", 1) == fo.Role(True)
    assert 0.25 < time.monotonic() - started < 3


def _want(
    fan: FanOut, host: str, exclude: set[str] | None = None, width: int = 7
) -> fo.Transfer | None:
    me = fo.Receiver(host, None, None, print, exclude or set(), width=width)
    return fan.acquire(REF, me)


def test_sources_double_each_round_with_one_receiver_per_stream() -> None:
    """With one receiver per stream, 1 holder serves 1, then 2 serve 2, then 4 serve 4."""
    fan = FanOut()
    fan.offer(REF, Source("h0", None, ID, 5))
    holders, rounds = ["h0"], []
    waiting = [f"h{i}" for i in range(1, 8)]
    while waiting:
        served = []
        for host in list(waiting):
            with fan.cond:
                free = [h for h in holders if fan.images[REF].busy[h] == 0]
            if not free:
                break
            transfer = _want(fan, host, width=1)
            assert transfer is not None and [r.host for r in transfer.receivers] == [host]
            served.append((transfer.source.host, host))
            waiting.remove(host)
        for src_host, host in served:
            fan.release(REF, src_host, broken=False)
            fan.offer(REF, Source(host, None, ID, 5))
            holders.append(host)
        rounds.append(len(served))
    assert rounds == [1, 2, 4]


def test_one_save_feeds_up_to_receivers_waiting_hosts_and_the_holders_grow_k_plus_1_fold() -> None:
    """k = 3: 1 holder feeds 3 waiting hosts with one stream; then 4 holders for the 4 left:
    one stream feeds 3 of them (the hosts waiting longest), another the last."""
    fan = FanOut([f"h{i}" for i in range(8)])
    fan.offer(REF, Source("h0", None, ID, 5))
    fan.release(REF, "h0", broken=False)
    with fan.cond:  # h0 is busy until the waiting hosts are all queued
        fan.images[REF].busy["h0"] = 1
    got: dict[str, fo.Transfer | None] = {}
    threads = []
    for i in range(1, 8):
        t = threading.Thread(target=lambda h=f"h{i}": got.__setitem__(h, _want(fan, h, width=3)))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # arrival order h1, h2, ...
    fan.release(REF, "h0", broken=False)  # h0 free: one of the waiters leads a transfer
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = {id(t): t for t in got.values() if t is not None}
    assert len(got) == 3 and len(first) == 1, got
    (transfer,) = first.values()
    assert transfer.source.host == "h0" and len(transfer.receivers) == 3
    assert {r.host for r in transfer.receivers} == set(got)  # 3 of the 7, one docker save
    fan.release(REF, "h0", broken=False)
    for r in transfer.receivers:
        fan.offer(REF, Source(r.host, None, ID, 5))  # they hold it now: 4 holders
    for t in threads:
        t.join(5)
    second = {id(t): t for h, t in got.items() if t is not None and t is not transfer}
    assert sorted(len(t.receivers) for t in second.values()) == [1, 3], [
        [r.host for r in t.receivers] for t in second.values()
    ]


def test_a_failed_pull_fails_the_waiting_hosts_with_its_reason() -> None:
    fan = FanOut(["a", "b"])
    fan.expect(["a", "b"])
    roles = _roles(fan, {"a": 5, "b": 1})
    assert roles["a"].pull
    failures: list[str] = []

    def wait() -> None:
        try:
            _want(fan, "b")
        except FanOutFailed as exc:
            failures.append(str(exc))

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    fan.pull_failed(REF, "a", "manifest unknown")
    t.join(10)
    assert failures == ["a could not pull the image for the others: manifest unknown"]


def test_a_waiting_host_pulls_itself_when_the_puller_gave_up_without_a_reason() -> None:
    fan = FanOut(["a", "b"])
    fan.expect(["a", "b"])
    _roles(fan, {"a": 5, "b": 1})
    fan.gave_up(REF, "a")  # e.g. a's connection died: no failure to hand on
    assert _want(fan, "b") is None  # b is the puller now
    assert fan.images[REF].puller == "b"


def test_a_broken_source_is_not_used_again() -> None:
    fan = FanOut()
    fan.offer(REF, Source("s1", None, ID, 5))
    fan.offer(REF, Source("s2", None, ID, 5))
    first = _want(fan, "t")
    assert first is not None and first.source.host == "s1"
    fan.release(REF, "s1", broken=True)
    again = _want(fan, "t", {"s1"})
    assert again is not None and again.source.host == "s2"
    assert "s1" not in fan.images[REF].sources


def test_pin_tag_and_load_script() -> None:
    assert pin_tag(REF) == "reg.lab:5000/lab/pytorch:sha256-" + "a" * 64
    assert pin_tag("reg.lab:5000/lab/pytorch:24.10@sha256:" + "b" * 64) == (
        "reg.lab:5000/lab/pytorch:sha256-" + "b" * 64
    )
    assert pin_tag("reg.lab:5000/lab/pytorch:24.10") is None
    script = load_script(REF, ID)
    # The name is given only after the loaded image's ID was checked.
    assert script.index("docker load") < script.index(ID) < script.index("docker tag")
    assert script.endswith(f"docker tag {ID} {pin_tag(REF)}")
    assert load_script("lab/x:1", ID).endswith(f"docker tag {ID} lab/x:1")


def _local(name: str) -> LocalSession:
    return LocalSession(conn_spec(name, {"ansible_connection": "local"}, ssh_config_path=""))


def test_relay_between_real_commands_is_paced_and_reports_progress(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(bytes(range(256)) * 4096 * 3)  # 3 MiB
    out = tmp_path / "out"
    source = open_stream(_local("src"), f"cat {data}", become=False, limit=30)
    target = open_stream(_local("dst"), f"cat > {out}", become=False, limit=30)
    seen: list[Progress] = []
    started = time.monotonic()
    moved = relay(
        source, target, total=data.stat().st_size, rate=2e6, every=0.3, on_progress=seen.append
    )
    elapsed = time.monotonic() - started
    assert target.wait(10)[0] == 0 and source.wait(10)[0] == 0
    assert moved == data.stat().st_size and out.read_bytes() == data.read_bytes()
    assert 1.3 < elapsed < 5  # 3.1 MB at 2 MB/s
    assert seen and all(0 < p.done < moved for p in seen)
    assert all(1.5e6 < p.rate < 2.5e6 and p.eta is not None for p in seen[1:])


def test_relay_into_a_receiver_that_dies_names_the_receiver(tmp_path: Path) -> None:
    source = open_stream(_local("src"), "head -c 50000000 /dev/zero", become=False, limit=30)
    target = open_stream(_local("dst"), "head -c 1000 >/dev/null", become=False, limit=30)
    with pytest.raises(StreamError) as caught:
        relay(source, target, total=None)
    source.abort()
    assert caught.value.host == "dst"


def test_one_read_feeds_every_target_and_the_copy_goes_on_without_one_that_dies(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.write_bytes(bytes(range(256)) * 4096 * 3)  # 3 MiB
    source = open_stream(_local("src"), f"cat {data}", become=False, limit=30)
    outs = [tmp_path / "out1", tmp_path / "out2"]
    targets = [
        open_stream(_local("dst1"), f"cat > {outs[0]}", become=False, limit=30),
        open_stream(_local("dying"), "head -c 1000 >/dev/null", become=False, limit=30),
        open_stream(_local("dst2"), f"cat > {outs[1]}", become=False, limit=30),
    ]
    moved, broken = relay_many(source, targets, total=None)
    assert source.wait(10)[0] == 0
    assert targets[0].wait(10)[0] == 0 and targets[2].wait(10)[0] == 0
    assert list(broken) == ["dying"] and broken["dying"].host == "dying"
    assert moved == data.stat().st_size
    assert [o.read_bytes() == data.read_bytes() for o in outs] == [True, True]


def test_progress_rate_and_eta() -> None:
    p = progress(10_000_000, 30_000_000, 2.0)
    assert (p.rate, p.eta) == (5e6, 4.0)
    assert progress(5, None, 1.0).eta is None


# -- docker_image's plan with fan-out (recorded state, real coordinator) ------------------------

MISSING = (
    "root=/var/lib/docker|linux|x86_64\nfree=85000000000\nremote="
    '{"Descriptor": {"digest": "sha256:' + "a" * 64 + '"}, "SchemaV2Manifest": {"layers": '
    '[{"size": 1000}]}}'
)


def _plan(args: dict, state: str, peers: fo.Member | None, check: bool = False) -> Plan:
    m = MODULES["docker_image"]
    ctx = Context(check=check, peers=peers)
    return m.plan(m.prepare(m.finalize(args), ctx), state, ctx)


def test_plan_without_fanout_is_the_plain_pull_even_with_peers() -> None:
    fan = FanOut(["h1"])
    p = _plan({"name": REF}, MISSING, fan.member("h1", None, print))
    assert p.changes == [f"pull {REF}"] and "fanout" not in p.result
    assert REF not in fan.images  # the coordinator was never asked


def test_plan_with_fanout_pulls_for_the_lab_or_receives(monkeypatch) -> None:
    monkeypatch.setattr(fo, "MEET_WAIT", 0.2)  # h2 reports only after h1's plan
    fan = FanOut(["h0", "h1", "h2"])
    fan.expect(["h1", "h2"])
    args = {"name": REF, "fanout": True}
    p1 = _plan(args, MISSING, fan.member("h1", None, print), check=True)
    assert p1.changes == [f"pull {REF} (fan-out: the source for the others)"]
    assert p1.steps and p1.result["fanout"] == "pull"
    p2 = _plan(args, MISSING, fan.member("h2", None, print), check=True)
    assert p2.changes == [f"receive {REF} over the LAN from h1 (fan-out)"] and not p2.steps
    # A host that holds the pinned image (found by its pin tag) offers itself, verified.
    held = f"local={pin_tag(REF)}|{ID}|5|[]"
    p0 = _plan(args, held, fan.member("h0", None, print))
    assert not p0.changed and fan.images[REF].sources["h0"].image_id == ID


def test_disk_preflight_refuses_a_receiver_before_it_joins() -> None:
    fan = FanOut(["h1"])
    with pytest.raises(ModuleError, match=r"needs about .* free on /var/lib/docker"):
        _plan(
            {"name": REF, "fanout": True, "disk_factor": 1e9},
            MISSING,
            fan.member("h1", None, print),
        )
    assert REF not in fan.images  # refused before it asked for a role: nobody waits for it


# -- the registry pull's progress (provision.pull) and the lab-wide total ----------------------

# dockerd's JSON progress lines (the Engine API's ImageCreate stream), as docker.io 20.10 in the
# booted lab hosts wrote them for a one-layer image; the booted tests read the real ones.
PULL_LINES = [
    '{"status":"Pulling from lab/fan","id":"sha256:' + "a" * 64 + '"}',
    '{"status":"Pulling fs layer","progressDetail":{},"id":"0123456789ab"}',
    '{"status":"Downloading","progressDetail":{"current":524288,"total":34000000},'
    '"progress":"[\\u003e   ] 524.3kB/34MB","id":"0123456789ab"}',
    '{"status":"Downloading","progressDetail":{"current":17000000,"total":34000000},'
    '"id":"0123456789ab"}',
]


def test_pull_tally_counts_the_bytes_downloaded_and_reads_the_error() -> None:
    from provision.pull import PullTally

    tally = PullTally()
    for line in PULL_LINES:
        tally.feed(line)
    assert (tally.done, tally.told) == (17_000_000, 34_000_000)
    tally.feed('{"status":"Verifying Checksum","progressDetail":{},"id":"0123456789ab"}')
    assert tally.done == 34_000_000 and tally.error is None
    tally.feed("sha256:" + "a" * 64)  # docker pull --quiet's answer (no API): ignored
    tally.feed('{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}')
    assert tally.error == "unexpected EOF"
    refused = PullTally()
    refused.feed('{"message":"manifest for x not found: manifest unknown: manifest unknown"}')
    assert refused.error is not None and "manifest unknown" in refused.error


def test_api_path_and_auth_header() -> None:
    import base64
    import json as _json

    from provision.pull import api_path, auth_header, command

    digest = "sha256:" + "a" * 64
    assert api_path(f"127.0.0.1:5000/lab/fan@{digest}") == (
        "/images/create?fromImage=127.0.0.1%3A5000%2Flab%2Ffan&tag=sha256%3A" + "a" * 64
    )
    assert api_path("reg.lab:5000/lab/x:24.10").endswith(
        "fromImage=reg.lab%3A5000%2Flab%2Fx&tag=24.10"
    )
    assert api_path(f"lab/x:24.10@{digest}").endswith("&tag=sha256%3A" + "a" * 64)
    assert api_path("busybox").endswith("fromImage=busybox&tag=latest")
    assert auth_header("", "", None) == b""
    header = auth_header("lab", "s3cret", "reg.lab:5000")
    name, _, token = header.decode().strip().partition(": ")
    assert name == "X-Registry-Auth"
    assert _json.loads(base64.urlsafe_b64decode(token)) == {
        "username": "lab",
        "password": "s3cret",
        "serveraddress": "reg.lab:5000",
    }
    assert "s3cret" not in command(f"reg.lab:5000/lab/x@{digest}")  # stdin only


def test_the_lab_wide_total_counts_every_lacking_host_from_the_start() -> None:
    fan = FanOut(["a", "b", "c"])
    fan.expect(["a", "b", "c"])
    _roles(fan, {"a": 3, "b": 2, "c": 1})
    # a pulls 30 MB; b and c have not started: counted at the size a's pull tells.
    assert fan.count(REF, "a", 10, 30) == (10, 90)
    assert fan.count(REF, "a", 30, 30) == (30, 90)  # the pull's end
    fan.offer(REF, Source("a", None, ID, 40))  # a holds it: a source's image is 40 MB saved
    assert fan.count(REF, "b", 5, 40) == (35, 110)
    fan.gave_up(REF, "c")  # c failed for good: out of the total
    assert fan.count(REF, "b", 40, 40) == (70, 70)
