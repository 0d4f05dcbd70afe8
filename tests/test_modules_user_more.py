"""user's ``force``, ``move_home``, ``generate_ssh_key`` and ``ssh_key_*`` (issue 14, item 4):
the same playbook run by the real ansible-playbook on one booted Debian host and by provision on
another, the accounts and key files compared inside the hosts; then a converged second run and
a --check run that changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.modules import MODULES
from provision.modules.base import ArgError, Context
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
)
from tests.test_ansible_names import apply_with_both, provision, recap


def test_ssh_key_passphrase_is_refused() -> None:
    with pytest.raises(ArgError, match="ssh_key_passphrase is not supported"):
        MODULES["user"].check_static(
            {"name": "a", "generate_ssh_key": True, "ssh_key_passphrase": "secret"}
        )


def test_force_and_move_home_commands() -> None:
    m = MODULES["user"]
    line = "user\tbob:x:1001:1001::/home/bob:/bin/sh\tbob\tbob"
    absent = m.finalize({"name": "bob", "state": "absent", "force": True, "remove": True})
    gone = m.plan(absent, line, Context())
    assert gone.steps[0].script == "userdel -f -r bob"
    home = m.finalize({"name": "bob", "home": "/srv/bob", "move_home": True})
    moved = m.plan(home, line, Context())
    assert moved.steps[0].script == "usermod -d /srv/bob -m bob"


USERS = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: a key of the default type and comment
      ansible.builtin.user: name=p14key generate_ssh_key=yes
    - name: an ed25519 key at a given place, with a comment
      user:
        name: p14ed
        generate_ssh_key: true
        ssh_key_type: ed25519
        ssh_key_file: .ssh/lab_ed25519
        ssh_key_comment: p14 lab key
    - name: an existing key is kept
      user: {name: p14keep, generate_ssh_key: true, ssh_key_type: ed25519}
    - name: a home moved with its content
      user: name=p14mv home=/srv/p14mv move_home=yes
    - name: a user removed with force
      user: name=p14gone state=absent remove=yes force=yes
"""
SETUP = (
    "useradd -m p14ed && useradd -m p14mv && echo data > /home/p14mv/file && "
    "useradd -m p14gone && useradd -m p14keep && mkdir -m 700 /home/p14keep/.ssh && "
    "ssh-keygen -q -t ed25519 -N '' -C old -f /home/p14keep/.ssh/id_ed25519 && "
    "chown -R p14keep: /home/p14keep/.ssh"
)
READ = (
    "getent passwd p14key p14ed p14keep p14mv p14gone | cut -d: -f1,6; "
    "cat /srv/p14mv/file; ls -d /home/p14mv /home/p14gone 2>&1; "
    "for f in /home/p14key/.ssh /home/p14key/.ssh/id_rsa /home/p14key/.ssh/id_rsa.pub "
    "/home/p14ed/.ssh /home/p14ed/.ssh/lab_ed25519 /home/p14ed/.ssh/lab_ed25519.pub; "
    "do stat -c '%n %a %U:%G %F' $f; done; "
    "for f in /home/p14key/.ssh/id_rsa.pub /home/p14ed/.ssh/lab_ed25519.pub "
    "/home/p14keep/.ssh/id_ed25519.pub; do ssh-keygen -lf $f | cut -d' ' -f1,3-; done"
)


def _read(host: BootedHost) -> str:
    return host.exec(READ).stdout.replace(host.exec("hostname").stdout.strip(), "HOST")


def test_user_ssh_keys_move_home_and_force_match_ansible_playbook(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    hosts = booted_hosts(2, prefix="ukey")
    for host in hosts:
        host.exec(SETUP)
    kept = hosts[1].exec("cat /home/p14keep/.ssh/id_ed25519.pub").stdout
    (tmp_path / "users.yml").write_text(USERS)
    args = apply_with_both(hosts, tmp_path, "users.yml")
    mine = _read(hosts[1])
    assert mine == _read(hosts[0])
    assert "3072 ansible-generated on HOST (RSA)" in mine  # ssh-keygen's default size
    assert "256 p14 lab key (ED25519)" in mine and "256 old (ED25519)" in mine
    assert "/home/p14ed/.ssh/lab_ed25519 600 p14ed:p14ed regular file" in mine
    assert "/home/p14key/.ssh 700 p14key:p14key directory" in mine
    assert hosts[1].exec("cat /home/p14keep/.ssh/id_ed25519.pub").stdout == kept
    before = _read(hosts[1])
    again = provision(*args, cwd=tmp_path)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout
    check = provision(*args, "--check", cwd=tmp_path)
    assert check.returncode == 0 and recap(check.stdout)["changed"] == 0, check.stdout
    assert _read(hosts[1]) == before
