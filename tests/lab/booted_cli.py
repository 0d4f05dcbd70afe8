"""Manual use of the booted lab: `python -m tests.lab.booted_cli up N` / `down`.

`up` boots N hosts, writes an inventory and a known_hosts file, prints how to reach the hosts and
stays in the foreground (the hosts belong to this process) until Ctrl-C or SIGTERM, then tears
them down. `down` stops running `up` processes and cleans what crashed runs left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tests.lab.booted import (
    STATE_DIR,
    BootedLab,
    _cmdline,
    _records,
    cleanup_stale,
    write_inventory,
    write_known_hosts,
)


def _up(count: int, prefix: str, out_dir: Path) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    lab = BootedLab()
    try:
        started = time.monotonic()
        hosts = lab.start(count, prefix)
        out_dir.mkdir(parents=True, exist_ok=True)
        inventory = write_inventory(hosts, out_dir / "inventory.ini")
        known = write_known_hosts(hosts, out_dir / "known_hosts")
        print(f"booted {len(hosts)} hosts in {time.monotonic() - started:.1f} s")
        print(f"inventory:   {inventory}\nknown_hosts: {known}")
        for host in hosts:
            print(
                f"  {host.name}: ssh -i {host.key_path} -o UserKnownHostsFile={known} "
                f"root@{host.address}   (boot {host.boot_seconds:.1f} s)"
            )
        print("Ctrl-C or `python -m tests.lab.booted_cli down` to stop", flush=True)
        stop.wait()
    finally:
        lab.close()
    return 0


def _down() -> int:
    owners = set()
    for record in _records():
        pid = int(str(record.get("owner_pid", 0)))
        if pid != os.getpid() and "tests.lab.booted_cli" in " ".join(_cmdline(pid)):
            owners.add(pid)
    for pid in owners:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while owners and time.monotonic() < deadline:
        owners = {pid for pid in owners if Path(f"/proc/{pid}").exists()}
        time.sleep(0.2)
    cleaned = cleanup_stale()
    left = list(STATE_DIR.glob("*.json"))
    print(f"cleaned {cleaned} stale hosts; {len(left)} hosts of other live processes remain")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.booted_cli")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="boot N hosts and keep them until interrupted")
    up.add_argument("count", type=int)
    up.add_argument("--prefix", default="lab")
    up.add_argument("--out", type=Path, default=Path("/tmp/provision-lab-inventory"))
    sub.add_parser("down", help="stop `up` processes and clean leftovers of crashed runs")
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args.count, args.prefix, args.out)
    return _down()


if __name__ == "__main__":
    sys.exit(main())
