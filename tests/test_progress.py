"""The live progress line: the real CLI in a real terminal (tmux) against lab sshd hosts, with
a task that sleeps; plain lines under TERM=dumb, NO_COLOR and a pipe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from provision import progress
from provision.engine import Event, TaskResult
from tests.lab.sshd import SshdLab
from tests.terminal import Tmux
from tests.test_cli import REPO

WIDTH = 80


def _sleep_playbook(tmp_path: Path, seconds: int) -> str:
    path = tmp_path / "slow.yml"
    path.write_text(
        "- name: warm up\n  hosts: all\n  tasks:\n    - name: say hello\n      command: 'true'\n"
        "- name: the long one\n  hosts: all\n  tasks:\n"
        f"    - name: sleep a while\n      command: sleep {seconds}\n"
    )
    return str(path)


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "provision", *args]


def _env(lab: SshdLab, **extra: str) -> dict[str, str]:
    return {"HOME": lab.home, "PYTHONPATH": REPO, "TERM": "xterm", **extra}


def test_apply_line_changes_while_a_task_runs_and_fits_the_terminal(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), sshd_lab.ok_hosts[:2])
    argv = _argv("apply", inv, "-p", _sleep_playbook(tmp_path, 5), "-T", "5")
    term = Tmux(argv, env=_env(sshd_lab), cwd=str(tmp_path), width=WIDTH, height=40)
    try:
        line = r"^play 2/2 the long one \| 0/2 hosts done \| task 1/1 sleep a while (\d)s on 2"
        first = term.wait(lambda s: re.search(line, s, re.M) is not None)
        seen = int(re.search(line, first, re.M).group(1))  # type: ignore[union-attr]
        later = term.wait(
            lambda s: (m := re.search(line, s, re.M)) is not None and int(m[1]) > seen
        )
        row = next(r for r in later.splitlines() if r.startswith("play 2/2"))
        assert len(row) < WIDTH and row.endswith("~"), row  # cut to the width, not wrapped
        assert term.exit_status() == 0
        final = term.screen()
        assert "PLAY RECAP" in final and "hosts done" not in final  # the line is erased
    finally:
        term.close()


def test_adhoc_line_names_the_hosts_still_running(sshd_lab: SshdLab, tmp_path: Path) -> None:
    hosts = [sshd_lab.ok_hosts[0], sshd_lab.host("hang")]
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), hosts)
    argv = _argv("run", inv, "-T", "5", "--command-timeout", "5", "echo hi")
    term = Tmux(argv, env=_env(sshd_lab), cwd=str(tmp_path), width=WIDTH)
    try:
        first = term.wait(lambda s: re.search(r"\[1/2\] running (\d)s: fault-hang", s) is not None)
        seen = int(re.search(r"running (\d)s", first)[1])  # type: ignore[index]
        term.wait(lambda s: (m := re.search(r"running (\d)s", s)) is not None and int(m[1]) > seen)
        assert term.exit_status() == 4
        assert "running" not in term.screen()
    finally:
        term.close()


@pytest.mark.parametrize("setting", [{"TERM": "dumb"}, {"NO_COLOR": "1"}])
def test_no_redraws_under_dumb_terminal_or_no_color(
    sshd_lab: SshdLab, tmp_path: Path, setting: dict[str, str]
) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), sshd_lab.ok_hosts[:1])
    argv = _argv("apply", inv, "-p", _sleep_playbook(tmp_path, 3), "-T", "5")
    term = Tmux(argv, env=_env(sshd_lab, **setting), cwd=str(tmp_path), width=WIDTH, height=40)
    try:
        assert term.exit_status() == 0
        assert "hosts done" not in term.screen()  # never drawn (it would stay until erased)
    finally:
        term.close()


def test_pipe_gets_plain_still_running_lines(sshd_lab: SshdLab, tmp_path: Path) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), sshd_lab.ok_hosts[:1])
    seconds = int(progress.PLAIN_EVERY) + 2
    done = subprocess.run(
        _argv("apply", inv, "-p", _sleep_playbook(tmp_path, seconds), "-T", "5"),
        capture_output=True,
        text=True,
        env={**os.environ, **_env(sshd_lab)},
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    still = [ln for ln in done.stderr.splitlines() if ln.startswith("still running: ")]
    assert len(still) == 1, done.stderr
    plain = r"still running: play 2/2 the long one \| 0/1 hosts done \| task 1/1 sleep a while "
    assert re.fullmatch(plain + r"\d+s on 1 host: lab01 \| 1\ds", still[0]), still[0]


def _ev(host: str, status: str, index: int = 1, total: int = 2, play: str = "p") -> Event:
    result = None if status == "start" else TaskResult(host, play, f"t{index}", status)
    return Event(host, play, f"t{index}", index, total, status, result)


def test_apply_state_line() -> None:
    state = progress.ApplyState(started=100.0)
    state.set_plays([("p", ["a", "b", "c"]), ("q", ["a"])])
    for host in "abc":
        state.feed(_ev(host, "start"), 101.0)
    state.feed(_ev("a", "ok"), 102.0)
    state.feed(_ev("a", "start", 2), 102.0)
    assert state.line(113.0) == (
        "play 1/2 p | 0/3 hosts done | task 1/2 t1 12s on 2 hosts: b, c | 1 on other tasks | 13s"
    )
    state.feed(_ev("a", "changed", 2), 114.0)
    state.feed(_ev("b", "failed"), 114.0)
    assert state.line(170.0).startswith("play 1/2 p | 2/3 hosts done | task 1/2 t1 1m09s on 1 host")
    state.feed(_ev("a", "start", 1, 1, play="q"), 171.0)
    assert state.line(171.0) == "play 2/2 q | 0/1 hosts done | task 1/1 t1 0s on 1 host: a | 1m11s"
    assert progress.fit("x" * 100, 20) == "x" * 18 + "~"


def test_every_command_ends_with_its_total_time(tmp_path: Path) -> None:
    """apply's total line is in test_apply_output; ping and run had theirs; the audit now too."""
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run(
        _argv("audit", "--local"), capture_output=True, text=True, env=env, timeout=120
    )
    assert re.search(r"^audited 1 host in \d+\.\d s$", done.stderr, re.M), done.stderr
    ping = subprocess.run(
        _argv("ping", "--local"), capture_output=True, text=True, env=env, timeout=120
    )
    assert re.search(r"^1 host: 1 ok in [\d.]+ s$", ping.stderr, re.M), ping.stderr


def test_apply_line_shows_the_freshest_transfer_report_and_its_host() -> None:
    state = progress.ApplyState(started=0.0)
    state.set_plays([("p", ["a", "b", "c"])])
    for host in "abc":
        state.feed(_ev(host, "start", 1, 1), 1.0)

    def report(host: str, text: str, now: float) -> None:
        result = TaskResult(host, "p", "t1", "progress", text)
        state.feed(Event(host, "p", "t1", 1, 1, "progress", result), now)

    report("b", "img from the registry: 1.0 MB of 4.0 MB", 2.0)  # a and c wait for b
    assert state.line(3.0).endswith(" | b: img from the registry: 1.0 MB of 4.0 MB | 3s")
    report("c", "img from b: 2.0 MB of 4.0 MB", 4.0)
    report("b", "img from the registry: 4.0 MB of 4.0 MB", 3.0)  # older: c's is shown
    assert " | c: img from b: 2.0 MB of 4.0 MB | " in state.line(5.0)
