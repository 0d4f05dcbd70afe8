"""Ansible's Jinja filters, tests and lookups (issue 14, item 6): every expression in
tests/data/jinja/expressions.yml is rendered by the real ansible-playbook (ansible-core 2.19)
and by provision on this machine through a local connection, and the documents compared."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from provision.ansible_filters import OMIT, remove_omit
from provision.templating import Vars, render, render_text
from tests.ansible_local import (
    run_ansible_playbook_locally,
    run_provision_locally,
    write_local_inventory,
)
from tests.test_cli import cli

DATA = Path(__file__).resolve().parent / "data" / "jinja"
# set filters: Ansible returns the items in a Python set's order (hash seed), so compare sorted
UNORDERED = ("union", "intersect", "difference", "symdiff")


def _both(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    for name in ("expressions.yml", "data.txt", "greet.j2"):
        shutil.copy(DATA / name, tmp_path / name)
    write_local_inventory(tmp_path)
    env = {**os.environ, "PROVISION_LOOKUP_TEST": "envval", "ANSIBLE_LOCALHOST_WARNING": "False"}
    theirs, mine = tmp_path / "theirs.json", tmp_path / "mine.json"
    run_ansible_playbook_locally(tmp_path, "expressions.yml", "-e", f"out={theirs}", env=env)
    ran = run_provision_locally(tmp_path, "expressions.yml", "-e", f"out={mine}", env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return json.loads(theirs.read_text()), json.loads(mine.read_text())


def test_filters_tests_and_lookups_render_as_ansible_playbook_renders_them(tmp_path: Path) -> None:
    theirs, mine = _both(tmp_path)
    for key in UNORDERED:
        theirs[key], mine[key] = sorted(theirs[key]), sorted(mine[key])
    assert sorted(mine) == sorted(theirs)
    different = {k: (theirs[k], mine[k]) for k in theirs if theirs[k] != mine[k]}
    assert different == {}
    assert mine["search_groups"] == ["580", "95"]  # '\\1' reached the filter as a backreference
    assert mine["lookup_pipe"] == "piped\ntwo" and mine["lookup_env"] == "envval"


def test_backslashes_in_expressions_are_taken_once_as_ansible_takes_them() -> None:
    variables = Vars([{"name": "driver-580"}])
    # YAML has already turned "\\1" into \1: Jinja must not make it chr(1)
    assert render("{{ name | regex_replace('^.*-([0-9]+)$', '\\1') }}", variables) == "580"
    assert render("{{ 'a\\tb' | length }}", variables) == 4  # Jinja alone: a tab, 3
    assert render_text("{{ 'a\\tb' | length }}", variables) == "3"  # a template file: Jinja's


def test_omit_removes_the_argument() -> None:
    args = render({"name": "jq", "state": "{{ omit }}", "opts": ["a", "{{ omit }}"]}, Vars([{}]))
    assert args["state"] == OMIT
    assert remove_omit(args) == {"name": "jq", "opts": ["a"]}


def test_a_hosts_output_is_never_rendered_as_a_template(tmp_path: Path) -> None:
    """A registered stdout (or a fact) holding ``{{ lookup('pipe', ...) }}`` stays text: it
    must not run a command on the controller, as Ansible's unsafe values do not."""
    mark = tmp_path / "ran-on-the-controller"
    (tmp_path / "hosts.ini").write_text("[here]\nlocalhost ansible_connection=local\n")
    (tmp_path / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - shell: printf '%s' \"{{ '{{' }} lookup('pipe', 'touch " + str(mark) + "') }}\"\n"
        "      register: r\n"
        '    - set_fact: {copied: "{{ r.stdout }}"}\n'
        '    - copy: {content: "{{ copied }} {{ r.stdout_lines | to_yaml }}", dest: '
        + str(tmp_path / "out.txt")
        + "}\n"
    )
    r = cli("apply", "site.yml", "-i", "hosts.ini", cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not mark.exists()
    text = f"{{{{ lookup('pipe', 'touch {mark}') }}}}"
    assert (tmp_path / "out.txt").read_text().startswith(text)


def test_with_lookup_loops_give_ansibles_items(tmp_path: Path) -> None:
    shutil.copy(DATA / "loops.yml", tmp_path / "loops.yml")
    shutil.copy(DATA / "data.txt", tmp_path / "data.txt")
    write_local_inventory(tmp_path)
    theirs, mine = tmp_path / "theirs.json", tmp_path / "mine.json"
    run_ansible_playbook_locally(tmp_path, "loops.yml", "-e", f"out={theirs}")
    ran = run_provision_locally(tmp_path, "loops.yml", "-e", f"out={mine}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert json.loads(mine.read_text()) == json.loads(theirs.read_text())
    assert json.loads(mine.read_text())["sequence"] == ["gpu01", "gpu05", "gpu09"]
