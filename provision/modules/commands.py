"""command and shell: run something, guarded by ``creates`` / ``removes`` / ``unless``.

They cannot predict their effect, so they always report changed unless a guard says the work is
done (or the task has ``changed_when``), and ``--check`` skips them, as in Ansible.
"""

from __future__ import annotations

import shlex
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, Plan, Step, noop
from provision.shell import join, quote


class CommandModule(Module):
    """Runs argv without a shell: a variable holding ``; rm -rf /`` stays one argument."""

    name = "command"
    free_form = "cmd"
    failed_when_false_means_changed = True
    spec: tuple[Arg, ...] = (
        Arg("cmd"),
        Arg("argv", "list"),
        Arg("creates"),
        Arg("removes"),
        Arg("unless"),
        Arg("chdir"),
        Arg("stdin"),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if (args.get("cmd") is None) == (args.get("argv") is None):
            raise ArgError(f"module '{self.name}': give exactly one of 'cmd' or 'argv'")

    def command_line(self, args: dict[str, Any]) -> str:
        if args.get("argv") is not None:
            return join(args["argv"])
        try:
            return join(shlex.split(args["cmd"]))
        except ValueError as exc:
            raise ArgError(f"module 'command': cannot split cmd: {exc}") from None

    def state_script(self, args: dict[str, Any], ctx: Context) -> str | None:
        lines = []
        if args.get("creates"):
            lines.append(f"if [ -e {quote(args['creates'])} ]; then echo creates=1; fi")
        if args.get("removes"):
            lines.append(f"if [ -e {quote(args['removes'])} ]; then echo removes=1; fi")
        if args.get("unless"):
            # a read-only check by contract; it runs with the state reads, output discarded
            check = join(["sh", "-c", args["unless"]])
            lines.append(f"if {check} >/dev/null 2>&1 </dev/null; then echo unless=1; fi")
        return "\n".join(lines) or None

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        seen = set((state or "").split())
        if args.get("creates") and "creates=1" in seen:
            return noop(f"{args['creates']} exists (creates)", rc=0, stdout="", stderr="")
        if args.get("removes") and "removes=1" not in seen:
            return noop(f"{args['removes']} does not exist (removes)", rc=0, stdout="", stderr="")
        if args.get("unless") and "unless=1" in seen:
            return noop(f"`{args['unless']}` succeeded (unless)", rc=0, stdout="", stderr="")
        line = self.command_line(args)
        if args.get("chdir"):
            line = f"cd {quote(args['chdir'])} && {line}"
        stdin = args["stdin"].encode() if args.get("stdin") is not None else None
        return Plan(
            True,
            changes=[f"run {self.name}"],
            steps=[Step(line, stdin)],
            predictable=False,
            reason="command and shell tasks cannot predict their effect: skipped in check mode",
        )


class ShellModule(CommandModule):
    """Runs ``cmd`` through /bin/sh: pipes and redirections work; quote variables yourself
    (``{{ value | quote }}``)."""

    name = "shell"
    spec: tuple[Arg, ...] = (
        Arg("cmd", required=True),
        Arg("creates"),
        Arg("removes"),
        Arg("unless"),
        Arg("chdir"),
        Arg("stdin"),
        Arg("executable"),  # the shell that runs cmd (Ansible: /bin/sh unless given)
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        return None

    def command_line(self, args: dict[str, Any]) -> str:
        return join([args.get("executable") or "sh", "-c", args["cmd"]])


class RawModule(ShellModule):
    """Ansible's ``raw``: the string as the remote shell gets it, with no guard options
    (ansible.builtin.raw takes only ``executable``); for hosts without Python in Ansible, and
    every provision command is that already, so it differs from ``shell`` only in its options."""

    name = "raw"
    spec: tuple[Arg, ...] = (Arg("cmd", required=True), Arg("executable"))

    def command_line(self, args: dict[str, Any]) -> str:
        if args.get("executable"):
            return join([args["executable"], "-c", args["cmd"]])
        return str(args["cmd"])
