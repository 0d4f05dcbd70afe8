"""The lab harness: per-host sshd config, stale-daemon cleanup, inventory for real ansible."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from provision.executor import HostState, RunOptions, run_hosts
from tests.conftest import venv_tool
from tests.lab.fixtures import *  # noqa: F403
from tests.lab.sshd import LAB_ROOT, SshdLab, clean_stale_labs


def test_per_host_setenv_lines_are_merged(sshd_lab_factory) -> None:
    lab: SshdLab = sshd_lab_factory(
        n=2,
        extra_config={"*": ["SetEnv LAB_ALL=yes"], "lab01": ["SetEnv SCENARIO=a100 GPUS=2"]},
    )
    outcomes = run_hosts(
        lab.specs(),
        lambda s: s.run('echo "$LAB_ALL ${SCENARIO:-none} ${GPUS:-0}"').stdout.strip(),
        RunOptions(known_hosts=(lab.known_hosts,)),
    )
    assert {n: o.value for n, o in outcomes.items()} == {
        "lab01": "yes a100 2",
        "lab02": "yes none 0",
    }


_CRASHING_OWNER = """
import os, sys
sys.path.insert(0, {root!r})
from tests.lab.sshd import SshdLab
lab = SshdLab(n=2, faults=["hang"]).start()
print(lab.dir, flush=True)
os._exit(0)  # crash: no stop()
"""


def _alive_sshd(lab_dir: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "sshd" in cmd and lab_dir in cmd:
                pids.append(int(entry))
    return pids


def test_daemons_of_a_crashed_owner_are_cleaned_up(sshd_lab_factory) -> None:
    sshd_lab_factory(n=0)  # prerequisites (root, sshd) checked by the fixture
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", _CRASHING_OWNER.format(root=root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lab_dir = out.stdout.strip()
    assert lab_dir.startswith(LAB_ROOT) and os.path.isdir(lab_dir)
    assert len(_alive_sshd(lab_dir)) == 3  # left behind by the crash
    cleaned = clean_stale_labs()
    assert any(lab_dir.startswith(os.path.join(LAB_ROOT, f"lab-{i}")) for i in cleaned)
    deadline = time.monotonic() + 5
    while _alive_sshd(lab_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive_sshd(lab_dir) == []
    assert not os.path.exists(lab_dir)


def test_stop_kills_hanging_sessions(sshd_lab_factory) -> None:
    lab: SshdLab = sshd_lab_factory(n=0, faults=["hang"])
    opts = RunOptions(known_hosts=(lab.known_hosts,), command_timeout=0.5)
    outcome = run_hosts(lab.specs(), lambda s: s.run("true"), opts)["fault-hang"]
    assert outcome.state is HostState.TIMED_OUT
    marker = f"PROVISION_LAB={lab.id}".encode()

    def sleepers() -> list[str]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and marker in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(entry)
            except OSError:
                continue
        return found

    assert sleepers()  # `sleep 3600` outlives the closed channel, as on a real host
    lab.stop()
    assert sleepers() == []


def test_inventory_works_for_real_ansible(sshd_lab: SshdLab, tmp_path: Path) -> None:
    ansible = venv_tool("ansible")
    hosts = [sshd_lab.host("lab01"), sshd_lab.host("lab02")]
    inventory = sshd_lab.write_inventory(str(tmp_path / "inv.ini"), hosts)
    text = Path(inventory).read_text()
    assert "lab01 ansible_host=127.0.1." in text and "ansible_ssh_private_key_file=" in text
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run(
        [ansible, "all", "-i", inventory, "-m", "ping", "-f", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2
