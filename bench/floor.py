"""The SSH floor: raw paramiko, one connection and one command per host, all hosts at once.

    python -m bench.floor HOSTS_JSON KNOWN_HOSTS [COMMAND]

No tool can gather anything from a host faster than it can log in and run one command there, so
every workload's table carries this as a row and reads as a ratio to it. ``HOSTS_JSON`` is a list
of ``[address, port, user, key_file]`` (written by :func:`write_hosts`); host keys are checked
strictly against ``KNOWN_HOSTS``, as every tool measured does. Each host runs ``df -P /; uname -a``
(what a minimal audit must read) in its own thread; the exit code is 0 when every host answered.
``COMMAND`` runs instead where given (the audit's table also has the floor's client start a
bare ``python3 -I -S``: the least a probe written in Python can cost a host); a host answered
when it exited 0.
"""

from __future__ import annotations

import json
import sys
import threading

import paramiko

from tests.lab.sshd import SshdLab

COMMAND = "df -P /; uname -a"


def write_hosts(lab: SshdLab, path: str) -> str:
    """The lab's ok hosts as this tool's host list; returns ``path``."""
    rows = [[h.address, h.port, h.user, h.key_file] for h in lab.ok_hosts]
    with open(path, "w") as fh:
        json.dump(rows, fh)
    return path


def one_host(
    row: list[object], known_hosts: str, command: str, results: dict[int, bool], i: int
) -> None:
    address, port, user, key = row
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            str(address),
            port=int(str(port)),
            username=str(user),
            key_filename=str(key),
            look_for_keys=False,
            allow_agent=False,
            timeout=30,
        )
        _, stdout, _ = client.exec_command(command)
        out = stdout.read()
        answered = command != COMMAND or b"Linux" in out
        results[i] = stdout.channel.recv_exit_status() == 0 and answered
    except Exception as exc:  # one line per failed host; the exit code says it
        sys.stderr.write(f"floor: {address}:{port}: {type(exc).__name__}: {exc}\n")
        results[i] = False
    finally:
        client.close()


def main(argv: list[str]) -> int:
    hosts_file, known_hosts, *rest = argv
    command = rest[0] if rest else COMMAND
    with open(hosts_file) as fh:
        rows = json.load(fh)
    results: dict[int, bool] = {}
    threads = [
        threading.Thread(target=one_host, args=(row, known_hosts, command, results, i))
        for i, row in enumerate(rows)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = sum(1 for i in range(len(rows)) if not results.get(i))
    sys.stdout.write(f"{len(rows) - failed} of {len(rows)} hosts answered\n")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
