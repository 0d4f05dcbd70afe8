"""Shell completion (bash, zsh) and the man page, generated from the argparse parser, so they
name exactly the commands, options and choices the CLI accepts (pure: parser in, text out).

argparse keeps a parser's options and subcommands only in ``_actions``; this module is the one
place, with ``cli.subcommands``, that reads them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass

from provision import __version__

# Options whose value is a path: completed with file names.
_PATH_METAVARS = {"FILE", "PATH", "INVENTORY", "DIR"}


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...]
    is_path: bool
    metavar: str


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    usage: str
    options: tuple[Option, ...]
    positionals: tuple[str, ...]  # metavars


def _options(parser: argparse.ArgumentParser) -> Iterator[Option]:
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        metavar = action.metavar if isinstance(action.metavar, str) else ""
        metavar = metavar or (action.dest.upper() if action.nargs != 0 else "")
        yield Option(
            flags=tuple(action.option_strings),
            help=(action.help or "").replace("%%", "%"),
            takes_value=action.nargs != 0,
            choices=tuple(str(c) for c in action.choices or ()),
            is_path=metavar in _PATH_METAVARS,
            metavar=metavar,
        )


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """Each subcommand with its options, in the order `provision --help` lists them."""
    helps: dict[str, str] = {}
    parsers: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers = dict(action.choices)
            helps = {a.dest: a.help or "" for a in action._choices_actions}
    return [
        Command(
            name=name,
            help=helps.get(name, ""),
            usage=" ".join(sub.format_usage().split())[len("usage: ") :],
            options=tuple(_options(sub)),
            positionals=tuple(
                str(a.metavar or a.dest) for a in sub._actions if not a.option_strings
            ),
        )
        for name, sub in parsers.items()
    ]


# --------------------------------------------------------------------------- bash


def bash(parser: argparse.ArgumentParser) -> str:
    """A bash completion script: ``source <(provision completion bash)``."""
    cmds = commands(parser)
    top = " ".join([c.name for c in cmds] + [f for o in _options(parser) for f in o.flags])
    cases = []
    for cmd in cmds:
        values = []
        for opt in cmd.options:
            if not opt.takes_value:
                continue
            words = "|".join(opt.flags)
            if opt.choices:
                reply = f'COMPREPLY=($(compgen -W "{" ".join(opt.choices)}" -- "$cur"))'
            elif opt.is_path:
                reply = 'COMPREPLY=($(compgen -f -- "$cur"))'
            else:
                reply = "COMPREPLY=()"
            values.append(f"                {words}) {reply}; return ;;")
        flags = " ".join(f for o in cmd.options for f in o.flags)
        cases.append(
            f"        {cmd.name})\n"
            f'            opts="{flags}"\n'
            f'            case "$prev" in\n' + "\n".join(values) + "\n            esac ;;"
        )
    return f"""# bash completion for provision {__version__}, generated from its parser:
#   source <(provision completion bash)
# or save it as ~/.local/share/bash-completion/completions/provision
_provision() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" cmd="" opts="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in -*) ;; *) cmd="${{COMP_WORDS[i]}}"; break ;; esac
    done
    case "$cmd" in
        "") COMPREPLY=($(compgen -W "{top}" -- "$cur")); return ;;
{chr(10).join(cases)}
        *) return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -o bashdefault -F _provision provision
"""


# --------------------------------------------------------------------------- zsh


def _zsh_text(text: str) -> str:
    """Help text inside a single-quoted _arguments spec: brackets and colons escaped."""
    for char in "\\[]:":
        text = text.replace(char, "\\" + char)
    return text.replace("'", "'\\''")


def _zsh_spec(opt: Option) -> str:
    action = ""
    if opt.takes_value:
        what = _zsh_text(opt.metavar.lower() or "value")
        if opt.choices:
            action = f":{what}:({' '.join(opt.choices)})"
        elif opt.is_path:
            action = f":{what}:_files"
        else:
            action = f":{what}: "
    text = _zsh_text(opt.help.splitlines()[0] if opt.help else "")
    if len(opt.flags) == 1:
        return f"'{opt.flags[0]}[{text}]{action}'"
    exclusive = " ".join(opt.flags)
    return f"'({exclusive})'{{{','.join(opt.flags)}}}'[{text}]{action}'"


def zsh(parser: argparse.ArgumentParser) -> str:
    """A zsh completion function: save as ``_provision`` on ``$fpath``, or
    ``source <(provision completion zsh)`` after ``compinit``."""
    cmds = commands(parser)
    listing = "\n".join(f"        '{c.name}:{_zsh_text(c.help)}'" for c in cmds)
    cases = []
    for cmd in cmds:
        specs = " \\\n                ".join(_zsh_spec(o) for o in cmd.options)
        cases.append(
            f"            {cmd.name})\n"
            f"                _arguments -s {specs} \\\n"
            "                '*:file:_files' ;;"
        )
    top = " \\\n        ".join(_zsh_spec(o) for o in _options(parser))
    return f"""#compdef provision
# zsh completion for provision {__version__}, generated from its parser.
_provision() {{
    local curcontext="$curcontext" state line
    local -a commands
    commands=(
{listing}
    )
    _arguments -C \\
        {top} \\
        '1:command:->command' \\
        '*::argument:->argument'
    case $state in
        command) _describe -t commands 'provision command' commands ;;
        argument)
            case $words[1] in
{chr(10).join(cases)}
            esac ;;
    esac
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _provision "$@"
else
    compdef _provision provision
fi
"""


# --------------------------------------------------------------------------- man page


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + ln if ln.startswith((".", "'")) else ln for ln in text.splitlines())


def man(parser: argparse.ArgumentParser, exit_codes: str, today: _dt.date | None = None) -> str:
    """provision(1) in man(7) roff: `provision man > provision.1; man -l provision.1`."""
    day = (today or _dt.date.today()).isoformat()
    out = [
        f'.TH PROVISION 1 "{day}" "provision {__version__}" "User Commands"',
        ".SH NAME",
        "provision \\- " + _roff(parser.description or ""),
        ".SH SYNOPSIS",
        ".B provision",
        _roff("[-V] [-v|-vv|-vvv] COMMAND [INVENTORY] [OPTIONS]"),
        ".SH DESCRIPTION",
        _roff(
            "Like ansible, ansible-playbook and ansible-inventory for one lab: the same "
            "inventories, patterns and flags. Reports go to stdout, progress and logs to stderr."
        ),
        ".SH OPTIONS",
    ]
    out += _man_options(tuple(_options(parser)))
    out.append(".SH COMMANDS")
    for cmd in commands(parser):
        out += [f".SS {cmd.name}", _roff(cmd.help), ".PP", ".nf", _roff(cmd.usage), ".fi"]
        out += _man_options(cmd.options)
    codes = exit_codes.splitlines()[1:]
    out.append(".SH EXIT STATUS")
    for line in codes:
        code, _, meaning = line.strip().partition(" ")
        out += [".TP", f".B {code}", _roff(meaning.strip())]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B PROVISION_INVENTORY",
        _roff("inventory file when none is given; beats ANSIBLE_INVENTORY"),
        ".TP",
        ".B ANSIBLE_CONFIG",
        _roff("the ansible.cfg to read (else ./ansible.cfg, then ~/.ansible.cfg)"),
        ".TP",
        ".B ANSIBLE_INVENTORY, ANSIBLE_REMOTE_USER, ANSIBLE_PRIVATE_KEY_FILE, ANSIBLE_FORKS, "
        "ANSIBLE_TIMEOUT",
        _roff("as in Ansible, over ansible.cfg"),
        ".TP",
        ".B NO_COLOR",
        _roff("no colour, and plain progress lines"),
        ".SH SEE ALSO",
        ".BR ansible (1),",
        ".BR ansible-playbook (1),",
        ".BR ssh (1);",
        _roff("docs/cli.md in the source tree"),
    ]
    return "\n".join(out) + "\n"


def _man_options(options: tuple[Option, ...]) -> list[str]:
    lines = []
    for opt in options:
        flags = ", ".join(f"\\fB{_roff(f)}\\fR" for f in opt.flags)
        value = f" \\fI{_roff(opt.metavar)}\\fR" if opt.takes_value else ""
        lines += [".TP", flags + value, _roff(opt.help)]
    return lines
