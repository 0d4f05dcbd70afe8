"""Host keys where OpenSSH and provision could differ (issue 13, item 7), each case side by side
with ``ssh -o StrictHostKeyChecking=yes`` (or ``accept-new``) on the same known_hosts file, against
real sshd lab hosts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from provision.executor import HostState, RunOptions, run_hosts
from provision.hostkeys import entry_matches, hash_known_hosts, parse_known_hosts
from provision.ssh import Session
from tests.conftest import need_binary
from tests.lab.sshd import LabHost, SshdLab, generate_ed25519


def _openssh(
    host: LabHost, known_hosts: str, policy: str = "yes", *extra: str
) -> subprocess.CompletedProcess:
    ssh = need_binary("ssh", "openssh-client")
    options = {
        "BatchMode": "yes",
        "StrictHostKeyChecking": policy,
        "UserKnownHostsFile": known_hosts,
        "GlobalKnownHostsFile": "/dev/null",
        "IdentitiesOnly": "yes",
    }
    flags = [word for k, v in options.items() for word in ("-o", f"{k}={v}")]
    login = ["-i", host.key_file, "-p", str(host.port), f"root@{host.address}"]
    return subprocess.run(
        [ssh, *extra, *flags, *login, "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _provision(host: LabHost, known_hosts: str, **opts: object):
    def task(session: Session) -> str:
        return session.run("echo ran").stdout

    options = RunOptions(known_hosts=(known_hosts,), connect_timeout=5, **opts)  # type: ignore[arg-type]
    return run_hosts([host.spec()], task, options)[host.name]


@pytest.mark.parametrize("order", ["right first", "wrong first"])
def test_two_keys_of_one_type_either_matching_is_accepted(
    sshd_lab: SshdLab, tmp_path: Path, order: str
) -> None:
    host = sshd_lab.ok_hosts[0]
    right = f"{host.key_name} {host.host_key}\n"
    wrong = f"{host.key_name} {generate_ed25519()[1]}\n"
    path = tmp_path / "known_hosts"
    path.write_text(right + wrong if order == "right first" else wrong + right)
    assert _openssh(host, str(path)).returncode == 0
    outcome = _provision(host, str(path))
    assert (outcome.state, outcome.value) == (HostState.OK, "ran\n"), outcome.reason


def test_revoked_key_is_refused_before_authentication(
    sshd_lab_factory: Callable[..., SshdLab], tmp_path: Path
) -> None:
    lab = sshd_lab_factory(n=1)
    host = lab.host("lab01")
    path = tmp_path / "known_hosts"
    path.write_text(f"{host.key_name} {host.host_key}\n@revoked * {host.host_key}\n")
    log = Path(host.dir) / "sshd.log"
    ssh = _openssh(host, str(path))
    assert ssh.returncode == 255 and "REVOKED HOST KEY" in ssh.stderr
    outcome = _provision(host, str(path))
    assert outcome.state is HostState.HOSTKEY_REFUSED and "@revoked" in outcome.reason
    # neither client got as far as logging in
    assert "Accepted publickey" not in log.read_text()


def _recorded(path: Path, name: str) -> list[str]:
    lines = path.read_text().splitlines()
    return [line for line in lines if entry_matches(parse_known_hosts(line)[0], name)]


def test_accept_new_writes_through_a_symlink_and_hashes_like_openssh(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    host = sshd_lab.ok_hosts[1]
    other = generate_ed25519()[1]
    for who in ("openssh", "provision"):
        real = tmp_path / who / "dotfiles" / "known_hosts"
        real.parent.mkdir(parents=True)
        real.write_text(f"|1|c2FsdHNhbHRzYWx0c2FsdHNhbHQ=|aGFzaGhhc2hoYXNoaGFzaGhhc2g= {other}\n")
        link = tmp_path / who / "known_hosts"
        link.symlink_to(real)
        if who == "openssh":
            # a user who hashes their file has HashKnownHosts yes (Debian's default too)
            done = _openssh(host, str(link), "accept-new", "-o", "HashKnownHosts=yes")
            assert done.returncode == 0, done.stderr
        else:
            outcome = _provision(host, str(link), accept_new_host_keys=True)
            assert outcome.state is HostState.OK, outcome.reason
        assert link.is_symlink() and os.readlink(link) == str(real)
        (line,) = _recorded(real, host.key_name)
        assert line.endswith(host.host_key)
        assert line.startswith("|1|")  # the file holds hashed names: no plain name added
        assert _openssh(host, str(link)).returncode == 0  # what was recorded, OpenSSH accepts


def test_hash_known_hosts_is_read_like_openssh(tmp_path: Path) -> None:
    """The first HashKnownHosts set wins, user config before system config; default no."""
    user, system = tmp_path / "config", tmp_path / "ssh_config"
    user.write_text("Host 10.0.0.*\n    HashKnownHosts no\n")
    system.write_text("Host *\n    HashKnownHosts yes\n")
    configs = (str(user), str(system))
    assert hash_known_hosts("[10.0.0.5]:2222", configs) is False
    assert hash_known_hosts("ws1", configs) is True
    assert hash_known_hosts("ws1", (str(tmp_path / "none"),)) is False
