"""authorized_key (ansible.posix.authorized_key's arguments): keys matched as OpenSSH matches
them, and, on a booted host with real sshd, a key it authorizes really logs in."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from provision.modules.authorized_key import AuthorizedKeyModule, parse_key
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.test_ansible_names import provision, recap

# an ed25519 public key's wire form (RFC 8709: string "ssh-ed25519", string 32-byte key)
BLOB = base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + bytes(range(32))).decode()


def test_a_key_line_parses_with_options_and_comment_as_sshd_reads_it() -> None:
    key = parse_key(f'from="10.0.0.0/8",no-pty ssh-ed25519 {BLOB} alice@ws01')
    assert key is not None
    assert (key.options, key.type, key.blob, key.comment) == (
        'from="10.0.0.0/8",no-pty',
        "ssh-ed25519",
        BLOB,
        "alice@ws01",
    )
    assert parse_key("# a comment") is None and parse_key("") is None


def test_present_updates_options_in_place_and_exclusive_drops_the_rest() -> None:
    module = AuthorizedKeyModule()
    other = f"ssh-rsa {base64.b64encode(b'another key').decode()} bob"
    lines = ["# lab keys", f"ssh-ed25519 {BLOB} alice", other]
    args = {"state": "present", "exclusive": False, "key_options": "no-pty", "comment": None}
    args["key"] = f"ssh-ed25519 {BLOB} alice"
    wanted = module.wanted(args)
    assert module.edited(lines, wanted, args) == [
        "# lab keys",
        f"no-pty ssh-ed25519 {BLOB} alice",
        other,
    ]
    assert module.edited(lines, wanted, {**args, "exclusive": True}) == [
        "# lab keys",
        f"no-pty ssh-ed25519 {BLOB} alice",
    ]
    assert module.edited(lines, wanted, {**args, "state": "absent"}) == ["# lab keys", other]


PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - user: {{name: keyuser, shell: /bin/sh}}
    - name: authorize the key
      ansible.posix.authorized_key:
        user: keyuser
        key: "{key}"
        exclusive: {exclusive}
"""


def _key(tmp_path: Path, name: str) -> tuple[Path, str]:
    path = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return path, (tmp_path / f"{name}.pub").read_text().strip()


def _logs_in(host: BootedHost, key: Path, known: Path) -> bool:
    done = subprocess.run(
        ["ssh", "-i", str(key), "-p", str(host.port), "-o", "BatchMode=yes", "-o",
         f"UserKnownHostsFile={known}", "-o", "IdentitiesOnly=yes",
         f"keyuser@{host.address}", "id -un"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode == 0 and done.stdout.strip() == "keyuser"


def test_an_authorized_key_logs_in_and_exclusive_revokes_the_others(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    (host,) = booted_hosts(1, prefix="akey")
    inv = write_inventory([host], tmp_path / "hosts.ini")
    known = write_known_hosts([host], tmp_path / "known_hosts")
    first, first_pub = _key(tmp_path, "first")
    second, second_pub = _key(tmp_path, "second")
    args = ["apply", str(tmp_path / "site.yml"), "-i", str(inv), "--known-hosts", str(known)]

    (tmp_path / "site.yml").write_text(PLAY.format(key=first_pub, exclusive="false"))
    assert not _logs_in(host, first, known)
    done = provision(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _logs_in(host, first, known)
    shown = host.exec("stat -c '%a %U' ~keyuser/.ssh ~keyuser/.ssh/authorized_keys").stdout
    assert shown.split() == ["700", "keyuser", "600", "keyuser"]
    again = provision(*args, cwd=tmp_path)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout

    (tmp_path / "site.yml").write_text(PLAY.format(key=second_pub, exclusive="true"))
    check = provision(*args, "--check", cwd=tmp_path)
    assert check.returncode == 0 and recap(check.stdout)["changed"] == 1, check.stdout
    assert _logs_in(host, first, known)  # --check changed nothing
    done = provision(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _logs_in(host, second, known) and not _logs_in(host, first, known)
    assert host.exec("cat ~keyuser/.ssh/authorized_keys").stdout == second_pub + "\n"
