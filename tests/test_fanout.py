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
from provision.modules import MODULES
from provision.modules.base import Context, ModuleError, Plan
from provision.modules.docker_image import load_script
from provision.ssh import LocalSession
from provision.stream import Progress, StreamError, open_stream, progress, relay
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


def test_sources_double_each_round() -> None:
    """With one stream per source, 1 holder serves 1, then 2 serve 2, then 4 serve 4."""
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
            src = fan.acquire(REF, host, set())
            assert src is not None
            served.append((src.host, host))
            waiting.remove(host)
        for src_host, host in served:
            fan.release(REF, src_host, broken=False)
            fan.offer(REF, Source(host, None, ID, 5))
            holders.append(host)
        rounds.append(len(served))
    assert rounds == [1, 2, 4]


def test_a_failed_pull_fails_the_waiting_hosts_with_its_reason() -> None:
    fan = FanOut(["a", "b"])
    fan.expect(["a", "b"])
    roles = _roles(fan, {"a": 5, "b": 1})
    assert roles["a"].pull
    failures: list[str] = []

    def wait() -> None:
        try:
            fan.acquire(REF, "b", set())
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
    assert fan.acquire(REF, "b", set()) is None  # b is the puller now
    assert fan.images[REF].puller == "b"


def test_a_broken_source_is_not_used_again() -> None:
    fan = FanOut()
    fan.offer(REF, Source("s1", None, ID, 5))
    fan.offer(REF, Source("s2", None, ID, 5))
    first = fan.acquire(REF, "t", set())
    assert first is not None and first.host == "s1"
    fan.release(REF, "s1", broken=True)
    again = fan.acquire(REF, "t", {"s1"})
    assert again is not None and again.host == "s2"
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
