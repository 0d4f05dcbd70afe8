"""Engine features the baseline playbooks use: import_playbook, vars_files, play defaults,
fail/assert, retries/until/backoff, throttle, check_mode, --force, the recap's pull columns and
the groups/hostvars magic variables.

Loading is tested pure (files under tmp_path); running uses local connections (this machine,
files under tmp_path) and once the real sshd lab, to show that none of it costs a round trip.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from provision import cli
from provision.engine import (
    ApplyOptions,
    HostStats,
    PlaybookResult,
    human_bytes,
    list_tasks,
    retry_delays,
    run_playbook,
)
from provision.inventory import Inventory, load_inventory
from provision.modules.docker_image import pull_totals
from provision.output.text import recap_lines, recap_total
from provision.playbook import PlaybookError, leaf_tasks, load_playbook, parse_playbook


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def local_inventory(tmp_path: Path, text: str = "[here]\nlocalhost ansible_connection=local\n"):
    return load_inventory(write(tmp_path, "hosts.ini", text))


def run(tmp_path: Path, playbook: str, inv: Inventory | None = None, **opts: Any) -> PlaybookResult:
    extra = {"dir": str(tmp_path), **opts.pop("extra_vars", {})}
    inventory = inv if inv is not None else local_inventory(tmp_path)
    return run_playbook(inventory, playbook, ApplyOptions(extra_vars=extra, **opts))


def failures(result: PlaybookResult) -> list[str]:
    return [r.msg for r in result.results if r.status == "failed"]


# -- import_playbook ---------------------------------------------------------------------------


def test_import_playbook_inlines_plays_in_order_with_their_own_files(tmp_path: Path) -> None:
    write(tmp_path, "sub/inner.yml", "- name: inner\n  hosts: all\n  tasks:\n    - fail: {}\n")
    write(
        tmp_path,
        "sub/middle.yml",
        "- name: middle\n  hosts: all\n  tasks:\n    - name: m\n      command: 'true'\n"
        "- import_playbook: inner.yml\n",  # relative to sub/middle.yml
    )
    site = write(
        tmp_path,
        "site.yml",
        "- name: first\n  hosts: all\n  tasks: []\n"
        "- name: the middle part\n  import_playbook: sub/middle.yml\n"
        "- name: last\n  hosts: all\n  tasks: []\n",
    )
    pb = load_playbook(site)
    assert [p.name for p in pb.plays] == ["first", "middle", "inner", "last"]
    assert [p.file for p in pb.plays] == [
        site,
        str(tmp_path / "sub/middle.yml"),
        str(tmp_path / "sub/inner.yml"),
        site,
    ]
    assert pb.plays[2].tasks[0].where == f"{tmp_path / 'sub/inner.yml'}:4: task 'task 1'"
    assert pb.plays[1].base_dir == str(tmp_path / "sub") and pb.base_dir == str(tmp_path)
    assert list_tasks(pb)[1:3] == ["play: middle (hosts: all)", "  m"]


def test_import_cycle_names_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", "- hosts: all\n  tasks: []\n- import_playbook: b.yml\n")
    write(tmp_path, "b.yml", "\n- import_playbook: a.yml\n")
    with pytest.raises(PlaybookError) as err:
        load_playbook(str(tmp_path / "a.yml"))
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    assert str(err.value) == f"{b}:2: import_playbook: import cycle: {a}:3 -> {b}:2 -> {a}"


@pytest.mark.parametrize(
    ("inner", "outer", "message"),
    [
        (
            "- hosts: all\n  tasks:\n    - name: bad\n      fille: {path: /x}\n",
            "- import_playbook: inner.yml\n",
            "{inner}:3: task 'bad': unknown module or keyword 'fille'",
        ),
        (
            "- hosts: all\n  tasks: [\n",
            "- import_playbook: inner.yml\n",
            "{inner}:3: invalid YAML",
        ),
        (
            "",
            "- import_playbook: inner.yml\n  when: x\n",
            "{outer}:2: import_playbook: unknown keyword 'when'",
        ),
        ("", "- import_playbook: nothere.yml\n", "{outer}:1: import_playbook: cannot read"),
        ("", "- import_playbook: '{{ x }}.yml'\n", "{outer}:1: import_playbook: templates are"),
    ],
)
def test_import_errors_name_the_right_file_and_line(
    tmp_path: Path, inner: str, outer: str, message: str
) -> None:
    inner_path = write(tmp_path, "inner.yml", inner)
    outer_path = write(tmp_path, "outer.yml", outer)
    with pytest.raises(PlaybookError) as err:
        load_playbook(outer_path)
    assert str(err.value).startswith(message.format(inner=inner_path, outer=outer_path))


# -- vars_files and defaults: loading ----------------------------------------------------------


def test_vars_files_win_over_play_vars_and_defaults_load_from_files_or_mappings(
    tmp_path: Path,
) -> None:
    write(tmp_path, "vars/one.yml", "a: from-file\nb: one\n")
    write(tmp_path, "vars/two.yml", "b: two\n")
    write(tmp_path, "defaults.yml", "d1: file\nd2: file\n")
    pb = load_playbook(
        write(
            tmp_path,
            "pb.yml",
            "- hosts: all\n  vars: {a: play, c: play}\n"
            "  vars_files: [vars/one.yml, vars/two.yml]\n"
            "  defaults: [defaults.yml, {d2: inline}]\n  tasks: []\n"
            "- hosts: all\n  defaults: defaults.yml\n  tasks: []\n",
        )
    )
    first, second = pb.plays
    assert first.vars == {"a": "from-file", "b": "two", "c": "play"}
    assert first.defaults == {"d1": "file", "d2": "inline"}
    assert second.defaults == {"d1": "file", "d2": "file"} and second.vars == {}


@pytest.mark.parametrize(
    ("files", "play", "message"),
    [
        ({}, "  vars_files: [missing.yml]\n", "{pb}:3: play 'p': 'vars_files': cannot read"),
        ({"v.yml": "- a\n"}, "  vars_files: v.yml\n", "{dir}/v.yml:1: a vars_files file must"),
        ({"v.yml": "a: 1\na: 2\n"}, "  vars_files: [v.yml]\n", "{dir}/v.yml:2: duplicate key 'a'"),
        ({}, "  defaults: nope.yml\n", "{pb}:3: play 'p': 'defaults': cannot read"),
        ({"d.yml": "a: [\n"}, "  defaults: d.yml\n", "{dir}/d.yml:2: invalid YAML"),
    ],
)
def test_vars_file_errors_name_file_and_line(
    tmp_path: Path, files: dict[str, str], play: str, message: str
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    pb = write(tmp_path, "pb.yml", "- name: p\n  hosts: all\n" + play + "  tasks: []\n")
    with pytest.raises(PlaybookError) as err:
        load_playbook(pb)
    assert str(err.value).startswith(message.format(pb=pb, dir=tmp_path))


def test_task_keywords_for_retries_throttle_and_check_mode() -> None:
    pb = parse_playbook(
        "- hosts: all\n  tasks:\n    - name: t\n      command: 'true'\n"
        "      retries: 4\n      delay: 0.5\n      until: r.rc == 0\n      register: r\n"
        "      backoff: yes\n      throttle: 2\n      check_mode: false\n"
        "    - name: templated\n      command: 'true'\n      retries: '{{ n }}'\n",
        "pb.yml",
    )
    t, templated = leaf_tasks(pb.plays[0].tasks)
    assert (t.retries, t.delay, t.until, t.backoff, t.throttle, t.check_mode) == (
        4,
        0.5,
        "r.rc == 0",
        True,
        2,
        False,
    )
    assert templated.retries == "{{ n }}" and templated.check_mode is None
    assert retry_delays(4, 0.5, True) == [0.5, 1.0, 2.0, 4.0]
    assert retry_delays(2, 3, False) == [3, 3]


@pytest.mark.parametrize(
    ("keyword", "message"),
    [
        ("retries: lots", "'retries' must be an integer, got 'lots'"),
        ("retries: -1", "'retries' must not be negative"),
        ("delay: soon", "'delay' must be a number of seconds"),
        ("throttle: half", "'throttle' must be a number of hosts"),
        ("check_mode: maybe", "'check_mode' must be a boolean"),
    ],
)
def test_bad_task_keywords_are_refused_at_load(keyword: str, message: str) -> None:
    with pytest.raises(PlaybookError) as err:
        parse_playbook(
            f"- hosts: all\n  tasks:\n    - name: t\n      fail: {{}}\n      {keyword}\n"
        )
    assert str(err.value).startswith(f"<playbook>:3: task 't': {message}")


def test_assert_needs_conditions_and_fail_takes_only_msg() -> None:
    with pytest.raises(PlaybookError, match="module 'assert': missing required argument 'that'"):
        parse_playbook("- hosts: all\n  tasks:\n    - assert: {fail_msg: x}\n")
    with pytest.raises(PlaybookError, match="'that' must be a condition or a list"):
        parse_playbook("- hosts: all\n  tasks:\n    - assert: {that: [{a: 1}]}\n")
    with pytest.raises(PlaybookError, match="module 'fail': unknown argument 'message'"):
        parse_playbook("- hosts: all\n  tasks:\n    - fail: {message: x}\n")


# -- running: precedence, fail, assert, check_mode, magic variables ------------------------------

PRECEDENCE = """
- name: precedence
  hosts: here
  defaults: defaults.yml
  vars:
    from_play: play
    in_play_and_defaults: play
  tasks:
    - name: register over defaults
      command: echo registered
      register: in_registered
      changed_when: false
    - name: values
      copy:
        dest: "{{ dir }}/values.txt"
        content: >-
          {{ only_default }} {{ in_inventory }} {{ in_play_and_defaults }}
          {{ in_registered.stdout }} {{ in_extra }} {{ distro_url }} {{ default_uses_inventory }}
"""

DEFAULTS = """
only_default: default
in_inventory: default
in_play_and_defaults: default
in_registered: default
in_extra: default
distro_url: "https://download.docker.com/linux/{{ ansible_distribution | lower }}"
default_uses_inventory: "{{ in_inventory }}-seen"
"""


def test_defaults_have_the_lowest_precedence_and_render_lazily(tmp_path: Path) -> None:
    write(tmp_path, "defaults.yml", DEFAULTS)
    inv = local_inventory(tmp_path, "[here]\nlocalhost ansible_connection=local in_inventory=inv\n")
    pb = write(tmp_path, "pb.yml", PRECEDENCE)
    result = run(tmp_path, pb, inv, extra_vars={"in_extra": "extra"})
    assert result.exit_code == 0, failures(result)
    distro = result.results[0]  # Gathering Facts
    assert distro.task == "Gathering Facts"
    expected_distro = _os_release_id()
    assert (tmp_path / "values.txt").read_text() == (
        f"default inv play registered extra https://download.docker.com/linux/{expected_distro} "
        "inv-seen"
    )


def _os_release_id() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("NAME="):
            return line.split("=", 1)[1].strip('"').split()[0].lower()
    raise AssertionError("no NAME in /etc/os-release")


FAIL_ASSERT = """
- name: guards
  hosts: here
  gather_facts: false
  vars:
    secure_boot_state: "{{ sb | default('disabled') }}"
  tasks:
    - name: refuse secure boot
      fail:
        msg: "Secure Boot is {{ secure_boot_state }}: sign the module first"
      when: secure_boot_state == 'enabled'
    - name: inputs are sane
      assert:
        that:
          - gpu_count | int >= 0
          - flavour in ['open', 'proprietary']
        fail_msg: "flavour must be open or proprietary, got {{ flavour }}"
        success_msg: inputs ok
      register: checked
    - name: after the guards
      copy: {dest: "{{ dir }}/{{ inventory_hostname }}.ran", content: "{{ checked.msg }}"}
"""


def test_fail_and_assert_stop_a_host_with_their_message(tmp_path: Path) -> None:
    pb = write(tmp_path, "pb.yml", FAIL_ASSERT)
    ok = run(tmp_path, pb, extra_vars={"gpu_count": "2", "flavour": "open"})
    assert ok.exit_code == 0, failures(ok)
    assert (tmp_path / "localhost.ran").read_text() == "inputs ok"
    assert [r.status for r in ok.results] == ["skipped", "ok", "changed"]
    assert ok.round_trips["localhost"] == 2  # the copy's read and write; the guards cost none

    (tmp_path / "localhost.ran").unlink()
    refused = run(tmp_path, pb, extra_vars={"sb": "enabled", "gpu_count": 1, "flavour": "open"})
    assert refused.exit_code == 2 and not (tmp_path / "localhost.ran").exists()
    (fail,) = failures(refused)
    assert (
        fail == f"{pb}:8: task 'refuse secure boot': Secure Boot is enabled: sign the module first"
    )
    assert refused.round_trips["localhost"] == 0
    assert refused.retry_text == "localhost\n"

    bad = run(tmp_path, pb, check=True, extra_vars={"gpu_count": 1, "flavour": "closed"})
    (msg,) = failures(bad)
    assert msg.endswith("task 'inputs are sane': flavour must be open or proprietary, got closed")
    failed = next(r for r in bad.results if r.status == "failed")
    assert failed.data == {"assertion": "flavour in ['open', 'proprietary']", "evaluated_to": False}


def test_assert_stops_at_the_first_false_condition_and_ignore_errors_works(
    tmp_path: Path,
) -> None:
    pb = write(
        tmp_path,
        "pb.yml",
        "- hosts: here\n  gather_facts: false\n  tasks:\n"
        "    - name: first false\n      assert:\n        that: [false, never_defined]\n"
        "      ignore_errors: true\n      register: a\n"
        "    - name: plain fail\n      fail: {}\n      ignore_errors: true\n      register: f\n"
        "    - copy: {dest: '{{ dir }}/out', content: '{{ a.assertion }}|{{ f.msg }}'}\n",
    )
    result = run(tmp_path, pb)
    assert result.exit_code == 0 and result.stats["localhost"].ignored == 2
    assert (tmp_path / "out").read_text() == (
        f"False|{pb}:9: task 'plain fail': Failed as requested from task"
    )


def test_check_mode_false_runs_in_check_and_true_never_changes(tmp_path: Path) -> None:
    pb = write(
        tmp_path,
        "pb.yml",
        "- hosts: here\n  gather_facts: false\n  tasks:\n"
        "    - name: read-only query\n      shell: echo queried > {{ dir | quote }}/query.out\n"
        "      check_mode: false\n      register: q\n      changed_when: false\n"
        "    - name: would write\n      copy: {dest: '{{ dir }}/forced-check', content: x}\n"
        "      check_mode: true\n",
    )
    checked = run(tmp_path, pb, check=True)
    assert checked.exit_code == 0, failures(checked)
    assert (tmp_path / "query.out").read_text() == "queried\n"
    assert [r.status for r in checked.results] == ["ok", "changed"]
    real = run(tmp_path, pb)
    assert [r.status for r in real.results] == ["ok", "changed"]
    assert real.results[1].msg.startswith("would ")
    assert not (tmp_path / "forced-check").exists()


def test_groups_and_hostvars(tmp_path: Path) -> None:
    inv = local_inventory(
        tmp_path,
        "[gpu]\nh1 ansible_connection=local slot=a\n"
        "[cpu]\nh2 ansible_connection=local slot='{{ inventory_hostname }}-b'\n"
        "[lab:children]\ngpu\ncpu\n",
    )
    pb = write(
        tmp_path,
        "pb.yml",
        "- hosts: h1\n  gather_facts: false\n  tasks:\n"
        "    - copy:\n        dest: '{{ dir }}/magic'\n"
        "        content: \"{{ groups['lab'] | join(',') }} {{ groups.gpu }} "
        "{{ hostvars['h2'].slot }} {{ hostvars | length }}\"\n",
    )
    result = run(tmp_path, pb, inv)
    assert result.exit_code == 0, failures(result)
    assert (tmp_path / "magic").read_text() == "h1,h2 ['h1'] h2-b 2"


def test_force_flag_sets_the_force_variable(tmp_path: Path) -> None:
    write(tmp_path, "hosts.ini", "[here]\nlocalhost ansible_connection=local\n")
    pb = write(
        tmp_path,
        "pb.yml",
        "- hosts: here\n  gather_facts: false\n  tasks:\n"
        "    - copy: {dest: '{{ out }}', content: '{{ force | default(false) }}'}\n",
    )
    out = tmp_path / "force.txt"
    base = ["apply", str(tmp_path / "hosts.ini"), "-p", pb, "-e", f"out={out}"]
    assert cli.main([*base, "--force"]) == 0
    assert out.read_text() == "True"  # a boolean, written by copy as Ansible 2.19 writes it
    assert cli.main(base) == 0
    assert out.read_text() == "False"


def test_cli_syntax_check_and_list_tasks_see_imported_plays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "docker.yml", "- name: docker\n  hosts: all\n  tasks:\n    - fail: {}\n")
    site = write(tmp_path, "site.yml", "- import_playbook: docker.yml\n")
    assert cli.main(["apply", "-p", site, "--list-tasks"]) == 0
    assert capsys.readouterr().out == "play: docker (hosts: all)\n  task 1\n"
    write(tmp_path, "docker.yml", "- name: docker\n  hosts: all\n  tasks:\n    - failx: {}\n")
    assert cli.main(["apply", "-p", site, "--syntax-check"]) != 0
    assert f"{tmp_path / 'docker.yml'}:4: task 'task 1'" in capsys.readouterr().err


# -- retries and throttle ------------------------------------------------------------------------


def test_retries_until_success_with_backoff_and_events(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    pb = write(
        tmp_path,
        "pb.yml",
        "- hosts: here\n  gather_facts: false\n  tasks:\n"
        "    - name: flaky\n"
        "      shell: echo x >> {{ count }}; [ $(wc -l < {{ count }}) -ge 3 ]\n"
        "      retries: 5\n      delay: 0.1\n      backoff: true\n      register: flaky\n"
        "    - name: until on output\n"
        "      shell: wc -l < {{ count }}; echo x >> {{ count }}\n"
        "      register: lines\n      until: lines.stdout | int >= 4\n      delay: 0\n"
        "    - copy: {dest: '{{ dir }}/attempts', content: '{{ flaky.attempts }} "
        "{{ lines.attempts }}'}\n",
    )
    events: list[tuple[str, str, str]] = []
    started = time.monotonic()
    result = run(
        tmp_path,
        pb,
        on_event=lambda e: events.append((e.task, e.status, e.result.msg if e.result else "")),
        extra_vars={"count": shlex.quote(str(counter))},
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, failures(result)
    assert (tmp_path / "attempts").read_text() == "3 2"
    assert len(counter.read_text().splitlines()) == 5
    assert elapsed >= 0.3  # 0.1 then 0.2: the delay doubled
    retrying = [(task, msg.split(":")[0]) for task, status, msg in events if status == "retrying"]
    assert retrying == [
        ("flaky", "retrying (5 left)"),
        ("flaky", "retrying (4 left)"),
        ("until on output", "retrying (3 left)"),  # until without retries: 3, as in Ansible
    ]
    assert result.stats["localhost"].failed == 0


def test_retries_exhausted_fail_the_host(tmp_path: Path) -> None:
    pb = write(
        tmp_path,
        "pb.yml",
        "- hosts: here\n  gather_facts: false\n  tasks:\n"
        "    - name: never\n      shell: echo try >> {{ dir | quote }}/tries; exit 1\n"
        "      retries: 2\n      delay: 0\n"
        "    - name: never true\n      command: 'true'\n      register: r\n"
        "      until: r.rc == 1\n      retries: 1\n      delay: 0\n      ignore_errors: true\n",
    )
    result = run(tmp_path, pb)
    assert (tmp_path / "tries").read_text() == "try\ntry\ntry\n"  # retries + 1 attempts
    (msg,) = failures(result)
    assert "exit status 1" in msg and result.results[0].data["attempts"] == 3
    pb2 = write(tmp_path, "pb2.yml", Path(pb).read_text().replace("exit 1", "exit 0"))
    second = run(tmp_path, pb2)
    never = next(r for r in second.results if r.task == "never true")
    assert never.status == "failed" and never.ignored and never.data["attempts"] == 2
    assert "'until' still false after 2 attempts: r.rc == 1" in never.msg


def test_throttle_bounds_concurrent_hosts(tmp_path: Path) -> None:
    inv = local_inventory(
        tmp_path, "[here]\n" + "".join(f"h{i} ansible_connection=local\n" for i in range(4))
    )
    pb = write(
        tmp_path,
        "pb.yml",
        "- hosts: here\n  gather_facts: false\n  tasks:\n"
        "    - name: one at a time\n      throttle: 1\n"
        "      shell: date +%s.%N; sleep 0.3; date +%s.%N\n      register: span\n"
        "    - name: two at a time\n      throttle: 2\n"
        "      shell: date +%s.%N; sleep 0.3; date +%s.%N\n      register: span2\n"
        "    - copy:\n        dest: '{{ dir }}/{{ inventory_hostname }}.spans'\n"
        "        content: '{{ (span.stdout_lines + span2.stdout_lines) | join(\" \") }}'\n",
    )
    result = run(tmp_path, pb, inv, forks=4)
    assert result.exit_code == 0, failures(result)
    spans: list[list[tuple[float, float]]] = [[], []]
    for i in range(4):
        times = [float(x) for x in (tmp_path / f"h{i}.spans").read_text().split()]
        spans[0].append((times[0], times[1]))
        spans[1].append((times[2], times[3]))
    assert max_overlap(spans[0]) == 1
    assert max_overlap(spans[1]) <= 2


def max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


# -- recap -------------------------------------------------------------------------------------


def test_pull_totals_and_recap_columns() -> None:
    assert human_bytes(950) == "950 B" and human_bytes(1_234_567_890) == "1.2 GB"
    assert human_bytes(12_300_000) == "12.3 MB"
    looped = {"results": [{"bytes": 1_000_000_000, "seconds": 10.5}, {"skipped": True}]}
    assert pull_totals(looped) == (1, 1_000_000_000, 10.5)
    assert pull_totals({"bytes": 5, "seconds": 1, "msg": "x"}) == (1, 5, 1.0)
    assert pull_totals({"changed": True}) == (0, 0, 0.0)
    stats = {"gpu1": HostStats(ok=3, pulls=2, pulled_bytes=1_200_000_000, pull_seconds=42.25)}
    stats["cpu1"] = HostStats(ok=2)
    lines = recap_lines(stats)  # the one recap: a host that pulled says how much and how long
    assert lines[1] == (
        "gpu1                       : ok=3    changed=0    unreachable=0    failed=0    "
        "skipped=0    rescued=0    ignored=0    pulled=1.2GB pull_s=42.2"
    )
    assert lines[2].endswith("ignored=0") and "pulled" not in lines[2]
    assert recap_total(stats, 12.34) == "2 hosts: 2 ok in 12.3 s"
    stats["cpu1"].unreachable, stats["gpu2"] = 1, HostStats(changed=1, failed=1)
    assert recap_total(stats, 1) == "3 hosts: 1 unreachable, 1 failed, 1 ok in 1.0 s"


# -- round trips over real SSH ------------------------------------------------------------------

CONVERGED = """
- name: guarded
  hosts: lab
  defaults: {marker_dir: "/tmp/provision-features/{{ inventory_hostname }}"}
  tasks:
    - name: refuse nothing
      fail: {msg: never}
      when: force | default(false) | bool and false
    - name: sane
      assert: {that: ["marker_dir is defined", "groups['lab'] | length >= 1"], quiet: true}
    - file: {path: "{{ marker_dir }}", state: directory}
    - copy: {dest: "{{ marker_dir }}/a", content: "a\\n"}
- import_playbook: second.yml
"""
SECOND = """
- name: second
  hosts: lab
  defaults: {marker_dir: "/tmp/provision-features/{{ inventory_hostname }}"}
  tasks:
    - copy: {dest: "{{ marker_dir }}/b", content: "b\\n"}
      throttle: 1
    - command: cat {{ marker_dir }}/b
      check_mode: false
      changed_when: false
"""


def _logins(host) -> int:
    """SSH logins the host's sshd logged so far."""
    with open(os.path.join(host.dir, "sshd.log"), errors="replace") as fh:
        return fh.read().count("Accepted publickey")


def test_converged_run_costs_one_round_trip_per_host_per_play(sshd_lab, tmp_path: Path) -> None:
    hosts = sshd_lab.ok_hosts[:2]
    inv = load_inventory(sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), hosts))
    write(tmp_path, "second.yml", SECOND)
    pb = write(tmp_path, "site.yml", CONVERGED)
    opts = {"known_hosts": (sshd_lab.known_hosts,), "forks": 2}
    try:
        first = run(tmp_path, pb, inv, **opts)
        assert first.exit_code == 0, failures(first)
        logins = {h.name: _logins(h) for h in hosts}
        again = run(tmp_path, pb, inv, **opts)
        assert again.exit_code == 0, failures(again)
        assert {r.status for r in again.results} == {"ok", "skipped"}
        # play 1: facts + every read in one batch; play 2: one batch, then the command itself
        assert again.round_trips == {h.name: 1 + 2 for h in hosts}
        # both plays over ONE SSH connection per host (the daemons' own count)
        assert {h.name: _logins(h) - logins[h.name] for h in hosts} == {h.name: 1 for h in hosts}
        checked = run(tmp_path, pb, inv, check=True, **opts)
        assert checked.round_trips == again.round_trips
    finally:
        for h in hosts:
            for name in ("a", "b"):
                path = f"/tmp/provision-features/{h.name}/{name}"
                if os.path.exists(path):
                    os.unlink(path)
            if os.path.isdir(f"/tmp/provision-features/{h.name}"):
                os.rmdir(f"/tmp/provision-features/{h.name}")
        if os.path.isdir("/tmp/provision-features") and not os.listdir("/tmp/provision-features"):
            os.rmdir("/tmp/provision-features")


# -- templated play keywords ---------------------------------------------------------------------

KEYWORDS_INVENTORY = """
[gpu]
g1 ansible_connection=local
g2 ansible_connection=local
g3 ansible_connection=local
[gpu:vars]
reboot_serial=1
[cpu]
c1 ansible_connection=local
[all:vars]
target=gpu
"""

KEYWORDS_PLAY = """
- name: templated keywords
  hosts: "{{ target }}"
  serial: "{{ reboot_serial | default('100%') }}"
  gather_facts: false
  defaults: {target: all, at_once: 1}
  tasks:
    - name: mark
      shell: echo {{ inventory_hostname }} >> {{ dir | quote }}/order.log
      throttle: "{{ at_once }}"
"""


def test_templated_hosts_serial_and_throttle(tmp_path: Path) -> None:
    from provision.engine import EngineError

    inv = local_inventory(tmp_path, KEYWORDS_INVENTORY)
    pb = write(tmp_path, "pb.yml", KEYWORDS_PLAY)
    starts: list[str] = []
    result = run(tmp_path, pb, inv, forks=3, on_event=lambda e: starts.append(e.host))
    assert result.exit_code == 0, failures(result)
    # [all:vars] target=gpu beats the play default; serial 1 from the gpu group's vars
    assert (tmp_path / "order.log").read_text() == "g1\ng2\ng3\n"
    assert starts == ["g1", "g1", "g2", "g2", "g3", "g3"]  # one host per batch
    (tmp_path / "order.log").unlink()
    other = run(tmp_path, pb, inv, extra_vars={"target": "cpu:g2"})
    assert (tmp_path / "order.log").read_text().split() in (["c1", "g2"], ["g2", "c1"])
    assert other.exit_code == 0

    broken = write(tmp_path, "broken.yml", KEYWORDS_PLAY.replace("{{ target }}", "{{ nope }}"))
    with pytest.raises(EngineError, match=r"broken.yml:2: play 'templated keywords': hosts: "):
        run(tmp_path, broken, inv)
    bad_throttle = write(tmp_path, "t.yml", KEYWORDS_PLAY.replace("{{ at_once }}", "{{ 'x' }}"))
    (msg,) = set(failures(run(tmp_path, bad_throttle, inv, extra_vars={"target": "g1"})))
    assert msg.endswith("task 'mark': 'throttle' must be a number of hosts, got 'x'")


def test_ansible_filters_and_version_test_the_playbooks_use() -> None:
    from provision.templating import Vars, condition, render

    v = Vars([{"base": {"a": {"x": 1}, "b": 2}, "over": {"a": {"y": 3}}, "drv": "550.54.15"}])
    assert render("{{ base | combine(over) }}", v) == {"a": {"y": 3}, "b": 2}
    assert render("{{ base | combine(over, recursive=true) }}", v) == {
        "a": {"x": 1, "y": 3},
        "b": 2,
    }
    assert render("{{ (drv is version('550.9', '>')) | ternary('new', 'old') }}", v) == "new"
    assert condition("drv is version('550.54.15', 'eq') and drv is version('560', '<')", v)
    assert render("{{ {'k': 1} | dict2items | items2dict }}", v) == {"k": 1}


def test_cli_prints_each_retry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "hosts.ini", "[here]\nlocalhost ansible_connection=local\n")
    pb = write(
        tmp_path,
        "pb.yml",
        "- hosts: here\n  gather_facts: false\n  tasks:\n"
        "    - name: flaky\n"
        "      shell: echo x >> {{ f | quote }}; [ $(wc -l < {{ f | quote }}) -ge 2 ]\n"
        "      retries: 2\n      delay: 0\n",
    )
    code = cli.main(["apply", str(tmp_path / "hosts.ini"), "-p", pb, "-e", f"f={tmp_path}/n"])
    out = capsys.readouterr().out
    assert code == 0
    assert (
        f"[localhost] play 1 / flaky: retrying (2 left): {pb}:4: task 'flaky': exit status 1" in out
    )
    assert "changed: [localhost] play 1 / flaky" in out


FIRST_RUN = """
- name: first run
  hosts: here
  gather_facts: false
  tasks:
    - copy: {dest: "{{ dir }}/a", content: "a\\n"}
    - copy: {dest: "{{ dir }}/b", content: "b\\n"}
    - copy: {dest: "{{ dir }}/c", content: "c\\n"}
    - file: {path: "{{ dir }}/a", mode: "0600"}
    - file: {path: "{{ dir }}/sub", state: directory}
    - copy: {dest: "{{ dir }}/sub/d", content: "d\\n"}
"""


def test_a_change_drops_only_the_cached_reads_it_can_affect(tmp_path: Path) -> None:
    """First run: one batched read; the three copies as one change batch, which reads a
    again after them (the file task reads a, which the batch wrote); then the file task,
    the directory and sub/d as a second batch: sub/d's read stays, since making sub leaves
    what is inside as it was. The re-read is what lets the file task see what the copy made."""
    pb = write(tmp_path, "pb.yml", FIRST_RUN)
    first = run(tmp_path, pb, extra_vars={"dir": str(tmp_path)})
    assert first.exit_code == 0, failures(first)
    assert [r.status for r in first.results] == ["changed"] * 6
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sub" / "d").read_text() == "d\n"
    assert first.round_trips["localhost"] == 1 + 2
    again = run(tmp_path, pb, extra_vars={"dir": str(tmp_path)})
    assert {r.status for r in again.results} == {"ok"}
    assert again.round_trips["localhost"] == 1


def test_a_mistyped_setting_gets_a_warning_with_a_suggestion(tmp_path: Path) -> None:
    """A variable that looks like one of the playbook's defaults but is none of them (a typo)
    is named before the run, from -e or the inventory; known ones and other names are not."""
    from provision.engine import unknown_settings
    from provision.playbook import load_playbook

    inv = local_inventory(
        tmp_path, "[here]\nlocalhost ansible_connection=local docker_user=[alice] lab_users=[a]\n"
    )
    book = load_playbook(str(Path(__file__).resolve().parent.parent / "playbooks" / "site.yml"))
    warnings = unknown_settings(
        book, inv, {"nvidia_driver_brnch": "590", "nvidia_driver_branch": "590"}
    )
    assert warnings == [
        "-e: variable 'nvidia_driver_brnch' is not a setting of this playbook "
        "(did you mean 'nvidia_driver_branch'?)",
        "host localhost: variable 'docker_user' is not a setting of this playbook "
        "(did you mean 'docker_users'?)",
    ]
