"""block/rescue/always with Ansible's semantics (issue 14, item 8), the one boolean rule, and
the declared module protocol the split engine relies on.

The semantics are checked against the real ansible-playbook (ansible-core, a test
dependency): the same playbook run by both on the controller, then on two booted hosts, the
resulting files and the recap counts compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provision.booleans import FALSE_WORDS, TRUE_WORDS
from provision.config import parse_config
from provision.engine import ApplyOptions, PlaybookResult, list_tasks, run_playbook
from provision.errors import ConfigError
from provision.inventory import load_inventory
from provision.modules import MODULES
from provision.modules.base import Arg, ArgError, Module, coerce
from provision.playbook import Block, PlaybookError, Task, leaf_tasks, parse_playbook
from provision.templating import TemplateError, Vars, render
from provision.varparse import to_bool
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
)
from tests.test_ansible_keywords import HOSTS, run_both
from tests.test_ansible_names import provision, recap, run_with_both, tree


def write(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)


def run(tmp_path: Path, playbook: str, **opts: Any) -> PlaybookResult:
    """provision's engine on localhost (local connection), out= a fresh directory."""
    (tmp_path / "site.yml").write_text(playbook)
    (tmp_path / "hosts.ini").write_text(HOSTS)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    extra = {"out": str(out), **opts.pop("extra_vars", {})}
    inventory = load_inventory(str(tmp_path / "hosts.ini"))
    return run_playbook(
        inventory, str(tmp_path / "site.yml"), ApplyOptions(extra_vars=extra, **opts)
    )


def counts(result: PlaybookResult) -> dict[str, int]:
    s = result.stats["localhost"]
    return {
        "ok": s.ok,
        "changed": s.changed,
        "failed": s.failed,
        "skipped": s.skipped,
        "rescued": s.rescued,
        "ignored": s.ignored,
    }


# -- loading: keywords inherited, errors in one line -------------------------------------------

INHERITED = """\
- hosts: all
  tasks:
    - name: outer
      when: first
      become: true
      tags: [outer]
      vars: {a: block, b: block}
      environment: {LEVEL: block}
      check_mode: false
      block:
        - name: own become wins
          command: echo 1
          become: false
          vars: {b: task}
          environment: {LEVEL: task}
        - name: inner
          when: second
          ignore_errors: true
          no_log: true
          tags: [inner]
          block:
            - name: nested
              command: echo 2
      rescue:
        - name: rescuing
          debug: msg=r
      always:
        - name: always
          debug: msg=a
"""


def test_block_keywords_are_inherited_by_its_tasks_their_own_winning() -> None:
    (block,) = parse_playbook(INHERITED, "site.yml").plays[0].tasks
    assert isinstance(block, Block)
    own, inner = block.block
    assert isinstance(own, Task) and isinstance(inner, Block)
    nested = inner.block[0]
    assert isinstance(nested, Task)
    assert own.when == ["first"] and nested.when == ["first", "second"]
    assert own.become is False and nested.become is True
    assert own.vars == {"a": "block", "b": "task"} and nested.vars == {"a": "block", "b": "block"}
    assert own.environment == [{"LEVEL": "block"}, {"LEVEL": "task"}]
    assert nested.ignore_errors is True and nested.no_log is True and own.ignore_errors is False
    assert nested.tags == ["outer", "inner"] and own.tags == ["outer"]
    assert own.check_mode is False and nested.check_mode is False
    rescue, always = block.rescue[0], block.always[0]
    assert isinstance(rescue, Task) and isinstance(always, Task)
    assert rescue.when == ["first"] and always.tags == ["outer"] and always.become is True
    names = [t.name for t in leaf_tasks([block])]
    assert names == ["own become wins", "nested", "rescuing", "always"]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("- block: [{command: 'true'}]\n      delegate_to: x", "'delegate_to' is not supported"),
        ("- block: [{command: 'true'}]\n      become_user: bob", "'become_user' is not supported"),
        ("- block: [{command: 'true'}]\n      rescue: {command: 'true'}", "must be a list of"),
        ("- block: [{command: 'true'}]\n      become: maybe", "'become' must be a boolean"),
        ("- block: [{command: 'true'}]\n      become_method: su", "sudo only"),
        ("- block: [{nosuchmodule: 1}]", "unknown module or keyword 'nosuchmodule'"),
    ],
)
def test_bad_blocks_are_one_line_errors(block: str, message: str) -> None:
    with pytest.raises(PlaybookError) as err:
        parse_playbook(f"- hosts: all\n  tasks:\n    {block}\n", "site.yml")
    assert str(err.value).startswith("site.yml:"), err.value
    assert message in str(err.value) and "\n" not in str(err.value), err.value


def test_a_block_in_handlers_is_refused_in_one_line() -> None:
    text = "- hosts: all\n  tasks: []\n  handlers:\n    - block: [{command: 'true'}]\n"
    with pytest.raises(PlaybookError, match=r"^site\.yml:4: block 'block 1': a block in handlers"):
        parse_playbook(text, "site.yml")


# -- running: the same results as ansible-playbook ---------------------------------------------

RESCUED = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: install, rescued
      block:
        - copy: {dest: "{{ out }}/before", content: "b\\n"}
        - name: the step that fails
          command: /bin/false
        - copy: {dest: "{{ out }}/never", content: "n\\n"}
      rescue:
        - name: what failed
          copy:
            dest: "{{ out }}/rescued"
            content: "{{ ansible_failed_result.rc }} {{ ansible_failed_task.name }}\\n"
        - name: nested block inside rescue
          block:
            - fail: {msg: inner}
          rescue:
            - copy: {dest: "{{ out }}/inner-rescued", content: "i\\n"}
      always:
        - copy: {dest: "{{ out }}/always", content: "a\\n"}
    - name: skipped as a whole
      when: false
      block:
        - copy: {dest: "{{ out }}/skipped", content: "s\\n"}
      always:
        - copy: {dest: "{{ out }}/skipped-always", content: "s\\n"}
    - name: keywords from the block
      vars: {word: from-block}
      ignore_errors: true
      block:
        - copy: {dest: "{{ out }}/word", content: "{{ word }}\\n"}
        - name: ignored, so no rescue
          fail: {msg: ignored}
        - copy: {dest: "{{ out }}/after-ignored", content: "x\\n"}
      rescue:
        - copy: {dest: "{{ out }}/not-rescued", content: "x\\n"}
    - copy: {dest: "{{ out }}/after", content: "done\\n"}
"""


def test_rescue_and_always_match_ansible_playbook(tmp_path: Path) -> None:
    ansible, ours, theirs, mine = run_both(tmp_path, RESCUED)
    assert ours.returncode == 0, ours.stdout + ours.stderr  # a rescued failure is no failure
    assert tree(mine) == tree(theirs)
    assert (mine / "rescued").read_text() == "1 the step that fails\n"
    assert not (mine / "never").exists() and not (mine / "not-rescued").exists()
    assert recap(ours.stdout) == recap(ansible.stdout)  # rescued=2 in both, failed=0
    assert recap(ours.stdout)["rescued"] == 2 and recap(ours.stdout)["failed"] == 0
    assert "/ the step that fails (rescued): " in ours.stdout  # the host goes on
    again = provision(
        "apply", "-i", "hosts.ini", "-p", "site.yml", "-e", f"out={mine}", cwd=tmp_path
    )
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout


def test_an_unrescued_failure_runs_always_then_stops_the_host(tmp_path: Path) -> None:
    # ansible-playbook on this playbook: ok=3 changed=2 failed=1 rescued=1 (measured, 2.19)
    result = run(
        tmp_path,
        """\
- hosts: all
  gather_facts: false
  tasks:
    - block:
        - command: /bin/false
      rescue:
        - fail: {msg: the rescue fails too}
      always:
        - copy: {dest: "{{ out }}/always", content: "a\\n"}
    - block:
        - command: /bin/false
      always:
        - copy: {dest: "{{ out }}/unreached", content: "u\\n"}
""",
    )
    assert result.exit_code == 2
    assert counts(result) == {
        "ok": 1,
        "changed": 1,
        "failed": 1,
        "skipped": 0,
        "rescued": 1,
        "ignored": 0,
    }
    assert (tmp_path / "out" / "always").exists()
    assert not (tmp_path / "out" / "unreached").exists()  # the host stopped at the rescue


def test_always_runs_after_an_unrescued_failure_and_the_host_stays_failed(
    tmp_path: Path,
) -> None:
    result = run(
        tmp_path,
        """\
- hosts: all
  gather_facts: false
  tasks:
    - block:
        - command: /bin/false
      always:
        - copy: {dest: "{{ out }}/always", content: "a\\n"}
    - copy: {dest: "{{ out }}/after", content: "x\\n"}
""",
    )
    assert result.exit_code == 2 and result.retry_text == "localhost\n"
    assert counts(result)["failed"] == 1 and counts(result)["rescued"] == 0
    assert (tmp_path / "out" / "always").exists() and not (tmp_path / "out" / "after").exists()


def test_blocks_in_imported_and_included_files_batch_their_reads(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "imported.yml": "- block:\n    - copy: {dest: '{{ out }}/imported', content: i}\n"
            "  always:\n    - copy: {dest: '{{ out }}/imported-always', content: a}\n",
            "included.yml": "- block:\n    - command: /bin/false\n"
            "  rescue:\n    - copy: {dest: '{{ out }}/included-{{ word }}', content: r}\n",
        },
    )
    playbook = """\
- hosts: all
  gather_facts: false
  tasks:
    - block:
        - import_tasks: imported.yml
        - copy: {dest: "{{ out }}/plain", content: p}
    - include_tasks: included.yml
      vars: {word: rescued}
"""
    first = run(tmp_path, playbook)
    assert first.exit_code == 0, [r.msg for r in first.results if r.status == "failed"]
    made = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert made == ["imported", "imported-always", "included-rescued", "plain"]
    again = run(tmp_path, playbook)
    assert again.exit_code == 0 and again.stats["localhost"].changed == 0, again.results
    # converged: every read of the play's blocks and imported file in one round trip; the
    # included command runs (one) and the rescue, read only after the failure, reads (one)
    assert again.round_trips == {"localhost": 1 + 1 + 1}


def test_tags_on_a_block_select_its_tasks_and_list_tasks_lists_them(tmp_path: Path) -> None:
    playbook = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: tagged
      tags: [gpu]
      block:
        - copy: {dest: "{{ out }}/gpu", content: g}
      always:
        - name: tagged always
          copy: {dest: "{{ out }}/gpu-always", content: g}
    - copy: {dest: "{{ out }}/other", content: o}
"""
    result = run(tmp_path, playbook, tags=("gpu",))
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu", "gpu-always"]
    pb = parse_playbook(playbook, "site.yml")
    assert list_tasks(pb, ApplyOptions(tags=("gpu",))) == [
        "play: play 1 (hosts: all)",
        "  task 1\tTAGS: [gpu]",
        "  tagged always\tTAGS: [gpu]",
    ]


def test_flush_handlers_and_end_host_inside_blocks(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        """\
- hosts: all
  gather_facts: false
  tasks:
    - block:
        - copy: {dest: "{{ out }}/conf", content: c}
          notify: restart
        - meta: flush_handlers
        - name: the handler ran at the flush
          command: test -f {{ out }}/handled
    - block:
        - meta: end_host
        - copy: {dest: "{{ out }}/never", content: n}
      always:
        - copy: {dest: "{{ out }}/never-always", content: n}
  handlers:
    - name: restart
      copy: {dest: "{{ out }}/handled", content: h}
""",
    )
    assert result.exit_code == 0, [r.msg for r in result.results if r.status == "failed"]
    out = tmp_path / "out"
    assert not (out / "never").exists() and not (out / "never-always").exists()


def test_a_check_run_of_a_block_changes_nothing(tmp_path: Path) -> None:
    playbook = """\
- hosts: all
  gather_facts: false
  tasks:
    - block:
        - copy: {dest: "{{ out }}/made", content: m}
        - command: /bin/false
      rescue:
        - copy: {dest: "{{ out }}/rescued", content: r}
"""
    checked = run(tmp_path, playbook, check=True)
    assert checked.exit_code == 0
    assert list((tmp_path / "out").iterdir()) == []
    assert counts(checked)["changed"] == 1  # would copy; the command is skipped in --check


# -- one boolean rule --------------------------------------------------------------------------

SPELLINGS = sorted(TRUE_WORDS | FALSE_WORDS)
ACCEPTED = [*SPELLINGS, *(w.upper() for w in SPELLINGS), " yes ", True, False, 1, 0]
REFUSED = ["maybe", "2", "yes please", "none", "enabled", 2]


def _keyword(value: Any) -> bool:
    text = f"- hosts: all\n  gather_facts: {value!r}\n  tasks: []\n"
    return parse_playbook(text, "site.yml").plays[0].gather_facts


def _argument(value: Any) -> bool:
    return bool(coerce(Arg("force", "bool"), value))


def _filter(value: Any) -> bool:
    return bool(render("{{ v | bool }}", Vars([{"v": value}])))


def _ansible_cfg(value: Any) -> bool:
    text = f"[defaults]\nhost_key_checking = {value}\n"
    return bool(parse_config(text, "ansible.cfg").value("host_key_checking"))


@pytest.mark.parametrize(
    ("caller", "error"),
    [
        (_keyword, PlaybookError),
        (_argument, ArgError),
        (to_bool, ConfigError),
        (_filter, TemplateError),
        (_ansible_cfg, ConfigError),
    ],
)
def test_every_caller_accepts_and_refuses_the_same_boolean_spellings(
    caller: Any, error: type[Exception]
) -> None:
    for value in ACCEPTED:
        word = str(value).strip().lower()
        assert caller(value) is (word in TRUE_WORDS or value is True), value
    for value in REFUSED:
        with pytest.raises(error):
            caller(value)


def test_the_empty_string_is_false_only_for_inventory_variables() -> None:
    assert to_bool("") is False  # ansible_become= on a host line: Ansible tests its truth
    with pytest.raises(ArgError):
        coerce(Arg("force", "bool"), "")


# -- the declared module protocol --------------------------------------------------------------


def test_every_module_declares_what_the_engine_asks_of_it() -> None:
    for name, module in MODULES.items():
        kind = type(module)
        reads = kind.state_script is not Module.state_script
        assert module.reads_state or not reads, name  # a read declared False is never batched
        acts = kind.execute is not Module.execute
        assert module.acts_on_controller is acts, name
        assert set(module.conditions) <= {a.name for a in module.spec}, name
    assert MODULES["include_tasks"].includes == "tasks"
    assert MODULES["command"].failed_when_false_means_changed
    assert MODULES["shell"].failed_when_false_means_changed
    assert not MODULES["copy"].failed_when_false_means_changed
    assert MODULES["docker_image"].counters({"bytes": 10, "seconds": 2.0}) == {
        "pulls": 1,
        "pulled_bytes": 10,
        "pull_seconds": 2.0,
    }


# -- two booted hosts: ansible-playbook and provision ------------------------------------------

BOOTED = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: configure a service, rescued
      block:
        - name: the config directory
          file: {path: /etc/p14-blocks, state: directory, mode: "0755"}
        - name: a step that fails on purpose
          command: /bin/false
        - name: never written
          copy: {dest: /etc/p14-blocks/never, content: "n\\n"}
      rescue:
        - name: record what failed
          copy:
            dest: /etc/p14-blocks/rescued
            content: "{{ ansible_failed_task.name }} rc={{ ansible_failed_result.rc }}\\n"
            mode: "0640"
      always:
        - name: always a marker
          copy: {dest: /etc/p14-blocks/always, content: "a\\n", owner: root, mode: "0600"}
    - name: a block that succeeds, with keywords
      vars: {unit_body: "[Unit]\\nDescription=p14 blocks\\n"}
      block:
        - name: a unit file
          copy: {dest: /etc/p14-blocks/p14.conf, content: "{{ unit_body }}"}
          notify: note
      always:
        - name: skipped by the block's condition
          copy: {dest: /etc/p14-blocks/skipped, content: "s\\n"}
          when: false
  handlers:
    - name: note
      copy: {dest: /etc/p14-blocks/handled, content: "h\\n"}
"""


def host_files(host: BootedHost) -> str:
    return host.exec(
        "cd /etc/p14-blocks && for f in $(ls -A | sort); do "
        'stat -c "%n %a %U:%G" "$f"; cat "$f"; done'
    ).stdout


def test_blocks_match_ansible_playbook_on_booted_hosts(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    hosts = booted_hosts(2, prefix="blocks")
    (tmp_path / "blocks.yml").write_text(BOOTED)
    both = run_with_both(hosts, tmp_path, "blocks.yml")
    assert host_files(hosts[1]) == host_files(hosts[0])
    assert "a step that fails on purpose rc=1\n" in host_files(hosts[1])
    theirs, mine = recap(both.ansible.stdout), recap(both.provision.stdout)
    assert {k: mine[k] for k in ("ok", "changed", "failed", "rescued", "skipped")} == {
        k: theirs[k] for k in ("ok", "changed", "failed", "rescued", "skipped")
    }
    assert mine["rescued"] == 1 and mine["failed"] == 0
    again = provision(*both.args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert recap(again.stdout)["changed"] == 0, again.stdout  # the failing command: rescued
    hosts[1].exec("rm /etc/p14-blocks/always")
    before = host_files(hosts[1])
    checked = provision(*both.args, "--check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # --check cannot run the failing command (skipped, as in Ansible), so nothing fails and
    # the block goes on: it would write "never" and "always"
    assert recap(checked.stdout)["changed"] == 2, checked.stdout
    assert host_files(hosts[1]) == before  # --check changed nothing
