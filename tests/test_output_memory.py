"""Memory stays bounded (issue 13, item 8): five hosts each printing 100 MB on stdout and 100 MB
on stderr keep the run's peak RSS under a fixed bound; each stream keeps its tail and says how
much was dropped. Peak RSS of the real CLI process, from wait4's rusage (not a timing)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from provision.ssh import MAX_OUTPUT, RUN_OUTPUT
from tests.lab.sshd import SshdLab
from tests.test_cli import REPO

PER_STREAM = 100_000_000  # bytes each host prints on each stream
# the run's output budget, the decoding copies of it, and the interpreter with its libraries,
# with room for what the SSH layer holds while its reader threads wait for a CPU: one run
# under three parallel test files peaked at 539 MiB (the unbounded engine: 2.09 GB)
BOUND = 4 * RUN_OUTPUT + (320 << 20)


def test_five_loud_hosts_stay_under_the_memory_bound(
    sshd_lab_factory: Callable[..., SshdLab], tmp_path: Path
) -> None:
    lab = sshd_lab_factory(n=5, prefix="loud")
    inv = lab.write_inventory(str(tmp_path / "hosts.ini"))
    loud = (
        f"head -c {PER_STREAM} /dev/zero | tr '\\0' o; echo; echo END-OUT; "
        f"head -c {PER_STREAM} /dev/zero | tr '\\0' e >&2; echo END-ERR >&2"
    )
    out_file = tmp_path / "stdout"
    with open(out_file, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "provision", "run", "-i", inv, "--command-timeout", "300", loud],
            stdout=out,
            stderr=subprocess.PIPE,
            env={**lab.env(), "PYTHONPATH": REPO},
            cwd=tmp_path,
        )
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, err.decode()[-2000:]
    peak = usage.ru_maxrss * 1024  # KiB on Linux
    print(f"peak RSS of 5 hosts x 2 x {PER_STREAM / 1e6:.0f} MB: {peak / 2**20:.0f} MiB")
    assert peak < BOUND, f"peak RSS {peak / 2**20:.0f} MiB, bound {BOUND / 2**20:.0f} MiB"
    text = out_file.read_text(errors="replace")
    assert text.count("END-OUT") == 5 and text.count("END-ERR") == 5  # every tail kept
    assert text.count("more bytes of output dropped (output limit)") == 10
    assert MAX_OUTPUT < PER_STREAM
