"""Never stuck, nothing left behind (issue 13, item 4): a command that runs past its timeout is
ended on the host, not left running there; in ``apply`` it is a failed task, reported when it
happens, not an unreachable host; long-running modules have their own bounds. Real sshd hosts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from provision import defaults
from provision.hostkeys import KnownHosts
from provision.modules import MODULES
from provision.modules.base import Context
from provision.ssh import CommandTimeout, SSHSession
from tests.lab.sshd import SUDO_PASSWORD, SshdLab
from tests.test_cli import cli


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pids: list[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


def _pids(path: Path) -> list[int]:
    deadline = time.monotonic() + 5
    while (not path.exists() or len(path.read_text().split()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


@pytest.mark.parametrize("login", ["root", "sudo"])
def test_a_timed_out_command_is_ended_on_the_host(
    sshd_lab: SshdLab, tmp_path: Path, login: str
) -> None:
    """The shell and the child it started both end soon after the timeout (they ran on for
    the hour before: closing the channel does not stop a command that neither reads nor writes)."""
    pidfile = tmp_path / "pids"
    os.chmod(tmp_path, 0o777)  # the sudo host's login user writes here too
    if login == "root":
        host = sshd_lab.ok_hosts[0]
        spec = host.spec()
    else:
        host = sshd_lab.host("sudo")
        spec = host.spec(ansible_become=True)
    store = KnownHosts([sshd_lab.known_hosts], include_user=False)
    session = SSHSession(spec, known_hosts=store, become_password=SUDO_PASSWORD).open()
    try:
        with pytest.raises(CommandTimeout) as err:
            session.run(f"sleep 3600 & echo $$ $! > {pidfile}; wait", timeout=2)
        assert err.value.seconds == 2
        pids = _pids(pidfile)
        assert len(pids) == 2 and all(_alive(p) for p in pids)  # running until the host ends them
        assert _gone(pids, within=15), f"still running on the host: {pids}"
    finally:
        session.close()


def test_apply_reports_a_timed_out_task_as_failed_when_it_happens(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    host = sshd_lab.ok_hosts[1]
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), [host])
    book = tmp_path / "slow.yml"
    book.write_text(
        "- name: slow\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: a step that takes too long\n      command: sleep 3600\n"
        "    - name: never reached\n      command: 'true'\n"
    )
    start = time.monotonic()
    r = cli(
        "apply",
        inv,
        "-p",
        str(book),
        "--command-timeout",
        "2",
        env=sshd_lab.env(),
        cwd=str(tmp_path),
    )
    took = time.monotonic() - start
    assert r.returncode == 2, r.stdout + r.stderr  # failed, not unreachable (4)
    line = f"failed: [{host.name}] slow / a step that takes too long: timed out after 2s"
    before_recap = r.stdout.split("PLAY RECAP")[0]
    assert f"{line} ({book.name}:5)" in before_recap  # message first, the file short
    recap = r.stdout.split("PLAY RECAP")[1]
    assert "unreachable=0" in recap and "failed=1" in recap
    assert took < 20, took


def test_apt_steps_have_their_own_bound_beyond_apts_lock_wait() -> None:
    """apt waits up to lock_timeout (120 s) for the dpkg lock itself; the step may run that long
    plus the install, so the "lock held by pid N" message can appear."""
    module = MODULES["apt"]
    state = (
        "@@pkgs\n@@policy\nhtop:\n  Installed: (none)\n  Candidate: 3.2.2-2\n"
        "  Version table:\n@@meta\ncache_mtime=50\nnow=100\ninterrupted="
    )
    for lock_timeout in (120, 600):
        args = module.finalize({"name": ["htop"], "lock_timeout": lock_timeout})
        (step,) = module.plan(args, state, Context()).steps
        assert step.timeout == lock_timeout + 1800
        assert step.timeout > defaults.COMMAND_TIMEOUT
