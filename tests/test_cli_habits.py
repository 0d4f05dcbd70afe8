"""Exit codes a script can trust and the habits Ansible users bring: the real CLI in a
subprocess, against lab sshd hosts and a listening socket that proves no host was contacted."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.hostkeys import fingerprint
from tests.lab.sshd import SshdLab
from tests.test_cli import REPO, cli, host_lines

COMMANDS = ("inventory", "ping", "run", "audit", "apply")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port a host entry points at: any connection attempt shows up as pending."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    yield sock
    sock.close()


def _contacted(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


def _inventory(tmp_path: Path, sock: socket.socket) -> str:
    inv = tmp_path / "lab.ini"
    inv.write_text(f"[lab]\nws01 ansible_host=127.0.0.1 ansible_port={sock.getsockname()[1]}\n")
    return str(inv)


def _playbook(tmp_path: Path, body: str = "command: 'true'") -> str:
    path = tmp_path / "play.yml"
    path.write_text(f"- hosts: all\n  tasks:\n    - name: step\n      {body}\n")
    return str(path)


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_exit_5_with_that_commands_usage(command: str) -> None:
    needed = {"inventory": ["--list"], "run": ["true"]}.get(command, [])
    r = cli(command, *needed, "--no-such-flag")
    assert r.returncode == 5, r.stderr
    assert r.stderr.startswith(f"usage: provision {command} ")
    assert r.stderr.endswith(
        f"provision {command}: error: unrecognized arguments: --no-such-flag\n"
    )
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_no_command_is_a_usage_error() -> None:
    r = cli()
    assert r.returncode == 5 and r.stdout == ""
    assert r.stderr.startswith("usage: provision ") and "exit codes" in r.stderr


def test_exit_codes_are_listed_in_help_and_docs() -> None:
    docs = (Path(REPO) / "docs" / "cli.md").read_text()
    for argv in ([], *([c] for c in COMMANDS)):
        r = cli(*argv, "--help")
        assert r.returncode == 0
        codes = re.findall(r"^  (\d+) ", r.stdout.split("exit codes")[1], re.M)
        assert codes == ["0", "1", "2", "3", "4", "5", "130"], argv
    for code in ("0", "1", "2", "3", "4", "5", "130"):
        assert f"\n| {code} |" in docs


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("missing/report.json", "folder {tmp}/missing does not exist; create it"),
        (".", "is a folder; name a file in it"),
        ("/proc/report.json", "cannot write there: No such file or directory"),
    ],
)
def test_audit_output_checked_before_any_host(
    tmp_path: Path, listener: socket.socket, where: str, says: str
) -> None:
    inv = _inventory(tmp_path, listener)
    target = where if where.startswith("/") else str(tmp_path / where)
    r = cli("audit", inv, "-o", target, "-T", "2", cwd=str(tmp_path))
    assert r.returncode == 5, r.stdout + r.stderr
    assert r.stderr == f"provision: error: -o {target}: {says.format(tmp=tmp_path)}\n"
    assert not _contacted(listener)


@pytest.mark.parametrize("where", ["missing/x.retry", "/proc/x.retry", "."])
def test_retry_file_checked_before_any_host(
    tmp_path: Path, listener: socket.socket, where: str
) -> None:
    inv = _inventory(tmp_path, listener)
    target = where if where.startswith("/") else str(tmp_path / where)
    r = cli("apply", inv, "-p", _playbook(tmp_path), "--retry-file", target, cwd=str(tmp_path))
    assert r.returncode == 5, r.stdout + r.stderr
    assert r.stderr.startswith(f"provision: error: --retry-file {target}: ")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not _contacted(listener)


def test_unwritable_default_retry_file_keeps_the_real_exit_code(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    """In a directory where no file can be made, a failing run still exits 2 (the failure),
    warning first that no retry file will be written; before, a traceback exited 1."""
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), sshd_lab.ok_hosts[:1])
    play = _playbook(tmp_path, "command: 'false'")
    r = cli("apply", inv, "-p", play, "-T", "5", env=sshd_lab.env(), cwd="/proc")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("warning: retry file play.retry: cannot write there")
    assert "failed: [lab01]" in r.stdout


def test_apply_empty_selection_is_an_error(tmp_path: Path, listener: socket.socket) -> None:
    inv = Path(_inventory(tmp_path, listener))
    inv.write_text(inv.read_text() + "[gpu]\nws02 ansible_host=127.0.0.1\n")
    r = cli("apply", str(inv), "-p", _playbook(tmp_path), "-l", "lab:&gpu", cwd=str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("provision: error: no hosts matched")
    assert not _contacted(listener)


def test_shipped_playbooks_by_name_from_any_directory(tmp_path: Path) -> None:
    listed = cli("apply", "--list-playbooks", cwd=str(tmp_path))
    assert listed.returncode == 0
    names = listed.stdout.split()
    assert {"site.yml", "docker.yml", "nvidia-driver.yml"} <= set(names)
    assert "defaults.yml" not in names  # a vars file, not a playbook
    tasks = cli("apply", "-p", "docker.yml", "--list-tasks", cwd=str(tmp_path))
    assert tasks.returncode == 0, tasks.stderr
    assert tasks.stdout.startswith("play: ") and "docker" in tasks.stdout.lower()
    missing = cli("apply", "-p", "dokcer.yml", "--list-tasks", cwd=str(tmp_path))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "dokcer.yml: playbook not found" in missing.stderr and "docker.yml" in missing.stderr


def test_inventory_positional_in_every_command(sshd_lab: SshdLab, tmp_path: Path) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), sshd_lab.ok_hosts[:1])
    ping = cli("ping", inv, "-T", "5", env=sshd_lab.env())
    assert ping.returncode == 0 and host_lines(ping.stdout) == {"lab01": "SUCCESS"}
    run = cli("run", inv, "-T", "5", "echo out-$((6*7))", env=sshd_lab.env())
    assert run.returncode == 0 and "out-42" in run.stdout
    shown = cli("inventory", inv, "--graph")
    assert shown.returncode == 0 and "lab01" in shown.stdout
    twice = cli("ping", inv, "-i", inv)
    assert twice.returncode == 1 and "give the inventory once" in twice.stderr


def test_debug_log_has_no_fabric_or_invoke_noise(sshd_lab: SshdLab, tmp_path: Path) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), sshd_lab.ok_hosts[:1])
    r = cli("run", inv, "-vv", "-T", "5", "true", env=sshd_lab.env())
    assert r.returncode == 0, r.stderr
    loggers = {m.group(1) for m in re.finditer(r"^[A-Z]+ ([\w.]+): ", r.stderr, re.M)}
    assert any(name.startswith("provision") for name in loggers), r.stderr
    assert not {n for n in loggers if n.split(".")[0] in ("fabric", "invoke")}, loggers


def test_accept_new_host_keys_says_which_keys_it_recorded(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    host = sshd_lab.ok_hosts[0]
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), [host])
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home)}
    r = cli("ping", inv, "-T", "5", "--accept-new-host-keys", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    keytype, key = host.host_key.split()[:2]

    known = home / ".ssh" / "known_hosts"
    said = f"recorded new host key for {host.key_name} ({keytype} {fingerprint(key)}) in {known}"
    assert [ln for ln in r.stderr.splitlines() if "recorded" in ln] == [said]
    again = cli("ping", inv, "-T", "5", "--accept-new-host-keys", env=env)
    assert again.returncode == 0 and "recorded" not in again.stderr


def test_apply_takes_the_playbook_first_with_dash_i_as_ansible_playbook_does(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), sshd_lab.ok_hosts[:1])
    marker = tmp_path / "ran"
    book = tmp_path / "site.yml"
    book.write_text(
        "---\n# a lab playbook\n- hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - command: touch {marker}\n"
    )
    done = cli("apply", str(book), "-i", inv, env=sshd_lab.env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.exists() and "lab01" in done.stdout
    flipped = cli("apply", "-i", inv, str(book), "--syntax-check")
    assert flipped.returncode == 0 and "syntax ok" in flipped.stdout
    both = cli("apply", str(book), "-i", inv, "-p", str(book))
    assert both.returncode == 1 and both.stderr.count("\n") == 1
    assert "two playbooks" in both.stderr


@pytest.mark.parametrize(
    ("flag", "hint"),
    [
        ("--start-at-task=Install", "--tags"),
        ("--step", "--check --diff"),
        ("-k", "provision onboard"),
        ("--become-user", "become_user on the play"),
        ("--force-handlers", "notified again"),
    ],
)
def test_ansible_playbook_options_provision_lacks_say_what_to_use(
    tmp_path: Path, listener: socket.socket, flag: str, hint: str
) -> None:
    r = cli("apply", _inventory(tmp_path, listener), "-p", _playbook(tmp_path), flag)
    assert r.returncode == 5, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith(f"provision apply: error: {flag.split('=')[0]} is not supported: ")
    assert hint in last
    assert not _contacted(listener)


def test_a_mistyped_module_argument_or_play_keyword_gets_a_did_you_mean(tmp_path: Path) -> None:
    cases = {
        "- hosts: all\n  tasks:\n    - ansible.builtin.cpoy: {src: a, dest: /b}\n": (
            "unknown module or keyword 'ansible.builtin.cpoy' (did you mean "
            "'ansible.builtin.copy'?)"
        ),
        "- hosts: all\n  tasks:\n    - apt: {nmae: jq}\n": (
            "unknown argument 'nmae' (did you mean 'name'?)"
        ),
        "- hosts: all\n  gather_fatcs: false\n  tasks: []\n": (
            "unknown play keyword 'gather_fatcs' (did you mean 'gather_facts'?)"
        ),
    }
    for number, (text, wanted) in enumerate(cases.items()):
        book = tmp_path / f"p{number}.yml"
        book.write_text(text)
        r = cli("apply", "-p", str(book), "--syntax-check")
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert wanted in r.stderr, r.stderr
