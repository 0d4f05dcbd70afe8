"""Quoting, sudo wrapping and masking; hostile values round-trip through a real sshd (G4)."""

from __future__ import annotations

import os
import subprocess

import pytest

from provision.executor import RunOptions, run_hosts
from provision.shell import MASK, join, mask, quote, sudo_wrap
from provision.ssh import CommandFailed, Session
from tests.lab.fixtures import *  # noqa: F403
from tests.lab.sshd import SshdLab

MARKER = "/tmp/provision-g4-marker"

HOSTILE = [
    f"; touch {MARKER}",
    f"$(touch {MARKER})",
    f"`touch {MARKER}`",
    f"'; touch {MARKER}; '",
    f'"; touch {MARKER}; "',
    f"\ntouch {MARKER}\n",
    f"a && touch {MARKER} || touch {MARKER}",
    f"| touch {MARKER}",
    f"> {MARKER}",
    "-rf",
    "--help",
    "-n",
    "  spaces  inside and around  ",
    "ünïcødé ✓ 日本語",
    "$HOME ${PATH} $((1+1))",
    "*",
    "back\\slash \\n",
    "tab\there",
    "'",
    '"',
    "",
    "!event !! ~root # not a comment",
]


def _sh(command: str) -> str:
    """Run through a real /bin/sh: the reference for what the remote shell will do."""
    return subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, check=True
    ).stdout.decode()


@pytest.mark.parametrize("value", HOSTILE)
def test_quote_is_one_literal_word_in_a_real_shell(value: str) -> None:
    assert _sh(f"printf '%s' {quote(value)}") == value
    assert not os.path.exists(MARKER)


def test_join_keeps_word_boundaries() -> None:
    out = _sh("for a in " + join(HOSTILE) + "; do printf '[%s]' \"$a\"; done")
    assert out == "".join(f"[{v}]" for v in HOSTILE)
    assert join(["ls", "-l", "a b"]) == "ls -l 'a b'"
    assert quote(5) == "5"


def test_sudo_wrap_shapes() -> None:
    with_password = sudo_wrap("echo 'hi'; id", "svc user", password=True)
    assert with_password.startswith("sudo -H -k -S -p '' -u 'svc user' -- sh -c ")
    assert sudo_wrap("true").startswith("sudo -H -n -u root -- sh -c ")
    # the wrapped command survives a real shell's parsing unchanged
    inner = with_password.split(" -- ", 1)[1]
    assert _sh("set -- " + inner + "; printf '%s' \"$3\"") == "echo 'hi'; id"


def test_mask_hides_every_secret() -> None:
    assert mask("pw=s3cret and s3cret", ["s3cret", None, ""]) == f"pw={MASK} and {MASK}"


def _echo_all(session: Session) -> list[str]:
    values = []
    for value in HOSTILE:
        result = session.run(f"printf '%s' {quote(value)}")
        if not result.ok:
            raise CommandFailed(result)
        values.append(result.stdout)
    result = session.run("printf '<%s>' " + join(HOSTILE))
    values.append(result.stdout)
    return values


def test_hostile_values_round_trip_over_ssh(sshd_lab: SshdLab) -> None:
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    opts = RunOptions(known_hosts=(sshd_lab.known_hosts,), connect_timeout=10)
    outcome = run_hosts([sshd_lab.host("lab01").spec()], _echo_all, opts)["lab01"]
    assert outcome.state.value == "ok", outcome.reason
    assert outcome.value == [*HOSTILE, "".join(f"<{v}>" for v in HOSTILE)]
    assert not os.path.exists(MARKER)


def test_hostile_values_round_trip_through_sudo(sshd_lab: SshdLab) -> None:
    from tests.conftest import need_binary
    from tests.lab.sshd import SUDO_PASSWORD

    need_binary("sudo", "sudo")
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    opts = RunOptions(
        known_hosts=(sshd_lab.known_hosts,), connect_timeout=10, become_password=SUDO_PASSWORD
    )
    spec = sshd_lab.host("sudo").spec(ansible_become=True)
    outcome = run_hosts([spec], _echo_all, opts)[spec.name]
    assert outcome.state.value == "ok", outcome.reason
    assert outcome.value == [*HOSTILE, "".join(f"<{v}>" for v in HOSTILE)]
    assert not os.path.exists(MARKER)
