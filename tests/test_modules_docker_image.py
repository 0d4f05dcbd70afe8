"""docker_image: spec tests (arguments + recorded state -> exact plan) and real runs against a
real dockerd and a real registry (Debian's docker-registry) in a booted Debian host.

Every expectation about the host is read from the host itself (`docker image inspect` over
nsenter), never through the code under test.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.inventory import load_inventory
from provision.modules import MODULES
from provision.modules.base import ArgError, Context, ModuleError, Plan
from provision.modules.docker_image import parse_state, registry_of, state_script
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.lab.docker import import_busybox, install_docker, push, start_docker, start_registry

CTX = Context()
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
ID = "sha256:" + "a" * 64


def plan(args: dict, state: str | None) -> Plan:
    m = MODULES["docker_image"]
    m.check_static(args)
    return m.plan(m.prepare(m.finalize(args), CTX), state, CTX)


def local(found: str, digests: list[str], image_id: str = ID, size: int = 1234) -> str:
    return f"local={found}|{image_id}|{size}|{json.dumps(digests)}"


def remote(*digests: str) -> str:
    docs = [{"Ref": "r", "Descriptor": {"digest": d, "size": 1}} for d in digests]
    return "remote=" + json.dumps(docs[0] if len(docs) == 1 else docs)


# -- spec ----------------------------------------------------------------------------------------


def test_missing_image_is_pulled_with_a_bound_and_its_size_read() -> None:
    p = plan({"name": "reg.example:5000/lab/x:1", "timeout": 90}, "")
    assert p.changed and p.changes == ["pull reg.example:5000/lab/x:1"]
    assert [(s.script, s.stdin) for s in p.steps] == [
        ("timeout 90 docker pull --quiet reg.example:5000/lab/x:1", None),
        (
            "echo size=$(docker image inspect --format '{{.Size}}' reg.example:5000/lab/x:1)",
            None,
        ),
    ]


def test_present_without_refresh_is_a_noop() -> None:
    p = plan({"name": "lab/x:1"}, local("lab/x:1", ["lab/x@" + D1]))
    assert not p.changed and p.steps == []
    assert p.reason == f"lab/x:1 is present ({ID}, refresh: false)"
    assert p.result["size"] == 1234


def test_pinned_digest_found_by_digest_or_by_name() -> None:
    ref = f"lab/x@{D1}"
    assert not plan({"name": ref}, local(ref, ["lab/x@" + D1])).changed
    # Found only under the name (tag) but with that digest: present.
    assert not plan({"name": f"lab/x:1@{D1}"}, local("lab/x:1", ["lab/x@" + D1])).changed
    # Found under the name with another digest: pull the pinned one.
    other = plan({"name": f"lab/x:1@{D2}"}, local("lab/x:1", ["lab/x@" + D1]))
    assert other.changes == [f"pull lab/x:1@{D2} (local lab/x:1 has another digest)"]
    assert other.steps[0].script == f"timeout 600 docker pull --quiet lab/x:1@{D2}"


def test_refresh_compares_the_registry_digest() -> None:
    state = local("lab/x:1", ["lab/x@" + D1])
    same = plan({"name": "lab/x:1", "refresh": True}, state + "\n" + remote(D1))
    assert not same.changed and same.reason == f"lab/x:1 is present and matches the registry ({D1})"
    newer = plan({"name": "lab/x:1", "refresh": True}, state + "\n" + remote(D2))
    assert newer.changes == [f"pull lab/x:1 (registry digest {D2} differs)"]
    # A multi-platform list (its own digest is not printed): the platform's config digest is
    # the local image ID.
    entries = [
        {"Descriptor": {"digest": d}, "SchemaV2Manifest": {"config": {"digest": c}}}
        for d, c in ((D1, "sha256:" + "c" * 64), (D2, ID))
    ]
    listed_state = local("lab/x:1", ["lab/x@" + "sha256:" + "f" * 64]) + "\nremote="
    listed = plan({"name": "lab/x:1", "refresh": True}, listed_state + json.dumps(entries))
    assert not listed.changed
    entries[1]["SchemaV2Manifest"]["config"]["digest"] = "sha256:" + "d" * 64
    stale = plan({"name": "lab/x:1", "refresh": True}, listed_state + json.dumps(entries))
    assert stale.changed
    with pytest.raises(ModuleError, match="cannot read lab/x:1's digest from the registry: no"):
        plan({"name": "lab/x:1", "refresh": True}, state + "\nremote=no such manifest")


def test_absent_removes_only_what_is_there() -> None:
    assert plan({"name": "lab/x:1", "state": "absent"}, "").reason == "lab/x:1 is already absent"
    gone = plan({"name": "lab/x:1", "state": "absent"}, local("lab/x:1", []))
    assert [s.script for s in gone.steps] == ["docker image rm lab/x:1"]
    kept = plan({"name": f"lab/x:1@{D2}", "state": "absent"}, local("lab/x:1", ["lab/x@" + D1]))
    assert not kept.changed  # another digest under the same tag is not the image named


def test_credentials_travel_on_stdin_only() -> None:
    secret = "s3cr3t; rm -rf /"
    p = plan({"name": "reg.example/lab/x:1", "username": "bob", "password": secret}, "")
    login = p.steps[0]
    assert login.script == "docker login --username bob --password-stdin reg.example >/dev/null"
    assert login.stdin == secret.encode()
    assert all(secret not in s.script for s in p.steps)
    assert secret not in json.dumps([p.changes, p.reason, p.result, p.diff])
    hub = plan({"name": "ubuntu:24.04", "username": "bob", "password": "x"}, "")
    assert hub.steps[0].script == "docker login --username bob --password-stdin >/dev/null"


def test_docker_missing_and_bad_arguments() -> None:
    with pytest.raises(ModuleError, match="docker is not installed"):
        plan({"name": "lab/x:1"}, "docker=missing")
    for args, message in [
        ({"name": "lab/x:1", "username": "bob"}, "give both 'username' and 'password'"),
        ({"name": "lab/x@sha256:12"}, "is not an image reference"),
        ({"name": "lab/x", "timeout": 0}, "'timeout' must be a positive"),
        ({"name": "lab/x", "state": "latest"}, "must be one of present, absent"),
    ]:
        with pytest.raises(ArgError, match=message):
            plan(args, "")
    assert registry_of("localhost/x") == "localhost" and registry_of("lab/x") is None


def test_state_snippet_runs_for_real_and_parses(tmp_path: Path) -> None:
    """The snippet runs under sh with a fake `docker` on PATH recording its arguments."""
    fake = tmp_path / "docker"
    fake.write_text(
        '#!/bin/sh\necho "$@" >> "$LOG"\n'
        'case "$*" in *"@sha256"*) exit 1;; "image inspect"*) echo "sha256:ab|42|[\\"lab/x@'
        + D1
        + '\\"]";; "manifest inspect"*) echo "{\\"Descriptor\\": {\\"digest\\": \\"'
        + D2
        + '\\"}}";; esac\n'
    )
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LOG": str(tmp_path / "log")}
    script = state_script("lab/x:1", D1, refresh=False)
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True).stdout
    st = parse_state(out)
    assert st["found"] == "lab/x:1" and st["size"] == 42 and st["digests"] == ["lab/x@" + D1]
    out = subprocess.run(
        ["sh", "-c", state_script("lab/x:1", "", refresh=True)],
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert parse_state(out)["remote"] == [D2]
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls[0].startswith("image inspect --format") and calls[0].endswith(f"lab/x:1@{D1}")
    assert calls[-1] == "manifest inspect -v lab/x:1"
    # Loopback registries are plain HTTP for dockerd; only they get --insecure.
    assert "inspect -v --insecure 127.0.2.9:5000/x:1" in state_script(
        "127.0.2.9:5000/x:1", "", True
    )
    assert "--insecure" not in state_script("reg.example:5000/x:1", "", True)


# -- real dockerd and registry in a booted host --------------------------------------------------


@dataclass
class Lab:
    host: BootedHost
    workdir: Path
    registry: str

    def apply(self, tasks: list[dict], **kw: object) -> PlaybookResult:
        book = self.workdir / "play.yml"
        play = [{"hosts": "all", "gather_facts": False, "tasks": tasks}]
        book.write_text(yaml.safe_dump(play))
        opts = ApplyOptions(known_hosts=(str(self.workdir / "known_hosts"),), **kw)  # type: ignore[arg-type]
        inventory = load_inventory(str(self.workdir / "inventory.ini"))
        return run_playbook(inventory, str(book), opts)

    def image_id(self, ref: str) -> str | None:
        done = self.host.exec(f"docker image inspect --format '{{{{.Id}}}}' {ref}", check=False)
        return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture(scope="module")
def lab(booted_hosts, tmp_path_factory) -> Iterator[Lab]:  # noqa: F811
    host = booted_hosts(1, prefix="dimg")[0]
    install_docker(host)
    start_docker(host)
    workdir = tmp_path_factory.mktemp("docker-image")
    write_inventory([host], workdir / "inventory.ini")
    write_known_hosts([host], workdir / "known_hosts")
    registry = start_registry(host)
    try:
        yield Lab(host, workdir, registry)
    finally:
        host.exec("systemctl stop docker-registry", check=False)


def _task(name: str, **args: object) -> dict:
    return {"name": "image", "docker_image": {"name": name, **args}, "register": "img"}


def test_pull_when_missing_then_nothing(lab: Lab) -> None:
    host = lab.host
    ref = f"{lab.registry}/lab/tiny:1"
    old_id = import_busybox(host, "lab/build:1")
    push(host, "lab/build:1", ref)
    host.exec(f"docker image rm {ref} lab/build:1 >/dev/null")
    assert lab.image_id(ref) is None

    # --check: would pull, and the host still has no image.
    checked = lab.apply([_task(ref)], check=True)
    (r,) = checked.results
    assert r.status == "changed" and r.msg == f"would pull {ref}"
    assert lab.image_id(ref) is None

    first = lab.apply([_task(ref, timeout=60, username="lab", password="pw-Secret-9")])
    (r,) = first.results
    assert r.status == "changed", r.msg
    assert lab.image_id(ref) == old_id
    size = int(host.exec(f"docker image inspect --format '{{{{.Size}}}}' {ref}").stdout)
    assert r.data["bytes"] == size > 0
    assert 0 < r.data["seconds"] < 60
    assert "pw-Secret-9" not in json.dumps([r.msg, r.data, r.changes])

    again = lab.apply([_task(ref)])
    assert {h: s.changed for h, s in again.stats.items()} == {host.name: 0}
    assert again.results[0].msg.startswith(f"{ref} is present ({old_id}")

    # A new image under the same tag in the registry; the host keeps the old one.
    new_id = import_busybox(host, "lab/build:2", extra_file="v2")
    push(host, "lab/build:2", ref)
    host.exec(f"docker tag {old_id} {ref} && docker image rm lab/build:2 >/dev/null")
    assert lab.image_id(ref) == old_id != new_id
    plain = lab.apply([_task(ref)])
    assert plain.results[0].status == "ok" and lab.image_id(ref) == old_id
    refreshed = lab.apply([_task(ref, refresh=True)])
    (r,) = refreshed.results
    assert r.status == "changed" and "differs" in r.msg, r.msg
    assert lab.image_id(ref) == new_id
    assert r.data["bytes"] == int(
        host.exec(f"docker image inspect --format '{{{{.Size}}}}' {ref}").stdout
    )
    same = lab.apply([_task(ref, refresh=True)])
    assert same.results[0].status == "ok", same.results[0].msg
    assert "matches the registry" in same.results[0].msg


def test_image_missing_in_the_registry_fails_clearly(lab: Lab) -> None:
    ref = f"{lab.registry}/lab/nope:1"
    result = lab.apply([_task(ref, timeout=30)])
    (r,) = result.results
    assert r.status == "failed" and result.exit_code == 2
    assert f"docker pull --quiet {ref}" in r.msg and "failed (exit 1)" in r.msg, r.msg
    assert "not found" in r.msg or "manifest unknown" in r.msg, r.msg
    assert lab.image_id(ref) is None
