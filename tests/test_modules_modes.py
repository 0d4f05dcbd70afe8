"""Symbolic modes (``u=rw,g=r,o=r``, ``u+x``) for file/copy/template/lineinfile... and copy's
``remote_src`` (issue 14, item 4).

The mode rules are checked against ansible-core's own implementation
(``AnsibleModule._symbolic_mode_to_octal``, module_utils/basic.py) for every mode and start
below, and the same playbook is run by the real ansible-playbook and by provision on this machine
and the two trees compared (mode and content of every file).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provision.modules import MODULES
from provision.modules.base import ArgError, Context
from provision.modules.modes import is_symbolic, resolve
from tests.ansible_local import (
    run_ansible_playbook_locally,
    run_provision_locally,
    umask,
    write_local_inventory,
)
from tests.test_ansible_names import recap, tree
from tests.test_modules_more import file_state

MODES = [
    "u=rw,g=r,o=r",
    "u+x",
    "a+rX",
    "go-w",
    "u=rwx,g=rx,o=",
    "g=u",
    "o=g-w",
    "+x",
    "-w",
    "=r",
    "u=rw-x+X",
    "a=rwX",
    "u+s,g+s,o+t",
    "ug+rw",
    "o=u",
    "a-x",
]


class _Stat:
    def __init__(self, mode: int) -> None:
        self.st_mode = mode


@pytest.mark.parametrize("mode", MODES)
def test_symbolic_modes_follow_ansible_cores_own_rules(mode: str) -> None:
    from ansible.module_utils.basic import AnsibleModule

    old = os.umask(0o022)  # Ansible masks a WHO-less clause with the process umask
    try:
        for current in (0o644, 0o755, 0o600, 0o4711, 0o000, 0o1777):
            for is_dir in (False, True):
                kind = stat.S_IFDIR if is_dir else stat.S_IFREG
                theirs = AnsibleModule._symbolic_mode_to_octal(_Stat(current | kind), mode)
                assert resolve(mode, current, is_dir=is_dir) == theirs, (oct(current), is_dir)
    finally:
        os.umask(old)


@pytest.mark.parametrize("mode", ["ua+x", "u", "u=rw,,", "u=rwq", "0999"])
def test_bad_modes_are_refused(mode: str) -> None:
    assert not is_symbolic(mode)
    with pytest.raises(ArgError, match="is not an octal mode like '0644' or a symbolic one"):
        MODULES["file"].check_static({"path": "/x", "mode": mode})


def test_symbolic_mode_plans_against_the_current_mode() -> None:
    m = MODULES["file"]
    args = m.finalize({"path": "/x", "mode": "u+x,go-w"})
    p = m.plan(args, file_state(b"a", mode="664"), Context())
    assert p.changes == ["mode 664 -> 744"] and p.steps[0].script == "set -e\nchmod 744 /x"
    assert not m.plan(args, file_state(b"a", mode="744"), Context()).changed
    with pytest.raises(ArgError, match="recurse with a symbolic mode"):
        m.check_static({"path": "/d", "state": "directory", "recurse": True, "mode": "u+x"})


def test_remote_src_needs_src() -> None:
    with pytest.raises(ArgError, match="remote_src needs 'src'"):
        MODULES["copy"].check_static({"dest": "/x", "content": "a", "remote_src": True})


MODES_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: a new directory, symbolic
      file: path={{ out }}/dir state=directory mode=u=rwx,g=rx,o=
    - name: a new file, symbolic
      file: path={{ out }}/dir/touched state=touch mode=u=rw,g=r,o=r
    - name: an existing script made executable for its owner
      file: path={{ out }}/script mode=u+x
    - name: X on a directory
      ansible.builtin.file: {path: "{{ out }}/tree", state: directory, mode: "a+rX"}
    - name: copied content, symbolic
      copy: {dest: "{{ out }}/conf", content: "a=1\\n", mode: "u=rw,g=r,o="}
    - name: an existing file's write bits taken away
      copy: {dest: "{{ out }}/shared", content: "shared\\n", mode: "go-w"}
    - name: a host file copied to a new place (remote_src)
      ansible.builtin.copy:
        src: "{{ out }}/dist/tool.sh"
        dest: "{{ out }}/tool-new.sh"
        remote_src: true
    - name: a host file over an existing one, backed up
      copy: src={{ out }}/dist/tool.sh dest={{ out }}/tool-old.sh remote_src=yes backup=yes
    - name: remote_src with a mode
      copy: src={{ out }}/dist/tool.sh dest={{ out }}/tool-mode.sh remote_src=yes mode=u=rwx,go=
    - name: a line, symbolic mode
      lineinfile: path={{ out }}/lines line=b=2 mode=g+w create=yes
"""


def seed(out: Path) -> None:
    (out / "dist").mkdir(parents=True)
    (out / "dist" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (out / "dist" / "tool.sh").chmod(0o750)
    (out / "script").write_text("#!/bin/sh\n")
    (out / "script").chmod(0o640)
    (out / "tree").mkdir()
    (out / "tree").chmod(0o700)
    (out / "shared").write_text("shared\n")
    (out / "shared").chmod(0o666)
    (out / "tool-old.sh").write_text("old\n")
    (out / "tool-old.sh").chmod(0o600)


def test_symbolic_modes_and_remote_src_match_ansible_playbook(tmp_path: Path) -> None:
    (tmp_path / "modes.yml").write_text(MODES_PLAY)
    write_local_inventory(tmp_path)
    theirs, mine, checked = tmp_path / "ansible", tmp_path / "provision", tmp_path / "checked"
    with umask(0o022):
        for out in (theirs, mine, checked):
            seed(out)
        run_ansible_playbook_locally(tmp_path, "modes.yml", "-e", f"out={theirs}")
        before = tree(checked)
        check = run_provision_locally(
            tmp_path, "modes.yml", "-e", f"out={checked}", "--check", "--diff"
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert tree(checked) == before and "+#!/bin/sh" in check.stdout
        args = ("modes.yml", "-e", f"out={mine}")
        first = run_provision_locally(tmp_path, *args)
        assert first.returncode == 0, first.stdout + first.stderr
        assert recap(first.stdout)["changed"] == 10, first.stdout
        ours, ansibles = tree(mine), tree(theirs)
        for backups in (ours, ansibles):  # FILE.DATE~ (ours), FILE.PID.DATE~ (Ansible's)
            names = [n for n in backups if n.startswith("tool-old.sh.")]
            assert len(names) == 1 and backups.pop(names[0]) == ("0o600", "old\n")
        assert ours == ansibles
        assert ours["tool-new.sh"][0] == "0o644" and ours["tool-old.sh"][0] == "0o750"
        assert ours["dir"][0] == "0o750" and ours["script"][0] == "0o740"
        again = run_provision_locally(tmp_path, *args)
        assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout
