"""Ansible's forms of apt sources and keys (issue 14 item 2): ``apt_repository`` with ``repo:``
(one line in a ``.list`` file), ``deb822_repository`` and ``apt_key``. Spec tests with real
throwaway gpg keys, then the same playbook run by the real ansible-playbook on one booted Debian
host and by provision on another, against two local signed repositories (tests/lab/aptrepo.py),
compared; the package from them installs on both.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.modules import MODULES
from provision.modules.apt_key import split_keys
from provision.modules.apt_lines import suggest_filename
from provision.modules.apt_repository import dearmor
from provision.modules.base import ArgError, Context, ModuleError, Plan
from provision.modules.deb822_repository import slug
from tests.lab.aptrepo import STANDIN_OUTPUT, AptRepo, start_repo
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
)
from tests.test_ansible_names import apply_with_both, provision, recap

CTX = Context()
DOCKER = (
    "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] "
    "https://download.docker.com/linux/ubuntu noble stable"
)


def plan(module: str, args: dict, state: str | None) -> Plan:
    m = MODULES[module]
    return m.plan(m.prepare(m.finalize(args), CTX), state, CTX)


def lists(files: dict[str, str]) -> str:
    """What apt_repository's line-form state read prints for these files."""
    out = ["@@lists"]
    for path, text in files.items():
        out += [f"@@file {path}", base64.b64encode(text.encode()).decode()]
    return "\n".join(out)


def written(p: Plan) -> dict[str, bytes | None]:
    """{path: data written} of a plan's steps (None: removed); the cache update left out."""
    out: dict[str, bytes | None] = {}
    for step in p.steps:
        first = step.script.splitlines()[0]
        if first.startswith("rm -f -- "):
            out[first.removeprefix("rm -f -- ")] = None
        elif step.stdin is not None:
            dest = next(ln for ln in step.script.splitlines() if ln.startswith("d="))
            out[dest.removeprefix("d=")] = step.stdin
    return out


# -- apt_repository repo: ----------------------------------------------------------------------


def test_repo_line_file_name_is_ansibles() -> None:
    assert suggest_filename(DOCKER, None) == (
        "/etc/apt/sources.list.d/download_docker_com_linux_ubuntu.list"
    )
    assert suggest_filename("deb http://u:pw@mirror.lab/debian bookworm main", None) == (
        "/etc/apt/sources.list.d/mirror_lab_debian.list"
    )
    assert suggest_filename(DOCKER, "docker") == "/etc/apt/sources.list.d/docker.list"


def test_repo_line_is_added_once_and_updates_the_cache() -> None:
    p = plan("apt_repository", {"repo": DOCKER.replace(" noble", "   noble")}, lists({}))
    target = "/etc/apt/sources.list.d/download_docker_com_linux_ubuntu.list"
    assert written(p) == {target: f"{DOCKER}\n".encode()}
    assert p.changes == [f"create {target}", "update the package cache"]  # Ansible's default
    assert "chmod 644" in p.steps[0].script
    # present anywhere (another file, other spacing): nothing to do, no update
    there = lists({"/etc/apt/sources.list": f"deb http://deb.debian.org/debian bookworm main\n"
                   f"{DOCKER.replace(' ', '  ')}  # added by hand\n"})  # fmt: skip
    assert not plan("apt_repository", {"repo": DOCKER}, there).changed
    # appended to an existing file of that name, with a backup; update_cache: false honoured
    other = "deb https://download.docker.com/linux/ubuntu noble test\n"
    p = plan("apt_repository", {"repo": DOCKER, "filename": "docker", "update_cache": False},
             lists({"/etc/apt/sources.list.d/docker.list": other}))  # fmt: skip
    assert written(p) == {"/etc/apt/sources.list.d/docker.list": f"{other}{DOCKER}\n".encode()}
    assert p.changes == ["update /etc/apt/sources.list.d/docker.list"]
    assert "backup=" in p.steps[0].script


def test_a_commented_out_line_is_enabled_again_and_absent_removes_every_copy() -> None:
    path = "/etc/apt/sources.list.d/docker.list"
    p = plan("apt_repository", {"repo": DOCKER}, lists({path: f"# {DOCKER} # vendor\n"}))
    assert written(p) == {path: f"{DOCKER} # vendor\n".encode()}
    files = {path: f"{DOCKER}\n", "/etc/apt/sources.list": f"deb http://x/ y z\n{DOCKER}\n"}
    p = plan("apt_repository", {"repo": DOCKER, "state": "absent"}, lists(files))
    assert written(p) == {path: None, "/etc/apt/sources.list": b"deb http://x/ y z\n"}
    assert not plan("apt_repository", {"repo": DOCKER, "state": "absent"}, lists({})).changed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"repo": "ppa:graphics drivers"}, "is not ppa:OWNER/NAME"),
        ({"repo": "deb noble main"}, "is not a URI"),
        ({"repo": "rpm http://x/ y"}, "invalid repository line"),
        ({"repo": DOCKER, "uris": "http://x/"}, "are two forms; give one"),
        ({"suites": "./"}, "give 'repo' (a one-line source) or 'name'"),
    ],
)
def test_repo_line_errors(args: dict, message: str) -> None:
    with pytest.raises(ArgError, match=re.escape(message)):
        MODULES["apt_repository"].check_static(args)


def test_a_ppa_is_ansibles_expanded_line_removed_offline_added_never() -> None:
    """NVIDIA's driver role removes ppa:graphics-drivers/ppa: no Launchpad needed for that."""
    line = "deb https://ppa.launchpadcontent.net/graphics-drivers/ppa/ubuntu noble main"
    path = "/etc/apt/sources.list.d/graphics-drivers-ubuntu-ppa-noble.list"
    state = lists({path: f"{line}\n"}) + "\n@@codename noble"
    p = plan("apt_repository", {"repo": "ppa:graphics-drivers/ppa", "state": "absent"}, state)
    assert written(p) == {path: None} and p.changes[0] == f"remove {path} (no lines left)"
    assert not plan("apt_repository", {"repo": "ppa:graphics-drivers/ppa"}, state).changed
    # another codename: another line, so nothing to remove there
    jammy = {"repo": "ppa:graphics-drivers/ppa", "state": "absent", "codename": "jammy"}
    assert not plan("apt_repository", jammy, state).changed
    with pytest.raises(ModuleError, match="adding ppa:graphics-drivers/ppa needs Launchpad's API"):
        plan(
            "apt_repository", {"repo": "ppa:graphics-drivers/ppa"}, lists({}) + "\n@@codename noble"
        )


def test_line_form_state_read_runs_for_real() -> None:
    m = MODULES["apt_repository"]
    args = m.prepare(m.finalize({"repo": "deb http://no-such.invalid/debian x main"}), CTX)
    script = m.state_script(args, CTX)
    assert script is not None
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    p = m.plan(args, done.stdout, CTX)
    assert p.changes[0] == "create /etc/apt/sources.list.d/no_such_invalid_debian.list"


# -- deb822_repository -------------------------------------------------------------------------


def test_deb822_repository_renders_ansibles_stanza() -> None:
    assert slug("Docker CE_stable") == "docker-ce-stable"
    args = {
        "name": "Docker CE",
        "uris": "https://download.docker.com/linux/ubuntu",
        "suites": ["noble"],
        "components": "stable",
        "architectures": ["amd64", "arm64"],
        "signed_by": "/etc/apt/keyrings/docker.asc",
        "enabled": True,
    }
    state = "@@sources\ntype=absent\n@@asc\ntype=absent\n@@gpg\ntype=absent\n@@others"
    p = plan("deb822_repository", args, state)
    assert written(p) == {
        "/etc/apt/sources.list.d/docker-ce.sources": (
            b"Architectures: amd64 arm64\nComponents: stable\nEnabled: yes\n"
            b"X-Repolib-Name: Docker CE\nSigned-By: /etc/apt/keyrings/docker.asc\n"
            b"Suites: noble\nTypes: deb\nURIs: https://download.docker.com/linux/ubuntu\n"
        )
    }
    assert not any("update" in c for c in p.changes)  # Ansible's module updates no cache
    sha = hashlib.sha256(written(p)["/etc/apt/sources.list.d/docker-ce.sources"] or b"")
    same = state.replace("@@sources\ntype=absent", f"@@sources\ntype=file\nmode=644\n"
                         f"owner=root\ngroup=root\nsha256={sha.hexdigest()}")  # fmt: skip
    assert not plan("deb822_repository", args, same).changed


def test_deb822_repository_embeds_an_armored_key(keys: AptRepo) -> None:
    armored = (keys.root / "repo" / "key.asc").read_text()
    state = "@@sources\ntype=absent\n@@asc\ntype=absent\n@@gpg\ntype=absent\n@@others"
    args = {"name": "lab", "uris": "http://x/", "suites": "./", "signed_by": armored}
    data = written(plan("deb822_repository", args, state))
    text = (data["/etc/apt/sources.list.d/lab.sources"] or b"").decode()
    assert "Signed-By:\n    -----BEGIN PGP PUBLIC KEY BLOCK-----\n    .\n" in text
    # a URL: fetched here, written as the keyring Ansible names (.asc: armored)
    url = f"file://{keys.root / 'repo' / 'key.asc'}"
    data = written(plan("deb822_repository", {**args, "signed_by": url}, state))
    assert data["/etc/apt/keyrings/lab.asc"] == armored.encode()
    assert b"Signed-By: /etc/apt/keyrings/lab.asc\n" in (
        data["/etc/apt/sources.list.d/lab.sources"] or b""
    )


# -- apt_key --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AptRepo]:
    repo = AptRepo(tmp_path_factory.mktemp("aptkeys"))
    try:
        yield repo.make_keys()
    finally:
        repo.close()


def keyring_state(files: dict[str, bytes]) -> str:
    out = ["@@keyrings"]
    for path, data in files.items():
        out += [f"@@file {path}", base64.b64encode(data).decode()]
    return "\n".join(out)


def test_apt_key_writes_into_the_keyring_and_keeps_other_keys(keys: AptRepo) -> None:
    url = f"file://{keys.root / 'repo' / 'key.asc'}"
    other = dearmor((keys.root / "repo" / "wrong.asc").read_bytes())
    ring = "/etc/apt/keyrings/lab.gpg"
    p = plan("apt_key", {"url": url, "keyring": ring}, keyring_state({ring: other}))
    assert p.changes == [f"add key {keys.fingerprint} to {ring}"]
    data = written(p)[ring] or b""
    assert [fp for fp, _d in split_keys(data)] == [keys.wrong_fingerprint, keys.fingerprint]
    assert gpg_fingerprints(data) == [keys.wrong_fingerprint, keys.fingerprint]
    assert not plan("apt_key", {"url": url, "keyring": ring}, keyring_state({ring: data})).changed
    # id: present without a download; a key that does not match it is refused
    short = keys.fingerprint[-8:]
    assert not plan("apt_key", {"id": short, "url": "http://unused.invalid/k", "keyring": ring},
                    keyring_state({ring: data})).changed  # fmt: skip
    with pytest.raises(ModuleError, match="does not match id"):
        plan("apt_key", {"id": keys.wrong_fingerprint, "url": url}, keyring_state({}))
    # without keyring: a trusted.gpg.d file of its own, unless apt already trusts the key
    p = plan("apt_key", {"url": url}, keyring_state({}))
    assert list(written(p)) == [f"/etc/apt/trusted.gpg.d/{keys.fingerprint[-16:]}.gpg"]
    assert not plan("apt_key", {"url": url}, keyring_state({"/etc/apt/trusted.gpg": data})).changed
    # absent: the key cut out of the keyring, the other one kept; a keyring left empty removed
    p = plan(
        "apt_key", {"id": short, "keyring": ring, "state": "absent"}, keyring_state({ring: data})
    )
    assert gpg_fingerprints(written(p)[ring] or b"") == [keys.wrong_fingerprint]
    alone = keyring_state({ring: dearmor((keys.root / "repo" / "key.asc").read_bytes())})
    assert written(plan("apt_key", {"id": short, "keyring": ring, "state": "absent"}, alone)) == {
        ring: None
    }


def gpg_fingerprints(keyring: bytes) -> list[str]:
    """The primary fingerprints gpg itself reads in a binary keyring (the real parser)."""
    done = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--show-keys"],
        input=keyring,
        capture_output=True,
        check=True,
    )
    rows = [line.split(":") for line in done.stdout.decode().splitlines()]
    prints, last = [], ""
    for row in rows:
        if row[0] in ("pub", "sub"):
            last = row[0]
        elif row[0] == "fpr" and last == "pub":
            prints.append(row[9])
            last = ""
    return prints


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"keyserver": "keyserver.ubuntu.com", "id": "ABCD1234"}, "keyserver is not supported"),
        ({"url": "http://x/k", "data": "k"}, "give only one of data, url"),
        ({"id": "xyz"}, "must be a key id of 8 or 16 hex digits"),
        ({"state": "absent"}, "state: absent needs the key's id"),
        ({"url": "http://x/k", "keyring": "lab.gpg"}, "must be an absolute path"),
    ],
)
def test_apt_key_errors(args: dict, message: str) -> None:
    with pytest.raises(ArgError, match=message):
        MODULES["apt_key"].check_static(args)


# -- booted hosts: the same playbook with ansible-playbook and provision --------------------------

SOURCES_PLAY = """\
- hosts: all
  gather_facts: false
  vars:
    a_url: {a_url}
    a_key: {a_key}
    b_url: {b_url}
    b_key: {b_key}
  tasks:
    - name: the key of repository A, into its own keyring
      ansible.builtin.apt_key:
        url: "{{{{ a_key }}}}"
        keyring: /etc/apt/keyrings/lab-a.gpg
    - name: repository A as one line
      ansible.builtin.apt_repository:
        repo: "deb [signed-by=/etc/apt/keyrings/lab-a.gpg] {{{{ a_url }}}} ./"
        filename: lab-a
    - name: repository B as a deb822 source, its key by URL
      ansible.builtin.deb822_repository:
        name: Lab B
        uris: "{{{{ b_url }}}}"
        suites: ./
        signed_by: "{{{{ b_key }}}}"
        enabled: true
    - name: the same line again, spaced differently
      apt_repository: repo="deb  [signed-by=/etc/apt/keyrings/lab-a.gpg]  {{{{ a_url }}}} ./"
        filename=lab-a update_cache=no
    - name: a line nowhere, absent
      apt_repository:
        repo: deb http://deb.debian.org/debian bookworm-backports main
        state: absent
    - name: the package both repositories hold
      apt: name=provision-standin-hello update_cache=yes
"""
READ = (
    "cd /etc/apt && for f in sources.list.d/*.list sources.list.d/*.sources; do "
    'echo "== $f"; cat "$f"; done; '
    "gpg --batch --with-colons --show-keys keyrings/lab-a.gpg | grep ^fpr | head -1; "
    "sha256sum keyrings/lab-b.asc; provision-standin-hello"
)


@pytest.fixture(scope="module")
def two_repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AptRepo, AptRepo]]:
    a = start_repo(tmp_path_factory.mktemp("repo-a"))
    try:
        b = start_repo(tmp_path_factory.mktemp("repo-b"))
        try:
            yield a, b
        finally:
            b.close()
    finally:
        a.close()


def test_sources_and_keys_match_ansible_playbook_on_booted_hosts(
    booted_hosts,  # noqa: F811
    two_repos: tuple[AptRepo, AptRepo],
    tmp_path: Path,
) -> None:
    a, b = two_repos
    hosts: list[BootedHost] = booted_hosts(2, prefix="aptsrc")
    for host in hosts:  # what Ansible's modules need on the host (apt-key runs gpg)
        host.exec(
            "apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            "--no-install-recommends gnupg python3-apt python3-debian",
            timeout=600,
        )
    play = SOURCES_PLAY.format(a_url=a.url, a_key=a.key_url, b_url=b.url, b_key=b.key_url)
    (tmp_path / "sources.yml").write_text(play)
    args = apply_with_both(hosts, tmp_path, "sources.yml")
    theirs, mine = (host.exec(READ, check=False).stdout for host in hosts)
    assert mine == theirs
    assert f"fpr:::::::::{a.fingerprint}:" in mine and STANDIN_OUTPUT in mine
    again = provision(*args, cwd=tmp_path)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout
    check = provision(*args, "--check", cwd=tmp_path)
    assert check.returncode == 0 and recap(check.stdout)["changed"] == 0, check.stdout

    # and every one of them removed again
    (tmp_path / "gone.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - apt_key: id={a.fingerprint} keyring=/etc/apt/keyrings/lab-a.gpg state=absent\n"
        f"    - apt_repository: repo='deb [signed-by=/etc/apt/keyrings/lab-a.gpg] {a.url} ./' "
        "filename=lab-a state=absent\n"
        "    - deb822_repository: name='Lab B' state=absent\n"
    )
    gone = provision(*[x if x != "sources.yml" else "gone.yml" for x in args], cwd=tmp_path)
    assert gone.returncode == 0 and recap(gone.stdout)["changed"] == 3, gone.stdout
    left = hosts[1].exec("ls /etc/apt/sources.list.d /etc/apt/keyrings").stdout.split()
    assert not [name for name in left if "lab" in name], left
    assert hosts[1].exec("apt-get -q update").returncode == 0
