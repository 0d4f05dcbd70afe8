"""The bench's own meters, on real sshd hosts: the hosts' CPU (a cgroup around the daemons) and
the floor's client with a command of its own. The ratios in docs/performance.md rest on them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import floor
from bench.common import HostCpu
from tests.conftest import need
from tests.lab.fixtures import *  # noqa: F403
from tests.lab.sshd import SshdLab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BURN = "python3 -c 'import time; t=time.process_time()\nwhile time.process_time()-t<0.3: pass'"


def _floor(lab: SshdLab, tmp: str, *command: str) -> subprocess.CompletedProcess[str]:
    hosts = floor.write_hosts(lab, os.path.join(tmp, "hosts.json"))
    argv = [sys.executable, "-m", "bench.floor", hosts, lab.known_hosts, *command]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_host_cpu_counts_what_a_session_ran_on_the_hosts_only(sshd_lab_factory, tmp_path) -> None:
    lab: SshdLab = sshd_lab_factory(n=2)
    meter = HostCpu(lab)
    try:
        need(meter.folder is not None, "needs a cgroup (v2 or v1 cpuacct) the bench can make")
        before = meter.read()
        # 0.3 s of CPU here, outside any host: not counted
        t = time.process_time()
        while time.process_time() - t < 0.3:
            pass
        idle = meter.read()
        # 0.3 s of CPU on each of the two hosts, through the floor's client
        done = _floor(lab, str(tmp_path), BURN)
        after = meter.read()
    finally:
        lab.stop()  # the cgroup can go only once its daemons have
        meter.close()
    assert done.returncode == 0, done.stderr
    assert "2 of 2 hosts answered" in done.stdout
    assert before is not None and idle is not None and after is not None
    assert idle - before < 0.1
    assert 0.55 < after - idle < 1.5  # two burns of 0.3 s, plus two logins
    assert meter.folder is None and not any(
        os.path.isdir(os.path.join(root, HostCpu.PREFIX + lab.id)) for root, _ in HostCpu.CANDIDATES
    )


def test_floor_runs_the_command_it_is_given_and_fails_a_host_that_fails_it(
    sshd_lab_factory, tmp_path
) -> None:
    lab: SshdLab = sshd_lab_factory(n=2)
    assert "2 of 2 hosts answered" in _floor(lab, str(tmp_path)).stdout  # df -P /; uname -a
    marker = tmp_path / "ran"
    done = _floor(lab, str(tmp_path), f"touch {marker}")
    assert done.returncode == 0 and marker.exists()
    failed = _floor(lab, str(tmp_path), "exit 3")
    assert failed.returncode == 1
    assert "0 of 2 hosts answered" in failed.stdout
