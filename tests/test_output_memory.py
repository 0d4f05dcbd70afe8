"""Memory stays bounded (issue 13, item 8): five hosts each printing 100 MB on stdout and 100 MB
on stderr keep the run's peak RSS under a fixed bound; each stream keeps its tail and says how
much was dropped. The peak resident size of the real CLI process, as the kernel counts it for
that program (VmHWM), not a timing."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from provision.ssh import MAX_OUTPUT, RUN_OUTPUT
from tests.lab.sshd import SshdLab
from tests.test_cli import REPO

PER_STREAM = 100_000_000  # bytes each host prints on each stream
# the run's output budget, the decoding copy of it, and the interpreter with its libraries,
# with room for what the SSH layer holds while its reader threads wait for a CPU. A run peaks
# at about 220 MiB (about 370 MiB when the report was joined whole before it was written, four
# copies of the budget); the unbounded engine held 2.09 GB.
BOUND = 4 * RUN_OUTPUT + (320 << 20)


# `python -m provision` that writes its own peak resident size (VmHWM, kB) to $PEAK_FILE as it
# exits. Not wait4's ru_maxrss: Linux carries the peak from before exec into it, and a process
# forked from a pytest worker starts as big as the worker (0.9-1.0 GB late in the suite, which
# CI once reported as the run's peak).
PEAK_AT_EXIT = """
import atexit, os, runpy, sys
path = os.environ.pop("PEAK_FILE")
def peak():
    with open("/proc/self/status") as status, open(path, "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
atexit.register(peak)
sys.argv[0] = "provision"
runpy.run_module("provision", run_name="__main__", alter_sys=True)
"""


def test_five_loud_hosts_stay_under_the_memory_bound(
    sshd_lab_factory: Callable[..., SshdLab], tmp_path: Path
) -> None:
    lab = sshd_lab_factory(n=5, prefix="loud")
    inv = lab.write_inventory(str(tmp_path / "hosts.ini"))
    loud = (
        f"head -c {PER_STREAM} /dev/zero | tr '\\0' o; echo; echo END-OUT; "
        f"head -c {PER_STREAM} /dev/zero | tr '\\0' e >&2; echo END-ERR >&2"
    )
    out_file, peak_file = tmp_path / "stdout", tmp_path / "peak-kb"
    with open(out_file, "wb") as out:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                PEAK_AT_EXIT,
                "run",
                "-i",
                inv,
                "--command-timeout",
                "300",
                loud,
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            env={**lab.env(), "PYTHONPATH": REPO, "PEAK_FILE": str(peak_file)},
            cwd=tmp_path,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    peak = int(peak_file.read_text()) * 1024
    print(f"peak RSS of 5 hosts x 2 x {PER_STREAM / 1e6:.0f} MB: {peak / 2**20:.0f} MiB")
    kept = re.findall(r"dropped \(output limit\); the last (\d+) follow", out_file.read_text())
    assert peak < BOUND, (
        f"peak RSS {peak / 2**20:.0f} MiB, bound {BOUND / 2**20:.0f} MiB; bytes kept per "
        f"stream {kept}"
    )
    text = out_file.read_text(errors="replace")
    assert text.count("END-OUT") == 5 and text.count("END-ERR") == 5  # every tail kept
    assert text.count("more bytes of output dropped (output limit)") == 10
    assert MAX_OUTPUT < PER_STREAM
