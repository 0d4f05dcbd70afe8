"""Completion scripts and the man page, generated from the parser: completed in real bash and
zsh inside tmux, the man page rendered by groff with every warning on."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from provision import cli, cliref
from tests.conftest import need_binary, venv_tool
from tests.terminal import Tmux
from tests.test_cli import cli as run_cli

PROMPT = "READY> "


def _shell(shell: str, tmp_path: Path) -> Tmux:
    """An interactive bash or zsh with provision's completion loaded, at a known prompt."""
    script = run_cli("completion", shell)
    assert script.returncode == 0, script.stderr
    bindir = str(Path(venv_tool("provision")).parent)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(tmp_path), "TERM": "xterm"}
    if shell == "bash":
        (tmp_path / "rc").write_text(f"PS1='{PROMPT}'\n" + script.stdout)
        argv = [need_binary("bash", "bash"), "--noprofile", "--rcfile", str(tmp_path / "rc"), "-i"]
    else:
        (tmp_path / "_provision").write_text(script.stdout)
        (tmp_path / ".zshrc").write_text(
            f"PS1='{PROMPT}'\nfpath=({tmp_path} $fpath)\nautoload -U compinit\ncompinit -u\n"
        )
        env["ZDOTDIR"] = str(tmp_path)
        argv = [need_binary("zsh", "zsh"), "-i"]
    term = Tmux(argv, env=env, cwd=str(tmp_path), width=120, height=20)
    term.wait(lambda s: s.rstrip().endswith(PROMPT.strip()))
    return term


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_in_a_real_shell(shell: str, tmp_path: Path) -> None:
    (tmp_path / "lab.ini").write_text("ws01\n")
    term = _shell(shell, tmp_path)
    try:
        term.send("provision ap", "Tab")  # the subcommand
        term.wait(lambda s: "provision apply" in s)
        term.send("--list-p", "Tab")  # one of its options (completion added the space)
        term.wait(lambda s: "provision apply --list-playbooks" in s)
        term.send("C-u", "provision audit la", "Tab")  # a file: the inventory positional
        term.wait(lambda s: "provision audit lab.ini" in s)
        term.send("C-u", "provision audit --format ", "Tab", "Tab")  # an option's choices
        screen = term.wait(lambda s: "prometheus" in s and "markdown" in s)
        assert "table" in screen and "csv" in screen
    finally:
        term.close()


def test_completion_names_every_option_of_every_command() -> None:
    parser = cli.build_parser()
    bash, zsh = cliref.bash(parser), cliref.zsh(parser)
    for name, sub in cli.subcommands(parser).items():
        assert f"        {name})" in bash and f"'{name}:" in zsh
        for action in sub._actions:
            for flag in action.option_strings:
                if action.help != "==SUPPRESS==":
                    assert flag in bash and flag in zsh, (name, flag)


def test_man_page_renders_without_warnings(tmp_path: Path) -> None:
    groff = need_binary("groff", "groff-base")
    page = run_cli("man")
    assert page.returncode == 0 and page.stdout.startswith(".TH PROVISION 1 ")
    source = tmp_path / "provision.1"
    source.write_text(page.stdout)
    rendered = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-P-cbou", str(source)],  # -P-cbou: plain text
        capture_output=True,
        text=True,
        env={**os.environ, "LANG": "C.UTF-8"},
        timeout=60,
    )
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
    text = rendered.stdout
    for name in cli.subcommands(cli.build_parser()):
        assert f"\n   {name}\n" in text, name
    for flag in ("--accept-new-host-keys", "--list-playbooks", "--retry-file", "-T, --timeout"):
        assert flag in text, flag
    assert "EXIT STATUS" in text and "bad command-line option or value" in text
    assert "PROVISION_INVENTORY" in text and "ANSIBLE_CONFIG" in text
