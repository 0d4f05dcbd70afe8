"""Command line: parse, call, render, exit status. The only module that prints or exits."""

from __future__ import annotations

import argparse
import getpass
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from provision import __version__, defaults, localfile
from provision.errors import ConfigError, ProvisionError, UsageError

if TYPE_CHECKING:
    from provision.config import Config
    from provision.executor import HostOutcome, RunOptions
    from provision.inventory import Inventory
    from provision.output import Environment
    from provision.target import ConnSpec
    from provision.vault import VaultSecret

log = logging.getLogger("provision")

EXIT_INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)
EXIT_BAD_OPTIONS = UsageError.exit_code  # 5, Ansible's "bad or incomplete options"


EXIT_CODES = """\
exit codes (the same in every command; docs/cli.md):
  0    every host ok (audit: every host OK)
  1    bad input (inventory, playbook, ansible.cfg): nothing ran; audit: some host WARN
  2    some host failed (audit: some host FAIL)
  3    audit: some host UNKNOWN
  4    some host unreachable, refused its host key or timed out
  5    bad command-line option or value: nothing ran
  130  interrupted (Ctrl-C)"""


# ansible-playbook's options that provision does not have, and what to do instead (an Ansible
# user's habit gets an answer, not just "unrecognized arguments").
ANSIBLE_ONLY_OPTIONS = {
    "-k": "apply logs in with keys; `provision onboard HOST` sets up key login with the password",
    "--ask-pass": "apply logs in with keys; `provision onboard HOST` sets up key login with "
    "the password",
    "--become-user": "set become_user on the play, or ansible_become_user in the inventory",
    "--start-at-task": "select tasks with --tags/--skip-tags; a converged task costs no extra "
    "round trip, so rerunning from the top is cheap",
    "--step": "run with --check --diff first to see every change, then without",
    "--force-handlers": "rerun after the failure is fixed: the handlers are notified again",
    "--flush-cache": "provision keeps no fact cache: facts are read on every run",
    "-c": "provision connects with SSH (or ansible_connection=local per host)",
    "--connection": "provision connects with SSH (or ansible_connection=local per host)",
}


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a bad option, the code of "some host failed": exit 5 instead."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_OPTIONS, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """A subcommand's arguments intermixed, as users type them: `run INV -vv 'uptime'`
        (argparse alone takes INV as the command there and refuses 'uptime')."""
        if self._subparsers is not None or getattr(self, "_intermixing", False):
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back into this method
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        """An unknown option after a subcommand is that subcommand's error, with its usage
        (argparse leaves it to the top parser, which shows the top usage); an option of
        ansible-playbook's that provision lacks says so and what to use instead."""
        parsed, extra = self.parse_known_args(args, namespace)
        for word in extra:
            instead = ANSIBLE_ONLY_OPTIONS.get(word.split("=", 1)[0])
            if instead is not None:
                command = subcommands(self).get(getattr(parsed, "command", None) or "", self)
                command.error(f"{word.split('=', 1)[0]} is not supported: {instead}")
        if extra:
            command = subcommands(self).get(getattr(parsed, "command", None) or "", self)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers by name (argparse keeps them only in its actions)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# --------------------------------------------------------------------------- argument parsing


def _add_inventory(p: argparse.ArgumentParser) -> None:
    # The inventory as the first positional, or -i, in every command (ansible-inventory and
    # ansible-playbook users type either); else PROVISION_INVENTORY, ANSIBLE_INVENTORY or
    # ansible.cfg (provision/config.py).
    p.add_argument("inventory_file", nargs="?", metavar="INVENTORY", help="inventory file")
    p.add_argument(
        "-i",
        "--inventory",
        metavar="FILE",
        help="Ansible INI inventory (group_vars/ and host_vars/ beside it are read too)",
    )
    p.add_argument(
        "-l",
        "--limit",
        metavar="PATTERN",
        help="only these hosts: a:b union, a:&b intersection, a:!b exclusion, globs, ~regex, @file",
    )
    _add_vault(p)


def _add_vault(p: argparse.ArgumentParser) -> None:
    # ansible-playbook's vault options, same names and meanings (provision/vault.py).
    g = p.add_argument_group("vault")
    g.add_argument(
        "--vault-password-file",
        "--vault-pass-file",
        action="append",
        default=[],
        metavar="FILE",
        help="vault password file (an executable file is run for it); repeatable",
    )
    g.add_argument(
        "-J",
        "--ask-vault-pass",
        "--ask-vault-password",
        action="store_true",
        help="prompt for the vault password",
    )
    g.add_argument(
        "--vault-id",
        action="append",
        default=[],
        metavar="[LABEL@]SOURCE",
        help="a labelled vault password: SOURCE is a file, a script or 'prompt'; repeatable",
    )


def _add_connection(
    p: argparse.ArgumentParser, command_timeout: float = defaults.COMMAND_TIMEOUT
) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("-u", "--user", help="remote user when the inventory names none")
    g.add_argument("--private-key", metavar="FILE", help="SSH private key file")
    g.add_argument(
        "-f",
        "--forks",
        type=int,
        default=defaults.FORKS,
        help=f"hosts worked on at once (default: {defaults.FORKS})",
    )
    g.add_argument("-b", "--become", action="store_true", default=None, help="run as root (sudo)")
    g.add_argument(
        "-K", "--ask-become-pass", action="store_true", help="prompt once for the sudo password"
    )
    g.add_argument(
        "--become-password-file",
        metavar="FILE",
        help="read the sudo password from the first line of FILE",
    )
    g.add_argument(
        "--known-hosts",
        action="append",
        default=[],
        metavar="FILE",
        help="extra known_hosts file (besides ~/.ssh/known_hosts); repeatable",
    )
    g.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="record keys of hosts never seen before (like OpenSSH accept-new); "
        "a changed key is still refused",
    )
    g.add_argument(
        "-T",
        "--timeout",
        type=float,
        default=defaults.CONNECT_TIMEOUT,
        metavar="S",
        help=f"connect, banner and auth timeout in seconds (default: {defaults.CONNECT_TIMEOUT:g})",
    )
    g.add_argument(
        "--command-timeout",
        type=float,
        default=command_timeout,
        metavar="S",
        help=f"timeout for each remote command in seconds (default: {command_timeout:g})",
    )
    g.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="S",
        help="overall time limit for the run; unfinished hosts end as 'timed out'",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="provision",
        description="Set up and audit the GPU workstations of a research lab over SSH.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"provision {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log to stderr: -v progress, -vv debug, -vvv SSH protocol too",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # -v also after the command (`provision apply inv.ini -vv`), as ansible users type it.
    verbose = _Parser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    p = sub.add_parser(
        "inventory", parents=[verbose], help="show an inventory as ansible-inventory would"
    )
    _add_inventory(p)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="JSON like ansible-inventory --list")
    mode.add_argument(
        "--graph",
        nargs="?",
        const="all",
        metavar="GROUP",
        help="tree like ansible-inventory --graph",
    )
    mode.add_argument("--host", metavar="HOST", help="one host's variables as JSON")
    p.add_argument(
        "--playbook-dir",
        metavar="DIR",
        help="also read group_vars/ and host_vars/ in DIR, as a playbook there would",
    )
    p.set_defaults(func=cmd_inventory)

    p = sub.add_parser(
        "ping", parents=[verbose], help="connect to each host and run `true` (like ansible -m ping)"
    )
    _add_inventory(p)
    _add_local(p)
    _add_connection(p, command_timeout=defaults.PING_COMMAND_TIMEOUT)
    _add_format(p)
    p.set_defaults(func=cmd_ping)

    p = sub.add_parser(
        "run", parents=[verbose], help="run a shell command on each host (like ansible -a)"
    )
    _add_inventory(p)
    _add_local(p)
    _add_connection(p)
    p.add_argument("shell_command", metavar="COMMAND", help="command line, run by the login shell")
    _add_format(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "audit",
        parents=[verbose],
        help="grade driver, CUDA, GPUs, Docker and disk per host (no inventory: this machine)",
    )
    _add_inventory(p)
    _add_connection(p)
    _add_audit_options(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "apply",
        parents=[verbose],
        help="bring hosts to the lab baseline with a playbook (like ansible-playbook)",
    )
    _add_inventory(p)
    _add_connection(p)
    _add_apply_options(p)
    p.set_defaults(func=cmd_apply)
    _add_onboard(sub, verbose)
    p = sub.add_parser("completion", help="print a bash or zsh completion script")
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    p.set_defaults(func=cmd_completion)
    p = sub.add_parser("man", help="print the man page (provision man > provision.1)")
    p.set_defaults(func=cmd_man)
    for command in subcommands(parser).values():
        command.epilog, command.formatter_class = EXIT_CODES, argparse.RawDescriptionHelpFormatter
    return parser


def _add_local(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--local",
        action="store_true",
        help="this machine, through a local connection, instead of an inventory",
    )


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default), or one JSON document on stdout (see docs/cli.md)",
    )


def _add_apply_options(p: argparse.ArgumentParser) -> None:
    _add_format(p)
    g = p.add_argument_group("playbook")
    g.add_argument(
        "-p",
        "--playbook",
        metavar="FILE",
        help="playbook to run (default: the shipped playbooks/site.yml)",
    )
    g.add_argument("-C", "--check", action="store_true", help="change nothing; say what would")
    g.add_argument("-D", "--diff", action="store_true", help="show the changes to files")
    g.add_argument(
        "-t", "--tags", action="append", default=[], help="only tasks with these tags (a,b)"
    )
    g.add_argument("--skip-tags", action="append", default=[], help="skip tasks with these tags")
    g.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="VARS",
        help="k=v pairs, YAML/JSON, or @file; later ones win",
    )
    g.add_argument(
        "--allow-reboot",
        action="store_true",
        help="let reboot tasks reboot hosts that need it (sets allow_reboot=true)",
    )
    g.add_argument(
        "--force",
        action="store_true",
        help="reboot or restart Docker even while GPU processes or containers run "
        "(sets force=true)",
    )
    g.add_argument("--syntax-check", action="store_true", help="validate the playbook and stop")
    g.add_argument("--list-tasks", action="store_true", help="list the tasks that would run")
    g.add_argument("--list-hosts", action="store_true", help="list the hosts of each play")
    g.add_argument(
        "--list-playbooks",
        action="store_true",
        help="list the shipped playbooks (-p takes their names from any directory)",
    )
    g.add_argument(
        "--retry-file",
        metavar="FILE",
        help="where failed and unreachable hosts are listed for --limit @FILE "
        "(default: PLAYBOOK-NAME.retry in the working directory)",
    )


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit")
    g.add_argument("--local", action="store_true", help="audit this machine, without SSH")
    g.add_argument(
        "--details", action="store_true", help="only the problems, in full, without the table"
    )
    g.add_argument("--all", action="store_true", help="every check of every host, OK ones too")
    g.add_argument(
        "--gpus", action="store_true", help="one line per GPU: model, temp, util, memory, users"
    )
    g.add_argument(
        "--format",
        choices=("table", "json", "csv", "markdown", "html", "prometheus"),
        default="table",
        help="report format (default: table); html: a self-contained status page; "
        "prometheus: for node_exporter's textfile collector (use -o DIR/provision.prom)",
    )
    g.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE")
    g.add_argument(
        "--fail-on",
        choices=("warn", "fail", "unknown", "never"),
        default=None,
        help="lowest status that makes the exit code non-zero (default: warn)",
    )
    g.add_argument("--min-driver", metavar="VERSION", help="minimum driver version")
    g.add_argument("--require-cuda", metavar="X.Y", help="CUDA version the driver must support")
    g.add_argument("--expect-gpus", type=int, metavar="N", help="expected number of GPUs")
    g.add_argument(
        "--require-image",
        action="append",
        default=None,
        metavar="IMAGE",
        help="image that must be present (name[:tag][@sha256:digest]); repeatable",
    )
    g.add_argument(
        "--disk-path",
        action="append",
        default=None,
        metavar="PATH",
        help="extra path whose free space is checked; repeatable",
    )
    g.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the table (default: on a terminal, unless NO_COLOR is set)",
    )
    g.add_argument(
        "--history",
        nargs="?",
        const="",
        metavar="PATH",
        help="record this audit in an SQLite history and report what changed and disk trends "
        "(PATH left out: $XDG_STATE_HOME/provision/audit-history.sqlite)",
    )
    g.add_argument(
        "--history-days",
        type=float,
        default=90,
        metavar="DAYS",
        help="keep recorded audits this many days (default: 90)",
    )
    g.add_argument(
        "--changes",
        action="store_true",
        help="print only what changed since the previous recorded audit (needs --history)",
    )


# --------------------------------------------------------------------------- shared plumbing


def _setup_logging(verbosity: int, stream: TextIO) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=stream, format="%(levelname)s %(name)s: %(message)s")
    # ssh.py quiets paramiko (a traceback per failed handshake); -vvv shows its protocol log.
    if verbosity >= 3:
        logging.getLogger("paramiko").setLevel(logging.DEBUG)
    else:  # fabric and invoke log their config loading at debug: noise, not provision's detail
        for noisy in ("fabric", "invoke"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    recorded = logging.getLogger("provision.hostkeys.recorded")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    recorded.handlers[:] = [handler]
    recorded.setLevel(logging.INFO)
    recorded.propagate = False


NO_INVENTORY = (
    "no inventory: give one as the first argument or with -i, or set PROVISION_INVENTORY, "
    "ANSIBLE_INVENTORY or inventory in ansible.cfg [defaults]"
)


def _configure(parser: argparse.ArgumentParser, config: Config) -> None:
    """ansible.cfg's remote_user, private_key_file, forks and timeout become the defaults of
    the options they stand for (so a flag given still wins, as in Ansible)."""
    dests = {
        "remote_user": "user",
        "private_key_file": "private_key",
        "forks": "forks",
        "timeout": "timeout",
    }
    values = {dest: config.value(key) for key, dest in dests.items() if key in config.settings}
    for sub in subcommands(parser).values():
        known = {a.dest for a in sub._actions}
        sub.set_defaults(**{k: v for k, v in values.items() if k in known})


def _resolve_inventory(args: argparse.Namespace, config: Config) -> None:
    """One inventory for every command: the positional or -i, else the environment's or
    ansible.cfg's (not with --local); ``args.inventory`` is None when there is none."""
    if not hasattr(args, "inventory"):
        return
    given = getattr(args, "inventory_file", None)
    if given and getattr(args, "command", None) == "apply" and _is_playbook_file(given):
        # `provision apply site.yml -i hosts.ini`, as ansible-playbook takes it
        if args.playbook:
            raise ConfigError(f"two playbooks: {given} and -p {args.playbook}; give one")
        args.playbook, given = given, None
    if given and args.inventory:
        raise ConfigError("give the inventory once: either as an argument or with -i")
    args.inventory, args.inventory_file = args.inventory or given, None
    if args.inventory or getattr(args, "local", False):
        return
    setting = config.inventory()
    if setting is not None:
        args.inventory = setting.value
        log.info("inventory %s (from %s)", setting.value, setting.origin)


def _is_playbook_file(path: str) -> bool:
    """A YAML list (a playbook's plays), not an inventory: an INI or YAML inventory never
    starts with ``-``. Decided on the first line of content, so a playbook with a YAML error
    is still taken as the playbook and its error reported as one."""
    if not path.endswith((".yml", ".yaml")) or not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                text = line.strip()
                if text and not text.startswith("#") and text != "---":
                    return text.startswith("-")
    except OSError:
        return False
    return False


def _use_config(args: argparse.Namespace, config: Config, env: Environment) -> None:
    if config.ignored:
        env.warn(f"warning: {config.path}: provision ignores {', '.join(config.ignored)}")
    if hasattr(args, "accept_new_host_keys"):  # the commands that connect
        config.refuse_unchecked_host_keys()
    _resolve_inventory(args, config)


def _load(
    args: argparse.Namespace,
    playbook_dir: str | None = None,
    secrets: list[VaultSecret] | None = None,
) -> Inventory:
    """The inventory, its vaults opened with the passwords given (``secrets``, else read from
    the vault options now); with ``playbook_dir``, the group_vars/ and host_vars/ beside the
    playbook too (as ansible-playbook reads them)."""
    from provision.inventory import load_inventory, localhost_inventory

    path = getattr(args, "inventory", None)
    if not path:
        return localhost_inventory()
    if secrets is None:
        secrets = _vault_secrets(args)
    return load_inventory(path, secrets, playbook_dir)


def _vault_secrets(args: argparse.Namespace) -> list[VaultSecret]:
    """The passwords of --vault-id, --vault-password-file and --ask-vault-pass (asked once)."""
    from provision.vault import load_secrets

    return load_secrets(
        getattr(args, "vault_password_file", ()),
        getattr(args, "vault_id", ()),
        getattr(args, "ask_vault_pass", False),
        prompt=getpass.getpass,
    )


def _masked_task(result: Any, secrets: Sequence[str]) -> Any:
    """An engine TaskResult with vault values masked in what users see (msg, diff, changes)."""
    from dataclasses import replace

    from provision.shell import mask

    return replace(
        result,
        msg=mask(result.msg, secrets),
        diff=None if result.diff is None else mask(result.diff, secrets),
        changes=[mask(c, secrets) for c in result.changes],
    )


def _masked_event(ev: Any, secrets: Sequence[str]) -> Any:
    from dataclasses import replace

    return ev if ev.result is None else replace(ev, result=_masked_task(ev.result, secrets))


def _masked_result(result: Any, secrets: Sequence[str]) -> Any:
    """A PlaybookResult with vault values masked in its task results and host reasons."""
    from dataclasses import replace

    from provision.shell import mask

    if not secrets:
        return result
    return replace(
        result,
        results=[_masked_task(r, secrets) for r in result.results],
        host_reasons={h: mask(r, secrets) for h, r in result.host_reasons.items()},
        aborted=mask(result.aborted, secrets),
    )


def _hide_vault_values(inv: Inventory, also: Sequence[str] = ()) -> list[str]:
    """Vault-decrypted values (the inventory's, and ``also``: the playbook's) are masked in
    every log record from here on; the caller masks what it prints with the list returned
    (progress, diffs, messages)."""
    from provision.shell import MaskingFilter

    secrets = sorted({*inv.vault_secrets(), *also}, key=len, reverse=True)
    if secrets:
        masking = MaskingFilter(secrets)
        for handler in logging.getLogger().handlers:
            handler.addFilter(masking)
    return secrets


def _select(inv: Inventory, args: argparse.Namespace) -> list[str]:
    from provision.patterns import select_hosts

    # Like Ansible, an @file in --limit is relative to the working directory.
    hosts = select_hosts(inv, getattr(args, "limit", None), base_dir=os.getcwd())
    if not hosts:
        raise ConfigError("no hosts matched: check --limit and the inventory")
    return hosts


def _become_password(args: argparse.Namespace) -> str | None:
    """The sudo password, prompted once or read from a file; it only ever travels on stdin."""
    if args.become_password_file:
        try:
            with open(args.become_password_file, encoding="utf-8") as fh:
                return fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{args.become_password_file}: cannot read the become password: {exc.strerror}"
            ) from None
    if args.ask_become_pass:
        return getpass.getpass("BECOME password: ")
    return None


def _specs(inv: Inventory, hosts: Sequence[str], args: argparse.Namespace) -> list[ConnSpec]:
    from provision.target import conn_spec

    return [
        conn_spec(
            h,
            inv.hosts[h].vars,
            default_user=args.user,
            default_key=args.private_key,
            become=args.become,
        )
        for h in hosts
    ]


def _seconds(option: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{option} must be a positive number of seconds, got {value:g}")
    return value


def _connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """The connection options of ping, run, audit and apply, checked in ONE place; the keys are
    fields of both RunOptions and engine.ApplyOptions (defaults: provision/defaults.py)."""
    if args.forks < 1:
        raise UsageError(f"--forks must be at least 1, got {args.forks}")
    return {
        "forks": args.forks,
        "connect_timeout": _seconds("-T/--timeout", args.timeout),
        "command_timeout": _seconds("--command-timeout", args.command_timeout),
        "deadline": None if args.deadline is None else _seconds("--deadline", args.deadline),
        "known_hosts": tuple(args.known_hosts),
        "accept_new_host_keys": args.accept_new_host_keys,
    }


def _run_options(args: argparse.Namespace) -> RunOptions:
    from provision.executor import RunOptions

    return RunOptions(**_connection_options(args), become_password=_become_password(args))


class _Progress:
    """'[done/total] running 12s: a, b' on stderr while hosts answer (provision/progress.py:
    redrawn a few times a second on a terminal, a plain line now and then elsewhere; reports
    go to stdout). It keeps the outcomes so far: after Ctrl-C they make the partial report."""

    def __init__(self, hosts: Sequence[str], env: Environment) -> None:
        from provision import progress

        self.hosts = list(hosts)
        self.outcomes: dict[str, HostOutcome] = {}
        self.started = time.monotonic()
        self.state = progress.AdhocState(self.hosts, self.started)
        self.live = progress.Live(
            self.state.line,
            lambda: bool(self.state.running()),
            env.stderr,
            live=env.live,
            width=env.stderr_width,
        )

    def line(self, now: float | None = None) -> str:
        """The hosts still running (those not answered yet) and for how long."""
        return self.state.line(time.monotonic() if now is None else now)

    def __call__(self, outcome: HostOutcome) -> None:
        with self.live.lock:
            self.outcomes[outcome.host] = outcome
            self.state.finish(outcome.host)
        log.info("%s: %s %s", outcome.host, outcome.state.value, outcome.reason)
        self.live.draw()

    def close(self) -> None:
        self.live.close()


def _fan_out(
    args: argparse.Namespace,
    env: Environment,
    task: Callable[[Any], Any],
    inv: Inventory | None = None,
    hosts: Sequence[str] | None = None,
    progress: _Progress | None = None,
) -> tuple[dict[str, HostOutcome], float]:
    from provision.executor import run_hosts

    inv = inv or _load(args)
    hosts = hosts if hosts is not None else _select(inv, args)
    specs = _specs(inv, hosts, args)
    opts = _run_options(args)
    progress = progress or _Progress([s.name for s in specs], env)
    start = time.monotonic()
    try:
        outcomes = run_hosts(specs, task, opts, on_done=progress)
    finally:
        progress.close()
    return outcomes, time.monotonic() - start


# --------------------------------------------------------------------------- commands


def cmd_inventory(args: argparse.Namespace, env: Environment) -> int:
    import json

    if not args.inventory:
        raise ConfigError(NO_INVENTORY)
    inv = _load(args, args.playbook_dir)
    # non-ASCII as UTF-8, not \u escapes, as ansible-inventory writes it (so diff agrees)
    if args.list:
        selected = _select(inv, args) if args.limit else None
        doc = inv.to_list_json(selected)
        _write_utf8(env, json.dumps(doc, indent=4, sort_keys=True, ensure_ascii=False))
    elif args.host:
        if args.host not in inv.hosts:
            raise ConfigError(f"unknown host {args.host!r}: not in {inv.path}")
        hostvars = inv.to_list_json()["_meta"]["hostvars"].get(args.host, {})
        _write_utf8(env, json.dumps(hostvars, indent=4, sort_keys=True, ensure_ascii=False))
    else:
        if args.graph != "all" and args.graph not in inv.groups:
            raise ConfigError(f"unknown group {args.graph!r}: not in {inv.path}")
        _write_utf8(env, inv.graph(args.graph))
    return 0


def _write_utf8(env: Environment, text: str) -> None:
    """One document on stdout in UTF-8 whatever the locale (LANG=C would otherwise fail or
    escape): the bytes ansible-inventory writes."""
    env.stdout.flush()
    buffer = getattr(env.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (a test's StringIO)
        env.stdout.write(text + "\n")
    else:
        buffer.write((text + "\n").encode("utf-8"))
    env.stdout.flush()


def _need_inventory(args: argparse.Namespace) -> None:
    """ping and run: an inventory, or --local for this machine; never localhost by surprise."""
    if args.local and args.inventory:
        raise ConfigError("--local means this machine: drop the inventory, or drop --local")
    if not args.local and not args.inventory:
        raise ConfigError(f"{NO_INVENTORY}; --local means this machine")


def cmd_ping(args: argparse.Namespace, env: Environment) -> int:
    from provision import adhoc

    _need_inventory(args)

    outcomes, elapsed = _fan_out(args, env, adhoc.ping_task)
    return _adhoc_report(args, env, "ping", outcomes, elapsed)


def cmd_run(args: argparse.Namespace, env: Environment) -> int:
    from provision import adhoc

    _need_inventory(args)

    outcomes, elapsed = _fan_out(args, env, adhoc.command_task(args.shell_command))
    return _adhoc_report(args, env, "run", outcomes, elapsed)


def _adhoc_report(
    args: argparse.Namespace,
    env: Environment,
    command: str,
    outcomes: dict[str, HostOutcome],
    elapsed: float,
) -> int:
    """ping/run output: text (blocks per host) or the JSON document; the summary on stderr."""
    from provision import adhoc, output
    from provision.output.text import summary

    report = output.AdhocReport(command, outcomes, elapsed, adhoc.exit_code(outcomes))
    for piece in output.render_adhoc(report, args.format):
        env.stdout.write(piece)
    env.stderr.write(summary(outcomes, elapsed) + "\n")
    return report.exit_code


def _audit_settings(
    hostvars: dict[str, Any], overrides: dict[str, Any], host: str, inv_path: str | None = None
) -> Any:
    from provision.audit import settings_for
    from provision.inventory import variable_location

    def locate(name: str) -> str:
        return variable_location(inv_path, name) if inv_path else name

    try:
        return settings_for(hostvars, overrides, locate)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (host {host})") from None


def cmd_audit(args: argparse.Namespace, env: Environment) -> int:
    from provision import audit

    if args.local and args.inventory:
        raise ConfigError("--local audits this machine: drop the inventory, or drop --local")
    overrides = {
        "audit_min_driver": args.min_driver,
        "audit_required_cuda": args.require_cuda,
        "audit_expected_gpus": args.expect_gpus,
        "audit_required_images": args.require_image,
        "audit_disk_paths": args.disk_path,
    }
    interrupted = False
    if args.changes and args.history is None:
        raise ConfigError("--changes compares with the audit history: add --history [PATH]")
    if args.output:
        _check_writable("-o", args.output)
    clock = time.monotonic()
    if args.inventory:
        inv = _load(args)
        hosts = _select(inv, args)
        settings = {h: _audit_settings(inv.hosts[h].vars, overrides, h, inv.path) for h in hosts}
        progress = _Progress(hosts, env)
        try:
            outcomes, _ = _fan_out(args, env, audit.audit_task(settings), inv, hosts, progress)
        except KeyboardInterrupt:  # Ctrl-C: report what has answered, mark the rest
            interrupted = True
            outcomes = dict(progress.outcomes)
        reports = audit.assemble(outcomes, settings)
        if interrupted:
            reports = audit.add_interrupted(reports, hosts, settings)
        _locate(reports, inv, _specs(inv, hosts, args))
    else:
        local = _audit_settings({}, overrides, "localhost")
        settings = {"localhost": local}
        facts = audit.audit_local(local)
        reports = audit.add_drift([audit.host_report("localhost", "ok", facts, "", local)])
    for warning in sorted({w for st in settings.values() for w in st.warnings}):
        env.warn(f"warning: {warning}")
    fail_on = args.fail_on or "warn"
    run = audit.AuditRun(time.time(), time.monotonic() - clock)
    delta = None
    if args.history is not None and not interrupted:  # a partial audit is no point of history
        run, delta = _record_history(args.history, args.history_days, reports, run)
    report = audit.render(
        reports,
        args.format,
        details=args.details,
        all_checks=args.all,
        gpus=args.gpus,
        colour=env.colour,
        width=env.width,
        fail_on=fail_on,
        run=run,
        history=delta,
        changes_only=args.changes,
    )
    if not report.endswith("\n"):
        report += "\n"
    if args.output:
        _write_atomic(args.output, report)
    else:
        env.stdout.write(report)
    hosts_done = f"{len(reports)} host{'s' if len(reports) != 1 else ''}"
    env.warn(f"audited {hosts_done} in {time.monotonic() - clock:.1f} s")
    if interrupted:
        env.warn("provision: interrupted: partial report")
        return EXIT_INTERRUPTED
    return audit.exit_code(reports, fail_on)


def _record_history(path: str, days: float, reports: Sequence[Any], run: Any) -> tuple[Any, Any]:
    """Record the audit; the run learns when the previous one was, the delta what changed."""
    import dataclasses

    from provision.audit.history import History, default_path

    if not path:
        path = default_path()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with History(path, days) as history:
        delta = history.record(reports, run)
    return dataclasses.replace(run, previous_at=delta.previous_at), delta


def _locate(reports: Sequence[Any], inv: Inventory, specs: Sequence[ConnSpec]) -> None:
    """Each report gets where it connected and its inventory groups (JSON, page, metrics)."""
    address = {s.name: s.hostname for s in specs}
    for r in reports:
        r.address = address.get(r.host, "")
        if r.host in inv.hosts:
            r.groups = list(inv.hosts[r.host].groups)


def _write_atomic(path: str, text: str) -> None:
    """Write a local report or retry file whole or not at all: temp file, then rename."""
    localfile.replace_file(path, text)


def _split_tags(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(t.strip() for v in values for t in v.split(",") if t.strip())


def shipped_playbook(name: str = "site.yml") -> str:
    """A shipped playbook: installed as ``provision/playbooks`` (pyproject maps the repository's
    ``playbooks/`` there), or, in a source checkout or editable install, the repository's."""
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "playbooks", name)
    if os.path.exists(installed):
        return installed
    return os.path.join(os.path.dirname(package), "playbooks", name)


def shipped_playbooks() -> list[str]:
    """The names of the shipped playbooks (defaults.yml is a vars file, not a playbook)."""
    import yaml

    folder = os.path.dirname(shipped_playbook())
    names = []
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yml", ".yaml")):
            with open(os.path.join(folder, name), encoding="utf-8") as fh:
                if isinstance(yaml.safe_load(fh), list):  # a playbook is a list of plays
                    names.append(name)
    return names


def _playbook_path(given: str | None) -> str:
    """-p as a path, else as the name of a shipped playbook (`-p docker.yml` from any
    directory, as roles are found by name); no -p: the shipped site.yml."""
    if given is None:
        return shipped_playbook()
    if os.path.exists(given):
        return given
    shipped = shipped_playbook(given)
    if os.sep not in given and given in shipped_playbooks():
        return shipped
    raise ConfigError(
        f"{given}: playbook not found, neither here nor among the shipped playbooks "
        f"({', '.join(shipped_playbooks())}); see --list-playbooks"
    )


def _check_writable(option: str, path: str) -> None:
    """A local file the run will write (report, retry file), tried before any host is
    contacted: the temp file _write_atomic writes beside it is made and removed."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder; name a file in it")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "x", encoding="utf-8"):
            pass
        os.unlink(tmp)
    except FileNotFoundError as exc:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(folder):  # /proc and the like: no such file can be made there
            raise UsageError(f"{option} {path}: cannot write there: {exc.strerror}") from None
        raise UsageError(f"{option} {path}: folder {folder} does not exist; create it") from None
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there: {exc.strerror}") from None


def _retry_path(args: argparse.Namespace, playbook: str, env: Environment) -> str | None:
    """Where the retry file goes, checked now: --retry-file must be writable (exit 5); the
    default one in an unwritable working directory is skipped with a warning."""
    if args.retry_file:
        _check_writable("--retry-file", args.retry_file)
        return str(args.retry_file)
    path = os.path.splitext(os.path.basename(playbook))[0] + ".retry"
    try:
        _check_writable("retry file", path)
    except UsageError as exc:
        env.warn(f"warning: {exc}: no retry file this run (use --retry-file)")
        return None
    return path


def _require_hosts(inv: Inventory, playbook: Any, opts: Any) -> list[tuple[str, list[str]]]:
    """Each play's hosts (for the progress line); an empty selection is an error, as in ping
    and audit (ansible-playbook only warns)."""
    from provision import engine

    try:
        plays = engine.list_hosts(inv, playbook, opts)
    except ProvisionError:  # a play's bad pattern: the run warns and skips that play
        return []
    if not any(hosts for _, hosts in plays):
        raise ConfigError("no hosts matched: check --limit, the plays' hosts: and the inventory")
    return plays


class _ApplyProgress:
    """Task results as they happen (stdout), and the progress line on stderr
    (provision/progress.py: play i/N, hosts done, the running task's age and stragglers,
    elapsed time), from start() until close()."""

    def __init__(self, show_diff: bool, verbose: bool, env: Environment, echo: bool = True) -> None:
        from provision import applylog, progress

        self.show_diff, self.verbose, self.env = show_diff, verbose, env
        self.echo = echo  # False under --format json: stdout holds only the document
        self.state = progress.ApplyState(time.monotonic())
        self.live: progress.Live | None = None
        self.groups = applylog.ResultGroups()
        self.reported: set[str] = set()  # hosts whose unreachable line is already out
        self.unpredicted: dict[str, None] = {}  # --check: "play / task" it could not predict
        self.bases = (os.path.dirname(shipped_playbook()), os.getcwd())  # for short file names

    def start(self, plays: Sequence[tuple[str, Sequence[str]]]) -> None:
        """The hosts are about to be contacted: draw from now on."""
        from provision import progress

        self.state = progress.ApplyState(time.monotonic())
        self.state.set_plays(plays)
        self.groups.set_plays(plays)
        self.live = progress.Live(
            self.state.line,
            lambda: bool(self.state.running),
            self.env.stderr,
            live=self.env.live,
            width=self.env.stderr_width,
        )

    def close(self) -> None:
        """The line erased; the results still held printed."""
        if self.live is not None:
            self.live.close()
        for group in self.groups.drain():
            if self.echo:
                self._print_group(group)

    def __call__(self, ev: Any) -> None:
        live = self.live
        if live is None:
            self._print(ev)
            return
        with live.lock:
            self.state.feed(ev, time.monotonic())
            # a start, or a long transfer's bytes, rate and ETA, only changes the line
            if ev.status != "start" and (ev.status != "progress" or self.verbose):
                with live.paused():
                    self._print(ev)
        live.draw()

    def _print(self, ev: Any) -> None:

        if ev.status == "start" or (ev.status == "progress" and not self.verbose):
            return
        printable = ev.status == "changed" or (self.verbose and ev.status in ("ok", "skipped"))
        printable = printable or (ev.result is not None and ev.result.shown)
        ready = self.groups.add(ev, printable)
        if ev.result is not None and ev.result.unpredictable:
            self.unpredicted.setdefault(f"{ev.play} / {ev.task}", None)
        if self.echo:
            self._print_event(ev)
            for group in ready:
                self._print_group(group)

    def _print_event(self, ev: Any) -> None:
        """What is printed the moment it happens: failures, unreachable hosts, retries."""
        from provision import applylog
        from provision.output.text import event_lines

        if ev.status in applylog.UNREACHED:
            self.reported.add(ev.host)
        for line in event_lines(ev, self.show_diff, self.bases):
            self.env.write(line)

    def _print_group(self, group: Any) -> None:
        from provision.output.text import group_lines

        for line in group_lines(group, self.show_diff):
            self.env.write(line)


def cmd_apply(args: argparse.Namespace, env: Environment) -> int:
    from provision import engine, output
    from provision.playbook import load_playbook

    if args.list_playbooks:
        env.write("\n".join(shipped_playbooks()))
        return 0
    path = _playbook_path(args.playbook)
    secrets = _vault_secrets(args)
    playbook = load_playbook(path, tuple(secrets))
    if args.syntax_check:
        env.write(f"playbook: {path}: syntax ok")
        return 0
    if not args.inventory and not args.list_tasks:
        raise ConfigError(NO_INVENTORY)
    progress = _ApplyProgress(args.diff, args.verbose > 0, env, echo=args.format == "text")
    opts = engine.ApplyOptions(
        check=args.check,
        diff=args.diff,
        limit=args.limit,
        tags=_split_tags(args.tags),
        skip_tags=_split_tags(args.skip_tags),
        extra_vars={
            **engine.parse_extra_vars(args.extra_vars, base_dir=os.getcwd()),
            **({"allow_reboot": True} if args.allow_reboot else {}),
            **({"force": True} if args.force else {}),
        },
        **_connection_options(args),
        become=args.become,
        default_user=args.user,
        default_key=args.private_key,
        limit_base_dir=os.getcwd(),
        verbosity=args.verbose,
        on_event=progress,
    )
    if args.list_tasks:
        env.write("\n".join(engine.list_tasks(playbook, opts)))
        return 0
    inv = _load(args, os.path.dirname(os.path.abspath(path)), secrets)
    hidden = _hide_vault_values(inv, playbook.vault_secrets())
    if hidden:
        opts.on_event = lambda ev: progress(_masked_event(ev, hidden))
    for warning in engine.unknown_settings(playbook, inv, opts.extra_vars):
        env.warn(f"warning: {warning}")
    if args.list_hosts:
        for play, hosts in engine.list_hosts(inv, playbook, opts):
            env.write(f"play: {play} ({len(hosts)} host{'s' if len(hosts) != 1 else ''})")
            env.write("\n".join(f"  {h}" for h in hosts))
        return 0
    plays = _require_hosts(inv, playbook, opts)
    retry_path = _retry_path(args, path, env)
    opts.become_password = _become_password(args)
    clock = time.monotonic()
    progress.start(plays)
    try:
        result = engine.run_loaded(inv, playbook, opts)
    finally:
        progress.close()
    result = _masked_result(result, hidden)
    elapsed = time.monotonic() - clock
    for warning in result.warnings:
        env.warn(f"warning: {warning}")
    for host, reason in result.host_reasons.items():
        if host not in progress.reported:  # said on stdout when it happened
            env.warn(f"{host}: {reason}")
    report = output.ApplyReport(result, elapsed, args.check)
    env.stdout.write(output.render_apply(report, args.format))
    if result.aborted:
        env.warn(f"aborted: {result.aborted}")
    retry = result.retry_text
    if retry and retry_path:
        try:
            _write_atomic(retry_path, retry)
            env.warn(f"failed and unreachable hosts: --limit @{retry_path}")
        except OSError as exc:  # checked before the run; the run's exit code stays
            env.warn(f"warning: {retry_path}: retry file not written: {exc}")
    if args.check and progress.unpredicted and args.format == "text":
        env.write(f"not predicted (run to know): {', '.join(progress.unpredicted)}")
    if args.check:
        env.warn("check mode: nothing was changed")
    return result.exit_code


# --------------------------------------------------------------------------- onboard


def _add_onboard(sub: Any, verbose: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "onboard",
        parents=[verbose],
        help="take a freshly installed workstation into the lab: key login, sudo, "
        "inventory, baseline, audit",
    )
    p.add_argument("host", metavar="HOST", help="the host's inventory name")
    p.add_argument(
        "-i", "--inventory", required=True, metavar="FILE", help="INI inventory to add it to"
    )
    p.add_argument("--group", required=True, help="inventory group the host joins")
    p.add_argument("-u", "--user", required=True, help="the user made at install time")
    p.add_argument("--address", metavar="ADDR", help="address to reach it at (default: HOST)")
    p.add_argument("--port", type=int, default=22, help="SSH port (default: 22)")
    p.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the user's password from the first line of FILE (default: prompt)",
    )
    keys = p.add_mutually_exclusive_group()
    keys.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="record the host key without asking (a changed key is still refused)",
    )
    keys.add_argument(
        "--host-key-fingerprint",
        metavar="SHA256:...",
        help="the fingerprint `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` shows on the "
        "machine's console",
    )
    p.add_argument(
        "--known-hosts",
        action="append",
        default=[],
        metavar="FILE",
        help="extra known_hosts file; the first one gets the new key (default: ~/.ssh/known_hosts)",
    )
    p.add_argument(
        "--private-key",
        metavar="FILE",
        help="the admin's key (default: ~/.ssh/id_rsa, id_ecdsa or id_ed25519, as provision uses)",
    )
    p.add_argument("--public-key", metavar="FILE", help="key to install (default: PRIVATE-KEY.pub)")
    p.add_argument(
        "--sudo-nopasswd",
        action="store_true",
        help="let the user sudo without a password (a drop-in in /etc/sudoers.d, visudo-checked)",
    )
    p.add_argument(
        "--disable-password-login",
        action="store_true",
        help="SSH keys only from now on (an sshd_config.d drop-in, rolled back if anything fails)",
    )
    p.add_argument("-p", "--playbook", metavar="FILE", help="baseline playbook (default: site.yml)")
    p.add_argument(
        "-e", "--extra-vars", action="append", default=[], metavar="VARS", help="as for apply"
    )
    p.add_argument("--allow-reboot", action="store_true", help="as for apply")
    p.add_argument("--no-apply", action="store_true", help="stop after the inventory step")
    p.add_argument("-T", "--timeout", type=float, default=10.0, metavar="S", help="connect timeout")
    p.add_argument(
        "--command-timeout", type=float, default=120.0, metavar="S", help="per-command timeout"
    )
    p.set_defaults(func=cmd_onboard)


class _OnboardPrompt:
    """onboard.Interaction on the terminal: the password from a file or getpass, asked once."""

    def __init__(self, password_file: str | None, user: str, host: str, env: Environment) -> None:
        self.password_file, self.user, self.host, self.env = password_file, user, host, env
        self._password: str | None = None

    def password(self) -> str:
        if self._password is None:
            if self.password_file:
                try:
                    with open(self.password_file, encoding="utf-8") as fh:
                        self._password = fh.readline().rstrip("\r\n")
                except OSError as exc:
                    raise ConfigError(
                        f"{self.password_file}: cannot read the password: {exc.strerror}"
                    ) from None
            else:
                self._password = getpass.getpass(f"password of {self.user}@{self.host}: ")
        return self._password

    def confirm_host_key(self, name: str, keytype: str, fingerprint: str) -> bool:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"{name}: unknown host key {keytype} {fingerprint} and no terminal to confirm it; "
                "pass --host-key-fingerprint (from `ssh-keygen -lf` on the console) or "
                "--accept-new-host-keys"
            )
        self.env.write(f"{name} offers host key {keytype} {fingerprint}.")
        self.env.write(
            "Compare it with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on its console."
        )
        self.env.stdout.write("Is it the same? [yes/no] ")
        self.env.stdout.flush()
        return input().strip().lower() in ("y", "yes")


def _onboard_request(args: argparse.Namespace) -> Any:
    from provision import onboard

    private_key = os.path.expanduser(args.private_key) if args.private_key else None
    private_key = private_key or onboard.default_private_key()
    return onboard.Request(
        name=args.host,
        hostname=args.address or args.host,
        port=args.port,
        user=args.user,
        group=args.group,
        inventory=args.inventory,
        private_key=private_key,
        public_key=os.path.expanduser(args.public_key or private_key + ".pub"),
        known_hosts=tuple(args.known_hosts),
        accept_new_host_keys=args.accept_new_host_keys,
        host_key_fingerprint=args.host_key_fingerprint,
        sudo_nopasswd=args.sudo_nopasswd,
        disable_password_login=args.disable_password_login,
        connect_timeout=args.timeout,
        command_timeout=args.command_timeout,
    )


def _onboard_common_argv(args: argparse.Namespace) -> list[str]:
    argv = ["-i", args.inventory, "-l", args.host, "-T", str(args.timeout)]
    for path in args.known_hosts:
        argv += ["--known-hosts", path]
    if args.private_key:
        argv += ["--private-key", args.private_key]
    return argv


def _onboard_apply_argv(args: argparse.Namespace) -> list[str]:
    """Step 6a as the apply command line it is: the playbook limited to the new host."""
    argv = ["apply", *_onboard_common_argv(args), "-p", args.playbook or shipped_playbook()]
    argv += ["--command-timeout", str(args.command_timeout)]
    for value in args.extra_vars:
        argv += ["-e", value]
    return argv + (["--allow-reboot"] if args.allow_reboot else [])


def _onboard_apply(args: argparse.Namespace, env: Environment, become_password: str | None) -> int:
    apply_args = build_parser().parse_args(_onboard_apply_argv(args))
    apply_args.verbose = args.verbose
    if become_password is None:
        return int(cmd_apply(apply_args, env))
    # apply reads the sudo password as a user gives it (--become-password-file), here from a
    # pipe: never on disk, never on a command line.
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, become_password.encode() + b"\n")
        os.close(write_end)
        apply_args.become_password_file = f"/dev/fd/{read_end}"
        return int(cmd_apply(apply_args, env))
    finally:
        os.close(read_end)


def _onboard_audit(args: argparse.Namespace, env: Environment) -> list[Any]:
    """Step 6b: audit the new host and print every check."""
    from provision import audit

    audit_args = build_parser().parse_args(["audit", *_onboard_common_argv(args)])
    inv = _load(audit_args)
    hosts = _select(inv, audit_args)
    settings = {h: _audit_settings(inv.hosts[h].vars, {}, h) for h in hosts}
    outcomes, _ = _fan_out(audit_args, env, audit.audit_task(settings), inv, hosts)
    reports = audit.assemble(outcomes, settings)
    text = audit.render(reports, "table", all_checks=True, colour=env.colour, width=env.width)
    env.write(text.rstrip("\n"))
    return reports


def cmd_onboard(args: argparse.Namespace, env: Environment) -> int:
    from provision import onboard

    req = _onboard_request(args)
    if not args.no_apply:  # a bad playbook or -e stops here, before the host is touched
        from provision.engine import parse_extra_vars
        from provision.playbook import load_playbook

        playbook = args.playbook or shipped_playbook()
        if not os.path.exists(playbook):
            raise ConfigError(f"{playbook}: playbook not found")
        load_playbook(playbook)
        parse_extra_vars(args.extra_vars, base_dir=os.getcwd())
    env.write(f"onboarding {req.name} ({req.user}@{req.hostname}:{req.port}) into [{req.group}]")
    ui = _OnboardPrompt(args.password_file, req.user, req.name, env)
    result = onboard.onboard(
        req, ui, on_step=lambda s: env.write(f"  {s.status:<8} {s.name}: {s.detail}")
    )
    reports: list[Any] = []
    code = 0
    if args.no_apply:
        result.steps.append(onboard.Step("baseline and audit", "skipped", "--no-apply"))
    else:
        env.write(f"\nbaseline: {' '.join(_onboard_apply_argv(args))}")
        apply_code = _onboard_apply(args, env, result.become_password)
        env.write(f"\naudit of {req.name}:")
        reports = _onboard_audit(args, env)
        code = onboard.exit_code(apply_code, reports)
        status = "done" if code == 0 else f"exit {code}"
        result.steps.append(onboard.Step("baseline and audit", status, "see above"))
    env.write("\nsummary:")
    for step in result.steps:
        env.write(f"  {step.status:<8} {step.name}")
    for todo in onboard.followups(reports):
        env.write(f"  needs    {todo}")
    return code


# --------------------------------------------------------------------------- completion, man


def cmd_completion(args: argparse.Namespace, env: Environment) -> int:
    from provision import cliref

    generate = cliref.bash if args.shell == "bash" else cliref.zsh
    env.stdout.write(generate(build_parser()))
    return 0


def cmd_man(args: argparse.Namespace, env: Environment) -> int:
    from provision import cliref

    env.stdout.write(cliref.man(build_parser(), EXIT_CODES))
    return 0


# --------------------------------------------------------------------------- entry point


# Bad input (an inventory, playbook or setting that cannot be used) exits 1, as in Ansible,
# except where 1 is a host result: the audit's 1 means "some WARN", so a script could not tell a
# broken inventory from a warning. There bad input takes 5, which no audit result uses.
_INPUT_ERROR_EXIT = {"audit": EXIT_BAD_OPTIONS}


def input_error_code(command: str | None, exc: ProvisionError) -> int:
    """The exit code for an error raised before or instead of host results."""
    if exc.exit_code == ProvisionError.exit_code:
        return _INPUT_ERROR_EXIT.get(command or "", exc.exit_code)
    return exc.exit_code


def _environment(args: argparse.Namespace) -> Environment:
    """The one look at the process: streams, terminal, width, colour. Only the audit has
    --color and -o (a report written to a file gets no colour)."""
    from provision.output import Environment

    color = getattr(args, "color", "auto")
    return Environment.of_process(color, to_file=getattr(args, "output", None) is not None)


def main(argv: Sequence[str] | None = None) -> int:
    from provision import config as configuration

    parser = build_parser()
    try:
        config = configuration.load()
    except ProvisionError as exc:  # before the command line is read: plain streams
        from provision.output import Environment

        Environment.of_process().warn(f"provision: error: {exc}")
        return exc.exit_code
    _configure(parser, config)
    args = parser.parse_args(argv)
    env = _environment(args)
    _setup_logging(args.verbose, env.stderr)
    if not getattr(args, "func", None):  # no command: a usage error like any other
        parser.print_help(env.stderr)
        return EXIT_BAD_OPTIONS
    try:
        _use_config(args, config, env)
        return int(args.func(args, env))
    except ProvisionError as exc:
        env.warn(f"provision: error: {exc}")
        return input_error_code(getattr(args, "command", None), exc)
    except KeyboardInterrupt:
        env.warn("provision: interrupted")
        return 130
    except BrokenPipeError:
        return 0
