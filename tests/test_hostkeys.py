"""known_hosts parsing and the refuse / accept-new / changed / revoked rules (G1, G2)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

from provision.executor import HostState, RunOptions, run_hosts
from provision.hostkeys import (
    ChangedHostKey,
    KnownHosts,
    UnknownHostKey,
    Verdict,
    append_known_host,
    entry_matches,
    hash_known_hosts,
    host_key_name,
    parse_known_hosts,
)
from provision.ssh import Session
from tests.conftest import need_binary
from tests.lab.fixtures import *  # noqa: F403
from tests.lab.sshd import SshdLab, generate_ed25519

KEY_A = generate_ed25519()[1].split()[1]
KEY_B = generate_ed25519()[1].split()[1]
KEY_C = generate_ed25519()[1].split()[1]

WEIRD = f"""\
# comment
@cert-authority *.lab.example ssh-ed25519 {KEY_C}
@revoked * ssh-ed25519 {KEY_C}
@bogus-marker host1 ssh-ed25519 {KEY_C}
host1,10.0.0.1 ssh-ed25519 {KEY_A}
[host2]:2222 ssh-ed25519 {KEY_B} comment words here
*.corp,!bad.corp ssh-ed25519 {KEY_A}
only-two-fields ssh-ed25519
host3 ssh-ed25519 !!!not-base64!!!

   \t
host4 ssh-rsa AAAAB3NzaC1yc2E= trailing
"""


def _store(tmp_path: Path, text: str) -> KnownHosts:
    path = tmp_path / "known_hosts"
    path.write_text(text)
    return KnownHosts([str(path)], include_user=False)


def test_parse_skips_what_it_cannot_use_without_crashing() -> None:
    entries = parse_known_hosts(WEIRD, "kh")
    assert [(e.marker, e.patterns) for e in entries] == [
        ("@revoked", ("*",)),
        ("", ("host1", "10.0.0.1")),
        ("", ("[host2]:2222",)),
        ("", ("*.corp", "!bad.corp")),
        ("", ("host4",)),
    ]
    assert entries[1].source == "kh:5"


def test_verdicts(tmp_path: Path) -> None:
    store = _store(tmp_path, WEIRD)
    assert store.verify("host1", "ssh-ed25519", KEY_A) is Verdict.OK
    assert store.verify("10.0.0.1", "ssh-ed25519", KEY_A) is Verdict.OK
    assert store.verify("host1", "ssh-ed25519", KEY_B) is Verdict.CHANGED
    assert store.verify("[host2]:2222", "ssh-ed25519", KEY_B) is Verdict.OK
    assert store.verify("host2", "ssh-ed25519", KEY_B) is Verdict.UNKNOWN  # port 22 differs
    assert store.verify("db.corp", "ssh-ed25519", KEY_A) is Verdict.OK
    assert store.verify("bad.corp", "ssh-ed25519", KEY_A) is Verdict.UNKNOWN
    assert store.verify("anything", "ssh-ed25519", KEY_C) is Verdict.REVOKED
    assert host_key_name("h", 22) == "h" and host_key_name("h", 2222) == "[h]:2222"


def test_hashed_names_written_by_ssh_keygen(tmp_path: Path) -> None:
    need_binary("ssh-keygen", "openssh-client")
    path = tmp_path / "known_hosts"
    path.write_text(f"ws01 ssh-ed25519 {KEY_A}\n[ws02]:2200 ssh-ed25519 {KEY_B}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(path)], check=True, capture_output=True)
    text = path.read_text()
    assert "ws01" not in text and text.startswith("|1|")
    store = KnownHosts([str(path)], include_user=False)
    assert store.verify("ws01", "ssh-ed25519", KEY_A) is Verdict.OK
    assert store.verify("[ws02]:2200", "ssh-ed25519", KEY_B) is Verdict.OK
    assert store.verify("ws03", "ssh-ed25519", KEY_A) is Verdict.UNKNOWN


def test_unknown_message_says_how_to_accept(tmp_path: Path) -> None:
    store = _store(tmp_path, "")
    with pytest.raises(UnknownHostKey) as err:
        store.check("[10.0.0.9]:2222", "ssh-ed25519", KEY_A)
    text = str(err.value)
    assert "ssh-keyscan -t ssh-ed25519 -p 2222 10.0.0.9 >>" in text
    assert "--accept-new-host-keys" in text and "SHA256:" in text and "\n" not in text


def test_accept_new_records_then_a_different_key_is_changed(tmp_path: Path) -> None:
    store = _store(tmp_path, f"other ssh-ed25519 {KEY_B}\n")
    os.chmod(store.write_path, 0o644)
    store.check("newhost", "ssh-ed25519", KEY_A, accept_new=True)
    assert store.verify("newhost", "ssh-ed25519", KEY_A) is Verdict.OK
    assert _recorded(Path(store.write_path).read_text().splitlines()[-1], "newhost") == KEY_A
    assert os.stat(store.write_path).st_mode & 0o777 == 0o644  # mode kept across the rename
    fresh = KnownHosts([store.write_path], include_user=False)
    with pytest.raises(ChangedHostKey, match="ssh-keygen -R"):
        fresh.check("newhost", "ssh-ed25519", KEY_B, accept_new=True)


def _recorded(line: str, name: str) -> str:
    """The key of one recorded line for ``name``, whose name is hashed exactly when OpenSSH's
    HashKnownHosts says so (Debian's /etc/ssh/ssh_config: yes)."""
    (entry,) = parse_known_hosts(line)
    assert entry_matches(entry, name)
    assert line.startswith("|1|") == hash_known_hosts(name)
    return entry.key


def _append_many(path: str, start: int) -> None:
    for i in range(start, start + 20):
        append_known_host(path, f"host{i}", "ssh-ed25519", KEY_A)


def test_concurrent_accept_new_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "ssh" / "known_hosts")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, n * 100)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 80 == len(set(lines))
    assert not [f for f in os.listdir(tmp_path / "ssh") if f.startswith(".known_hosts.")]


# -- against real sshd hosts ----------------------------------------------------------------


def _marker_task(marker: str):
    def task(session: Session) -> str:
        session.run(f"touch {marker}")
        return "ran"

    return task


def test_unknown_host_is_refused_and_runs_nothing(
    sshd_lab: SshdLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # empty ~/.ssh/known_hosts
    marker = tmp_path / "ran"
    outcome = run_hosts(
        [sshd_lab.host("lab01").spec()], _marker_task(str(marker)), RunOptions(connect_timeout=5)
    )["lab01"]
    assert outcome.state is HostState.HOSTKEY_REFUSED
    assert "--accept-new-host-keys" in outcome.reason and "ssh-keyscan" in outcome.reason
    assert not marker.exists()
    assert not (tmp_path / ".ssh" / "known_hosts").exists()


def test_accept_new_records_key_like_openssh(
    sshd_lab: SshdLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    host = sshd_lab.host("lab02")
    marker = tmp_path / "ran"
    opts = RunOptions(connect_timeout=5, accept_new_host_keys=True)
    outcome = run_hosts([host.spec()], _marker_task(str(marker)), opts)["lab02"]
    assert outcome.state is HostState.OK, outcome.reason
    (recorded,) = (tmp_path / ".ssh" / "known_hosts").read_text().splitlines()
    assert f"ssh-ed25519 {_recorded(recorded, host.key_name)}" == host.host_key
    # the recorded key is what OpenSSH itself accepts for this host
    need_binary("ssh", "openssh-client")
    check = subprocess.run(
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={tmp_path / '.ssh' / 'known_hosts'}",
            "-i",
            host.key_file,
            "-p",
            str(host.port),
            f"root@{host.address}",
            "true",
        ],
        capture_output=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    # and a second run needs no accept-new
    marker.unlink()
    outcomes = run_hosts([host.spec()], _marker_task(str(marker)), RunOptions(connect_timeout=5))
    assert outcomes["lab02"].state is HostState.OK and marker.exists()


def test_changed_key_is_refused_even_with_accept_new(sshd_lab: SshdLab, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    before = Path(sshd_lab.known_hosts).read_text()
    opts = RunOptions(known_hosts=(sshd_lab.known_hosts,), accept_new_host_keys=True)
    outcome = run_hosts([sshd_lab.host("changed_key").spec()], _marker_task(str(marker)), opts)
    result = outcome["fault-changed-key"]
    assert result.state is HostState.HOSTKEY_REFUSED
    assert "HOST KEY CHANGED" in result.reason and result.round_trips == 0
    assert not marker.exists()
    assert Path(sshd_lab.known_hosts).read_text() == before


def test_revoked_key_is_refused(sshd_lab: SshdLab, tmp_path: Path) -> None:
    host = sshd_lab.host("lab03")
    path = tmp_path / "known_hosts"
    path.write_text(f"{host.key_name} {host.host_key}\n@revoked * {host.host_key}\n")
    marker = tmp_path / "ran"
    opts = RunOptions(known_hosts=(str(path),), accept_new_host_keys=True)
    outcome = run_hosts([host.spec()], _marker_task(str(marker)), opts)["lab03"]
    assert outcome.state is HostState.HOSTKEY_REFUSED and "revoked" in outcome.reason
    assert not marker.exists()


def test_other_key_type_on_record_counts_as_changed(sshd_lab: SshdLab, tmp_path: Path) -> None:
    host = sshd_lab.host("lab03")
    path = tmp_path / "known_hosts"
    ecdsa = (
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZM"
        "y7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg="
    )
    path.write_text(f"{host.key_name} {ecdsa}\n")
    outcome = run_hosts(
        [host.spec()], _marker_task(str(tmp_path / "m")), RunOptions(known_hosts=(str(path),))
    )["lab03"]
    assert outcome.state is HostState.HOSTKEY_REFUSED and "CHANGED" in outcome.reason


def test_key_type_on_record_is_the_one_negotiated(sshd_lab_factory, tmp_path: Path) -> None:
    """A host with RSA and ed25519 keys: whichever single type is on record must match."""
    lab = sshd_lab_factory(n=1, rsa_host_keys=True)
    host = lab.host("lab01")
    cases = {
        "both": f"{host.key_name} {host.rsa_host_key}\n{host.key_name} {host.host_key}\n",
        "rsa only": f"{host.key_name} {host.rsa_host_key}\n",
        "ed25519 only": f"{host.key_name} {host.host_key}\n",
    }
    for label, text in cases.items():
        path = tmp_path / f"kh-{label.replace(' ', '-')}"
        path.write_text(text)
        outcome = run_hosts(
            [host.spec()], lambda s: s.run("echo hi").stdout, RunOptions(known_hosts=(str(path),))
        )["lab01"]
        assert (outcome.state, outcome.value) == (HostState.OK, "hi\n"), (label, outcome.reason)
    wrong_rsa = f"{host.key_name} {generate_ed25519()[1].replace('ssh-ed25519', 'ssh-rsa', 1)}\n"
    path = tmp_path / "kh-wrong"
    path.write_text(wrong_rsa)
    opts = RunOptions(known_hosts=(str(path),))
    outcome = run_hosts([host.spec()], _marker_task(str(tmp_path / "m")), opts)["lab01"]
    assert outcome.state is HostState.HOSTKEY_REFUSED and not (tmp_path / "m").exists()
