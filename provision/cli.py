"""Command line: parse, call, render, exit status. The only module that prints or exits."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from provision import __version__
from provision.errors import ConfigError, ProvisionError

if TYPE_CHECKING:
    from provision.executor import HostOutcome, RunOptions
    from provision.inventory import Inventory
    from provision.target import ConnSpec

log = logging.getLogger("provision")

EXIT_USAGE = 1  # Ansible's "error" code: bad input, nothing ran


# --------------------------------------------------------------------------- argument parsing


def _add_inventory(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "-i",
        "--inventory",
        required=required,
        metavar="FILE",
        help="Ansible INI inventory (group_vars/ and host_vars/ beside it are read too)",
    )
    p.add_argument(
        "-l",
        "--limit",
        metavar="PATTERN",
        help="only these hosts: a:b union, a:&b intersection, a:!b exclusion, globs, ~regex, @file",
    )


def _add_connection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("-u", "--user", help="remote user when the inventory names none")
    g.add_argument("--private-key", metavar="FILE", help="SSH private key file")
    g.add_argument(
        "-f", "--forks", type=int, default=64, help="hosts worked on at once (default: 64)"
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
        default=10.0,
        metavar="S",
        help="connect, banner and auth timeout in seconds (default: 10)",
    )
    g.add_argument(
        "--command-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="timeout for each remote command in seconds (default: 120)",
    )
    g.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="S",
        help="overall time limit for the run; unfinished hosts end as 'timed out'",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provision",
        description="Set up and audit the GPU workstations of a research lab over SSH.",
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
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    p = sub.add_parser(
        "inventory", parents=[verbose], help="show an inventory as ansible-inventory would"
    )
    p.add_argument("-i", "--inventory", required=True, metavar="FILE")
    p.add_argument("-l", "--limit", metavar="PATTERN")
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
    p.set_defaults(func=cmd_inventory)

    p = sub.add_parser(
        "ping", parents=[verbose], help="connect to each host and run `true` (like ansible -m ping)"
    )
    _add_inventory(p, required=False)
    _add_connection(p)
    p.set_defaults(func=cmd_ping)

    p = sub.add_parser(
        "run", parents=[verbose], help="run a shell command on each host (like ansible -a)"
    )
    _add_inventory(p, required=True)
    _add_connection(p)
    p.add_argument("shell_command", metavar="COMMAND", help="command line, run by the login shell")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "audit",
        parents=[verbose],
        help="grade driver, CUDA, GPUs, Docker and disk per host (no inventory: this machine)",
    )
    p.add_argument("inventory_file", nargs="?", metavar="INVENTORY", help="inventory (optional)")
    _add_inventory(p, required=False)
    _add_connection(p)
    _add_audit_options(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "apply",
        parents=[verbose],
        help="bring hosts to the lab baseline with a playbook (like ansible-playbook)",
    )
    p.add_argument("inventory_file", nargs="?", metavar="INVENTORY", help="inventory file")
    _add_inventory(p, required=False)
    _add_connection(p)
    _add_apply_options(p)
    p.set_defaults(func=cmd_apply)
    return parser


def _add_apply_options(p: argparse.ArgumentParser) -> None:
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
        "--retry-file",
        metavar="FILE",
        help="where failed and unreachable hosts are listed for --limit @FILE "
        "(default: PLAYBOOK-NAME.retry in the working directory)",
    )


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit")
    g.add_argument("--local", action="store_true", help="audit this machine, without SSH")
    g.add_argument("--details", action="store_true", help="every check of every host")
    g.add_argument(
        "--format",
        choices=("table", "json", "csv", "markdown"),
        default="table",
        help="report format (default: table)",
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
        help="colour the table (default: on a terminal)",
    )


# --------------------------------------------------------------------------- shared plumbing


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # ssh.py quiets paramiko (a traceback per failed handshake); -vvv shows its protocol log.
    if verbosity >= 3:
        logging.getLogger("paramiko").setLevel(logging.DEBUG)


def _load(args: argparse.Namespace) -> Inventory:
    from provision.inventory import load_inventory, localhost_inventory

    path = getattr(args, "inventory", None)
    return load_inventory(path) if path else localhost_inventory()


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


def _run_options(args: argparse.Namespace) -> RunOptions:
    from provision.executor import RunOptions

    if args.forks < 1:
        raise ConfigError("--forks must be at least 1")
    return RunOptions(
        forks=args.forks,
        connect_timeout=args.timeout,
        command_timeout=args.command_timeout,
        deadline=args.deadline,
        known_hosts=tuple(args.known_hosts),
        accept_new_host_keys=args.accept_new_host_keys,
        become_password=_become_password(args),
    )


class _Progress:
    """'[done/total]' on stderr while hosts answer, on a terminal only; reports go to stdout."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.live = stream.isatty()

    def __call__(self, outcome: HostOutcome) -> None:
        self.done += 1
        log.info("%s: %s %s", outcome.host, outcome.state.value, outcome.reason)
        if self.live:
            self.stream.write(f"\r[{self.done}/{self.total}] {outcome.host:<40.40}")
            self.stream.flush()

    def close(self) -> None:
        if self.live and self.done:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def _fan_out(
    args: argparse.Namespace,
    task: Callable[[Any], Any],
    inv: Inventory | None = None,
    hosts: Sequence[str] | None = None,
) -> tuple[dict[str, HostOutcome], float]:
    from provision.executor import run_hosts

    inv = inv or _load(args)
    hosts = hosts if hosts is not None else _select(inv, args)
    specs = _specs(inv, hosts, args)
    opts = _run_options(args)
    progress = _Progress(len(specs))
    start = time.monotonic()
    try:
        outcomes = run_hosts(specs, task, opts, on_done=progress)
    finally:
        progress.close()
    return outcomes, time.monotonic() - start


# --------------------------------------------------------------------------- commands


def cmd_inventory(args: argparse.Namespace) -> int:
    import json

    inv = _load(args)
    if args.list:
        data = inv.to_list_json()
        if args.limit:
            keep = set(_select(inv, args))
            data["_meta"]["hostvars"] = {
                h: v for h, v in data["_meta"]["hostvars"].items() if h in keep
            }
        print(json.dumps(data, indent=4, sort_keys=True))
    elif args.host:
        if args.host not in inv.hosts:
            raise ConfigError(f"unknown host {args.host!r}: not in {inv.path}")
        print(
            json.dumps(
                inv.to_list_json()["_meta"]["hostvars"].get(args.host, {}), indent=4, sort_keys=True
            )
        )
    else:
        if args.graph != "all" and args.graph not in inv.groups:
            raise ConfigError(f"unknown group {args.graph!r}: not in {inv.path}")
        print(inv.graph(args.graph))
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    from provision import adhoc

    outcomes, elapsed = _fan_out(args, adhoc.ping_task)
    print(adhoc.render_ping(outcomes))
    print(adhoc.summary(outcomes, elapsed), file=sys.stderr)
    return adhoc.exit_code(outcomes)


def cmd_run(args: argparse.Namespace) -> int:
    from provision import adhoc

    outcomes, elapsed = _fan_out(args, adhoc.command_task(args.shell_command))
    print(adhoc.render_run(outcomes))
    print(adhoc.summary(outcomes, elapsed), file=sys.stderr)
    return adhoc.exit_code(outcomes)


def _audit_settings(hostvars: dict[str, Any], overrides: dict[str, Any], host: str) -> Any:
    from provision.audit import settings_for

    try:
        return settings_for(hostvars, overrides)
    except ConfigError as exc:
        raise ConfigError(f"host {host}: {exc}") from None


def cmd_audit(args: argparse.Namespace) -> int:
    from provision import audit

    if args.inventory_file and args.inventory:
        raise ConfigError("give the inventory once: either as an argument or with -i")
    args.inventory = args.inventory or args.inventory_file
    if args.local and args.inventory:
        raise ConfigError("--local audits this machine: drop the inventory, or drop --local")
    overrides = {
        "audit_min_driver": args.min_driver,
        "audit_required_cuda": args.require_cuda,
        "audit_expected_gpus": args.expect_gpus,
        "audit_required_images": args.require_image,
        "audit_disk_paths": args.disk_path,
    }
    if args.inventory:
        inv = _load(args)
        hosts = _select(inv, args)
        settings = {h: _audit_settings(inv.hosts[h].vars, overrides, h) for h in hosts}
        outcomes, _ = _fan_out(args, audit.audit_task(settings), inv, hosts)
        reports = audit.assemble(outcomes, settings)
    else:
        local = _audit_settings({}, overrides, "localhost")
        settings = {"localhost": local}
        facts = audit.audit_local(local)
        reports = audit.add_drift([audit.host_report("localhost", "ok", facts, "", local)])
    for warning in sorted({w for st in settings.values() for w in st.warnings}):
        print(f"warning: {warning}", file=sys.stderr)
    color = args.color == "always" or (
        args.color == "auto" and args.output is None and sys.stdout.isatty()
    )
    fail_on = args.fail_on or "warn"
    report = audit.render(reports, args.format, details=args.details, colour=color, fail_on=fail_on)
    if not report.endswith("\n"):
        report += "\n"
    if args.output:
        _write_atomic(args.output, report)
    else:
        sys.stdout.write(report)
    return audit.exit_code(reports, fail_on)


def _write_atomic(path: str, text: str) -> None:
    """Write a local report or retry file whole or not at all: temp file, then rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


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


class _ApplyProgress:
    """Task results as they happen (stdout), and a live 'host: task i/n' line on a terminal."""

    def __init__(self, show_diff: bool, verbose: bool, stream: TextIO = sys.stderr) -> None:
        self.show_diff, self.verbose, self.stream = show_diff, verbose, stream
        self.live = stream.isatty()

    def __call__(self, ev: Any) -> None:
        if ev.status == "start":
            if self.live:
                self.stream.write(f"\r{ev.host:<24.24} {ev.index}/{ev.total} {ev.task:<40.40}")
                self.stream.flush()
            return
        if self.live:
            self.stream.write("\r" + " " * 70 + "\r")
        result = ev.result
        if ev.status == "retrying":  # the message says "retrying (N left): why"
            print(f"[{ev.host}] {ev.play} / {ev.task}: {result.msg}", flush=True)
            return
        if ev.status in ("changed", "failed") or self.verbose:
            msg = f" {result.msg}" if result is not None and result.msg else ""
            ignored = " (ignored)" if result is not None and result.ignored else ""
            print(f"{ev.status}: [{ev.host}] {ev.play} / {ev.task}{ignored}{msg}", flush=True)
        if self.show_diff and result is not None and result.diff:
            print(result.diff.rstrip("\n"), flush=True)


def cmd_apply(args: argparse.Namespace) -> int:
    from provision import engine
    from provision.playbook import load_playbook

    if args.inventory_file and args.inventory:
        raise ConfigError("give the inventory once: either as an argument or with -i")
    args.inventory = args.inventory or args.inventory_file
    path = args.playbook or shipped_playbook()
    if not os.path.exists(path):
        raise ConfigError(
            f"{path}: playbook not found"
            + ("" if args.playbook else "; name one with -p/--playbook")
        )
    playbook = load_playbook(path)
    if args.syntax_check:
        print(f"playbook: {path}: syntax ok")
        return 0
    if not args.inventory and not args.list_tasks:
        raise ConfigError("no inventory: give one as an argument or with -i")
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
        forks=max(1, args.forks),
        become=args.become,
        known_hosts=tuple(args.known_hosts),
        accept_new_host_keys=args.accept_new_host_keys,
        connect_timeout=args.timeout,
        command_timeout=args.command_timeout,
        default_user=args.user,
        default_key=args.private_key,
        limit_base_dir=os.getcwd(),
        on_event=_ApplyProgress(args.diff, args.verbose > 0),
    )
    if args.list_tasks:
        print("\n".join(engine.list_tasks(playbook, opts)))
        return 0
    inv = _load(args)
    for warning in engine.unknown_settings(playbook, inv, opts.extra_vars):
        print(f"warning: {warning}", file=sys.stderr)
    if args.list_hosts:
        for play, hosts in engine.list_hosts(inv, playbook, opts):
            print(f"play: {play} ({len(hosts)} host{'s' if len(hosts) != 1 else ''})")
            print("\n".join(f"  {h}" for h in hosts))
        return 0
    opts.become_password = _become_password(args)
    result = engine.run_loaded(inv, playbook, opts)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for host, reason in result.host_reasons.items():
        print(f"{host}: {reason}", file=sys.stderr)
    print("\n" + "\n".join(engine.recap_lines(result.stats)))
    print("\n" + engine.recap_table(result.stats))
    if result.aborted:
        print(f"aborted: {result.aborted}", file=sys.stderr)
    retry = result.retry_text
    if retry:
        retry_path = args.retry_file or (os.path.splitext(os.path.basename(path))[0] + ".retry")
        _write_atomic(retry_path, retry)
        print(f"failed and unreachable hosts: --limit @{retry_path}", file=sys.stderr)
    if args.check:
        print("check mode: nothing was changed", file=sys.stderr)
    return result.exit_code


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except ProvisionError as exc:
        print(f"provision: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("provision: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
