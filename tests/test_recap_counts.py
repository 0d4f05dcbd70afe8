"""The recap counts a task as Ansible's strategy does (ansible-core's
plugins/strategy/__init__.py, _process_pending_results): the same playbook through the real
ansible-playbook and provision on this machine, the counts and registered values compared."""

from __future__ import annotations

from pathlib import Path

from tests.ansible_local import (
    run_ansible_playbook_locally,
    run_provision_locally,
    write_local_inventory,
)
from tests.test_ansible_names import recap

IGNORED = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: a command that fails, ignored
      command: "false"
      ignore_errors: true
      register: r
    - name: a module that fails, ignored
      fail: {msg: no}
      ignore_errors: true
      register: f
    - copy:
        dest: "{{ out }}/seen.txt"
        content: >
          command changed={{ r.changed }} failed={{ r.failed }}; fail changed={{ f.changed }}
"""


def test_an_ignored_failed_command_counts_as_changed_as_in_ansible(tmp_path: Path) -> None:
    """Ansible's result for a command that ran and failed says changed: its registered value,
    and the recap's changed column when the failure is ignored (strategy/__init__.py)."""
    (tmp_path / "site.yml").write_text(IGNORED)
    write_local_inventory(tmp_path)
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    theirs.mkdir()
    mine.mkdir()
    done = run_ansible_playbook_locally(tmp_path, "site.yml", "-e", f"out={theirs}")
    first = run_provision_locally(tmp_path, "site.yml", "-e", f"out={mine}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (mine / "seen.txt").read_text() == (theirs / "seen.txt").read_text()
    assert (mine / "seen.txt").read_text() == (
        "command changed=True failed=True; fail changed=False\n"
    )
    counts = ("ok", "changed", "failed", "ignored")
    wanted = {k: v for k, v in recap(done.stdout).items() if k in counts}
    assert {k: v for k, v in recap(first.stdout).items() if k in counts} == wanted
    assert wanted == {"ok": 3, "changed": 2, "failed": 0, "ignored": 2}
