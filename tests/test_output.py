"""The shared output layer: the Environment, and ping/run/apply `--format json` on real sshd."""

from __future__ import annotations

import io
import json
import os
import re

from provision.output import Environment
from tests.lab.sshd import SshdLab
from tests.test_cli import FAST, cli


def test_environment_decides_colour_and_width_once(monkeypatch) -> None:
    main, child = os.openpty()
    terminal = open(child, "w")  # noqa: SIM115 - closed below, with the pty
    try:
        monkeypatch.setenv("COLUMNS", "83")
        on_tty = Environment.of_process(stdout=terminal, environ={})
        assert on_tty.isatty and on_tty.colour and on_tty.width == 83
        assert not Environment.of_process(stdout=terminal, environ={"NO_COLOR": "1"}).colour
        assert Environment.of_process("always", stdout=terminal, environ={"NO_COLOR": "1"}).colour
        assert not Environment.of_process(stdout=terminal, to_file=True, environ={}).colour
        assert not Environment.of_process("never", stdout=terminal, environ={}).colour
    finally:
        terminal.close()
        os.close(main)
    piped = Environment.of_process(stdout=io.StringIO(), environ={})
    assert not piped.isatty and not piped.colour


def test_ping_json_of_this_machine() -> None:
    r = cli("ping", "--local", "--format", "json")
    doc = json.loads(r.stdout)  # stdout is the document and nothing else
    assert doc["command"] == "ping" and doc["exit_code"] == r.returncode == 0
    assert [(h["host"], h["state"]) for h in doc["hosts"]] == [("localhost", "ok")]
    assert doc["generated_at"].endswith("Z") and doc["provision_version"]
    assert "1 host: 1 ok" in r.stderr  # the summary stays on stderr


def test_run_and_apply_json_over_sshd(sshd_lab: SshdLab, tmp_path) -> None:
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"))
    run = cli(
        "run",
        "-i",
        inv,
        "-l",
        "lab01:fault-closed",
        *FAST,
        "--format",
        "json",
        "echo out-42",
        env=sshd_lab.env(),
    )
    doc = json.loads(run.stdout)
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert hosts["lab01"]["stdout"] == "out-42\n" and hosts["lab01"]["exit_code"] == 0
    assert hosts["fault-closed"]["state"] == "unreachable" and hosts["fault-closed"]["reason"]
    assert doc["exit_code"] == run.returncode == 4

    target = tmp_path / "site"
    target.mkdir()
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- name: lab files\n  hosts: lab\n  tasks:\n    - name: motd\n      copy:\n"
        "        dest: '{{ target }}/motd-{{ inventory_hostname }}'\n"
        '        content: "hi {{ inventory_hostname }}\\n"\n'
    )
    ok_inv = sshd_lab.write_inventory(
        str(tmp_path / "ok.ini"), sshd_lab.ok_hosts[:2], extra_vars={"target": str(target)}
    )
    argv = ["apply", ok_inv, "-p", str(playbook), *FAST, "--format", "json"]
    first = cli(*argv, env=sshd_lab.env(), cwd=str(tmp_path))
    doc = json.loads(first.stdout)  # no task lines mixed into the document
    assert doc["exit_code"] == first.returncode == 0, first.stderr
    assert {h: s["changed"] for h, s in doc["recap"].items()} == {"lab01": 1, "lab02": 1}
    motd = [r for r in doc["results"] if r["task"] == "motd"]
    assert {(r["host"], r["status"]) for r in motd} == {("lab01", "changed"), ("lab02", "changed")}
    assert (target / "motd-lab01").read_text() == "hi lab01\n"
    again = json.loads(cli(*argv, env=sshd_lab.env(), cwd=str(tmp_path)).stdout)
    assert {h: s["changed"] for h, s in again["recap"].items()} == {"lab01": 0, "lab02": 0}
    assert {r["status"] for r in again["results"] if r["task"] == "motd"} == {"ok"}


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _command(argv: list[str], env: Environment) -> int:
    """One command as cli.main runs it, with the Environment given instead of the process's."""
    from provision import cli, config

    args = cli.build_parser().parse_args(argv)
    cli._use_config(args, config.load(), env)
    return int(args.func(args, env))


def test_commands_write_only_to_the_environment_they_are_given(tmp_path, capsys) -> None:
    """run, apply and audit take their streams, width, colour and the progress line's terms
    from the Environment cli.main builds: given StringIO streams, nothing reaches sys.stdout."""
    out, err = io.StringIO(), io.StringIO()
    # live progress on a stream that is no terminal: only the Environment can have said so
    env = Environment(out, err, 60, colour=True, isatty=False, live=True, stderr_width=40)
    assert _command(["run", "--local", "sleep 0.7; echo hi-$((6*7))"], env) == 0
    assert "localhost | OK |" in out.getvalue() and "hi-42" in out.getvalue()
    assert "1 host: 1 ok" in err.getvalue()
    redraws = [part for part in err.getvalue().split("\r") if part.startswith("[")]
    assert redraws and all(len(ANSI.sub("", part)) <= 39 for part in redraws)

    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[here]\nlocalhost ansible_connection=local\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: here\n  tasks:\n    - name: marker\n"
        f"      copy:\n        dest: {tmp_path}/marker\n        content: x\n"
    )
    out.seek(0), out.truncate()
    assert _command(["apply", "-i", str(inventory), "-p", str(playbook)], env) == 0
    assert "changed: [localhost] " in out.getvalue() and "PLAY RECAP" in out.getvalue()
    assert (tmp_path / "marker").read_text() == "x"

    out.seek(0), out.truncate()
    _command(["audit", "--local"], env)
    table = out.getvalue().splitlines()
    assert any(ANSI.search(line) for line in table)  # colour because the Environment said so
    assert table and all(len(ANSI.sub("", line)) <= 60 for line in table)  # its width, not 100
    assert capsys.readouterr() == ("", "")
