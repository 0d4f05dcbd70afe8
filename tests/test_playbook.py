"""Playbook loading and validation: Ansible's shape, strict, every error at FILE:LINE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provision.engine import batches, list_tasks, task_selected
from provision.playbook import PlaybookError, leaf_tasks, load_playbook, parse_playbook

DATA = Path(__file__).parent / "data" / "playbooks"


def error_of(text: str) -> str:
    with pytest.raises(PlaybookError) as err:
        parse_playbook(text, "pb.yml")
    return str(err.value)


def test_full_play_shape_is_read() -> None:
    pb = load_playbook(str(DATA / "booted_site.yml"))
    (play,) = pb.plays
    assert play.name == "lab files" and play.hosts == "lab" and play.line == 2
    assert play.vars["conf_dir"] == "/etc/provision-test"
    names = [t.name for t in play.tasks]
    assert names[:3] == ["config directory", "greeting file", "rendered template"]
    greeting = leaf_tasks(play.tasks)[1]
    assert (greeting.module, greeting.line, greeting.notify) == ("copy", 17, ["record handler"])
    assert greeting.args == {
        "dest": "{{ conf_dir }}/greeting",
        "content": "{{ greeting }}\n",
        "mode": "0640",
        "backup": True,
    }
    assert leaf_tasks(play.tasks)[-2].when == "inventory_hostname == groups_first"
    assert leaf_tasks(play.tasks)[-1].args["unless"] == "grep -q ran /root/unless.log"
    assert [h.name for h in play.handlers] == ["record handler"]
    assert pb.base_dir == str(DATA)


def test_task_keywords() -> None:
    pb = parse_playbook(
        "- hosts: web:&gpu\n"
        "  become: yes\n"
        "  serial: [1, '50%']\n"
        "  max_fail_percentage: 20\n"
        "  tasks:\n"
        "    - name: t\n"
        "      command: echo {{ item }}\n"
        "      args: {chdir: /tmp}\n"
        "      loop: [a, b]\n"
        "      register: out\n"
        "      become: false\n"
        "      tags: [x, y]\n"
        "      ignore_errors: true\n"
        "      changed_when: false\n"
        "      failed_when: out.rc > 1\n"
        "      no_log: yes\n",
        "pb.yml",
    )
    play = pb.plays[0]
    assert (play.become, play.serial, play.max_fail_percentage) == (True, [1, "50%"], 20.0)
    t = leaf_tasks(play.tasks)[0]
    assert t.args == {"chdir": "/tmp", "cmd": "echo {{ item }}"}
    assert (t.loop, t.register, t.become, t.tags) == (["a", "b"], "out", False, ["x", "y"])
    assert (t.ignore_errors, t.changed_when, t.failed_when, t.no_log) == (
        True,
        False,
        "out.rc > 1",
        True,
    )


def test_unknown_module_names_file_line_and_task() -> None:
    with pytest.raises(PlaybookError) as err:
        load_playbook(str(DATA / "bad_module.yml"))
    assert str(err.value) == (
        f"{DATA / 'bad_module.yml'}:9: task 'typo in module': unknown module or keyword 'fille' "
        "(did you mean 'file'?)"
    )


def test_notify_naming_no_handler() -> None:
    with pytest.raises(PlaybookError) as err:
        load_playbook(str(DATA / "bad_notify.yml"))
    assert str(err.value) == (
        f"{DATA / 'bad_notify.yml'}:4: task 'write config': notify names no handler: "
        "'restart dockerd'"
    )


def test_missing_argument_stops_before_anything_runs() -> None:
    with pytest.raises(PlaybookError) as err:
        load_playbook(str(DATA / "bad_args.yml"))
    assert str(err.value) == (
        f"{DATA / 'bad_args.yml'}:5: task 'missing dest': module 'copy': "
        "missing required argument 'dest'"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "- hosts: all\n  tasks:\n    - name: two\n      file: {path: /x}\n"
            "      copy: {dest: /x, content: y}\n",
            "pb.yml:3: task 'two': more than one module in one task: file, copy",
        ),
        (
            "- hosts: all\n  tasks:\n    - name: none\n      when: true\n",
            "pb.yml:3: task 'none': no module given",
        ),
        (
            "- hosts: all\n  tasks:\n    - name: bad arg\n      file: {path: /x, colour: red}\n",
            "pb.yml:3: task 'bad arg': module 'file': unknown argument 'colour' "
            "(known: path, state, owner, group, mode, src, force, recurse)",
        ),
        (
            "- hosts: all\n  tasks:\n    - name: bad type\n      copy: {dest: /x, content: y, "
            "backup: sometimes}\n",
            "pb.yml:3: task 'bad type': argument 'backup' must be a boolean, got 'sometimes'",
        ),
        (
            "- hosts: all\n  tasks:\n    - name: choice\n      file: {path: /x, state: pipe}\n",
            "pb.yml:3: task 'choice': argument 'state' must be one of file, directory, absent, "
            "touch, link, hard, got 'pipe'",
        ),
        (
            "- hosts: all\n  tasks:\n    - file: {path: /x}\n      register: 1bad\n",
            "pb.yml:3: task 'task 1': 'register' must be a variable name",
        ),
        (
            "- hosts: all\n  tasks:\n    - name: l\n      file: {path: /x}\n      loop: 3\n",
            "pb.yml:3: task 'l': 'loop' must be a list or a template",
        ),
        ("- name: p\n  tasks: []\n", "pb.yml:1: play 'p': 'hosts' is required"),
        ("- hosts: all\n  include: x.yml\n", "pb.yml:1: play 'play 1': 'include' is not supported"),
        ("- hosts: all\n  serial: 0\n", "pb.yml:1: play 'play 1': 'serial' must be a number"),
        ("- hosts: all\n  hots: x\n", "pb.yml:1: play 'play 1': unknown play keyword 'hots'"),
        ("hosts: all\n", "pb.yml:1: a playbook is a list of plays"),
        ("- hosts: all\n  tasks: [\n", "pb.yml:3: invalid YAML"),
        (
            "- hosts: all\n  tasks:\n    - name: a\n      file: {path: /x}\n      name: b\n",
            "pb.yml:5: duplicate key 'name'",
        ),
    ],
)
def test_validation_errors(text: str, message: str) -> None:
    assert error_of(text).startswith(message)


def test_templated_arguments_are_type_checked_later() -> None:
    pb = parse_playbook(
        "- hosts: all\n  tasks:\n    - copy: {dest: /x, content: y, backup: '{{ b }}'}\n", "p"
    )
    assert leaf_tasks(pb.plays[0].tasks)[0].args["backup"] == "{{ b }}"


def test_handler_listen_and_free_form_shell() -> None:
    pb = parse_playbook(
        "- hosts: all\n  tasks:\n    - shell: echo hi | cat\n      notify: restart stack\n"
        "  handlers:\n    - name: h\n      command: echo\n      listen: restart stack\n",
        "p",
    )
    assert leaf_tasks(pb.plays[0].tasks)[0].args == {"cmd": "echo hi | cat"}
    assert pb.plays[0].handlers[0].listen == ["restart stack"]


def _task(tags: list[str]):
    pb = parse_playbook(
        f"- hosts: all\n  tasks:\n    - command: 'true'\n      tags: {tags!r}\n", "p"
    )
    return leaf_tasks(pb.plays[0].tasks)[0]


@pytest.mark.parametrize(
    ("tags", "only", "skip", "selected"),
    [
        ([], (), (), True),
        (["a"], ("a",), (), True),
        (["a"], ("b",), (), False),
        (["a"], (), ("a",), False),
        (["always"], ("b",), (), True),
        (["always"], (), ("always",), False),
        (["never"], (), (), False),
        (["never", "a"], ("a",), (), True),
        (["x"], ("all",), (), True),
    ],
)
def test_tag_selection(tags: list[str], only: tuple, skip: tuple, selected: bool) -> None:
    assert task_selected(_task(tags), only, skip) is selected


def test_serial_batches() -> None:
    hosts = [f"h{i}" for i in range(10)]
    assert batches(hosts, []) == [hosts]
    assert batches(hosts, [3]) == [hosts[0:3], hosts[3:6], hosts[6:9], hosts[9:]]
    assert batches(hosts, [1, "50%"]) == [hosts[:1], hosts[1:6], hosts[6:]]
    assert batches([], [2]) == []


def test_list_tasks() -> None:
    pb = parse_playbook(
        "- name: p\n  hosts: all\n  tasks:\n    - name: a\n      command: 'true'\n"
        "      tags: [t]\n    - name: b\n      command: 'true'\n",
        "p",
    )
    assert list_tasks(pb) == ["play: p (hosts: all)", "  a\tTAGS: [t]", "  b"]


# -- the engine over a local connection (this machine, files under tmp_path) -------------------


def _run_local(tmp_path: Path, text: str, **opts: Any):  # ApplyOptions fields
    from provision.engine import ApplyOptions, run_playbook
    from provision.inventory import load_inventory

    (tmp_path / "hosts.ini").write_text("[here]\nlocalhost ansible_connection=local\n")
    (tmp_path / "pb.yml").write_text(text)
    inv = load_inventory(str(tmp_path / "hosts.ini"))
    extra = {"dir": str(tmp_path)}
    extra.update(opts.pop("extra_vars", {}))
    return run_playbook(inv, str(tmp_path / "pb.yml"), ApplyOptions(extra_vars=extra, **opts))


LOCAL_PLAY = """
- name: local
  hosts: here
  gather_facts: false
  tasks:
    - name: files in a loop
      file: {path: "{{ dir }}/{{ item }}", state: touch}
      loop: [a, b]
      register: touched
      notify: [second, first]
    - name: report loop
      copy:
        dest: "{{ dir }}/loop.txt"
        content: "{{ touched.results | map(attribute='item') | join(',') }} {{ touched.changed }}"
    - name: probe
      command: cat {{ dir }}/loop.txt
      register: probe
      changed_when: false
    - name: tolerated failure
      command: ls {{ dir }}/missing
      register: ls_missing
      ignore_errors: true
    - name: rc 2 is fine here
      shell: {cmd: "exit 2"}
      failed_when: false
      changed_when: false
    - name: only when probe printed
      copy: {dest: "{{ dir }}/probe.txt", content: "{{ probe.stdout }}|{{ ls_missing.rc }}"}
      when: probe.stdout | length > 0
      tags: [probe]
  handlers:
    - name: first
      shell: {cmd: "echo first >> {{ dir | quote }}/handlers.log"}
    - name: second
      shell: {cmd: "echo second >> {{ dir | quote }}/handlers.log"}
      notify: third
    - name: never notified
      shell: {cmd: "echo never >> {{ dir | quote }}/handlers.log"}
    - name: third
      shell: {cmd: "echo third >> {{ dir | quote }}/handlers.log"}
"""


def test_engine_loop_register_conditions_and_handlers(tmp_path: Path) -> None:
    from provision.output.text import recap_lines

    result = _run_local(tmp_path, LOCAL_PLAY)
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    assert (tmp_path / "loop.txt").read_text() == "a,b True"
    assert (tmp_path / "probe.txt").read_text() == "a,b True|2"
    # definition order, once each; "second" notified "third"
    assert (tmp_path / "handlers.log").read_text() == "first\nsecond\nthird\n"
    statuses = [(r.task, r.status, r.ignored) for r in result.results]
    assert statuses == [
        ("files in a loop", "changed", False),
        ("report loop", "changed", False),
        ("probe", "ok", False),
        ("tolerated failure", "failed", True),
        ("rc 2 is fine here", "ok", False),
        ("only when probe printed", "changed", False),
        ("first", "changed", False),
        ("second", "changed", False),
        ("third", "changed", False),
    ]
    s = result.stats["localhost"]
    # the tolerated failure is a command that ran: Ansible counts it changed too
    assert (s.ok, s.changed, s.failed, s.skipped, s.ignored) == (9, 7, 0, 0, 1)
    assert recap_lines(result.stats) == [
        "PLAY RECAP " + "*" * 69,
        "localhost                  : ok=9    changed=7    unreachable=0    failed=0    "
        "skipped=0    rescued=0    ignored=1",
    ]
    again = _run_local(tmp_path, LOCAL_PLAY, tags=("probe",))
    assert [r.task for r in again.results] == ["only when probe printed"]
    assert again.results[0].status == "failed"  # probe was not registered in this run
    assert "undefined variable 'probe'" in again.results[0].msg
    assert again.results[0].msg.startswith(f"{tmp_path / 'pb.yml'}:27: task 'only when probe")
    assert again.exit_code == 2 and again.retry_text == "localhost\n"


def test_engine_progress_events(tmp_path: Path) -> None:
    events: list[tuple[str, str, int, int, str]] = []
    _run_local(
        tmp_path,
        LOCAL_PLAY,
        on_event=lambda e: events.append((e.host, e.task, e.index, e.total, e.status)),
        tags=("probe",),
        extra_vars={"probe": {"stdout": "x"}, "ls_missing": {"rc": 0}},
    )
    assert events == [
        ("localhost", "only when probe printed", 1, 1, "start"),
        ("localhost", "only when probe printed", 1, 1, "changed"),
    ]


def test_engine_check_mode_skips_commands_and_writes_nothing(tmp_path: Path) -> None:
    result = _run_local(tmp_path, LOCAL_PLAY, check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts.ini", "pb.yml"]
    by_task = {r.task: r for r in result.results}
    assert by_task["files in a loop"].status == "changed"
    assert by_task["probe"].status == "skipped"
    assert "cannot predict" in by_task["probe"].msg


def test_extra_vars_forms_and_order(tmp_path: Path) -> None:
    from provision.engine import EngineError, parse_extra_vars

    (tmp_path / "vars.yml").write_text("a: from-file\nlist: [1, 2]\n")
    got = parse_extra_vars(
        ["a=1 b='two words'", '{"c": {"d": true}}', "@vars.yml", "e=x=y"], str(tmp_path)
    )
    assert got == {"a": "from-file", "b": "two words", "c": {"d": True}, "list": [1, 2], "e": "x=y"}
    for bad, message in [
        (["novalue"], "expected key=value, got 'novalue'"),
        (["[1, 2]"], "must be a mapping"),
        (["@missing.yml"], "cannot read"),
    ]:
        with pytest.raises(EngineError, match=message):
            parse_extra_vars(bad, str(tmp_path))


def test_play_whose_hosts_match_nothing_is_skipped_with_a_warning(tmp_path: Path) -> None:
    text = (
        "- name: nobody\n  hosts: gpu\n  tasks:\n    - command: 'false'\n"
        "- name: here\n  hosts: here\n  gather_facts: false\n  tasks:\n"
        "    - copy: {dest: '{{ dir }}/x', content: x}\n"
    )
    result = _run_local(tmp_path, text)
    assert result.exit_code == 0
    assert (tmp_path / "x").read_text() == "x"
    (warning,) = result.warnings
    assert warning.startswith(f"{tmp_path / 'pb.yml'}:1: play 'nobody': host pattern 'gpu'")


def test_serial_rollout_stops_past_max_fail_percentage(tmp_path: Path) -> None:
    from provision.engine import ApplyOptions, run_playbook
    from provision.inventory import load_inventory

    (tmp_path / "hosts.ini").write_text(
        "[here]\n" + "".join(f"h{i} ansible_connection=local\n" for i in range(1, 5))
    )
    (tmp_path / "pb.yml").write_text(
        "- hosts: here\n  gather_facts: false\n  serial: [1, 2]\n  max_fail_percentage: 0\n"
        "  tasks:\n"
        "    - name: mark\n      shell: {cmd: 'echo {{ inventory_hostname }} >> {{ log }}'}\n"
        "    - name: h2 breaks\n      command: 'false'\n"
        "      when: inventory_hostname == 'h2'\n"
    )
    log = tmp_path / "ran.log"
    opts = ApplyOptions(extra_vars={"log": str(log)}, forks=2)
    result = run_playbook(
        load_inventory(str(tmp_path / "hosts.ini")), str(tmp_path / "pb.yml"), opts
    )
    assert sorted(log.read_text().split()) == ["h1", "h2", "h3"]  # batches [h1], [h2, h3]
    assert result.stats["h2"].failed == 1 and result.stats["h3"].failed == 0
    assert result.stats["h4"].ok == 0  # the rollout stopped before the last batch
    assert result.aborted.startswith("play 'play 1': 1 of 2 hosts failed")
    assert result.exit_code == 2 and result.retry_text == "h2\n"
