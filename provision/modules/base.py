"""The module framework: argument specs, pure plans, batched state reads, apply.

A module never decides on the host. It declares its arguments (checked before anything runs),
gives the engine a shell snippet that prints the state it needs (the engine batches the snippets
of many tasks into ONE remote command, framed by markers), turns arguments + that recorded state
into a :class:`Plan` (pure: the exact commands, or a no-op with its reason), and only then runs
the plan's commands. Keeping ``plan`` pure is what makes spec tests and ``--check`` exact.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provision.booleans import NotABoolean, boolean
from provision.errors import ProvisionError
from provision.modules.modes import is_symbolic, wanted_mode
from provision.shell import quote, verify_received
from provision.suggest import did_you_mean

if TYPE_CHECKING:
    from provision.fanout import Member


class ModuleError(ProvisionError):
    """A module refused to act (bad state on the host, invalid existing file); task fails."""


class ArgError(ProvisionError):
    """An argument has the wrong type or value; the caller adds file:line and the task."""


@dataclass(frozen=True)
class Arg:
    """One argument: ``type`` is one of str, int, bool, dict, list, mode, raw."""

    name: str
    type: str = "str"
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] = ()
    aliases: tuple[str, ...] = ()  # Ansible's other names for it (file: dest, name for path)


@dataclass
class Step:
    """One remote command of a plan; data travels on stdin, never in the command line.

    ``timeout``: the step's own bound in seconds, for work that takes minutes (a package install
    that first waits for the dpkg lock); the run's --command-timeout applies when it is longer."""

    script: str
    stdin: bytes | None = None
    timeout: float | None = None
    # the same step for ``stdin`` carried inside the command (a change batch's here-document)
    # instead of streamed: a command arrives whole or not at all, so it skips the check that
    # streamed data arrived whole (two programs per file written)
    inline: str | None = None

    def after(self, first: str) -> Step:
        """This step with the commands ``first`` run before it, in both of its forms."""
        inline = None if self.inline is None else f"{first}\n{self.inline}"
        return Step(f"{first}\n{self.script}", self.stdin, self.timeout, inline)


@dataclass
class Plan:
    """What a task will do: ``changed`` with ``changes`` and ``steps``, or a no-op ``reason``.

    ``predictable`` False means --check cannot say what would happen (command, shell): the task
    is then skipped in check mode with ``reason``.

    ``changed_if``: for steps that must run but may change nothing, whether they did, from
    their stdout (in --check, from ``""``); the result is ok with ``reason`` when not. Ansible's
    apt: a cache update beside packages is no change, an upgrade after it one only when apt-get
    says so. None: the steps' success is the change.
    """

    changed: bool
    reason: str = ""
    changes: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    diff: str | None = None
    predictable: bool = True
    result: dict[str, Any] = field(default_factory=dict)
    changed_if: Callable[[str], bool] | None = None


def noop(reason: str, **result: Any) -> Plan:
    return Plan(changed=False, reason=reason, result=dict(result))


class _Undefined:
    """What :attr:`Context.value_of` gives for a variable that is not defined."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Any = _Undefined()


@dataclass
class Context:
    """What a module may know besides its arguments (controller side)."""

    check: bool = False
    diff: bool = False
    no_log: bool = False
    base_dir: str = "."
    render: Callable[[str], str] | None = None  # renders template text with the task's vars
    peers: Member | None = None  # this host's handle on the run's image fan-out (docker_image)
    verbosity: int = 0  # the run's -v count (debug's ``verbosity``)
    # a variable's value (debug's ``var``), UNDEFINED for a variable the task cannot see
    value_of: Callable[[str], Any] | None = None
    role_path: str | None = None  # the directory of the role the task comes from, if any

    def search_dirs(self) -> tuple[str, ...]:
        """Where a relative controller file (copy/template ``src``, include_vars,
        with_fileglob) is looked for, first match wins: the task's role directory, then the
        play's (each with its ``files/``, ``templates/``, ``vars/`` first), as Ansible does."""
        return (self.role_path, self.base_dir) if self.role_path else (self.base_dir,)


def mode_text(value: Any) -> str:
    """Ansible's mode: "0644"/"644" strings are octal; an int is the mode's value; a symbolic
    mode ("u=rw,g=r", "u+x") is kept as written and resolved against the path's current mode
    by the plan (:func:`provision.modules.modes.wanted_mode`)."""
    if isinstance(value, bool):
        raise ArgError(f"mode {value!r} is not a mode")
    if isinstance(value, int):
        return format(value, "o")
    text = str(value).strip()
    if text and all(c in "01234567" for c in text) and len(text) <= 5:
        return format(int(text, 8), "o")
    if is_symbolic(text):
        return text
    raise ArgError(f"mode {value!r} is not an octal mode like '0644' or a symbolic one like 'u=rw'")


def coerce(arg: Arg, value: Any) -> Any:
    """Check and convert one rendered value; raises ArgError saying what is wrong."""
    if value is None:
        return None
    t = arg.type
    if t == "str":
        if isinstance(value, dict | list):
            raise ArgError(f"argument '{arg.name}' must be a string, got {type(value).__name__}")
        value = str(value)
    elif t == "int":
        if isinstance(value, bool):
            raise ArgError(f"argument '{arg.name}' must be an integer, got a boolean")
        try:
            value = int(str(value).strip())
        except ValueError:
            raise ArgError(f"argument '{arg.name}' must be an integer, got {value!r}") from None
    elif t == "bool":
        try:
            value = boolean(value)
        except NotABoolean:
            raise ArgError(f"argument '{arg.name}' must be a boolean, got {value!r}") from None
    elif t == "dict":
        if not isinstance(value, dict):
            raise ArgError(f"argument '{arg.name}' must be a mapping, got {type(value).__name__}")
    elif t == "list":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ArgError(f"argument '{arg.name}' must be a list, got {type(value).__name__}")
    elif t == "mode":
        try:
            value = mode_text(value)
        except ArgError as exc:
            raise ArgError(f"argument '{arg.name}': {exc}") from None
    if arg.choices and value not in arg.choices:
        choices = ", ".join(str(c) for c in arg.choices)
        raise ArgError(f"argument '{arg.name}' must be one of {choices}, got {value!r}")
    return value


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class Module:
    """Base class; subclasses set ``name`` and ``spec`` and implement ``plan``."""

    name = ""
    spec: tuple[Arg, ...] = ()
    free_form: str | None = None  # the argument a plain string value fills (command: ls -l)
    path_arg: str | None = None  # the one file the module reads and writes (see ``paths``)
    # -- the module protocol: what the engine asks of a module, declared here once --------
    # reads_state: ``state_script`` prints the host's state ``plan`` needs, so the read of a
    # task ahead joins the batched read; False for modules decided from variables alone
    # (fail, assert, set_fact, debug, meta, include_*), whose tasks the batch skips.
    reads_state = True
    # acts_on_controller: a changed plan is carried out by ``execute`` on the controller
    # (reboot waits and reconnects; docker_image streams between hosts), not step by step.
    acts_on_controller = False
    # conditions: arguments the engine evaluates like ``when`` before ``plan`` (assert's
    # ``that``): each becomes [(expression, held), ...], stopping at the first that fails.
    conditions: tuple[str, ...] = ()
    # failed_when_false_means_changed: a failed run that ``failed_when`` clears is "changed"
    # (command, shell: Ansible reports every command that ran as changed), else "ok".
    failed_when_false_means_changed = False
    sets_facts = False  # the result's ``ansible_facts`` become host variables (set_fact)
    # facts_are_templates: those variables are templates, rendered when read, like play vars
    # (include_vars' files); every other module's are values (set_fact has rendered its
    # arguments, fact modules read the host) and are never rendered again
    facts_are_templates = False
    # gathers_facts: those facts are host facts too, so they also join ``ansible_facts``
    # without their ``ansible_`` prefix, as a fact module's do (service_facts, setup)
    gathers_facts = False
    shows_result = False  # its ok result is printed without -v (debug)
    flow_control = False  # the engine carries out its ``free_form`` action (meta)
    # batches_changes: a changed plan's steps only write the paths ``paths`` names and take
    # moments, so the engine may send them with the next tasks' changes as one command
    # (provision/change_batch.py); modules that install, restart or wait never do
    batches_changes = False
    # includes: the kind of content the engine loads and runs in place of this task
    # ("tasks": include_tasks' file); the play iterator picks the loader by this kind.
    includes: str | None = None

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.spec if a.name == name), None)

    def canonical(self, args: dict[str, Any]) -> dict[str, Any]:
        """Arguments under their own names: an alias (``dest`` for ``path``) renamed, as
        Ansible's argument spec does; giving both names is an error."""
        out = dict(args)
        for a in self.spec:
            for alias in a.aliases:
                if alias in out:
                    if a.name in out:
                        raise ArgError(
                            f"module '{self.name}': '{alias}' and '{a.name}' are the same "
                            f"argument; give one of them"
                        )
                    out[a.name] = out.pop(alias)
        return out

    def check_static(self, args: dict[str, Any]) -> None:
        """Load-time checks: unknown and missing arguments, types of literal values."""
        for key in args:
            if self.arg(key) is None:
                known = ", ".join(a.name for a in self.spec)
                names = [n for a in self.spec for n in (a.name, *a.aliases)]
                hint = did_you_mean(str(key), names)
                raise ArgError(
                    f"module '{self.name}': unknown argument '{key}'{hint} (known: {known})"
                )
        for a in self.spec:
            if a.required and args.get(a.name) is None:
                raise ArgError(f"module '{self.name}': missing required argument '{a.name}'")
            value = args.get(a.name)
            if value is not None and not is_template(value) and not _has_template(value):
                coerce(a, value)
        self.check_combination(args)

    def finalize(self, args: dict[str, Any]) -> dict[str, Any]:
        """Run-time: rendered arguments -> typed arguments with defaults filled in."""
        out: dict[str, Any] = {}
        for a in self.spec:
            value = args.get(a.name)
            if value is None:
                if a.required:
                    raise ArgError(f"module '{self.name}': missing required argument '{a.name}'")
                out[a.name] = a.default
            else:
                out[a.name] = coerce(a, value)
        self.check_combination(out)
        return out

    def check_combination(self, args: dict[str, Any]) -> None:
        """Cross-argument rules (exactly one of content/src...); raise ArgError."""

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Controller-side work before the state read (read src files, render templates)."""
        return args

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        """The host paths this task's state read depends on and its change writes, so that a
        change drops only the cached reads it can affect: the ``path_arg`` argument's value for
        the modules that work on one file; None (the default): anything, so a change drops
        every cached read and this task's read is dropped by any change."""
        return (args[self.path_arg],) if self.path_arg else None

    def read_paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        """The host paths this task's state read depends on: a change under none of them
        leaves the cached read as it is. :meth:`paths` by default (the file modules read what
        they write); a module whose change may reach anywhere (a package) but whose read looks
        at known places says so here."""
        return self.paths(args)

    def changes_below(self, args: dict[str, Any]) -> bool:
        """Whether a change to a path of :meth:`paths` may alter what lies under it (a removed
        or replaced directory does); False lets the reads of paths inside stay cached."""
        return True

    def state_script(self, args: dict[str, Any], ctx: Context) -> str | None:
        """A POSIX sh snippet printing the state ``plan`` needs; None when none is needed."""
        return None

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        raise NotImplementedError

    def execute(
        self,
        args: dict[str, Any],
        plan: Plan,
        session: Any,
        reconnect: Callable[[], None],
        become: bool | None,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """Carry out a changed plan on the controller (``acts_on_controller`` modules); the
        result's data. Raise ModuleError to fail, TaskSkipped to skip."""
        raise NotImplementedError(f"module '{self.name}' does not act on the controller")

    def counters(self, data: dict[str, Any]) -> dict[str, float]:
        """Recap counters beyond Ansible's (``HostStats`` fields such as ``pulls``) that a
        task's result data adds to; none by default."""
        return {}


def _has_template(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_template(v) or is_template(k) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return is_template(value)


# -- path state: one probe shared by file, copy, template and json_merge ------------------------


def path_probe(path: str, *, content: bool = False) -> str:
    """Print ``type=``, ``owner=``/``group=``/``mode=`` and, for files, ``sha256=`` (and the
    content in base64 when asked) for ``path``; never fails, whatever the path is."""
    p = quote(path)
    lines = [
        f"p={p}",
        'if [ -L "$p" ]; then echo type=link; elif [ -d "$p" ]; then echo type=directory; '
        'elif [ -f "$p" ]; then echo type=file; elif [ -e "$p" ]; then echo type=other; '
        "else echo type=absent; fi",
        # One stat and one sha256sum per path (was five stats, a subshell and cut): on a
        # converged run these processes are most of the hosts' work.
        "if [ -e \"$p\" ]; then stat --printf 'owner=%U\\nuid=%u\\ngroup=%G\\ngid=%g\\nmode=%a\\n' "
        '"$p"; fi',
        'if [ -f "$p" ]; then printf "sha256="; sha256sum < "$p"; fi',
    ]
    if content:
        lines.append('if [ -f "$p" ]; then echo "content=$(base64 -w0 < "$p")"; fi')
    return "\n".join(lines)


def key_values(text: str | None) -> dict[str, str]:
    """The ``key=value`` lines a state snippet printed -> dict (a later key wins; lines
    without ``=`` are not state)."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value
    return out


def parse_probe(text: str | None) -> dict[str, str]:
    """``key=value`` lines of :func:`path_probe` -> dict (``content`` decoded stays base64)."""
    out = key_values(text)
    if "sha256" in out:  # sha256sum prints "HASH  -"
        out["sha256"] = out["sha256"].split()[0] if out["sha256"].split() else ""
    out.setdefault("type", "absent")
    return out


def content_of(state: dict[str, str]) -> bytes | None:
    if "content" not in state:
        return None
    return base64.b64decode(state["content"])


def attr_changes(
    path: str, state: dict[str, str], owner: str | None, group: str | None, mode: str | None
) -> tuple[list[str], list[str]]:
    """(changes, commands) that bring owner, group and mode of an existing path in line; a
    symbolic mode is resolved against the path's mode first."""
    changes: list[str] = []
    commands: list[str] = []
    p = quote(path)
    mode = wanted_mode(mode, state)
    if owner is not None and owner not in (state.get("owner"), state.get("uid")):
        changes.append(f"owner {state.get('owner')} -> {owner}")
        commands.append(f"chown {quote(owner)} {p}")
    if group is not None and group not in (state.get("group"), state.get("gid")):
        changes.append(f"group {state.get('group')} -> {group}")
        commands.append(f"chgrp {quote(group)} {p}")
    if mode is not None and int(mode, 8) != int(state.get("mode", "0") or "0", 8):
        changes.append(f"mode {state.get('mode')} -> {mode}")
        commands.append(f"chmod {quote(mode)} {p}")
    return changes, commands


def unified_diff(path: str, old: bytes | None, new: bytes | None, no_log: bool) -> str:
    """A unified diff for --diff; secrets (no_log) and binary content are never shown."""
    if no_log:
        return f"--- {path}: diff suppressed (no_log: true)\n"
    if (old is not None and b"\0" in old) or (new is not None and b"\0" in new):
        return f"--- {path}: binary content differs\n"
    before = [] if old is None else old.decode("utf-8", "replace").splitlines(keepends=True)
    after = [] if new is None else new.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(
        before,
        after,
        fromfile="/dev/null" if old is None else f"{path} (before)",
        tofile="/dev/null" if new is None else f"{path} (after)",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def atomic_write_script(
    path: str,
    data: bytes,
    *,
    owner: str | None,
    group: str | None,
    mode: str | None,
    backup: bool,
    validate: str | None = None,
    copied_from: tuple[str, str] | None = None,
    check_received: bool = True,
) -> str:
    """Write stdin (``data``) to ``path`` atomically: temp file beside it, attributes, optional
    backup of the old file, rename. Without an explicit mode a replaced file keeps its own
    attributes; ``mode`` is octal (a symbolic one resolved first: ``modes.wanted_mode``).

    ``copied_from`` (copy's ``remote_src``): (a file on the host, its sha256 as read) is copied
    instead of stdin, with its mode, as Ansible's copy does (a new file gets 0644); a file that
    no longer has that sha256 replaces nothing.

    The script knows ``data``'s length and sha256 and renames only a temp file that matches
    both: a dropped connection or a killed controller ends stdin early, and ``cat`` cannot tell
    that from the end of the data, so without the check the partial file would replace the old
    one. On any failure or signal the temp file is removed and the old file stays as it was.

    ``check_received`` False leaves that check out, for data that travels inside the command
    (:attr:`Step.inline`).

    ``validate`` (Ansible's copy/template ``validate``: a command with ``%s``) checks the
    complete temp file before it replaces anything; its failure leaves the old file.
    """
    p = quote(path)
    size, digest = len(data), hashlib.sha256(data).hexdigest()
    # a replaced file keeps what the task does not set; a new one is 0644 unless mode is set
    # (no command for what is set below: each is a process on the host, per file written)
    kept = []
    if owner is None or group is None:
        kept.append('chown --reference="$d" "$t"')
    if mode is None:
        kept.append('chmod --reference="$d" "$t"')
    fresh = 'chmod 644 "$t"' if mode is None else ":"
    fill = [
        'cat > "$t"',
        *([verify_received('"$t"', size, digest, '"$d"')] if check_received else []),
        f'if [ -e "$d" ]; then {"; ".join(kept) or ":"}; else {fresh}; fi',
    ]
    if copied_from is not None:
        src, sha = copied_from
        changed = quote(f"provision: {src} changed while it was copied; ")
        fill = [
            f'cp --preserve=mode,timestamps -- {quote(src)} "$t"',
            f'[ "$(sha256sum < "$t" | cut -d" " -f1)" = {quote(sha)} ] || '
            f'{{ echo {changed}"$d" left unchanged >&2; exit 1; }}',
            'if [ ! -e "$d" ]; then chmod 644 "$t"; fi',
        ]
    parts = [
        "set -e",
        f"d={p}",
        f"t=$(mktemp {quote(posixpath.dirname(path) or '.')}/.provision.XXXXXX)",
        "trap 'rm -f \"$t\"' EXIT",
        "trap 'exit 1' HUP INT TERM PIPE",
        *fill,
    ]
    if owner is not None:
        parts.append(f'chown {quote(owner)} "$t"')
    if group is not None:
        parts.append(f'chgrp {quote(group)} "$t"')
    if mode is not None:
        parts.append(f'chmod {quote(mode)} "$t"')
    if validate is not None:
        # the user's command with the temp file for %s; its output explains a refusal
        check = validate.replace("%s", '"$t"')
        parts.append(
            f"if ! {check} >&2; then echo {quote('provision: validate refused the new ')}"
            f'"$d" >&2; exit 1; fi'
        )
    if backup:
        parts.append(
            'if [ -f "$d" ]; then b="$d.$(date +%Y-%m-%d@%H:%M:%S)~"; '
            'cp -p "$d" "$b"; echo "backup=$b"; fi'
        )
    parts.append('mv -f "$t" "$d"')
    parts.append("trap - EXIT")
    return "\n".join(parts)
