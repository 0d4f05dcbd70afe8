"""find and tempfile (issue 14, item 5): the same playbook run by the real ansible-playbook and by
provision on this machine; what each registered is written to a file by a later task and the two
files compared; a second run changes only what tempfile always changes, and --check nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.modules import MODULES, module_named
from provision.modules.base import ArgError
from tests.ansible_local import (
    run_ansible_playbook_locally,
    run_provision_locally,
    write_local_inventory,
)
from tests.test_ansible_names import recap


@pytest.mark.parametrize("name", ["find", "tempfile"])
def test_fully_qualified_names(name: str) -> None:
    assert module_named(f"ansible.builtin.{name}") == name


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("find", {"paths": "/x", "age": "2 days"}, "failed to process age"),
        ("find", {"paths": "/x", "size": "big"}, "failed to process size"),
        ("find", {"paths": "/x", "limit": 0}, "limit cannot be 0"),
        ("find", {"paths": "/x", "contains": "a"}, "'contains' is not supported yet"),
        ("tempfile", {"prefix": "a/b"}, "prefix must be a valid file name component"),
    ],
)
def test_bad_arguments_are_refused(module: str, args: dict, message: str) -> None:
    with pytest.raises(ArgError, match=message):
        MODULES[module].check_static(MODULES[module].canonical(args))


FIELDS = "path mode isdir isreg islnk size pw_name gr_name xusr roth checksum"
PLAY = """\
- hosts: all
  gather_facts: false
  vars:
    fields: "FIELDS"
  tasks:
    - {find: {paths: "{{ out }}/tree"}, register: plain}
    - find:
        paths: "{{ out }}/tree"
        patterns: "*.conf,*.eb"
        excludes: "skip*"
        recurse: yes
        hidden: yes
        get_checksum: yes
      register: globbed
    - name: a regex, as deepops looks for its eb
      ansible.builtin.find:
        paths: ["{{ out }}/tree"]
        patterns: "^eb$"
        use_regex: yes
        recurse: yes
        file_type: file
      register: regex
    - find: {paths: "{{ out }}/tree", file_type: directory, recurse: yes, depth: 1}
      register: dirs
    - {find: {path: "{{ out }}/tree", file_type: link, recurse: yes}, register: links}
    - {find: {paths: "{{ out }}/tree", file_type: any, size: "-10", recurse: yes}, register: small}
    - {find: {paths: "{{ out }}/tree", age: "1d", recurse: yes}, register: old}
    - {find: {paths: "{{ out }}/tree", recurse: yes, limit: 1, patterns: "a.conf"}, register: one}
    - name: a temporary file and directory
      ansible.builtin.tempfile: {suffix: -repo.tgz, path: "{{ out }}/tmp"}
      register: tmpf
    - {tempfile: {state: directory, prefix: build., path: "{{ out }}/tmp"}, register: tmpd}
    - name: what they registered
      copy:
        dest: "{{ out }}/found.txt"
        content: |
          {% for r in [plain, globbed, regex, dirs, links, small, old, one] -%}
          matched={{ r.matched }} examined={{ r.examined }}{{ '\\n' }}
          {%- for f in r.files | sort(attribute='path') -%}
          {%- for k in fields.split() %}{{ f[k] | default('-') }} {% endfor -%}
          {{ '\\n' }}
          {%- endfor -%}
          {%- endfor -%}
          tmpf {{ tmpf.path | basename | regex_replace('[a-z0-9_]{8}-', 'X-') }}
          tmpd {{ tmpd.path | basename | regex_replace('[.][a-z0-9_]{8}$', '.X') }}
""".replace("FIELDS", FIELDS)


def seed(out: Path) -> None:
    tree = out / "tree"
    for sub in ("etc", "eb/bin", ".hidden", "skipdir"):
        (tree / sub).mkdir(parents=True)
    (out / "tmp").mkdir()
    files = {
        "a.conf": "a=1\n",
        "etc/b.conf": "b=2\n",
        "etc/skip.conf": "skip\n",
        "eb/bin/eb": "#!/bin/sh\n",
        ".hidden/c.conf": "hidden\n",
        "x.eb": "easyconfig\n" * 3,
        "big.bin": "0" * 100,
    }
    for name, text in files.items():
        (tree / name).write_text(text)
    (tree / "eb" / "bin" / "eb").chmod(0o755)
    (tree / "etc" / "link.conf").symlink_to("b.conf")
    old = 1_600_000_000
    os.utime(tree / "a.conf", (old, old))


def test_find_and_tempfile_match_ansible_playbook(tmp_path: Path) -> None:
    (tmp_path / "find.yml").write_text(PLAY)
    write_local_inventory(tmp_path)
    theirs, mine = tmp_path / "ansible", tmp_path / "provision"
    for out in (theirs, mine):
        seed(out)
    run_ansible_playbook_locally(tmp_path, "find.yml", "-e", f"out={theirs}")
    args = ("find.yml", "-e", f"out={mine}")
    first = run_provision_locally(tmp_path, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    ours = (mine / "found.txt").read_text().replace(str(mine), "OUT")
    assert ours == (theirs / "found.txt").read_text().replace(str(theirs), "OUT")
    assert "OUT/tree/eb/bin/eb 0755 False True" in ours
    assert sorted(p.name[:5] for p in (mine / "tmp").iterdir()) == ["ansib", "build"]
    modes = sorted(oct(p.stat().st_mode & 0o777) for p in (mine / "tmp").iterdir())
    assert modes == ["0o600", "0o700"]
    # again: only the two tempfile tasks change (a new file each run, as in Ansible)
    again = run_provision_locally(tmp_path, *args)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 2, again.stdout
    listing = sorted(p.name for p in (mine / "tmp").iterdir())
    check = run_provision_locally(tmp_path, *args, "--check")
    assert check.returncode == 0 and recap(check.stdout)["changed"] == 0, check.stdout
    assert sorted(p.name for p in (mine / "tmp").iterdir()) == listing
