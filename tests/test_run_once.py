"""``run_once`` with Ansible's semantics (issue 14): the first host of the batch runs the task,
every host of the batch gets its registered value and facts; only that host counts it, shows
it and notifies; its failure stops every host of the batch. Compared with the real
ansible-playbook on three controller-local hosts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from provision.engine import ApplyOptions, run_playbook
from provision.inventory import load_inventory
from provision.playbook import leaf_tasks, parse_playbook
from tests.conftest import venv_tool
from tests.test_ansible_names import ANSIBLE_ENV, provision, tree

HOSTS = "[all]\n" + "".join(
    f"h{n} ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    for n in (1, 2, 3)
)

ONCE = """\
- name: one batch
  hosts: all
  gather_facts: false
  tasks:
    - name: once
      command: echo {{ inventory_hostname }}
      run_once: true
      register: r
    - copy: {dest: "{{ out }}/{{ inventory_hostname }}-sees", content: "{{ r.stdout }}\\n"}
    - set_fact: {chosen: "{{ inventory_hostname }}"}
      run_once: true
    - copy: {dest: "{{ out }}/{{ inventory_hostname }}-fact", content: "{{ chosen }}\\n"}
    - name: a block's run_once
      run_once: true
      block:
        - copy: {dest: "{{ out }}/once-{{ inventory_hostname }}", content: "x\\n"}
          notify: h
  handlers:
    - name: h
      copy: {dest: "{{ out }}/handled-{{ inventory_hostname }}", content: "h\\n"}
- name: batches of two
  hosts: all
  gather_facts: false
  serial: 2
  tasks:
    - copy: {dest: "{{ out }}/serial-{{ inventory_hostname }}", content: "s\\n"}
      run_once: true
"""


def recaps(stdout: str) -> dict[str, dict[str, int]]:
    """Every host's PLAY RECAP line -> its counts."""
    out = {}
    for line in stdout.splitlines():
        if " : ok=" in line:
            host = line.split()[0]
            out[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    return out


def run_both(tmp_path: Path, playbook: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    (tmp_path / "site.yml").write_text(playbook)
    (tmp_path / "hosts.ini").write_text(HOSTS)
    for side in ("ansible", "provision"):
        (tmp_path / side).mkdir(exist_ok=True)
    ansible = subprocess.run(
        [venv_tool("ansible-playbook"), "-i", "hosts.ini", "site.yml", "-e",
         f"out={tmp_path / 'ansible'}"],
        cwd=tmp_path,
        env=ANSIBLE_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    ours = provision(
        "apply", "-i", "hosts.ini", "-p", "site.yml", "-e", f"out={tmp_path / 'provision'}",
        cwd=tmp_path,
    )  # fmt: skip
    return ansible, ours


def test_run_once_matches_ansible_playbook(tmp_path: Path) -> None:
    ansible, ours = run_both(tmp_path, ONCE)
    assert ansible.returncode == 0, ansible.stdout + ansible.stderr
    assert ours.returncode == 0, ours.stdout + ours.stderr
    mine = tmp_path / "provision"
    assert tree(mine) == tree(tmp_path / "ansible")
    assert {p.name: p.read_text() for p in mine.glob("*-sees")} == {
        f"h{n}-sees": "h1\n" for n in (1, 2, 3)
    }
    assert sorted(p.name for p in mine.glob("*-fact")) == ["h1-fact", "h2-fact", "h3-fact"]
    assert {(mine / f"h{n}-fact").read_text() for n in (1, 2, 3)} == {"h1\n"}
    assert sorted(p.name for p in mine.iterdir() if not p.name.endswith(("-sees", "-fact"))) == [
        "handled-h1",
        "once-h1",
        "serial-h1",
        "serial-h3",
    ]
    assert recaps(ours.stdout) == recaps(ansible.stdout)
    # the run_once tasks count on h1 only: h2 changed its two copies, h3 those and "serial"
    assert [recaps(ours.stdout)[h]["changed"] for h in ("h1", "h2", "h3")] == [6, 2, 3]


def test_a_failed_run_once_stops_every_host_of_the_batch(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text(HOSTS)
    (tmp_path / "site.yml").write_text(
        """\
- hosts: all
  gather_facts: false
  tasks:
    - command: /bin/false
      run_once: true
    - copy: {dest: "{{ out }}/{{ inventory_hostname }}", content: "x\\n"}
"""
    )
    (tmp_path / "out").mkdir()
    result = run_playbook(
        load_inventory(str(tmp_path / "hosts.ini")),
        str(tmp_path / "site.yml"),
        ApplyOptions(extra_vars={"out": str(tmp_path / "out")}),
    )
    assert list((tmp_path / "out").iterdir()) == []
    # as ansible-playbook 2.19 counts it: the failure on h1 only, the others just stop
    assert [result.stats[h].failed for h in ("h1", "h2", "h3")] == [1, 0, 0]
    assert result.exit_code == 2
    assert result.round_trips["h2"] == 0 and result.round_trips["h3"] == 0


def test_run_once_is_a_task_and_block_keyword() -> None:
    pb = parse_playbook(
        "- hosts: all\n  tasks:\n    - command: 'true'\n      run_once: yes\n"
        "    - block: [{command: 'true'}]\n      run_once: true\n"
        "    - command: 'true'\n",
        "site.yml",
    )
    assert [t.run_once for t in leaf_tasks(pb.plays[0].tasks)] == [True, True, False]
