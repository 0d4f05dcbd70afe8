"""fetch as ansible.builtin.fetch: the same playbook run by the real ansible-playbook and by
provision (a local connection) leaves the same tree on the controller; a rerun is ok."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.ansible_local import (
    run_ansible_playbook_locally,
    run_provision_locally,
    write_local_inventory,
)
from tests.test_ansible_names import recap, tree

PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - fetch: {{src: "{src}/gpu.log", dest: "{dest}"}}
    - ansible.builtin.fetch: {{src: "{src}/gpu.log", dest: "{dest}/flat/", flat: true}}
    - fetch: {{src: "{src}/missing.log", dest: "{dest}", fail_on_missing: false}}
"""


def _run(tool: str, tmp_path: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "host"
    (tmp_path / "site.yml").write_text(PLAY.format(src=src, dest=dest))
    if tool == "ansible":
        return run_ansible_playbook_locally(tmp_path, "site.yml")
    return run_provision_locally(tmp_path, "site.yml")


def test_fetch_leaves_ansibles_tree_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "gpu.log").write_bytes(b"Xid 79 on 0000:01:00.0\n\x00binary\n")
    write_local_inventory(tmp_path)
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    assert _run("ansible", tmp_path, theirs).returncode == 0
    first = _run("provision", tmp_path, mine)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] == 2
    assert {k: v[1] for k, v in tree(mine).items()} == {k: v[1] for k, v in tree(theirs).items()}
    fetched = mine / "localhost" / str(tmp_path / "host" / "gpu.log").lstrip(os.sep)
    assert fetched.read_bytes() == (tmp_path / "host" / "gpu.log").read_bytes()
    again = _run("provision", tmp_path, mine)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout
    (tmp_path / "host" / "gpu.log").write_text("changed\n")
    check = run_provision_locally(tmp_path, "site.yml", "--check")
    assert check.returncode == 0 and recap(check.stdout)["changed"] == 2, check.stdout
    assert fetched.read_text() != "changed\n"  # --check wrote nothing
