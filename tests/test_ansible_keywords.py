"""Issue 14, engine-side keywords: set_fact, debug, with_items/with_dict/with_fileglob and
loop_control, task and play ``environment``, ``become_method``, ``meta`` and templated boolean
keywords. Each playbook runs with the real ``ansible-playbook`` and with provision against the
controller itself (``ansible_connection=local``), and the files each leaves are compared, with
the recap a user sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from provision.engine import ApplyOptions, run_playbook
from provision.inventory import load_inventory
from provision.playbook import PlaybookError, parse_playbook
from tests.conftest import venv_tool
from tests.test_ansible_names import ANSIBLE_ENV, provision, recap, tree

HOSTS = f"[here]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"

LOOPS_AND_FACTS = """\
- hosts: all
  gather_facts: false
  environment:
    GREETING: play-level
  vars:
    pkgs: [alpha, [beta, gamma]]
    users: {ann: 1001, bob: 1002}
  tasks:
    - name: facts from set_fact, typed
      set_fact:
        count: "{{ 2 + 3 }}"
        names: "{{ pkgs[:1] + pkgs[1] }}"
    - name: set_fact sees earlier facts (k=v)
      set_fact: doubled="{{ count | int * 2 }}"
    - name: say it
      debug: msg="count is {{ count }}"
    - name: show a variable
      debug:
        var: names
    - name: only with -vv
      debug:
        msg: hidden
        verbosity: 2
    - name: with_items flattens one level
      copy:
        dest: "{{ out }}/item-{{ item }}"
        content: "{{ item }}\\n"
      with_items: "{{ pkgs }}"
    - name: with_dict pairs and loop_control
      copy:
        dest: "{{ out }}/user-{{ person.key }}"
        content: "{{ idx }} {{ person.key }}={{ person.value }} {{ ansible_loop.first }}\\n"
      with_dict: "{{ users }}"
      loop_control:
        loop_var: person
        index_var: idx
        label: "{{ person.key }}"
        extended: true
    - name: with_fileglob copies the controller's files
      copy:
        src: "{{ item }}"
        dest: "{{ out }}/{{ item | basename }}"
      with_fileglob: "*.conf"
    - name: environment of the play and the task
      shell: echo "$GREETING $TASKVAR" > {{ out }}/env.txt
      args:
        creates: "{{ out }}/env.txt"
      environment:
        TASKVAR: "task {{ doubled }}"
    - name: the facts land in a file
      copy:
        dest: "{{ out }}/facts"
        content: "{{ count }} {{ doubled }} {{ names | join(',') }} {{ count is number }}\\n"
    - name: registered loop results
      command: echo {{ item }}
      loop: [x, y]
      register: echoed
      changed_when: false
    - name: what the loop registered
      copy:
        dest: "{{ out }}/echoed"
        content: "{{ echoed.results | map(attribute='stdout') | join(',') }}\\n"
"""

META = """\
- hosts: all
  gather_facts: false
  tasks:
    - meta: noop
    - command: "true"
      notify: first handler
    - meta: flush_handlers
    - copy: {dest: "{{ out }}/after-flush", content: "x\\n"}
      notify: second handler
    - meta: end_host
      when: stop | bool
    - copy: {dest: "{{ out }}/after-end-host", content: "x\\n"}
    - meta: end_play
    - copy: {dest: "{{ out }}/never", content: "x\\n"}
  handlers:
    - name: first handler
      copy: {dest: "{{ out }}/first", content: "1\\n"}
    - name: second handler
      copy: {dest: "{{ out }}/second", content: "2\\n"}
"""

TEMPLATED_KEYWORDS = """\
- hosts: all
  gather_facts: false
  vars:
    tolerate: "{{ 1 == 1 }}"
    secret_task: "yes"
  tasks:
    - name: a failure tolerated by a templated ignore_errors
      command: "false"
      ignore_errors: "{{ tolerate }}"
    - name: a templated become that renders false
      copy: {dest: "{{ out }}/plain", content: "p\\n"}
      become: "{{ 1 > 2 }}"
    - name: a templated no_log
      command: echo hunter2
      no_log: "{{ secret_task | bool }}"
      register: hidden
      changed_when: false
    - copy: {dest: "{{ out }}/done", content: "length {{ hidden.stdout | length }}\\n"}
"""


def run_both(
    tmp_path: Path, playbook: str, *extra: str
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str], Path, Path]:
    """ansible-playbook into ansible/, provision into provision/: both results, both dirs."""
    (tmp_path / "site.yml").write_text(playbook)
    (tmp_path / "hosts.ini").write_text(HOSTS)
    theirs, mine = tmp_path / "ansible", tmp_path / "provision"
    theirs.mkdir(exist_ok=True)
    mine.mkdir(exist_ok=True)
    command = [venv_tool("ansible-playbook"), "-i", "hosts.ini", "site.yml", "-e", f"out={theirs}"]
    ansible = subprocess.run(
        [*command, *extra],
        cwd=tmp_path,
        env=ANSIBLE_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ansible.returncode == 0, ansible.stdout + ansible.stderr
    ours = provision(
        "apply", "-i", "hosts.ini", "-p", "site.yml", "-e", f"out={mine}", *extra, cwd=tmp_path
    )
    return ansible, ours, theirs, mine


def ansible_recap(stdout: str) -> dict[str, int]:
    return {k: v for k, v in recap(stdout).items() if k != "rescued"}


def test_set_fact_debug_with_loops_and_environment_match_ansible(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "one.conf").write_text("a\n")
    (tmp_path / "files" / "two.conf").write_text("b\n")
    (tmp_path / "files" / "skip.txt").write_text("not matched\n")
    ansible, ours, theirs, mine = run_both(tmp_path, LOOPS_AND_FACTS)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert tree(mine) == tree(theirs)
    assert (mine / "facts").read_text() == "5 10 alpha,beta,gamma True\n"
    assert (mine / "env.txt").read_text() == "play-level task 10\n"
    assert (mine / "user-bob").read_text() == "1 bob=1002 False\n"
    assert sorted(p.name for p in mine.glob("*.conf")) == ["one.conf", "two.conf"]
    assert (mine / "echoed").read_text() == "x,y\n"
    assert ansible_recap(ours.stdout) == ansible_recap(ansible.stdout)
    # debug prints without -v, as ansible-playbook does; verbosity 2 stays quiet
    assert "say it count is 5" in ours.stdout
    assert 'show a variable names: ["alpha", "beta", "gamma"]' in ours.stdout
    assert "hidden" not in ours.stdout.replace("only with -vv", "")
    again = provision(
        "apply", "-i", "hosts.ini", "-p", "site.yml", "-e", f"out={mine}", cwd=tmp_path
    )
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout


@pytest.mark.parametrize("stop", ["false", "true"])
def test_meta_actions_match_ansible(tmp_path: Path, stop: str) -> None:
    ansible, ours, theirs, mine = run_both(tmp_path, META, "-e", f"stop={stop}")
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert tree(mine) == tree(theirs)
    expected = {"first", "after-flush"} | ({"after-end-host"} if stop == "false" else set())
    assert {p.name for p in mine.iterdir()} == expected  # end_*: "second handler" never runs
    assert ansible_recap(ours.stdout) == ansible_recap(ansible.stdout)  # meta counts nowhere


def test_templated_boolean_keywords_match_ansible(tmp_path: Path) -> None:
    ansible, ours, theirs, mine = run_both(tmp_path, TEMPLATED_KEYWORDS)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert tree(mine) == tree(theirs)
    # ansible-playbook also counts the ignored failed command as changed; provision does not
    # (a difference older than this item, reported to the lead)
    assert recap(ours.stdout)["ignored"] == recap(ansible.stdout)["ignored"] == 1
    assert recap(ours.stdout)["failed"] == 0 and recap(ours.stdout)["ok"] == 4
    assert "hunter2" not in ours.stdout + ours.stderr


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (
            "- command: 'true'\n      with_random_choice: [1, 2]",
            "'with_random_choice' is not supported; use 'loop:'",
        ),
        (
            "- command: 'true'\n      loop: [1]\n      with_items: [2]",
            "loop and with_items are exclusive",
        ),
        (
            "- command: 'true'\n      loop: [1]\n      loop_control: {loopvar: x}",
            "unknown loop_control key 'loopvar'",
        ),
        ("- command: 'true'\n      become_method: su", "become_method 'su' is not supported"),
        ("- command: 'true'\n      environment: [1]", "'environment' must be a mapping"),
        ("- command: id\n      become_user: nobody", "a task's 'become_user' is not supported yet"),
        ("- import_tasks: '{{ x }}.yml'", "a templated file name needs include_tasks"),
        ("- import_tasks: a.yml\n      loop: [1]", "'loop' is not supported on an import"),
        ("- import_tasks: missing.yml", "import_tasks: cannot read missing.yml: No such file"),
        ("- meta: end_everything", "must be one of noop, flush_handlers, end_play, end_host"),
        ("- set_fact: {}", "set_fact': give at least one variable"),
        ("- debug: {msg: a, var: b}", "'msg' and 'var' are mutually exclusive"),
    ],
)
def test_bad_keyword_forms_are_one_line_errors(task: str, message: str) -> None:
    text = f"- hosts: all\n  tasks:\n    {task}\n"
    with pytest.raises(PlaybookError) as err:
        parse_playbook(text, "site.yml")
    # the task's line, or the offending keyword's line (with_random_choice)
    assert str(err.value).startswith(("site.yml:3: ", "site.yml:4: ")), err.value
    assert message in str(err.value), err.value
    assert "\n" not in str(err.value)


INCLUDES = """\
- hosts: all
  gather_facts: false
  vars:
    parts: [one, two]
  tasks:
    - import_tasks: sub/static.yml
      vars: {word: imported}
      tags: [imp]
    - include_tasks: "sub/{{ kind }}.yml"
      vars: {kind: dynamic}
    - name: an include per item
      include_tasks: sub/item.yml
      loop: "{{ parts }}"
      loop_control: {loop_var: part}
    - include_tasks: sub/never.yml
      when: false
    - ansible.builtin.include_tasks:
        file: sub/dynamic.yml
      vars: {kind: second}
    - include_vars: extra.yml
    - ansible.builtin.include_vars:
        file: extra.yml
        name: bundle
    - copy:
        dest: "{{ out }}/from-vars"
        content: "{{ driver_branch }} {{ bundle.driver_branch }} {{ bundle.extras | length }}\\n"
  handlers:
    - name: h
      copy: {dest: "{{ out }}/handler", content: "h\\n"}
"""
TASK_FILES = {
    "sub/static.yml": "- name: static\n  copy: {dest: '{{ out }}/static-{{ word }}', content: s}\n"
    "- import_tasks: nested.yml\n",
    "sub/nested.yml": "- copy: {dest: '{{ out }}/nested', content: n}\n",
    "sub/dynamic.yml": "- copy: {dest: '{{ out }}/dyn-{{ kind }}', content: d}\n  notify: h\n",
    "vars/extra.yml": "driver_branch: 550\nextras: [a, b]\n",
    "sub/item.yml": "- copy: {dest: '{{ out }}/item-{{ part }}', content: '{{ part }}'}\n",
}


def test_import_and_include_tasks_match_ansible_and_batch_their_reads(tmp_path: Path) -> None:
    for name, text in TASK_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    ansible, ours, theirs, mine = run_both(tmp_path, INCLUDES)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert tree(mine) == tree(theirs)
    assert {p.name for p in mine.iterdir()} >= {"static-imported", "nested", "item-two", "handler"}
    assert (mine / "from-vars").read_text() == "550 550 2\n"
    assert ansible_recap(ours.stdout) == ansible_recap(ansible.stdout)  # includes count as ok
    again = run_playbook(
        load_inventory(str(tmp_path / "hosts.ini")),
        str(tmp_path / "site.yml"),
        ApplyOptions(extra_vars={"out": str(mine)}),
    )
    assert again.exit_code == 0 and again.stats["localhost"].changed == 0, again.results
    # converged: the play's tasks (imports inlined) in one read, one more per file included,
    # and one for the rest of the play once include_vars has given the values it needs
    assert again.round_trips == {"localhost": 1 + 4 + 1}


def test_a_file_that_includes_itself_fails_the_host_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "again.yml").write_text("- include_tasks: again.yml\n")
    (tmp_path / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - include_tasks: again.yml\n"
    )
    (tmp_path / "hosts.ini").write_text(HOSTS)
    result = run_playbook(
        load_inventory(str(tmp_path / "hosts.ini")), str(tmp_path / "site.yml"), ApplyOptions()
    )
    assert result.exit_code == 2 and result.stats["localhost"].failed == 1
    (failed,) = [r for r in result.results if r.status == "failed"]
    assert failed.msg.endswith("includes nested over 32 deep") and "\n" not in failed.msg
