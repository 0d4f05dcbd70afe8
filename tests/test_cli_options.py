"""Never stuck, one clear line (issue 13, items 3, 5, 9, 10): the connection options take one
path for every command; bad values and an unreadable known_hosts end in one line and a non-zero
exit, never a traceback or a hang. Real processes, real sshd hosts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from provision import defaults
from provision.cli import build_parser
from provision.engine import ApplyOptions
from provision.errors import UsageError
from provision.executor import RunOptions
from tests.lab.sshd import SshdLab
from tests.test_cli import cli

BAD_VALUES = [
    (["--deadline", "inf"], "--deadline must be a positive number of seconds, got inf"),
    (["--deadline", "0"], "--deadline must be a positive number of seconds, got 0"),
    (["-T", "-1"], "-T/--timeout must be a positive number of seconds, got -1"),
    (["-T", "nan"], "-T/--timeout must be a positive number of seconds, got nan"),
    (["--command-timeout", "-5"], "--command-timeout must be a positive number of seconds, got -5"),
    (["--forks", "0"], "--forks must be at least 1, got 0"),
    (["--forks", "-3"], "--forks must be at least 1, got -3"),
]


def _local_inventory(tmp_path: Path) -> str:
    inv = tmp_path / "hosts.ini"
    inv.write_text("localhost ansible_connection=local\n")
    return str(inv)


def _playbook(tmp_path: Path, body: str = "command: 'true'") -> str:
    book = tmp_path / "play.yml"
    book.write_text(
        f"- hosts: all\n  gather_facts: false\n  tasks:\n    - name: step\n      {body}\n"
    )
    return str(book)


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    inv = _local_inventory(tmp_path)
    return {
        "ping": ["ping", "-i", inv],
        "run": ["run", "-i", inv, "true"],
        "audit": ["audit", "-i", inv],
        "apply": ["apply", inv, "-p", _playbook(tmp_path)],
    }


@pytest.mark.parametrize(("flags", "message"), BAD_VALUES, ids=[" ".join(f) for f, _ in BAD_VALUES])
@pytest.mark.parametrize("command", ["ping", "run", "audit", "apply"])
def test_bad_option_values_are_one_line_exit_5(
    tmp_path: Path, command: str, flags: list[str], message: str
) -> None:
    r = cli(*_commands(tmp_path)[command], *flags, cwd=str(tmp_path))
    assert r.returncode == UsageError.exit_code == 5, r.stdout + r.stderr
    assert r.stderr == f"provision: error: {message}\n"
    assert "Traceback" not in r.stdout and "internal error" not in r.stdout


def test_an_unparsable_option_exits_5_not_2(tmp_path: Path) -> None:
    """argparse's own code is 2, which means "some host failed" here."""
    r = cli("ping", "-i", _local_inventory(tmp_path), "--forks", "many")
    assert r.returncode == 5
    assert r.stderr.splitlines()[-1] == (
        "provision ping: error: argument -f/--forks: invalid int value: 'many'"
    )


def test_every_command_has_the_same_defaults() -> None:
    parser = build_parser()
    for argv in (["run", "-i", "x", "true"], ["audit"], ["apply", "x"]):
        args = parser.parse_args(argv)
        assert (args.forks, args.timeout, args.command_timeout) == (
            defaults.FORKS,
            defaults.CONNECT_TIMEOUT,
            defaults.COMMAND_TIMEOUT,
        )
    ping = parser.parse_args(["ping"])
    assert ping.command_timeout == defaults.PING_COMMAND_TIMEOUT == 10
    run, apply = RunOptions(), ApplyOptions()
    assert (run.forks, run.connect_timeout, run.command_timeout) == (64, 10, 120)
    assert (apply.forks, apply.connect_timeout, apply.command_timeout) == (64, 10, 120)


def test_apply_honours_deadline(sshd_lab: SshdLab, tmp_path: Path) -> None:
    """A 30 s playbook with --deadline 3 ends by then: the host timed out, exit 4."""
    host = sshd_lab.ok_hosts[0]
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), [host])
    book = _playbook(tmp_path, "command: sleep 30")
    start = time.monotonic()
    r = cli("apply", inv, "-p", book, "--deadline", "3", env=sshd_lab.env(), cwd=str(tmp_path))
    took = time.monotonic() - start
    assert r.returncode == 4, r.stdout + r.stderr
    # said on stdout when it happens (issue 15), as unreachable hosts are
    assert f"timed out: [{host.name}] " in r.stdout
    assert "overall deadline of 3s reached" in r.stdout.split("PLAY RECAP")[0]
    assert took < 20, took


@pytest.mark.parametrize("where", ["option", "home"])
@pytest.mark.parametrize("command", ["ping", "apply"])
def test_known_hosts_directory_is_one_line_not_a_hang(
    sshd_lab: SshdLab, tmp_path: Path, where: str, command: str
) -> None:
    host = sshd_lab.ok_hosts[0]
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), [host])
    home = tmp_path / "home"
    (home / ".ssh" / "known_hosts").mkdir(parents=True)
    env = {**sshd_lab.env(), "HOME": str(home)}
    bad = str(home / ".ssh" / "known_hosts")
    if where == "option":
        env = sshd_lab.env()
        bad = str(tmp_path / "kh.d")
        Path(bad).mkdir()
    argv = ["ping", "-i", inv] if command == "ping" else ["apply", inv, "-p", _playbook(tmp_path)]
    extra = ["--known-hosts", bad] if where == "option" else []
    r = cli(*argv, *extra, env=env, cwd=str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr == (
        f"provision: error: cannot read known_hosts file {bad}: Is a directory; "
        "it must be a readable file (or absent)\n"
    )


def test_ping_answers_in_seconds_for_a_hung_host(sshd_lab: SshdLab, tmp_path: Path) -> None:
    """The hang host logs in, then every command sleeps an hour: ping's default command timeout
    (10 s) reports it, naming the timeout, instead of after 120 s."""
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), [sshd_lab.host("hang")])
    start = time.monotonic()
    r = cli("ping", "-i", inv, env=sshd_lab.env(), cwd=str(tmp_path))
    took = time.monotonic() - start
    assert r.returncode == 4, r.stdout + r.stderr
    assert "timed out after 10s" in r.stdout
    assert took < 30, took
