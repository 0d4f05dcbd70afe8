"""Change batches (issue 18): consecutive independent changes sent as one command, each task's
result, diff and error its own, a failure stopping exactly where it would have stopped.

The framing against a real sh; round trips of a first run over real OpenSSH (the SSH layer
counts every command); and the outcome of each shape (failure, ignore_errors, register, no_log,
block always) against the real ansible-playbook on the same playbook."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

from provision.change_batch import Ran, frame_changes, split_changes
from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.inventory import load_inventory
from tests.ansible_local import (
    ANSIBLE_ENV,
    recap,
    run_ansible_playbook_locally,
    run_provision_locally,
    tree,
    umask,
    write_local_inventory,
)
from tests.conftest import venv_tool
from tests.lab.sshd import SshdLab
from tests.test_cli import REPO

BENCH_PLAYBOOK = os.path.join(REPO, "bench", "converged", "playbook.yml")


def _sh(command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", command], capture_output=True, timeout=60, check=False)


def test_each_member_keeps_its_own_output_status_and_stdin() -> None:
    secret = b"line one\n@@tok 1\n\x00\xff binary, no newline"
    members: list[list[tuple[str, bytes | None]]] = [
        [("echo first; echo warn >&2", None)],
        [("cat", secret), ("printf 'no newline'", None)],
        [("cat; cat /dev/null", b"text: a $HOME `x` \\ '@@tok_9_0' line\n")],
        [("set -e; false; echo after a failure", None), ("echo nor this", None)],
        [("echo never", None)],
    ]
    done = _sh(frame_changes(members, "tok"))
    assert done.returncode == 0
    out = split_changes(done.stdout.decode("latin-1"), done.stderr.decode(), "tok", 5)
    assert out[0] == Ran(0, "first\n", "warn\n")
    # a step's data reaches only that step, byte for byte, however it looks like a marker
    assert out[1] == Ran(0, secret.decode("latin-1") + "no newline", "")
    assert out[2] == Ran(0, "text: a $HOME `x` \\ '@@tok_9_0' line\n", "")  # as written
    # a step's own `set -e` holds inside the batch: its failure stops it and the member
    assert out[3] == Ran(1, "", "")
    assert out[4] is None  # after a failure nothing more runs


def test_a_member_that_prints_no_status_is_a_failure_not_a_success() -> None:
    members: list[list[tuple[str, bytes | None]]] = [[("echo a", None)], [("kill -9 $$", None)]]
    done = _sh(frame_changes(members, "t"))
    out = split_changes(done.stdout.decode(), done.stderr.decode(), "t", 2)
    assert out[0] == Ran(0, "a\n", "")
    assert out[1] is not None and out[1].rc != 0


# -- round trips over real OpenSSH -------------------------------------------------------------


def test_first_run_of_the_converged_workload_takes_three_round_trips(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    """bench/converged/playbook.yml (20 tasks, 14 changes on a new host): one read, then two
    change batches (the second starts where a task reads a file the first wrote); it was one
    round trip per change (20 in all). The files are what the tasks say."""
    host = sshd_lab.ok_hosts[0]
    inv = load_inventory(sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), [host]))
    opts = ApplyOptions(
        extra_vars={"bench_root": str(tmp_path / "root")}, known_hosts=(sshd_lab.known_hosts,)
    )
    first = run_playbook(inv, BENCH_PLAYBOOK, opts)
    assert first.exit_code == 0, [r.msg for r in first.results if r.status == "failed"]
    assert sum(r.status == "changed" for r in first.results) == 14
    assert first.round_trips == {host.name: 3}
    base = tmp_path / "root" / "provision" / host.name
    assert (base / "etc" / "app.conf").read_text() == "[app]\nlog_level = info\nworkers = 8\n"
    assert (base / "etc" / "app.conf").stat().st_mode & 0o777 == 0o640
    assert (base / "data").stat().st_mode & 0o777 == 0o750
    assert (base / "etc" / "hosts.local").read_text() == "10.0.0.1 gpu-head\n"
    assert (base / "etc" / "conf.d" / "10-gpu.conf").read_text() == "gpus = all\n"
    assert (base / "data" / ".keep").exists() and not (base / "etc" / "old.conf").exists()
    again = run_playbook(inv, BENCH_PLAYBOOK, opts)
    assert {r.status for r in again.results} == {"ok"}
    assert again.round_trips == {host.name: 1}


# -- the same outcome as ansible-playbook ------------------------------------------------------


def _both(tmp_path: Path, playbook: str, *, ok: bool = True) -> tuple[Path, Path, dict[str, Any]]:
    """Run ``playbook`` with ansible-playbook into OUT=ansible/ and with provision into
    OUT=provision/; the two trees and provision's recap."""
    (tmp_path / "site.yml").write_text(playbook)
    write_local_inventory(tmp_path)
    theirs, mine = tmp_path / "ansible", tmp_path / "provision"
    theirs.mkdir()
    mine.mkdir()
    with umask(0o022):
        if ok:
            ansible = run_ansible_playbook_locally(tmp_path, "site.yml", "-e", f"out={theirs}")
        else:
            ansible = subprocess.run(
                [
                    venv_tool("ansible-playbook"),
                    "-i",
                    "hosts.ini",
                    "site.yml",
                    "-e",
                    f"out={theirs}",
                ],
                cwd=tmp_path,
                env=ANSIBLE_ENV,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        done = run_provision_locally(tmp_path, "site.yml", "-e", f"out={mine}")
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    theirs_recap, ours = recap(ansible.stdout), recap(done.stdout)
    for key in ("ok", "changed", "failed", "skipped", "rescued", "ignored"):
        assert ours[key] == theirs_recap[key], (key, done.stdout, ansible.stdout)
    return theirs, mine, ours


FAILURE_MIDWAY = """
- hosts: all
  gather_facts: false
  tasks:
    - copy: {dest: "{{ out }}/a", content: "a\\n"}
    - copy: {dest: "{{ out }}/b", content: "b\\n", mode: "0600"}
    - copy: {dest: "{{ out }}/no-such-dir/x", content: "cannot: no directory\\n"}
    - copy: {dest: "{{ out }}/c", content: "c\\n"}
"""


def test_a_failure_inside_a_batch_stops_exactly_there(tmp_path: Path) -> None:
    theirs, mine, counts = _both(tmp_path, FAILURE_MIDWAY, ok=False)
    assert tree(mine) == tree(theirs)
    assert sorted(p.name for p in mine.iterdir()) == ["a", "b"]  # c never written
    assert counts["failed"] == 1 and counts["changed"] == 2
    alone = tmp_path / "alone"
    alone.mkdir()
    result = _run(tmp_path, FAILURE_MIDWAY, extra_vars={"out": str(alone)})
    assert [r.status for r in result.results] == ["changed", "changed", "failed"]
    assert "no-such-dir" in result.results[2].msg
    assert result.round_trips["localhost"] == 2  # the read, then one batch of all four


IGNORED_THEN_REGISTERED = """
- hosts: all
  gather_facts: false
  tasks:
    - copy: {dest: "{{ out }}/a", content: "a\\n"}
    - copy: {dest: "{{ out }}/no-such-dir/x", content: "x\\n"}
      ignore_errors: true
    - copy: {dest: "{{ out }}/b", content: "b\\n"}
      register: b_written
    - copy: {dest: "{{ out }}/b-was-changed", content: "{{ b_written.changed }}\\n"}
      when: b_written is changed
    - lineinfile: {path: "{{ out }}/list", line: "one", create: true}
    - lineinfile: {path: "{{ out }}/list", line: "two"}
    - file: {path: "{{ out }}/d/e/f", state: directory, mode: "0750"}
    - copy: {dest: "{{ out }}/d/e/f/g", content: "g\\n"}
    - file: {path: "{{ out }}/b", mode: "0640"}
"""


def test_ignored_failures_registers_and_reads_of_written_files_as_ansible(
    tmp_path: Path,
) -> None:
    """An ignored failure ends a batch and the next task runs after it; a ``register`` ends
    one, so the ``when`` that reads it sees the real result; a task reading a file an earlier
    one wrote (list, b) sees what was written."""
    theirs, mine, counts = _both(tmp_path, IGNORED_THEN_REGISTERED)
    assert tree(mine) == tree(theirs)
    assert (mine / "b-was-changed").read_text() == "True"  # the boolean, as Ansible 2.19
    assert (mine / "list").read_text() == "one\ntwo\n"
    assert counts["ignored"] == 1


ALWAYS_AFTER_FAILURE = """
- hosts: all
  gather_facts: false
  tasks:
    - block:
        - copy: {dest: "{{ out }}/in-block", content: "x\\n"}
        - command: /bin/false
      always:
        - copy: {dest: "{{ out }}/always-1", content: "1\\n"}
        - copy: {dest: "{{ out }}/always-2", content: "2\\n"}
    - copy: {dest: "{{ out }}/after", content: "never: the block failed\\n"}
"""


def test_a_batch_never_crosses_the_end_of_a_block(tmp_path: Path) -> None:
    theirs, mine, _ = _both(tmp_path, ALWAYS_AFTER_FAILURE, ok=False)
    assert tree(mine) == tree(theirs)
    assert not (mine / "after").exists() and (mine / "always-2").exists()


SECRET = "s3cret-token-batched"
NO_LOG = f"""
- hosts: all
  gather_facts: false
  tasks:
    - copy: {{dest: "{{{{ out }}}}/plain", content: "plain\\n"}}
    - copy: {{dest: "{{{{ out }}}}/token", content: "{SECRET}\\n", mode: "0600"}}
      no_log: true
    - copy: {{dest: "{{{{ out }}}}/after", content: "after\\n"}}
"""


def test_a_no_log_member_shows_neither_its_data_nor_its_script(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text(NO_LOG)
    write_local_inventory(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    done = run_provision_locally(tmp_path, "site.yml", "-e", f"out={out}", "-vvvv", "--diff")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "token").read_text() == f"{SECRET}\n"
    shown = done.stdout + done.stderr
    encoded = base64.b64encode(f"{SECRET}\n".encode()).decode()
    assert SECRET not in shown and encoded not in shown
    assert recap(done.stdout)["changed"] == 3


DIFFS = """
- hosts: all
  gather_facts: false
  tasks:
    - copy: {dest: "{{ out }}/one", content: "old one\\n"}
    - copy: {dest: "{{ out }}/two", content: "old two\\n"}
- hosts: all
  gather_facts: false
  tasks:
    - name: first
      copy: {dest: "{{ out }}/one", content: "new one\\n", backup: true}
    - name: second
      copy: {dest: "{{ out }}/two", content: "new two\\n"}
"""


def _run(tmp_path: Path, playbook: str, **opts: Any) -> PlaybookResult:
    path = tmp_path / "pb.yml"
    path.write_text(playbook)
    inv = tmp_path / "local.ini"
    inv.write_text("[here]\nlocalhost ansible_connection=local\n")
    return run_playbook(load_inventory(str(inv)), str(path), ApplyOptions(**opts))


def test_each_task_of_a_batch_keeps_its_own_diff_and_backup(tmp_path: Path) -> None:
    result = _run(tmp_path, DIFFS, diff=True, extra_vars={"out": str(tmp_path)})
    assert result.exit_code == 0
    first, second = (r for r in result.results if r.task in ("first", "second"))
    assert first.diff is not None and "-old one" in first.diff and "two" not in first.diff
    assert second.diff is not None and "+new two" in second.diff and "one" not in second.diff
    backup = Path(first.data["backup_file"])
    assert backup.read_text() == "old one\n" and "backup_file" not in second.data
    assert result.round_trips["localhost"] == 1 + 1 + 1 + 1  # per play: a read and a batch


def test_batches_stay_within_what_one_command_can_carry(sshd_lab: SshdLab, tmp_path: Path) -> None:
    """Files full of single quotes (five characters each once quoted for the host's shell)
    over real OpenSSH: small ones share one command, 12 KiB ones go one a command (a command
    is one argument of `sh -c`: Linux takes 128 KiB at most), and every byte arrives."""
    host = sshd_lab.ok_hosts[0]
    inv = load_inventory(sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), [host]))
    book = tmp_path / "pb.yml"
    tasks = "".join(
        f'    - copy: {{dest: "{{{{ out }}}}/{size}-{k}", content: "{{{{ text{size} }}}}"}}\n'
        for size in ("small", "big")
        for k in range(6)
    )
    book.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n{tasks}")
    small, big = "'\\\"$x`\n" * 200, "'" * (12 << 10) + "\n"
    opts = ApplyOptions(
        extra_vars={"out": str(tmp_path), "textsmall": small, "textbig": big},
        known_hosts=(sshd_lab.known_hosts,),
    )
    result = run_playbook(inv, str(book), opts)
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    assert {(tmp_path / f"small-{k}").read_text() for k in range(6)} == {small}
    assert {(tmp_path / f"big-{k}").read_text() for k in range(6)} == {big}
    # the read; the six small files and the first big one; then each big one alone
    assert result.round_trips == {host.name: 1 + 1 + 5}
