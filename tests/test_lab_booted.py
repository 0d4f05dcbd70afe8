"""The booted-host harness itself: real systemd containers, real OpenSSH, real reboots.

The apply engine tests rely on these properties, so they are proven here on their own: each host
answers over SSH with strict host key checking under its own name, apt works inside, a reboot
inside really reboots (new boot id, sshd back), and hosts do not share files.
"""

from __future__ import annotations

import configparser
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.booted import (
    BASE_DIR,
    LAB_PASSWORD,
    LAB_USER,
    STATE_DIR,
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    cleanup_stale,
    machine_mirror,
    parse_mirror,
    write_inventory,
    write_known_hosts,
)

TIMINGS: dict[str, float] = {}


def _ssh(host: BootedHost, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        host.ssh_argv(command), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def two_hosts(booted_hosts) -> list[BootedHost]:  # noqa: F811
    started = time.monotonic()
    hosts = booted_hosts(2)
    TIMINGS["boot_two_parallel_s"] = time.monotonic() - started
    for host in hosts:
        TIMINGS[f"boot_{host.name}_s"] = host.boot_seconds
    return hosts


# -- pure parts --------------------------------------------------------------------------------


def test_mirror_from_deb822_sources_skips_security_and_disabled() -> None:
    text = (
        "Types: deb\nURIs: http://old.example/debian\nSuites: bookworm\nComponents: main\n"
        "Enabled: no\n\n"
        "Types: deb-src deb\n# a comment\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    assert parse_mirror([("debian.sources", text)]) == "http://mirror.example/debian"
    assert parse_mirror([("debian.sources", text)], suite="trixie") is None


def test_mirror_from_one_line_sources_list_with_options() -> None:
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://proxy.example:3142/debian "
        "bookworm main contrib\n"
    )
    assert parse_mirror([("sources.list", text)]) == "http://proxy.example:3142/debian"


# -- real booted hosts -------------------------------------------------------------------------


def test_hosts_answer_ssh_with_their_own_hostname(two_hosts: list[BootedHost]) -> None:
    assert len({h.address for h in two_hosts}) == 2
    for host in two_hosts:
        assert host.address.startswith("127.0.2.")
        done = _ssh(host, "hostname; id -u; cat /proc/1/comm")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [host.name, "0", "systemd"]
        assert host.exec("systemctl is-system-running", check=False).stdout.strip() in (
            "running",
            "degraded",
        )


def test_strict_host_key_checking_rejects_the_other_hosts_key(
    two_hosts: list[BootedHost],
) -> None:
    first, second = two_hosts
    argv = first.ssh_argv("true")
    argv[argv.index(f"UserKnownHostsFile={first.known_hosts_path}")] = (
        f"UserKnownHostsFile={second.known_hosts_path}"
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr


def test_password_login_is_refused_and_sudo_user_has_known_password(
    two_hosts: list[BootedHost],
) -> None:
    host = two_hosts[0]
    # The server itself says which methods it accepts: publickey only.
    argv = host.ssh_argv("true")
    argv[argv.index(f"root@{host.address}")] = f"{LAB_USER}@{host.address}"
    done = subprocess.run(
        ["ssh", "-v", *argv[1:]], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 255
    offered = [
        line.rsplit(":", 1)[1].strip()
        for line in done.stderr.splitlines()
        if "Authentications that can continue" in line
    ]
    assert offered and all(methods == "publickey" for methods in offered), done.stderr
    # The become path the engine uses: sudo -S reads the password from stdin.
    sudo = host.exec(
        f"su - {LAB_USER} -c 'sudo -S -p \"\" -u root id -u'", input=LAB_PASSWORD + "\n"
    )
    assert sudo.stdout.strip() == "0"
    wrong = host.exec(
        f"su - {LAB_USER} -c 'sudo -S -p \"\" -u root id -u'", input="wrong\n", check=False
    )
    assert wrong.returncode != 0


def test_apt_inside_works(two_hosts: list[BootedHost]) -> None:
    host = two_hosts[0]
    done = _ssh(host, "dpkg-query -W -f '${Status}' systemd openssh-server python3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("install ok installed") == 3
    # The package lists from the base build are there, so apt resolves without an update.
    policy = _ssh(host, "apt-cache policy sudo")
    assert "Installed:" in policy.stdout and "Candidate:" in policy.stdout
    # The container shares the machine's network: apt reaches the machine's own mirror.
    update = _ssh(host, "apt-get update", timeout=120)
    assert update.returncode == 0, update.stderr
    assert machine_mirror() in update.stdout
    # Background apt jobs are masked: they would take the dpkg lock at random during tests.
    timer = host.exec("systemctl is-enabled apt-daily.timer", check=False).stdout.strip()
    assert timer == "masked"


def test_hosts_are_independent(two_hosts: list[BootedHost]) -> None:
    first, second = two_hosts
    marker = f"/root/marker-{first.name}"
    assert _ssh(first, f"echo hello > {marker}").returncode == 0
    assert first.exec(f"cat {marker}").stdout == "hello\n"
    assert second.exec(f"test -e {marker}", check=False).returncode == 1
    assert not (BASE_DIR / "root" / marker.lstrip("/")).exists()  # the base stays clean
    assert first.boot_id() != second.boot_id()
    ids = {h.exec("cat /etc/machine-id").stdout for h in two_hosts}
    assert len(ids) == 2


def test_inventory_and_known_hosts_work_with_openssh(
    two_hosts: list[BootedHost], tmp_path: Path
) -> None:
    inventory = write_inventory(two_hosts, tmp_path / "inventory.ini")
    known = write_known_hosts(two_hosts, tmp_path / "known_hosts")
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=(" ",))
    parser.read(inventory)
    assert [h.name for h in two_hosts] == [line.split()[0] for line in parser["lab"]]
    for host in two_hosts:
        line = next(
            line for line in inventory.read_text().splitlines() if line.startswith(host.name + " ")
        )
        pairs = dict(word.split("=", 1) for word in line.split()[1:])
        assert pairs == {
            "ansible_host": host.address,
            "ansible_port": "22",
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(host.key_path),
        }
        done = subprocess.run(
            [
                "ssh",
                "-i",
                pairs["ansible_ssh_private_key_file"],
                "-p",
                pairs["ansible_port"],
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                f"{pairs['ansible_user']}@{pairs['ansible_host']}",
                "hostname",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.stdout.strip() == host.name, done.stderr


def test_inventory_works_with_real_ansible(two_hosts: list[BootedHost], tmp_path: Path) -> None:
    """The inventory the apply tests hand to `provision apply` is one Ansible itself accepts."""
    inventory = write_inventory(two_hosts, tmp_path / "inventory.ini")
    known = write_known_hosts(two_hosts, tmp_path / "known_hosts")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ansible",
            "adhoc",
            "-i",
            str(inventory),
            "lab",
            "-m",
            "command",
            "-a",
            "cat /etc/hostname",
            "-o",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for host in two_hosts:
        assert f"{host.name} | CHANGED | rc=0 | (stdout) {host.name}" in done.stdout


def test_reboot_inside_really_reboots(two_hosts: list[BootedHost]) -> None:
    host, other = two_hosts
    old_id = host.boot_id()
    other_id = other.boot_id()
    boots = host.boots
    _ssh(host, "echo persisted > /root/survives; systemctl reboot")  # ssh may drop: fine
    seconds = host.wait_rebooted(old_id, timeout=90)
    TIMINGS["reboot_round_trip_s"] = seconds
    assert host.exit_statuses[-1] == 133
    assert host.boots == boots + 1
    new_id = _ssh(host, "cat /proc/sys/kernel/random/boot_id")
    assert new_id.returncode == 0, new_id.stderr
    assert new_id.stdout.strip() not in ("", old_id)
    assert _ssh(host, "cat /root/survives").stdout == "persisted\n"  # the disk is kept
    assert other.boot_id() == other_id  # the other host did not reboot
    TIMINGS["reboot_api_round_trip_s"] = host.reboot()  # the same through the harness call
    assert host.boots == boots + 2


def test_reboot_that_never_comes_back_then_power_cut(two_hosts: list[BootedHost]) -> None:
    """The switches the apply fault tests use: a reboot that stays down, and a vanished host."""
    host = two_hosts[0]
    old_id = host.boot_id()
    host.restart_on_reboot = False
    try:
        _ssh(host, "systemctl reboot")
        deadline = time.monotonic() + 30
        while host.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not host.running
        assert host.exit_statuses[-1] == 133  # it did reboot; the lab just did not boot it again
        assert _ssh(host, "true", timeout=15).returncode == 255
    finally:
        host.restart_on_reboot = True
    host.start()
    assert _ssh(host, "hostname").stdout.strip() == host.name
    after_boot = host.boot_id()
    assert after_boot != old_id

    host.kill()
    assert not host.running
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex((host.address, host.port)) != 0
    host.start()
    assert host.boot_id() not in (old_id, after_boot)
    assert _ssh(host, "cat /root/survives").stdout == "persisted\n"  # the disk outlives it all


def test_timings_are_reasonable(two_hosts: list[BootedHost]) -> None:
    """Reports the harness timings (shown with -rA) and guards against a boot that crawls."""
    print("booted-lab timings:", {key: round(value, 2) for key, value in sorted(TIMINGS.items())})
    assert all(h.boot_seconds < 60 for h in two_hosts), TIMINGS
    if "reboot_round_trip_s" in TIMINGS:
        assert TIMINGS["reboot_round_trip_s"] < 60, TIMINGS


def test_poweroff_inside_ends_the_host(two_hosts: list[BootedHost]) -> None:
    host = two_hosts[1]
    _ssh(host, "systemctl poweroff")
    deadline = time.monotonic() + 30
    while host.running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not host.running
    assert host.exit_statuses[-1] == 0  # a clean poweroff, not a reboot: no new boot
    assert _ssh(host, "true", timeout=15).returncode == 255
    host.stop()  # cleans up the stopped host's mount and files
    assert not host.merged.exists()


def test_cleanup_after_a_crashed_run() -> None:
    """A test process killed mid-run leaves a booted host; the next run removes all of it."""
    from tests.lab.booted import require_lab_tools

    require_lab_tools()
    script = (
        "import os, signal\n"
        "from tests.lab.booted import BootedLab\n"
        "lab = BootedLab()\n"
        "host = lab.start(1, 'crash')[0]\n"
        "print(host.tmpdir, host.address, host._proc.pid, lab.workdir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == -9, done.stderr
    tmpdir, address, nspawn_pid, client_dir = done.stdout.split()
    merged = Path(tmpdir) / "merged"
    assert merged.is_mount()
    assert Path(f"/proc/{nspawn_pid}").exists()  # the orphaned container still runs

    assert cleanup_stale() >= 1
    assert not Path(f"/proc/{nspawn_pid}").exists()
    assert not merged.is_mount()
    assert not Path(tmpdir).exists()
    assert not Path(client_dir).exists()
    assert not any(STATE_DIR.glob("crash*.json"))
    assert not any(Path("/run/systemd/nspawn/propagate").glob("crash*"))
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex((address, 22)) != 0  # nobody answers on its address any more
