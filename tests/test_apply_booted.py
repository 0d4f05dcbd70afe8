"""`provision apply`'s engine on real booted Debian hosts (systemd-nspawn, real OpenSSH).

Two hosts are booted once for the module. Every assertion about a host's state is made inside
the host (nsenter), never through the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.inventory import load_inventory
from tests.lab.booted import (
    LAB_PASSWORD,
    LAB_USER,
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)

DATA = Path(__file__).parent / "data" / "playbooks"
SITE_DAEMON_JSON = {
    "data-root": "/srv/docker",
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m"},
    "runtimes": {"custom": {"path": "/usr/local/bin/custom-runtime"}},
}
FILES = (
    "/etc/provision-test/greeting",
    "/etc/provision-test/motd",
    "/etc/provision-test/evil",
    "/etc/provision-test/marker",
    "/etc/docker/daemon.json",
)


class Lab:
    def __init__(self, hosts: list[BootedHost], workdir: Path) -> None:
        self.hosts = hosts
        self.workdir = workdir
        self.inventory_path = write_inventory(hosts, workdir / "inventory.ini")
        self.known_hosts = write_known_hosts(hosts, workdir / "known_hosts")
        self.playbooks = workdir / "playbooks"
        shutil.copytree(DATA, self.playbooks)

    def apply(self, playbook: str = "booted_site.yml", **kw: Any) -> PlaybookResult:
        extra = {"groups_first": self.hosts[0].name}
        extra.update(kw.pop("extra_vars", {}))
        opts = ApplyOptions(known_hosts=(str(self.known_hosts),), extra_vars=extra, **kw)
        inventory = load_inventory(str(self.inventory_path))
        return run_playbook(inventory, str(self.playbooks / playbook), opts)


def etc_fingerprint(host: BootedHost) -> str:
    """Every path, mode, owner, mtime and content hash under /etc and /root, as one text."""
    return host.exec(
        "find /etc /root /tmp -xdev -printf '%p %m %u %g %T@ %s\\n' | sort; "
        "find /etc /root -xdev -type f -exec sha256sum {} + | sort"
    ).stdout


@pytest.fixture(scope="module")
def lab(booted_hosts, tmp_path_factory) -> Lab:  # noqa: F811
    hosts = booted_hosts(2, prefix="apply")
    first = hosts[0]
    first.exec(
        "mkdir -p /etc/docker && cat > /etc/docker/daemon.json",
        input=json.dumps(SITE_DAEMON_JSON, indent=4) + "\n",
    )
    return Lab(hosts, tmp_path_factory.mktemp("apply"))


def _counts(result: PlaybookResult) -> dict[str, tuple[int, int, int, int, int]]:
    return {
        h: (s.ok, s.changed, s.failed, s.skipped, s.unreachable) for h, s in result.stats.items()
    }


def test_apply_then_again_changes_nothing(lab: Lab) -> None:
    first, second = lab.hosts
    result = lab.apply()
    failures = [r.msg for r in result.results if r.status == "failed"]
    assert result.exit_code == 0, failures
    assert all(s.changed >= 7 for s in result.stats.values()), _counts(result)

    for host in lab.hosts:
        assert host.exec("cat /etc/provision-test/greeting").stdout == f"hello from {host.name}\n"
        assert host.exec("stat -c %a /etc/provision-test/greeting").stdout.strip() == "640"
        assert host.exec("stat -c %a /etc/provision-test").stdout.strip() == "750"
        motd = host.exec("cat /etc/provision-test/motd").stdout
        assert motd == f"Welcome to {host.name}\n\n- managed by provision\n\n"
        # The hostile value stayed data: one file with that literal name, literal content.
        evil = "$(touch PWNED1); touch PWNED2 `touch PWNED3` > PWNED4"
        assert host.exec("cat /etc/provision-test/evil").stdout == evil
        listing = host.exec("ls -1 /etc/provision-test").stdout.splitlines()
        assert evil in listing
        stray = "find / -xdev -name 'PWNED*' -not -path '/etc/provision-test/*'"
        assert host.exec(stray).stdout == ""
        # Handlers: two notifying tasks changed, the handler ran once.
        assert host.exec("cat /root/handler.log").stdout == "fired\n"
        # No temp files left beside the written files.
        assert ".provision" not in host.exec("ls -a /etc/provision-test /etc/docker").stdout

    merged = json.loads(first.exec("cat /etc/docker/daemon.json").stdout)
    expected = dict(SITE_DAEMON_JSON)
    expected["runtimes"] = {
        "custom": {"path": "/usr/local/bin/custom-runtime"},
        "nvidia": {"path": "nvidia-container-runtime", "args": []},
    }
    expected["default-runtime"] = "nvidia"
    assert merged == expected
    assert list(merged) == [*SITE_DAEMON_JSON, "default-runtime"]  # the site's order is kept
    # A backup of the site's file was made before replacing it.
    backups = first.exec("ls /etc/docker").stdout.split()
    backup = [b for b in backups if b.startswith("daemon.json.") and b.endswith("~")]
    assert len(backup) == 1
    assert json.loads(first.exec(f"cat /etc/docker/{backup[0]}").stdout) == SITE_DAEMON_JSON
    fresh = json.loads(second.exec("cat /etc/docker/daemon.json").stdout)
    assert fresh == {
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
        "default-runtime": "nvidia",
    }
    assert first.exec("cat /etc/provision-test/first").stdout == "first\n"
    assert second.exec("test -e /etc/provision-test/first", check=False).returncode == 1
    skipped = [r for r in result.results if r.task == "only on the first host"]
    assert {r.host: r.status for r in skipped} == {first.name: "changed", second.name: "skipped"}

    stamps = {h.name: h.exec("stat -c '%n %Y.%y' " + " ".join(FILES)).stdout for h in lab.hosts}
    again = lab.apply()
    assert again.exit_code == 0
    assert {h: s.changed for h, s in again.stats.items()} == {first.name: 0, second.name: 0}
    assert all(s.failed == 0 and s.unreachable == 0 for s in again.stats.values())
    # Nothing to change: every task's state came back in ONE batched read per host.
    assert again.round_trips == {first.name: 1, second.name: 1}
    for host in lab.hosts:
        assert host.exec("stat -c '%n %Y.%y' " + " ".join(FILES)).stdout == stamps[host.name]
        assert host.exec("cat /root/handler.log").stdout == "fired\n"  # no change: no handler
        assert host.exec("cat /root/unless.log").stdout == "ran\n"
    reasons = {r.task: r.msg for r in again.results if r.host == second.name}
    assert "already has this content" in reasons["greeting file"]
    assert "already holds every key" in reasons["nvidia runtime in daemon.json"]
    assert "exists (creates)" in reasons["one-time marker"]
    assert "succeeded (unless)" in reasons["guarded by unless"]


def test_check_mode_changes_nothing_and_reports_diff(lab: Lab) -> None:
    lab.apply()  # converge first (the previous test may not have run alone)
    before = {h.name: etc_fingerprint(h) for h in lab.hosts}
    result = lab.apply(
        check=True,
        diff=True,
        extra_vars={"greeting": "changed greeting", "conf_dir": "/etc/provision-other"},
    )
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    assert all(s.changed > 0 for s in result.stats.values())
    after = {h.name: etc_fingerprint(h) for h in lab.hosts}
    assert after == before
    for host in lab.hosts:
        assert host.exec("test -e /etc/provision-other", check=False).returncode == 1
    shell = [r for r in result.results if r.task == "one-time marker"]
    assert {r.status for r in shell} == {"skipped"}
    greeting = next(r for r in result.results if r.task == "greeting file")
    assert greeting.diff is not None and "+changed greeting" in greeting.diff


def test_update_makes_backup_and_diff_hides_no_log(lab: Lab) -> None:
    host = lab.hosts[1]
    lab.apply()
    old = host.exec("cat /etc/provision-test/greeting").stdout
    result = lab.apply(diff=True, limit=host.name, extra_vars={"greeting": "second version"})
    assert result.exit_code == 0
    assert list(result.stats) == [host.name]  # --limit
    greeting = next(r for r in result.results if r.task == "greeting file")
    assert greeting.status == "changed"
    assert greeting.diff is not None
    assert f"-{old.strip()}" in greeting.diff and "+second version" in greeting.diff
    backup_path = greeting.data["backup_file"]
    assert host.exec(f"cat '{backup_path}'").stdout == old
    assert host.exec("cat /etc/provision-test/greeting").stdout == "second version\n"
    assert host.exec("cat /root/handler.log").stdout.count("fired") >= 2

    secret = lab.apply("booted_secret.yml", diff=True, limit=host.name)
    assert secret.exit_code == 0
    task = next(r for r in secret.results if r.task == "secret file")
    assert task.status == "changed"
    assert task.diff is not None and "suppressed" in task.diff
    assert "s3cr3t-token" not in task.diff + task.msg
    assert host.exec("cat /etc/provision-test/secret").stdout == "token=s3cr3t-token\n"
    assert host.exec("stat -c %a /etc/provision-test/secret").stdout.strip() == "600"


def test_invalid_existing_json_is_refused(lab: Lab) -> None:
    host = lab.hosts[1]
    bad = '{"data-root": "/srv/docker",\n  "broken": \n}\n'
    host.exec("mkdir -p /etc/docker && cat > /etc/docker/daemon.json", input=bad)
    try:
        result = lab.apply("booted_json_only.yml")
        assert result.exit_code == 2
        failed = [r for r in result.results if r.status == "failed"]
        assert [r.host for r in failed] == [host.name]
        assert "/etc/docker/daemon.json holds invalid JSON (line 3" in failed[0].msg
        assert "booted_json_only.yml:" in failed[0].msg and "task 'merge runtime'" in failed[0].msg
        assert host.exec("cat /etc/docker/daemon.json").stdout == bad  # untouched
        assert result.retry_text == f"{host.name}\n"
        assert result.stats[lab.hosts[0].name].failed == 0
        # The failed host ran nothing after the failure.
        assert not [r for r in result.results if r.host == host.name and r.task == "after merge"]
    finally:
        host.exec("rm -f /etc/docker/daemon.json")


def test_unreachable_host_gives_exit_4_and_retry_file(lab: Lab, tmp_path: Path) -> None:
    text = lab.inventory_path.read_text()
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(text + "ghost ansible_host=127.0.2.254 ansible_port=2 ansible_user=root\n")
    opts = ApplyOptions(known_hosts=(str(lab.known_hosts),), connect_timeout=3)
    result = run_playbook(
        load_inventory(str(inventory)), str(lab.playbooks / "booted_json_only.yml"), opts
    )
    assert result.exit_code == 4
    assert result.stats["ghost"].unreachable == 1
    assert result.retry_text == "ghost\n"
    assert all(result.stats[h.name].unreachable == 0 for h in lab.hosts)


def test_become_through_sudo_with_a_password(lab: Lab, tmp_path: Path) -> None:
    host = lab.hosts[0]
    host.exec(
        f"install -d -o {LAB_USER} -m 700 /home/{LAB_USER}/.ssh && "
        f"install -o {LAB_USER} -m 600 /root/.ssh/authorized_keys /home/{LAB_USER}/.ssh/"
    )
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"[lab]\n{host.name} ansible_host={host.address} ansible_user={LAB_USER} "
        f"ansible_ssh_private_key_file={host.key_path}\n"
    )
    opts = ApplyOptions(known_hosts=(str(lab.known_hosts),), become_password=LAB_PASSWORD)
    playbook = str(lab.playbooks / "booted_become.yml")
    result = run_playbook(load_inventory(str(inventory)), playbook, opts)
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    assert host.exec("stat -c '%U %a' /etc/provision-become").stdout == "root 600\n"
    assert host.exec("stat -c %U /tmp/as-login-user").stdout == f"{LAB_USER}\n"
    assert host.exec("cat /etc/provision-whoami").stdout == "root\n"
    again = run_playbook(load_inventory(str(inventory)), playbook, opts)
    assert again.stats[host.name].changed == 0
    # No password: a clear failure, not a hang.
    refused = run_playbook(
        load_inventory(str(inventory)), playbook, ApplyOptions(known_hosts=(str(lab.known_hosts),))
    )
    assert refused.exit_code == 2
    assert "sudo needs a password" in " ".join(
        [r.msg for r in refused.results] + list(refused.host_reasons.values())
    )


def test_service_started_enabled_daemon_reload_and_restart_handler(lab: Lab) -> None:
    host = lab.hosts[1]
    first = lab.apply("booted_service.yml", limit=host.name)
    assert first.exit_code == 0, [r.msg for r in first.results if r.status == "failed"]
    assert host.exec("systemctl is-active provision-demo").stdout == "active\n"
    assert host.exec("systemctl is-enabled provision-demo").stdout == "enabled\n"
    assert [r.task for r in first.results][-1] == "restart demo"
    pid = host.exec("systemctl show -p MainPID --value provision-demo").stdout

    again = lab.apply("booted_service.yml", limit=host.name)
    assert again.stats[host.name].changed == 0
    assert "restart demo" not in [r.task for r in again.results]
    assert host.exec("systemctl show -p MainPID --value provision-demo").stdout == pid

    changed = lab.apply("booted_service.yml", limit=host.name, extra_vars={"demo_arg": "2000"})
    assert changed.exit_code == 0
    service = next(r for r in changed.results if r.task == "demo running and enabled")
    assert service.status == "changed" and service.changes == ["systemctl daemon-reload"]
    show = "systemctl show -p NeedDaemonReload -p ExecStart provision-demo"
    state = host.exec(show).stdout
    assert "NeedDaemonReload=no" in state and "/bin/sleep 2000" in state
    assert host.exec("systemctl show -p MainPID --value provision-demo").stdout != pid
    assert "sleep 2000" in host.exec("ps -eo args").stdout


def test_facts_gathered_in_the_first_batch(lab: Lab) -> None:
    host = lab.hosts[1]
    result = lab.apply("booted_facts.yml", limit=host.name)
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    arch = host.exec("uname -m").stdout.strip()
    point = host.exec("cat /etc/debian_version").stdout.strip()  # 12.x: Ansible's version
    assert point.startswith("12.")
    assert host.exec("cat /root/facts.txt").stdout == (
        f"Debian 12 bookworm Debian systemd apt False {arch} {host.name} {point}"
    )
    assert [(r.task, r.status) for r in result.results] == [
        ("Gathering Facts", "ok"),
        ("facts file", "changed"),
    ]
    again = lab.apply("booted_facts.yml", limit=host.name)
    assert again.stats[host.name].changed == 0 and again.stats[host.name].ok == 2
    # facts + (task args need facts, so) one more batched read; no writes
    assert again.round_trips[host.name] == 2


def test_host_that_goes_away_mid_run_is_unreachable(lab: Lab) -> None:
    """Last on purpose: the host stays down (the fixture cleans it up)."""
    host = lab.hosts[0]
    result = lab.apply("booted_vanish.yml", limit=host.name, command_timeout=60)
    stats = result.stats[host.name]
    assert (stats.ok, stats.changed, stats.unreachable, stats.failed) == (2, 2, 1, 0)
    assert result.exit_code == 4
    assert result.retry_text == f"{host.name}\n"
    assert "connection" in result.host_reasons[host.name]
    assert [r.task for r in result.results] == ["before", "power goes"]
