"""The `apt_repository` module: spec tests (arguments + recorded state -> exact plan) with real
throwaway gpg keys, and real runs on a booted Debian host against a local signed flat repository
(tests/lab/aptrepo.py) holding a stand-in package.

Assertions about the host's state are made inside the host (nsenter), never through the code
under test.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.inventory import load_inventory
from provision.modules import MODULES
from provision.modules.apt_repository import (
    dearmor,
    keyring_path,
    normalize_fingerprint,
    primary_fingerprints,
    sources_path,
)
from provision.modules.base import ArgError, Context, ModuleError, Plan
from tests.lab.aptrepo import STANDIN_OUTPUT, STANDIN_PACKAGE, AptRepo, start_repo
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)

CTX = Context()
APT = (
    "DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get -y -q "
    "-o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef "
    "-o Dpkg::Options::=--force-confold update"
    " && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AptRepo]:
    """Two throwaway keys only (no repository, no server): enough for the spec tests."""
    repo = AptRepo(tmp_path_factory.mktemp("aptkeys"))
    try:
        yield repo.make_keys()
    finally:
        repo.close()


def key_file(keys: AptRepo, name: str = "key.asc") -> str:
    return f"file://{keys.root / 'repo' / name}"


def spaced(fpr: str) -> str:
    """The fingerprint as vendors print it: groups of four, spaces."""
    return " ".join(fpr[i : i + 4] for i in range(0, len(fpr), 4))


def plan(args: dict, state: str | None, ctx: Context = CTX) -> Plan:
    m = MODULES["apt_repository"]
    final = m.prepare(m.finalize(args), ctx)
    return m.plan(final, state, ctx)


def repo_state(sources: bytes | None = None, keyring: bytes | None = None) -> str:
    """What the module's state snippet prints for a host with these files (None: absent)."""
    lines = []
    for part, data in (("sources", sources), ("keyring", keyring)):
        lines.append(f"@@{part}")
        if data is None:
            lines.append("type=absent")
        else:
            lines += ["type=file", "owner=root", "uid=0", "group=root", "gid=0", "mode=644"]
            lines.append(f"sha256={hashlib.sha256(data).hexdigest()}")
    return "\n".join(lines)


def args_for(keys: AptRepo, **extra: object) -> dict:
    return {
        "name": "lab",
        "uris": "http://127.0.0.1:8080/",
        "suites": "./",
        "key_url": key_file(keys),
        "key_fingerprint": spaced(keys.fingerprint),
        **extra,
    }


SOURCES = (
    b"Types: deb\nURIs: http://127.0.0.1:8080/\nSuites: ./\nSigned-By: /etc/apt/keyrings/lab.gpg\n"
)


# -- spec tests ----------------------------------------------------------------------------------


def test_dearmor_and_fingerprint_match_gpg(keys: AptRepo) -> None:
    armored = (keys.root / "repo" / "key.asc").read_bytes()
    env = {**os.environ, "GNUPGHOME": str(keys._gnupg)}
    by_gpg = subprocess.run(
        ["gpg", "--dearmor"], input=armored, capture_output=True, env=env, check=True
    ).stdout
    assert dearmor(armored) == by_gpg
    assert dearmor(by_gpg) == by_gpg  # binary stays as is
    assert primary_fingerprints(by_gpg) == [keys.fingerprint]
    assert normalize_fingerprint(spaced(keys.fingerprint.lower())) == keys.fingerprint


def test_new_repository_writes_keyring_then_source_then_updates(keys: AptRepo) -> None:
    p = plan(args_for(keys, update_cache=True), repo_state())
    binary = dearmor((keys.root / "repo" / "key.asc").read_bytes())
    assert p.changed
    assert p.changes == [
        f"create /etc/apt/keyrings/lab.gpg ({len(binary)} bytes), key {keys.fingerprint}",
        f"create /etc/apt/sources.list.d/lab.sources ({len(SOURCES)} bytes)",
        "update the package cache",
    ]
    keyring, sources, update = p.steps
    assert keyring.stdin == binary
    assert keyring.script.startswith("mkdir -p -m 755 /etc/apt/keyrings\nset -e\nd=/etc/apt/")
    assert "chmod 644" in keyring.script and 'mv -f "$t" "$d"' in keyring.script
    assert sources.stdin == SOURCES
    assert "d=/etc/apt/sources.list.d/lab.sources" in sources.script
    assert update.script == APT and update.stdin is None


def test_components_architectures_and_several_suites_in_the_source(keys: AptRepo) -> None:
    args = args_for(keys, suites=["bookworm", "bookworm-updates"], components=["main", "contrib"])
    args["architectures"] = "amd64"
    args["uris"] = ["https://a.example/debian", "https://b.example/debian"]
    p = plan(args, repo_state())
    assert p.steps[1].stdin == (
        b"Types: deb\nURIs: https://a.example/debian https://b.example/debian\n"
        b"Suites: bookworm bookworm-updates\nComponents: main contrib\n"
        b"Architectures: amd64\nSigned-By: /etc/apt/keyrings/lab.gpg\n"
    )


def test_unchanged_files_are_a_noop_and_do_not_update_the_cache(keys: AptRepo) -> None:
    binary = dearmor((keys.root / "repo" / "key.asc").read_bytes())
    p = plan(args_for(keys, update_cache=True), repo_state(SOURCES, binary))
    assert not p.changed and p.steps == []
    assert p.reason == (
        "/etc/apt/sources.list.d/lab.sources and /etc/apt/keyrings/lab.gpg are up to date "
        f"(key {keys.fingerprint})"
    )


def test_an_unreadable_keyring_with_the_right_key_gets_its_mode_back(keys: AptRepo) -> None:
    binary = dearmor((keys.root / "repo" / "key.asc").read_bytes())
    state = repo_state(SOURCES, binary).replace("mode=644", "mode=600", 2)
    state = state.replace("mode=600", "mode=644", 1)  # the source is fine, the keyring is 600
    p = plan(args_for(keys), state)
    assert p.changes == ["/etc/apt/keyrings/lab.gpg: mode 600 -> 644"]
    assert [s.script for s in p.steps] == ["set -e\nchmod 644 /etc/apt/keyrings/lab.gpg"]


def test_only_a_changed_source_is_rewritten_with_a_backup_and_diff(keys: AptRepo) -> None:
    binary = dearmor((keys.root / "repo" / "key.asc").read_bytes())
    old = SOURCES.replace(b"8080", b"9090")
    state = repo_state(old, binary).replace(
        "@@keyring", "content=" + base64.b64encode(old).decode() + "\n@@keyring"
    )
    p = plan(args_for(keys), state, Context(diff=True))
    assert p.changes == [f"update /etc/apt/sources.list.d/lab.sources ({len(SOURCES)} bytes)"]
    (step,) = p.steps
    assert step.stdin == SOURCES and 'cp -p "$d" "$b"' in step.script
    assert p.diff is not None
    assert "-URIs: http://127.0.0.1:9090/" in p.diff and "+URIs: http://127.0.0.1:8080/" in p.diff


def test_wrong_key_is_refused_naming_both_fingerprints(keys: AptRepo) -> None:
    args = args_for(keys, key_url=key_file(keys, "wrong.asc"))
    with pytest.raises(ModuleError) as err:
        plan(args, repo_state())
    msg = str(err.value)
    assert f"expected {keys.fingerprint}, got {keys.wrong_fingerprint}" in msg
    assert "nothing was written" in msg


def test_state_absent_removes_both_files_or_is_a_noop() -> None:
    args = {"name": "lab", "state": "absent", "update_cache": True}
    p = plan(args, repo_state(SOURCES, b"k"))
    assert p.changes == [
        "remove /etc/apt/sources.list.d/lab.sources",
        "remove /etc/apt/keyrings/lab.gpg",
        "update the package cache",
    ]
    assert p.steps[0].script == (
        "rm -f -- /etc/apt/sources.list.d/lab.sources /etc/apt/keyrings/lab.gpg"
    )
    assert p.steps[1].script == APT
    gone = plan(args, repo_state())
    assert not gone.changed and gone.reason.endswith("are already absent")


def test_argument_errors(keys: AptRepo) -> None:
    m = MODULES["apt_repository"]
    with pytest.raises(ArgError, match="FULL fingerprint"):
        m.check_static(args_for(keys, key_fingerprint=keys.fingerprint[-16:]))
    with pytest.raises(ArgError, match="'components' is required"):
        m.check_static(args_for(keys, suites="bookworm"))
    with pytest.raises(ArgError, match="takes no components"):
        m.check_static(args_for(keys, components="main"))
    with pytest.raises(ArgError, match="missing required argument 'key_fingerprint'"):
        m.check_static({k: v for k, v in args_for(keys).items() if k != "key_fingerprint"})
    with pytest.raises(ArgError, match="must be letters"):
        m.check_static(args_for(keys, name="../evil"))
    with pytest.raises(ModuleError, match="exists and is a directory"):
        plan(args_for(keys), repo_state().replace("type=absent", "type=directory", 1))


def test_state_snippet_runs_for_real() -> None:
    m = MODULES["apt_repository"]
    args = m.finalize({"name": "no-such-repo-xyz", "state": "absent"})
    script = m.state_script(args, CTX)
    assert script is not None
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    p = m.plan(args, done.stdout, CTX)
    assert not p.changed
    assert sources_path("x") == "/etc/apt/sources.list.d/x.sources"
    assert keyring_path("x") == "/etc/apt/keyrings/x.gpg"


# -- booted host ---------------------------------------------------------------------------------

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: repo
      apt_repository:
        name: "{{ repo_name | default('provision-lab') }}"
        uris: "{{ repo_url }}"
        suites: "{{ repo_suite | default('./') }}"
        key_url: "{{ key_url }}"
        key_fingerprint: "{{ fingerprint }}"
        update_cache: true
      tags: [repo]
    - name: standin
      apt:
        name: provision-standin-hello
"""


class Lab:
    def __init__(self, host: BootedHost, repo: AptRepo, workdir: Path) -> None:
        self.host = host
        self.repo = repo
        self.workdir = workdir
        self.known_hosts = write_known_hosts([host], workdir / "known_hosts")
        self.inventory = write_inventory([host], workdir / "hosts.ini")
        (workdir / "repo.yml").write_text(PLAY)

    def apply(
        self, check: bool = False, tags: tuple[str, ...] = (), **extra: object
    ) -> PlaybookResult:
        variables = {
            "repo_url": self.repo.url,
            "key_url": self.repo.key_url,
            "fingerprint": spaced(self.repo.fingerprint),
            **extra,
        }
        opts = ApplyOptions(
            known_hosts=(str(self.known_hosts),),
            extra_vars=variables,
            connect_timeout=5.0,
            check=check,
            tags=tags,
        )
        return run_playbook(
            load_inventory(str(self.inventory)), str(self.workdir / "repo.yml"), opts
        )

    def apt_files(self) -> str:
        """Every file under /etc/apt with its sha256, read inside the host."""
        return self.host.exec("find /etc/apt -type f -print0 | sort -z | xargs -0 sha256sum").stdout


@pytest.fixture(scope="module")
def lab(booted_hosts, tmp_path_factory) -> Iterator[Lab]:  # noqa: F811
    workdir = tmp_path_factory.mktemp("aptrepo")
    repo = start_repo(workdir / "served")
    try:
        (host,) = booted_hosts(1, prefix="aptrepo")
        yield Lab(host, repo, workdir)
    finally:
        repo.close()


def _task(result: PlaybookResult, name: str):
    return next(r for r in result.results if r.task == name)


def test_check_mode_changes_nothing_on_the_host(lab: Lab) -> None:
    before = lab.apt_files()
    # Only the repository task: without the repository the package has no candidate yet.
    result = lab.apply(check=True, tags=("repo",))
    assert result.exit_code == 0, [r.msg for r in result.results]
    assert _task(result, "repo").status == "changed"
    assert lab.apt_files() == before


def test_wrong_key_is_refused_and_nothing_is_written(lab: Lab) -> None:
    result = lab.apply(repo_name="provision-wrong", key_url=lab.repo.wrong_key_url)
    assert result.exit_code == 2
    msg = _task(result, "repo").msg
    assert f"expected {lab.repo.fingerprint}, got {lab.repo.wrong_fingerprint}" in msg
    listing = lab.host.exec("ls /etc/apt/sources.list.d /etc/apt/keyrings", check=False).stdout
    assert "provision-wrong" not in listing


def test_repository_and_standin_package_install_then_nothing_changes(lab: Lab) -> None:
    first = lab.apply()
    assert first.exit_code == 0, [r.msg for r in first.results]
    assert _task(first, "repo").status == "changed"
    assert _task(first, "standin").status == "changed"
    h = lab.host
    assert h.exec(STANDIN_PACKAGE).stdout.strip() == STANDIN_OUTPUT
    sources = h.exec("cat /etc/apt/sources.list.d/provision-lab.sources").stdout
    assert "Signed-By: /etc/apt/keyrings/provision-lab.gpg\n" in sources
    assert f"URIs: {lab.repo.url}\n" in sources
    listed = h.exec(
        "gpg --no-default-keyring --keyring /etc/apt/keyrings/provision-lab.gpg "
        "--with-colons --list-keys 2>/dev/null"
    ).stdout
    assert f"fpr:::::::::{lab.repo.fingerprint}:" in listed
    assert h.exec("stat -c %a /etc/apt/keyrings/provision-lab.gpg").stdout.strip() == "644"
    # apt verified InRelease with that keyring: the package came from the local repository.
    policy = h.exec(f"apt-cache policy {STANDIN_PACKAGE}").stdout
    assert f"500 {lab.repo.url.rstrip('/')} ./ Packages" in policy

    again = lab.apply()
    assert again.exit_code == 0, [r.msg for r in again.results]
    assert again.stats[h.name].changed == 0
    assert "are up to date" in _task(again, "repo").msg


# -- sources the vendors' own instructions left (issue 11, item 11) ------------------------------

CUDA_LIST = "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] http://127.0.0.1:8080 /\n"


def with_others(state: str, files: dict[str, str]) -> str:
    lines = [state, "@@others"]
    for path, text in files.items():
        lines += [f"@@file {path}", text.rstrip("\n")]
    return "\n".join(lines)


def test_a_vendor_list_for_the_same_uri_is_moved_aside_before_ours_is_written(
    keys: AptRepo,
) -> None:
    listed = "/etc/apt/sources.list.d/cuda-debian12-x86_64.list"
    p = plan(args_for(keys, update_cache=True), with_others(repo_state(), {listed: CUDA_LIST}))
    assert p.changes[0] == (
        f"move {listed} aside (same repository, another Signed-By; kept as {listed}.DATE~)"
    )
    move = p.steps[0]
    assert f'mv -- {listed} {listed}."$s~"' in move.script
    assert [s.stdin is None for s in p.steps] == [True, False, False, True]  # then key, source
    # a file that only mentions the host in a comment, or is disabled, is left alone
    quiet = {
        listed: "# deb http://127.0.0.1:8080 /\n",
        "/x.sources": "URIs: http://127.0.0.1:8080/\nEnabled: no\n",
    }
    assert plan(args_for(keys), with_others(repo_state(), quiet)).changes[0].startswith("create")


def test_a_file_mixing_our_uri_with_other_repositories_is_refused_with_its_line(
    keys: AptRepo,
) -> None:
    mixed = "deb http://deb.debian.org/debian bookworm main\n" + CUDA_LIST
    with pytest.raises(ModuleError, match=r"^/etc/apt/sources.list:2 also declares"):
        plan(args_for(keys), with_others(repo_state(), {"/etc/apt/sources.list": mixed}))
    deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\n" + (
        "Types: deb\nURIs: http://127.0.0.1:8080/\nSuites: /\nSigned-By: /k.gpg\n"
    )
    with pytest.raises(ModuleError, match=r"^/etc/apt/sources.list.d/both.sources:6 also"):
        plan(
            args_for(keys),
            with_others(repo_state(), {"/etc/apt/sources.list.d/both.sources": deb822}),
        )


def test_vendor_list_files_and_keyrings_end_with_one_source_each_and_a_working_update(
    lab: Lab,
) -> None:
    """A host prepared as NVIDIA's and Docker's pages leave it: their .list files and keyrings
    (cuda-keyring's /usr/share/keyrings/cuda-archive-keyring.gpg, Docker's armored
    /etc/apt/keyrings/docker.asc) for the same repositories the baseline adds."""
    h = lab.repo.root / "repo"
    for alias in ("cuda", "docker"):
        if not (h / alias).exists():
            (h / alias).symlink_to(".")
    cuda_url, docker_url = f"{lab.repo.url}cuda/", f"{lab.repo.url}docker/"
    armored = (h / "key.asc").read_text()
    host = lab.host
    host.exec(
        "mkdir -p /etc/apt/keyrings /usr/share/keyrings && gpg --batch --yes --dearmor"
        " -o /usr/share/keyrings/cuda-archive-keyring.gpg",
        input=armored,
    )
    host.exec(
        "cat > /etc/apt/keyrings/docker.asc && chmod a+r /etc/apt/keyrings/docker.asc",
        input=armored,
    )
    host.exec(
        "cat > /etc/apt/sources.list.d/cuda-debian12-x86_64.list",
        input=f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {cuda_url} /\n",
    )
    host.exec(
        "cat > /etc/apt/sources.list.d/docker.list",
        input=f"deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] {docker_url} ./\n",
    )
    assert host.exec("apt-get update -q", check=False, timeout=180).returncode == 0

    # suites as the vendors' files have them: apt refuses two sources for one URI and suite
    for name, url, suite in (("nvidia-cuda", cuda_url, "/"), ("docker", docker_url, "./")):
        result = lab.apply(repo_name=name, repo_url=url, repo_suite=suite)
        assert result.exit_code == 0, [r.msg for r in result.results]
        assert any("aside" in c for c in _task(result, "repo").changes)
        active = host.exec(
            f"grep -lF {url} /etc/apt/sources.list /etc/apt/sources.list.d/*.list"
            " /etc/apt/sources.list.d/*.sources 2>/dev/null || true"
        ).stdout.split()
        assert active == [f"/etc/apt/sources.list.d/{name}.sources"], active
    update = host.exec("LANG=C apt-get update 2>&1", check=False, timeout=180)
    assert update.returncode == 0 and "Conflicting" not in update.stdout, update.stdout
    backups = host.exec("ls /etc/apt/sources.list.d/").stdout
    assert "cuda-debian12-x86_64.list." in backups and "docker.list." in backups
    host.exec(
        "rm -f /etc/apt/sources.list.d/*~ /etc/apt/sources.list.d/nvidia-cuda.sources"
        " /etc/apt/sources.list.d/docker.sources"
    )
