"""apply's output at lab scale, from the real CLI against lab sshd hosts: the same result on many
hosts is one line with one diff, one recap plus a total line, failures message first with a
short file:line, unreachable hosts reported when it happens."""

from __future__ import annotations

import re
from pathlib import Path

from provision import applylog
from tests.lab.sshd import SshdLab
from tests.test_cli import cli


def _book(tmp_path: Path, tasks: str) -> str:
    path = tmp_path / "lab.yml"
    path.write_text("- name: lab\n  hosts: all\n  tasks:\n" + tasks)
    return str(path)


def test_same_change_on_many_hosts_is_one_line_with_one_diff(
    sshd_lab_factory, tmp_path: Path
) -> None:
    lab = sshd_lab_factory(n=6, prefix="ws")
    inv = lab.write_inventory(str(tmp_path / "hosts.ini"))
    # The lab's hosts share this machine's disk: --check predicts the same diff on each.
    target = tmp_path / "motd.txt"
    book = _book(
        tmp_path,
        f"    - name: write the motd\n      copy:\n        dest: '{target}'\n"
        '        content: "lab motd\\n"\n',
    )
    r = cli("apply", inv, "-p", book, "-C", "-D", "-T", "5", env=lab.env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    hosts = " ".join(h.name for h in lab.hosts)
    head = f"changed on 6 hosts [{hosts}]: lab / write the motd"
    assert [ln for ln in r.stdout.splitlines() if "write the motd" in ln] == [
        next(ln for ln in r.stdout.splitlines() if ln.startswith(head))
    ]
    assert r.stdout.count("+lab motd") == 1  # the diff once, not once per host
    # one recap, then one total line with the time
    assert r.stdout.count("PLAY RECAP") == 1 and "host    ok" not in r.stdout
    assert re.search(r"^6 hosts: 6 changed in \d+\.\d s$", r.stdout, re.M), r.stdout


def test_failure_is_message_first_and_unreachable_is_said_when_it_happens(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    hosts = [sshd_lab.ok_hosts[0], sshd_lab.host("closed")]
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), hosts)
    book = _book(tmp_path, "    - name: must work\n      command: 'false'\n")
    r = cli("apply", inv, "-p", book, "-T", "3", env=sshd_lab.env(), cwd=str(tmp_path))
    assert r.returncode == 4, r.stdout + r.stderr
    before_recap = r.stdout.split("PLAY RECAP")[0]
    assert "failed: [lab01] lab / must work: exit status 1" in before_recap
    assert re.search(r"failed: \[lab01\] .*\(lab\.yml:4\)$", before_recap, re.M), before_recap
    assert re.search(r"^unreachable: \[fault-closed\] lab: .*refused", before_recap, re.M)
    assert "fault-closed:" not in r.stderr  # said once, on stdout
    assert re.search(r"^2 hosts: 1 unreachable, 1 failed in ", r.stdout, re.M)


def test_shipped_playbook_paths_are_short() -> None:
    bases = ["/usr/lib/python3/dist-packages/provision/playbooks", "/home/me/lab"]
    msg = "/usr/lib/python3/dist-packages/provision/playbooks/docker.yml:12: task 'x': no space"
    assert applylog.message_first(msg, bases) == "no space (docker.yml:12)"
    assert applylog.message_first("/home/me/lab/a.yml:3: task 'y': boom", bases) == (
        "boom (a.yml:3)"
    )
    assert applylog.message_first("no prefix here", bases) == "no prefix here"


def test_check_lists_the_tasks_it_could_not_predict(sshd_lab: SshdLab, tmp_path: Path) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), sshd_lab.ok_hosts[:2])
    book = _book(
        tmp_path,
        "    - name: run the installer\n      command: 'true'\n"
        f"    - name: write a file\n      copy:\n        dest: '{tmp_path}/x'\n"
        "        content: x\n"
        "    - name: run it again\n      shell: 'true'\n",
    )
    r = cli("apply", inv, "-p", book, "-C", "-T", "5", env=sshd_lab.env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    said = [ln for ln in r.stdout.splitlines() if ln.startswith("not predicted")]
    assert said == ["not predicted (run to know): lab / run the installer, lab / run it again"]
    assert not (tmp_path / "x").exists()
