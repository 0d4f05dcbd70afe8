"""docker_image: spec tests (arguments + recorded state -> exact plan) and real runs against a
real dockerd and a real registry (Debian's docker-registry) in a booted Debian host.

Every expectation about the host is read from the host itself (`docker image inspect`, `df`, the
registry's HTTP API, all over nsenter), never through the code under test. The manifests below
were recorded from `docker manifest inspect -v` against that lab registry.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.image_refs import registry_of
from provision.inventory import load_inventory
from provision.modules import MODULES
from provision.modules import docker_image as dimg
from provision.modules.base import ArgError, Context, ModuleError, Plan
from provision.modules.docker_image import (
    compressed_size,
    is_transient,
    parse_state,
    retry_delays,
    state_script,
)
from provision.results import human_bytes
from provision.ssh import CommandResult
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


def _manifest(ref: str, arch: str, layer: int, variant: str | None = None) -> dict:
    platform = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
    return {
        "Ref": ref,
        "Descriptor": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": "sha256:b819a288e9270a92ea907baed49a5988e16692d461bc468bfd59aec4ba5e3c30",
            "size": 527,
            "platform": platform,
        },
        "SchemaV2Manifest": {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 895,
                "digest": "sha256:fc5976ff4c4755cd7acb6c4d6a3c34400f9f892f04914cb2b7825a371be562fc",
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": layer,
                    "digest": "sha256:be1c9d1eb302b965a6dbaf7d9d09d0d1"
                    "891733124dd07a88f02dca2846539e0f",
                }
            ],
        },
    }


# Recorded: one manifest (a busybox import) and a list of it plus an arm64/v8 one.
SINGLE = _manifest("127.0.2.10:5000/lab/tiny:1", "amd64", 1064365)
MULTI = [
    _manifest("127.0.2.10:5000/lab/arm:1", "arm64", 1064400, "v8"),
    _manifest("127.0.2.10:5000/lab/tiny:1", "amd64", 1064365),
]
ROOT = "root=/var/lib/docker|linux|x86_64"


def plan(args: dict, state: str | None) -> Plan:
    m = MODULES["docker_image"]
    m.check_static(args)
    return m.plan(m.prepare(m.finalize(args), CTX), state, CTX)


def local(found: str, digests: list[str], image_id: str = ID, size: int = 1234) -> str:
    return f"local={found}|{image_id}|{size}|{json.dumps(digests)}"


def remote(*digests: str) -> str:
    docs = [{"Ref": "r", "Descriptor": {"digest": d, "size": 1}} for d in digests]
    return "remote=" + json.dumps(docs[0] if len(docs) == 1 else docs)


def missing(free: int = 85_000_000_000, manifest: object = SINGLE, root: str = ROOT) -> str:
    """What the state read prints for an image that is not on the host yet."""
    return f"{root}\nfree={free}\nremote=" + json.dumps(manifest)


# -- spec ----------------------------------------------------------------------------------------


def test_missing_image_is_pulled_with_a_bound_and_its_size_read() -> None:
    p = plan({"name": "reg.example:5000/lab/x:1", "timeout": 90}, missing())
    assert p.changed and p.changes == ["pull reg.example:5000/lab/x:1"]
    assert [(s.script, s.stdin) for s in p.steps] == [
        ("timeout 90 docker pull --quiet reg.example:5000/lab/x:1", None),
        (
            "echo size=$(docker image inspect --format '{{.Size}}' reg.example:5000/lab/x:1)",
            None,
        ),
    ]
    assert p.result["compressed_bytes"] == 1064365 and p.result["free_bytes"] == 85_000_000_000
    assert p.result["needed_bytes"] == math.ceil(2.5 * 1064365)
    assert p.result["data_root"] == "/var/lib/docker" and p.result["disk_check"] == "ok"


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
    state = local("lab/x:1", ["lab/x@" + D1]) + "\n" + missing()
    other = plan({"name": f"lab/x:1@{D2}"}, state)
    assert other.changes == [f"pull lab/x:1@{D2} (local lab/x:1 has another digest)"]
    assert other.steps[0].script == f"timeout 600 docker pull --quiet lab/x:1@{D2}"


def test_refresh_compares_the_registry_digest() -> None:
    state = local("lab/x:1", ["lab/x@" + D1]) + f"\n{ROOT}\nfree=100"
    same = plan({"name": "lab/x:1", "refresh": True}, state + "\n" + remote(D1))
    assert not same.changed and same.reason == f"lab/x:1 is present and matches the registry ({D1})"
    newer = plan({"name": "lab/x:1", "refresh": True, "disk_factor": 0}, state + "\n" + remote(D2))
    assert newer.changes == [f"pull lab/x:1 (registry digest {D2} differs)"]
    # A multi-platform list (its own digest is not printed): the platform's config digest is
    # the local image ID.
    entries: list[dict[str, Any]] = [  # as `docker manifest inspect -v` prints them
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


def test_refresh_pull_is_checked_against_the_same_registry_answer() -> None:
    single = dict(SINGLE, Descriptor={**SINGLE["Descriptor"], "digest": D2})
    state = local("lab/x:1", ["lab/x@" + D1], image_id=ID) + f"\n{ROOT}\nfree=2000000"
    with pytest.raises(ModuleError, match=r"lab/x:1 needs about 2\.7 MB"):
        plan({"name": "lab/x:1", "refresh": True}, state + "\nremote=" + json.dumps(single))


def test_absent_removes_only_what_is_there() -> None:
    assert plan({"name": "lab/x:1", "state": "absent"}, "").reason == "lab/x:1 is already absent"
    gone = plan({"name": "lab/x:1", "state": "absent"}, local("lab/x:1", []))
    assert [s.script for s in gone.steps] == ["docker image rm lab/x:1"]
    kept = plan({"name": f"lab/x:1@{D2}", "state": "absent"}, local("lab/x:1", ["lab/x@" + D1]))
    assert not kept.changed  # another digest under the same tag is not the image named


def test_credentials_travel_on_stdin_only() -> None:
    secret = "s3cr3t; rm -rf /"
    p = plan({"name": "reg.example/lab/x:1", "username": "bob", "password": secret}, missing())
    login = p.steps[0]
    assert login.script == "docker login --username bob --password-stdin reg.example >/dev/null"
    assert login.stdin == secret.encode()
    assert all(secret not in s.script for s in p.steps)
    assert secret not in json.dumps([p.changes, p.reason, p.result, p.diff])
    hub = plan({"name": "ubuntu:24.04", "username": "bob", "password": "x"}, missing())
    assert hub.steps[0].script == "docker login --username bob --password-stdin >/dev/null"


def test_empty_username_means_no_login() -> None:
    for creds in ({"username": "", "password": ""}, {"username": " "}, {"password": ""}):
        p = plan({"name": "reg.example/lab/x:1", **creds}, missing())
        assert len(p.steps) == 2 and "docker pull" in p.steps[0].script
        assert all(s.stdin is None and "login" not in s.script for s in p.steps)
    # A playbook passes both through templates with "" defaults: fine at load time.
    MODULES["docker_image"].check_static(
        {"name": "x", "username": "{{ images_registry_username }}", "password": "{{ pw }}"}
    )


def test_docker_missing_and_bad_arguments() -> None:
    with pytest.raises(ModuleError, match="docker is not installed"):
        plan({"name": "lab/x:1"}, "docker=missing")
    bad: list[tuple[dict[str, object], str]] = [
        ({"name": "lab/x:1", "username": "bob"}, "'username' needs a 'password'"),
        ({"name": "lab/x:1", "username": "", "password": "pw"}, "a 'password' without a 'user"),
        ({"name": "lab/x:1", "password": "pw"}, "a 'password' without a 'username'"),
        ({"name": "lab/x@sha256:12"}, "is not an image reference"),
        ({"name": "lab/x", "timeout": 0}, "'timeout' must be a positive"),
        ({"name": "lab/x", "state": "latest"}, "must be one of present, absent"),
        ({"name": "lab/x", "retries": -1}, "'retries' must be 0 or more"),
        ({"name": "lab/x", "retry_delay": "soon"}, "'retry_delay' must be a number"),
        ({"name": "lab/x", "disk_factor": -1}, "'disk_factor' must be a number >= 0"),
        ({"name": "lab/x", "disk_factor": True}, "'disk_factor' must be a number, got a bool"),
    ]
    for args, message in bad:
        with pytest.raises(ArgError, match=message):
            plan(args, "")
    assert registry_of("localhost/x") == "localhost" and registry_of("lab/x") is None
    m = MODULES["docker_image"]
    typed = m.finalize({"name": "x", "disk_factor": "1.5", "retry_delay": "0.5"})
    assert (typed["disk_factor"], typed["retry_delay"], typed["retries"]) == (1.5, 0.5, 2)


def test_disk_preflight_refuses_a_pull_that_cannot_fit() -> None:
    ref = "reg.example/lab/big:1"
    with pytest.raises(ModuleError) as refused:
        plan({"name": ref}, missing(free=2_000_000))
    assert str(refused.value) == (
        f"{ref} needs about 2.7 MB (2.5 x the compressed size 1.1 MB, for extraction), "
        "2.0 MB free on /var/lib/docker; free space or set docker_data_root"
    )
    nvcr = [dict(SINGLE, SchemaV2Manifest={"layers": [{"size": 6_000_000_000}] * 2})]
    nvcr[0]["Descriptor"] = {"platform": {"os": "linux", "architecture": "amd64"}}
    with pytest.raises(ModuleError, match=r"needs about 42\.0 GB \(3\.5 x the compressed size 12"):
        plan({"name": ref, "disk_factor": 3.5}, missing(free=40_000_000_000, manifest=nvcr))
    # Exactly enough, a smaller factor, or the check disabled: pull.
    assert plan({"name": ref}, missing(free=math.ceil(2.5 * 1064365))).changed
    assert plan({"name": ref, "disk_factor": 1}, missing(free=2_000_000)).changed
    off = plan({"name": ref, "disk_factor": 0}, missing(free=1))
    assert (
        off.changes == [f"pull {ref}"] and off.result["disk_check"] == "disabled (disk_factor: 0)"
    )


def test_disk_preflight_is_skipped_with_a_note_when_nobody_can_tell() -> None:
    ref = "reg.example/lab/x:1"
    cases = [
        (
            missing(manifest="x").replace('remote="x"', "remote=no such manifest: " + ref),
            f"the registry did not tell the image's size: no such manifest: {ref}",
        ),
        (missing(root="root="), "docker info gave no root dir"),
        (missing().replace("free=85000000000", "free="), "free space on /var/lib/docker is"),
        (
            missing(manifest=[SINGLE], root="root=/var/lib/docker|linux|s390x"),
            "the registry lists no image for linux/s390x",
        ),
        (
            missing(manifest={"schemaVersion": 1, "Descriptor": {}}),
            "the registry's manifest gives no layer sizes",
        ),
    ]
    for state, note in cases:
        p = plan({"name": ref}, state)
        assert p.changed and len(p.changes) == 1, state
        assert p.changes[0].startswith(f"pull {ref} (disk space not checked: "), p.changes
        assert note in p.changes[0] and note in p.result["disk_check"], (note, p.changes)


def test_multi_platform_list_counts_the_hosts_platform() -> None:
    text = json.dumps(MULTI)
    assert compressed_size(text, ("linux", "x86_64")) == (1064365, None)
    assert compressed_size(text, ("linux", "aarch64")) == (1064400, None)
    assert compressed_size(json.dumps(SINGLE), None) == (1064365, None)
    assert compressed_size(text, None)[0] is None
    assert human_bytes(999) == "999 B" and human_bytes(1_250_000_000) == "1.2 GB"


# Real messages: dockerd's (recorded in the lab) and Go's net/http wording for the others.
TRANSIENT = [
    'Error response from daemon: Get "http://127.0.2.10:5000/v2/": dial tcp 127.0.2.10:5000: '
    "connect: connection refused",
    'Error response from daemon: Get "https://nvcr.io/v2/": net/http: TLS handshake timeout',
    'Error response from daemon: Get "https://r/v2/": read tcp 1.2.3.4:5->6.7.8.9:443: read: '
    "connection reset by peer",
    "Error response from daemon: received unexpected HTTP status: 503 Service Unavailable",
    "Error response from daemon: 502 Bad Gateway",
    'Get "https://r/v2/x/blobs/sha256:ab": unexpected EOF',
    "Error response from daemon: Get https://r/v2/: net/http: request canceled "
    "(Client.Timeout exceeded while awaiting headers)",
    "timed out after 600 s",
    "dial tcp: lookup nvcr.io: Temporary failure in name resolution",
]
FINAL = [
    "Error response from daemon: manifest for 127.0.2.10:5000/lab/nope:1 not found: "
    "manifest unknown: manifest unknown",
    "Error response from daemon: pull access denied for lab/x, repository does not exist",
    "Error response from daemon: Head https://nvcr.io/v2/x/manifests/1: unauthorized: "
    "authentication required",
    "write /var/lib/docker/tmp/GetImageBlob1: no space left on device",
    'Error response from daemon: Get "https://reg.exmaple/v2/": dial tcp: lookup reg.exmaple '
    "on 10.0.0.1:53: no such host",
    "invalid reference format",
    "Error response from daemon: unauthorized: 503-page says EOF",  # final wins over transient
]


def test_only_transient_errors_are_retried() -> None:
    assert [m for m in TRANSIENT if not is_transient(m)] == []
    assert [m for m in FINAL if is_transient(m)] == []
    assert retry_delays(3, 5) == [5, 10, 20] and retry_delays(0, 5) == []


class ScriptedSession:
    """Answers each command with the next recorded result (the retry loop's own logic only;
    the real dockerd and registry are exercised in the lab tests below)."""

    name = "scripted"

    def __init__(self, answers: list[tuple[int, str, str]]) -> None:
        self.answers = list(answers)
        self.commands: list[str] = []

    def run(self, command: str, **_: object) -> CommandResult:
        self.commands.append(command)
        rc, out, err = self.answers.pop(0)
        return CommandResult(command, rc, out, err, 0.0)


def _execute(answers: list[tuple[int, str, str]], monkeypatch, **args: object):
    waits: list[float] = []
    monkeypatch.setattr(dimg, "_sleep", waits.append)
    m = MODULES["docker_image"]
    assert isinstance(m, dimg.DockerImageModule)  # the module with its own execute step
    typed = m.finalize({"name": "reg.example/x:1", **args})
    p = m.plan(typed, missing(), CTX)
    session = ScriptedSession(answers)
    try:
        return m.execute(typed, p, session, lambda: None, None), waits, session.commands
    except ModuleError as exc:
        return exc, waits, session.commands


def test_execute_retries_transient_failures_with_doubling_back_off(monkeypatch) -> None:
    refused = (1, "", TRANSIENT[0])
    ok = [(0, "", ""), (0, "size=42\n", "")]
    data, waits, commands = _execute([refused, refused, *ok], monkeypatch, retry_delay=3)
    assert waits == [3, 6] and data["attempts"] == 3 and data["bytes"] == 42
    assert [c.split()[3] for c in commands] == ["pull", "pull", "pull", "inspect"]
    # Out of retries: the last error, with the count.
    error, waits, _ = _execute([refused] * 3, monkeypatch)
    assert waits == [5, 10] and error.data == {"attempts": 3}
    assert str(error).startswith("timeout 600 docker pull --quiet reg.example/x:1 failed (exit 1)")
    assert "after 3 attempts: " in str(error) and "connection refused" in str(error)
    # Final errors and retries: 0 fail at once.
    error, waits, _ = _execute([(1, "", FINAL[0])], monkeypatch)
    assert waits == [] and error.data == {"attempts": 1} and "attempts" not in str(error)
    error, waits, _ = _execute([refused], monkeypatch, retries=0)
    assert waits == [] and "connection refused" in str(error)
    # The login is retried too (a registry that is down refuses it first).
    login = {"username": "bob", "password": "pw"}
    data, waits, commands = _execute([refused, (0, "", ""), *ok], monkeypatch, **login)
    assert waits == [5] and data["attempts"] == 2
    assert [c.split()[1] for c in commands] == ["login", "login", "600", "size=$(docker"]


def test_state_snippet_runs_for_real_and_parses(tmp_path: Path) -> None:
    """The snippet runs under sh with a fake `docker` (and `df`) on PATH recording arguments."""
    fake = tmp_path / "docker"
    fake.write_text(
        '#!/bin/sh\necho "$@" >> "$LOG"\n'
        'case "$*" in *"@sha256"*) exit 1;; "image inspect"*lab/x:1) echo "sha256:ab|42|[\\"lab/x@'
        + D1
        + '\\"]";; "image inspect"*) exit 1;; info*) echo "/srv/docker|linux|x86_64";; '
        + '"manifest inspect"*) echo "{\\"Descriptor\\": {\\"digest\\": \\"'
        + D2
        + '\\"}, \\"SchemaV2Manifest\\": {\\"layers\\": [{\\"size\\": 7}, {\\"size\\": 5}]}}";; '
        + "esac\n"
    )
    df = tmp_path / "df"
    df.write_text('#!/bin/sh\necho "$@" >> "$LOG"\nprintf "      Avail\\n 123456\\n"\n')
    for f in (fake, df):
        f.chmod(0o755)
    log = tmp_path / "log"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LOG": str(log)}

    def read(script: str) -> tuple[dict, list[str]]:
        log.write_text("")
        out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
        return parse_state(out.stdout), log.read_text().splitlines()

    # Present: one inspect, no docker info, no df, no registry (a converged run stays local).
    st, calls = read(state_script("lab/x:1", "", refresh=False, disk=True))
    assert st["found"] == "lab/x:1" and st["size"] == 42 and st["digests"] == ["lab/x@" + D1]
    assert len(calls) == 1 and calls[0].startswith("image inspect --format")
    # Pinned digest: name@digest first, then the pin tag of an image received over the LAN,
    # then the name (found there: a pull may follow).
    st, calls = read(state_script("lab/x:1", D1, refresh=False, disk=True))
    assert calls[0].endswith(f"lab/x:1@{D1}") and calls[2].endswith(" lab/x:1")
    assert calls[1].endswith(" lab/x:sha256-" + "1" * 64)
    assert calls[-1] == f"manifest inspect -v lab/x:1@{D1}"
    # Missing: root dir, free space there, the registry's sizes.
    st, calls = read(state_script("lab/y:1", "", refresh=False, disk=True))
    assert st["found"] is None and calls[1:] == [
        "info --format {{.DockerRootDir}}|{{.OSType}}|{{.Architecture}}",
        "-B1 --output=avail /srv/docker",
        "manifest inspect -v lab/y:1",
    ]
    assert (st["data_root"], st["free"], st["compressed"]) == ("/srv/docker", 123456, 12)
    # disk_factor 0 and no refresh: no registry call even when missing.
    st, calls = read(state_script("lab/y:1", "", refresh=False, disk=False))
    assert len(calls) == 1 and "remote" not in st
    # Refresh: the registry is asked even when present.
    st, calls = read(state_script("lab/x:1", "", refresh=True))
    assert st["remote"] == [D2] and calls[-1] == "manifest inspect -v lab/x:1"
    # Loopback registries are plain HTTP for dockerd; only they get --insecure.
    assert "inspect -v --insecure 127.0.2.9:5000/x:1" in state_script(
        "127.0.2.9:5000/x:1", "", True
    )
    assert "--insecure" not in state_script("reg.example:5000/x:1", "", True)
    m = MODULES["docker_image"]
    args = m.finalize({"name": "lab/y:1", "disk_factor": 0})
    without_disk = m.state_script(args, CTX)
    absent = m.state_script(m.finalize({"name": "y", "state": "absent"}), CTX)
    assert without_disk is not None and "manifest" not in without_disk
    assert absent is not None and "manifest" not in absent


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

    def layer_sizes(self, repo: str, tag: str) -> list[int]:
        """Layer sizes straight from the registry's HTTP API (not through docker)."""
        code = (
            "import json, urllib.request as u; r = u.Request("
            f"'http://{self.registry}/v2/{repo}/manifests/{tag}', headers={{'Accept': "
            "'application/vnd.docker.distribution.manifest.v2+json'}); "
            "print(json.dumps([x['size'] for x in json.load(u.urlopen(r))['layers']]))"
        )
        return json.loads(self.host.exec(f'python3 -c "{code}"').stdout)


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
    assert r.data["attempts"] == 1
    assert r.data["compressed_bytes"] == sum(lab.layer_sizes("lab/tiny", "1"))
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


def test_image_missing_in_the_registry_fails_at_once(lab: Lab) -> None:
    ref = f"{lab.registry}/lab/nope:1"
    started = time.monotonic()
    result = lab.apply([_task(ref, timeout=30, retries=3, retry_delay=30)])
    elapsed = time.monotonic() - started
    (r,) = result.results
    assert r.status == "failed" and result.exit_code == 2
    assert f"docker pull --quiet {ref}" in r.msg and "failed (exit 1): " in r.msg, r.msg
    assert "not found" in r.msg or "manifest unknown" in r.msg, r.msg
    assert elapsed < 25, f"not found must not be retried (took {elapsed:.1f} s)"
    assert lab.image_id(ref) is None


def test_registry_that_comes_back_during_the_back_off(lab: Lab, monkeypatch) -> None:
    """The registry is down for the state read and the first pull; it starts during the first
    back-off wait, and the second attempt pulls. No login: the username is empty."""
    host = lab.host
    ref = f"{lab.registry}/lab/later:1"
    import_busybox(host, "lab/build:later", extra_file="later")
    push(host, "lab/build:later", ref)
    host.exec(f"docker image rm {ref} lab/build:later >/dev/null; rm -f /root/.docker/config.json")
    host.exec("systemctl stop docker-registry")
    waits: list[float] = []
    starter: list[threading.Thread] = []

    def back_off(seconds: float) -> None:
        waits.append(seconds)
        if not starter:  # first failure seen: bring the registry up while we wait
            starter.append(threading.Thread(target=start_registry, args=(host,)))
            starter[0].start()
        time.sleep(seconds)

    monkeypatch.setattr(dimg, "_sleep", back_off)
    try:
        result = lab.apply([_task(ref, retries=2, retry_delay=3, username="", password="")])
    finally:
        for t in starter:
            t.join()
        start_registry(host)  # idempotent: the registry stays up for later tests
    (r,) = result.results
    assert r.status == "changed", r.msg
    assert waits == [3] and r.data["attempts"] == 2
    assert lab.image_id(ref) is not None
    # The state read could not ask the registry either: pulled without a disk check, said so.
    assert r.data["disk_check"].startswith("disk space not checked: the registry did not tell")
    assert "connection refused" in r.msg, r.msg
    assert host.exec("test -e /root/.docker/config.json", check=False).returncode == 1


def test_disk_preflight_on_a_multi_platform_list(lab: Lab) -> None:
    """A real manifest list (amd64 + arm64/v8): the host's entry is counted; a huge
    disk_factor refuses before anything is pulled, in --check too."""
    host = lab.host
    ref = f"{lab.registry}/lab/multi:1"
    amd = f"{lab.registry}/lab/multi-amd:1"
    arm = f"{lab.registry}/lab/multi-arm:1"
    amd_id = import_busybox(host, "lab/build:amd", extra_file="amd64")
    push(host, "lab/build:amd", amd)
    import_busybox(host, "lab/build:arm", extra_file="arm64 and longer")
    push(host, "lab/build:arm", arm)
    host.exec(
        f"docker manifest rm {ref} >/dev/null 2>&1; "
        f"docker manifest create --insecure {ref} {amd} {arm} >/dev/null && "
        f"docker manifest annotate {ref} {arm} --os linux --arch arm64 --variant v8 && "
        f"docker manifest push --purge --insecure {ref} >/dev/null && "
        f"docker image rm {amd} {arm} lab/build:amd lab/build:arm >/dev/null"
    )
    amd_size = sum(lab.layer_sizes("lab/multi-amd", "1"))
    assert amd_size != sum(lab.layer_sizes("lab/multi-arm", "1"))

    for check in (True, False):
        refused = lab.apply([_task(ref, disk_factor=1e9)], check=check)
        (r,) = refused.results
        assert r.status == "failed" and refused.exit_code == 2, r.msg
        m = re.search(
            r"needs about ([\d.]+) TB \(1e\+09 x the compressed size ([\d.]+) MB, for "
            r"extraction\), ([\d.]+) GB free on (/\S+); free space or set docker_data_root$",
            r.msg,
        )
        assert m, r.msg
        assert m.group(2) == f"{amd_size / 1e6:.1f}" and m.group(4) == "/var/lib/docker"
        free = int(host.exec("df -B1 --output=avail /var/lib/docker | tail -n 1").stdout)
        assert abs(float(m.group(3)) - free / 1e9) < 0.2
        assert lab.image_id(ref) is None

    pulled = lab.apply([_task(ref)])
    (r,) = pulled.results
    assert r.status == "changed" and r.msg == f"pull {ref}", r.msg
    assert r.data["compressed_bytes"] == amd_size and r.data["disk_check"] == "ok"
    assert r.data["needed_bytes"] == math.ceil(2.5 * amd_size) < r.data["free_bytes"]
    assert lab.image_id(ref) == amd_id  # the list's amd64 entry, as dockerd chose it
