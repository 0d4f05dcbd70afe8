"""The command line as a user meets it: real processes, real sshd hosts, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from provision import __version__
from tests.lab.sshd import FAULT_KINDS, SshdLab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["-T", "2", "--command-timeout", "3"]


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m provision`` the way a user would, from the repository root."""
    env = dict(env or os.environ)
    env["PYTHONPATH"] = REPO
    return subprocess.run(
        [sys.executable, "-m", "provision", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


def host_lines(stdout: str) -> dict[str, str]:
    """``host | STATE | ...`` header lines by host."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split(" | ")
        if len(parts) >= 2 and parts[1].isupper():
            out[parts[0]] = parts[1]
    return out


def test_version_and_help() -> None:
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"provision {__version__}"
    r = cli("--help")
    assert r.returncode == 0
    for command in ("inventory", "ping", "run", "audit"):
        assert command in r.stdout


def test_missing_inventory_is_one_line_error(tmp_path) -> None:
    r = cli("run", "-i", str(tmp_path / "nope.ini"), "true")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "nope.ini" in r.stderr


def test_bad_inventory_names_file_and_line(tmp_path) -> None:
    inv = tmp_path / "bad.ini"
    inv.write_text("[web]\nws01\n\n[web:typo]\nx=1\n")
    r = cli("ping", "-i", str(inv))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{inv}:4" in r.stderr
    assert r.stderr.count("\n") == 1


def test_unknown_limit_is_one_line_error(tmp_path) -> None:
    inv = tmp_path / "lab.ini"
    inv.write_text("[web]\nws01\n")
    r = cli("run", "-i", str(inv), "--limit", "nosuchhost", "true")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "nosuchhost" in r.stderr


def test_ping_local_uses_local_connection() -> None:
    r = cli("ping", "--local")
    assert r.returncode == 0, r.stderr
    assert host_lines(r.stdout) == {"localhost": "SUCCESS"}


def test_ping_reports_each_fault_host_in_its_own_state(sshd_lab: SshdLab, tmp_path) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"))
    r = cli("ping", "-i", inv, *FAST, env=sshd_lab.env())
    states = host_lines(r.stdout)
    assert states["lab01"] == states["lab02"] == states["lab03"] == "SUCCESS"
    assert states["fault-closed"] == "UNREACHABLE"
    assert states["fault-tarpit"] == "UNREACHABLE"
    assert states["fault-garbage"] == "UNREACHABLE"
    assert states["fault-changed-key"] == "HOST KEY REFUSED"
    assert states["fault-hang"] == "TIMED OUT"
    assert states["fault-junk"] == "SUCCESS"
    assert r.returncode == 4  # unreachable hosts, none failed
    assert "Traceback" not in r.stderr


def test_run_groups_output_and_exit_codes(sshd_lab: SshdLab, tmp_path) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"))
    ok = cli("run", "-i", inv, "-l", "lab01:lab02", *FAST, "echo out-$((6*7))", env=sshd_lab.env())
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("out-42") == 2
    assert host_lines(ok.stdout) == {"lab01": "OK", "lab02": "OK"}
    assert "2 hosts: 2 ok" in ok.stderr

    failed = cli(
        "run", "-i", inv, "-l", "lab0*:!lab03", *FAST, "echo e >&2; exit 3", env=sshd_lab.env()
    )
    assert failed.returncode == 2
    assert "lab01 | FAILED | rc=3 >>" in failed.stdout
    assert host_lines(failed.stdout) == {"lab01": "FAILED", "lab02": "FAILED"}

    # unreachable wins over failed, as in Ansible (`ansible` exits 4 for the same two hosts)
    mixed = cli("run", "-i", inv, "-l", "lab01:fault-closed", *FAST, "exit 1", env=sshd_lab.env())
    assert mixed.returncode == 4


def test_changed_host_key_runs_nothing(sshd_lab: SshdLab, tmp_path) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"))
    marker = tmp_path / "ran"
    r = cli(
        "run", "-i", inv, "-l", "fault-changed-key", *FAST, f"touch {marker}", env=sshd_lab.env()
    )
    assert r.returncode == 4
    assert "HOST KEY REFUSED" in r.stdout and "ssh-keygen -R" in r.stdout
    assert not marker.exists()


def test_unknown_host_key_refused_then_accepted(
    sshd_lab_factory: Callable[..., SshdLab], tmp_path
) -> None:
    lab = sshd_lab_factory(n=1)
    inv = lab.write_inventory(str(tmp_path / "hosts.ini"))
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home)}
    marker = tmp_path / "ran"
    r = cli("run", "-i", inv, *FAST, f"touch {marker}", env=env)
    assert r.returncode == 4 and "HOST KEY REFUSED" in r.stdout
    assert "--accept-new-host-keys" in r.stdout
    assert not marker.exists()

    r = cli("run", "-i", inv, *FAST, "--accept-new-host-keys", f"touch {marker}", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert marker.exists()
    # recorded for this host (its name hashed, as HashKnownHosts in Debian's ssh_config says)
    from provision.hostkeys import KnownHosts

    store = KnownHosts([str(home / ".ssh" / "known_hosts")], include_user=False)
    recorded = store.known(lab.hosts[0].key_name)
    assert [e.key for e in recorded] == [lab.hosts[0].host_key.split()[1]]


def test_fifty_hosts_and_every_fault_in_one_run(
    sshd_lab_factory: Callable[..., SshdLab], tmp_path
) -> None:
    faults = [k for k in FAULT_KINDS if k != "sudo"]
    lab = sshd_lab_factory(n=50, faults=faults, prefix="ws")
    inv = lab.write_inventory(str(tmp_path / "hosts.ini"))
    r = cli("run", "-i", inv, *FAST, "hostname >/dev/null && echo alive", env=lab.env())
    states = host_lines(r.stdout)
    assert len(states) == 50 + len(faults)
    assert sum(1 for h, s in states.items() if h.startswith("ws") and s == "OK") == 50
    # 50 hosts + the junk host, which still runs commands after its noise
    assert r.stdout.splitlines().count("alive") == 51
    assert states["fault-hang"] == "TIMED OUT"
    assert states["fault-changed-key"] == "HOST KEY REFUSED"
    assert r.returncode == 4


def test_inventory_list_and_host(tmp_path) -> None:
    inv = tmp_path / "lab.ini"
    inv.write_text("[gpu]\nws[01:02] ansible_port=2222\n\n[gpu:vars]\ncount=2\n")
    r = cli("inventory", "-i", str(inv), "--list")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["gpu"]["hosts"] == ["ws01", "ws02"]
    assert data["_meta"]["hostvars"]["ws02"] == {"ansible_port": 2222, "count": 2}
    r = cli("inventory", "-i", str(inv), "--host", "ws01")
    assert json.loads(r.stdout) == {"ansible_port": 2222, "count": 2}
    r = cli("inventory", "-i", str(inv), "--host", "nope")
    assert r.returncode == 1 and "nope" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("flag", ["--become-password-file"])
def test_become_password_file_missing_is_clear(flag: str, tmp_path) -> None:
    inv = tmp_path / "lab.ini"
    inv.write_text("localhost ansible_connection=local\n")
    r = cli("ping", "-i", str(inv), flag, str(tmp_path / "missing"))
    assert r.returncode == 1 and "become password" in r.stderr and "Traceback" not in r.stderr


def _recap(stdout: str) -> dict[str, dict[str, int]]:
    """The ansible-playbook style PLAY RECAP lines by host: {host: {"ok": N, ...}}."""
    out = {}
    for line in stdout.split("PLAY RECAP", 1)[1].splitlines():
        host, sep, rest = line.partition(" : ")
        if sep:
            out[host.strip()] = {k: int(v) for k, v in (f.split("=") for f in rest.split())}
    return out


def test_apply_converges_then_changes_nothing(sshd_lab: SshdLab, tmp_path) -> None:
    """apply through the CLI on real sshd hosts: changed, then zero changes, --check, retry."""
    target = tmp_path / "site"
    target.mkdir()
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- name: lab files\n"
        "  hosts: lab\n"
        "  tasks:\n"
        "    - name: motd\n"
        "      copy:\n"
        "        dest: '{{ target }}/motd-{{ inventory_hostname }}'\n"
        '        content: "welcome to {{ inventory_hostname }}\\n"\n'
        "        mode: '0644'\n"
    )
    inv = sshd_lab.write_inventory(
        str(tmp_path / "hosts.ini"), sshd_lab.ok_hosts, extra_vars={"target": str(target)}
    )
    first = cli("apply", inv, "-p", str(playbook), *FAST, env=sshd_lab.env(), cwd=str(tmp_path))
    assert first.returncode == 0, first.stdout + first.stderr
    recap = _recap(first.stdout)
    assert {h: r["changed"] for h, r in recap.items()} == {"lab01": 1, "lab02": 1, "lab03": 1}
    assert (target / "motd-lab02").read_text() == "welcome to lab02\n"
    mtime = (target / "motd-lab02").stat().st_mtime_ns

    again = cli("apply", inv, "-p", str(playbook), *FAST, env=sshd_lab.env(), cwd=str(tmp_path))
    assert again.returncode == 0
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in _recap(again.stdout).values())
    assert (target / "motd-lab02").stat().st_mtime_ns == mtime

    (target / "motd-lab01").write_text("edited by hand\n")
    check = cli(
        "apply",
        inv,
        "-p",
        str(playbook),
        "--check",
        "--diff",
        *FAST,
        env=sshd_lab.env(),
        cwd=str(tmp_path),
    )
    assert check.returncode == 0
    assert _recap(check.stdout)["lab01"]["changed"] == 1
    assert "-edited by hand" in check.stdout and "+welcome to lab01" in check.stdout
    assert (target / "motd-lab01").read_text() == "edited by hand\n"  # --check changed nothing


def test_apply_unreachable_host_writes_retry_file(sshd_lab: SshdLab, tmp_path) -> None:
    playbook = tmp_path / "ping.yml"
    playbook.write_text("- hosts: all\n  tasks:\n    - name: alive\n      command: 'true'\n")
    inv = sshd_lab.write_inventory(
        str(tmp_path / "hosts.ini"), [sshd_lab.host("lab01"), sshd_lab.host("closed")]
    )
    r = cli("apply", inv, "-p", str(playbook), *FAST, env=sshd_lab.env(), cwd=str(tmp_path))
    assert r.returncode == 4, r.stdout + r.stderr
    assert _recap(r.stdout)["fault-closed"]["unreachable"] == 1
    assert (tmp_path / "ping.retry").read_text().split() == ["fault-closed"]


def test_apply_bad_playbook_is_one_line(tmp_path) -> None:
    playbook = tmp_path / "bad.yml"
    playbook.write_text("- hosts: all\n  tasks:\n    - name: oops\n      copyy: {dest: /x}\n")
    inv = tmp_path / "hosts.ini"
    inv.write_text("localhost ansible_connection=local\n")
    r = cli("apply", str(inv), "-p", str(playbook))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{playbook}:3: task 'oops'" in r.stderr and "copyy" in r.stderr
    assert r.stderr.count("\n") == 1
    ok = cli("apply", "-p", str(tmp_path / "bad.yml"), "--syntax-check")
    assert ok.returncode == 1
