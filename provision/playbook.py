"""Playbooks in Ansible's shape, loaded and validated before anything runs (pure).

Every mapping keeps the line it started on, so each error reads
``FILE:LINE: task 'NAME': what is wrong`` and points at the task itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from provision.errors import ProvisionError
from provision.modules import MODULES, module_named
from provision.modules.base import ArgError, Module, is_template
from provision.vault import (
    Locked,
    VaultedText,
    VaultError,
    VaultSecret,
    as_secrets,
    decrypt,
    decrypt_text,
    is_vaulted,
    secrets_in,
)

TASK_KEYWORDS = {
    "name",
    "when",
    "notify",
    "tags",
    "become",
    "register",
    "loop",
    "ignore_errors",
    "changed_when",
    "failed_when",
    "no_log",
    "args",
    "vars",
    "listen",
    "retries",
    "delay",
    "until",
    "backoff",
    "throttle",
    "check_mode",
}
PLAY_KEYWORDS = {
    "name",
    "hosts",
    "vars",
    "become",
    "become_user",
    "serial",
    "max_fail_percentage",
    "tasks",
    "handlers",
    "gather_facts",
    "vars_files",
    "defaults",
}
UNSUPPORTED_PLAY = {"roles", "pre_tasks", "post_tasks", "include"}
IMPORT_KEYWORDS = {"import_playbook", "name"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PlaybookError(ProvisionError):
    """An invalid playbook; the message starts with ``FILE:LINE:``."""


class LineDict(dict):
    """A mapping that remembers the (1-based) line it started on, and each key's line."""

    line: int = 0
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        """The line of ``key`` (the mapping's own line when unknown)."""
        return getattr(self, "key_lines", {}).get(key, self.line)


# libyaml's parser when PyYAML has it (about 10x faster on the shipped playbooks); the same
# constructors, and its nodes carry the same line marks.
_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise PlaybookError(
                f"{loader.name}:{key_node.start_mark.line + 1}: duplicate key '{key}'"
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _construct_vault(loader: _LineLoader, node: yaml.ScalarNode) -> Any:
    """An inline ``!vault |`` value (play vars, vars_files): decrypted with the passwords
    given, else kept locked and refused in one line where it is used (as in the inventory)."""
    text = str(loader.construct_scalar(node))
    where = f"{loader.name}:{node.start_mark.line + 1}"
    secrets: tuple[VaultSecret, ...] = getattr(loader, "vault_secrets", ())
    if not secrets:
        return Locked(text, where)
    try:
        return VaultedText(decrypt(text, secrets).decode("utf-8"), text)
    except (VaultError, UnicodeDecodeError) as exc:
        return Locked(text, where, str(exc))


_LineLoader.add_constructor("!vault", _construct_vault)


@dataclass
class Task:
    name: str
    module: str
    args: dict[str, Any]
    file: str
    line: int
    when: Any = None
    notify: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    become: bool | None = None
    register: str | None = None
    loop: Any = None
    ignore_errors: bool = False
    changed_when: Any = None
    failed_when: Any = None
    no_log: bool = False
    vars: dict[str, Any] = field(default_factory=dict)
    listen: list[str] = field(default_factory=list)
    retries: int | float | str | None = None  # a template is rendered when the task runs
    delay: float | str | None = None
    until: Any = None
    backoff: bool = False
    throttle: int | str = 0  # 0: no limit; a template is rendered when the task runs
    check_mode: bool | None = None  # None: the run's --check; False: run even in --check

    @property
    def where(self) -> str:
        """``FILE:LINE: task 'NAME'``: the prefix of every message about this task."""
        return f"{self.file}:{self.line}: task '{self.name}'"


@dataclass
class Play:
    name: str
    hosts: str
    file: str
    line: int
    vars: dict[str, Any] = field(default_factory=dict)  # play vars, vars_files merged over them
    defaults: dict[str, Any] = field(default_factory=dict)  # lowest precedence of all
    vars_files: list[str] = field(default_factory=list)  # as written, for messages
    become: bool | None = None
    become_user: str | None = None
    serial: list[int | str] = field(default_factory=list)
    serial_template: Any = None  # a templated ``serial``, rendered when the play runs
    max_fail_percentage: float | None = None
    gather_facts: bool = True
    tasks: list[Task] = field(default_factory=list)
    handlers: list[Task] = field(default_factory=list)

    @property
    def base_dir(self) -> str:
        """The directory of the file this play is written in (``files/``, ``templates/``)."""
        return os.path.dirname(os.path.abspath(self.file))


@dataclass
class Playbook:
    path: str
    plays: list[Play]

    @property
    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def vault_secrets(self) -> list[str]:
        """Every vault-decrypted string in the plays' variables, to mask them in output."""
        found: list[str] = []
        for play in self.plays:
            found += secrets_in(play.vars) + secrets_in(play.defaults)
        return found


def _bool(value: Any, where: str, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "on", "1", "y"):
        return True
    if text in ("no", "false", "off", "0", "n"):
        return False
    raise PlaybookError(f"{where}: '{key}' must be a boolean, got {value!r}")


def _str_list(value: Any, where: str, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return [str(v) for v in value]
    raise PlaybookError(f"{where}: '{key}' must be a string or a list of strings")


def load_playbook(path: str, secrets: tuple[VaultSecret, ...] = ()) -> Playbook:
    """Read and validate a playbook (and every playbook it imports); raises
    :class:`PlaybookError` naming file:line. ``secrets`` open vault-encrypted vars files and
    ``!vault`` values."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise PlaybookError(f"{path}: cannot read playbook: {exc.strerror}") from None
    return parse_playbook(text, path, secrets)


def parse_playbook(
    text: str, path: str = "<playbook>", secrets: tuple[VaultSecret, ...] = ()
) -> Playbook:
    """Parse playbook text; ``path`` is used in messages and to find imported playbooks and
    vars files (relative to its directory). Reads nothing else."""
    return Playbook(path, _parse_plays(text, path, (os.path.abspath(path),), (), secrets))


def _load_yaml(text: str, path: str, secrets: tuple[VaultSecret, ...] = ()) -> Any:
    if is_vaulted(text):  # a whole file encrypted with ansible-vault (vars_files)
        try:
            text = decrypt_text(text, secrets, f"{path}:1")
        except VaultError as exc:
            raise PlaybookError(str(exc)) from None
    loader = _LineLoader(text)
    loader.name = path
    loader.vault_secrets = secrets
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        raise PlaybookError(f"{path}:{line}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise PlaybookError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _parse_plays(
    text: str,
    path: str,
    open_files: tuple[str, ...],
    links: tuple[str, ...],
    secrets: tuple[VaultSecret, ...] = (),
) -> list[Play]:
    """The plays of one file, imports inlined. ``open_files`` are the absolute paths being
    read (the import chain), ``links`` the ``FILE:LINE`` of each import on the way here."""
    data = _load_yaml(text, path, secrets)
    if not isinstance(data, list):
        raise PlaybookError(f"{path}:1: a playbook is a list of plays")
    plays: list[Play] = []
    for index, raw in enumerate(data, 1):
        if not isinstance(raw, LineDict):
            raise PlaybookError(f"{path}: play {index} is not a mapping")
        if "import_playbook" in raw:
            plays.extend(_import(raw, path, open_files, links, secrets))
        else:
            plays.append(_parse_play(raw, path, index, secrets))
    return plays


def _import(
    raw: LineDict,
    path: str,
    open_files: tuple[str, ...],
    links: tuple[str, ...],
    secrets: tuple[VaultSecret, ...] = (),
) -> list[Play]:
    """``- import_playbook: FILE``: that file's plays, here (Ansible's static import)."""
    line = raw.line_of("import_playbook")
    where = f"{path}:{line}: import_playbook"
    for key in raw:
        if key not in IMPORT_KEYWORDS:
            raise PlaybookError(
                f"{path}:{raw.line_of(key)}: import_playbook: unknown keyword '{key}'"
            )
    target = raw["import_playbook"]
    if not isinstance(target, str) or not target.strip():
        raise PlaybookError(f"{where}: expected a file name")
    if is_template(target):
        raise PlaybookError(f"{where}: templates are not supported in import_playbook")
    target_path = _relative(path, target)
    chain = (*links, f"{path}:{line}")
    if os.path.abspath(target_path) in open_files:
        raise PlaybookError(f"{where}: import cycle: {' -> '.join(chain)} -> {target_path}")
    try:
        with open(target_path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise PlaybookError(f"{where}: cannot read {target_path}: {exc.strerror}") from None
    opened = (*open_files, os.path.abspath(target_path))
    return _parse_plays(text, target_path, opened, chain, secrets)


def _relative(path: str, name: str) -> str:
    """``name`` relative to the directory of the file ``path`` (absolute names stay)."""
    return os.path.normpath(os.path.join(os.path.dirname(path), os.path.expanduser(name)))


def _vars_file(
    path: str, name: Any, where: str, key: str, secrets: tuple[VaultSecret, ...] = ()
) -> dict[str, Any]:
    """One vars/defaults file (a YAML mapping), relative to the playbook file ``path``."""
    if not isinstance(name, str) or not name.strip():
        raise PlaybookError(f"{where}: '{key}' entries must be file names, got {name!r}")
    if is_template(name):
        raise PlaybookError(f"{where}: '{key}': templates are not supported in file names")
    file_path = _relative(path, name)
    try:
        with open(file_path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise PlaybookError(f"{where}: '{key}': cannot read {file_path}: {exc.strerror}") from None
    data = _load_yaml(text, file_path, secrets)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PlaybookError(f"{file_path}:1: a {key} file must hold a mapping of variables")
    return as_secrets(dict(data)) if is_vaulted(text) else dict(data)


def _defaults(
    value: Any, path: str, where: str, secrets: tuple[VaultSecret, ...] = ()
) -> dict[str, Any]:
    """``defaults:``: a file, a mapping, or a list of them (later ones win)."""
    items = value if isinstance(value, list) else [value]
    out: dict[str, Any] = {}
    for item in items:
        if item is None:
            continue
        if isinstance(item, dict):
            out.update(item)
        else:
            out.update(_vars_file(path, item, where, "defaults", secrets))
    return out


def _parse_play(
    raw: LineDict, path: str, index: int, secrets: tuple[VaultSecret, ...] = ()
) -> Play:
    name = str(raw.get("name") or f"play {index}")
    where = f"{path}:{raw.line}: play '{name}'"
    for key in raw:
        if key in UNSUPPORTED_PLAY:
            raise PlaybookError(f"{where}: '{key}' is not supported (see docs/playbooks.md)")
        if key not in PLAY_KEYWORDS:
            raise PlaybookError(f"{where}: unknown play keyword '{key}'")
    if not raw.get("hosts"):
        raise PlaybookError(f"{where}: 'hosts' is required")
    hosts = raw["hosts"]
    hosts = ":".join(str(h) for h in hosts) if isinstance(hosts, list) else str(hosts)
    play_vars = raw.get("vars") or {}
    if not isinstance(play_vars, dict):
        raise PlaybookError(f"{where}: 'vars' must be a mapping")
    play = Play(name=name, hosts=hosts, file=path, line=raw.line, vars=dict(play_vars))
    if raw.get("vars_files") is not None:
        vf_where = f"{path}:{raw.line_of('vars_files')}: play '{name}'"
        play.vars_files = _str_list(raw["vars_files"], vf_where, "vars_files")
        for item in play.vars_files:  # Ansible: vars_files win over play vars
            play.vars.update(_vars_file(path, item, vf_where, "vars_files", secrets))
    if raw.get("defaults") is not None:
        d_where = f"{path}:{raw.line_of('defaults')}: play '{name}'"
        play.defaults = _defaults(raw["defaults"], path, d_where, secrets)
    if "become" in raw:
        play.become = _bool(raw["become"], where, "become")
    if raw.get("become_user") is not None:
        play.become_user = str(raw["become_user"])
    if _has_template(raw.get("serial")):
        play.serial_template = raw["serial"]
    else:
        play.serial = parse_serial(raw.get("serial"), where)
    if "gather_facts" in raw:
        play.gather_facts = _bool(raw["gather_facts"], where, "gather_facts")
    if raw.get("max_fail_percentage") is not None:
        try:
            play.max_fail_percentage = float(str(raw["max_fail_percentage"]).rstrip("%"))
        except ValueError:
            raise PlaybookError(f"{where}: 'max_fail_percentage' must be a number") from None
    for section in ("tasks", "handlers"):
        items = raw.get(section) or []
        if not isinstance(items, list):
            raise PlaybookError(f"{where}: '{section}' must be a list of tasks")
        for number, item in enumerate(items, 1):
            if not isinstance(item, LineDict):
                raise PlaybookError(f"{where}: {section} item {number} is not a mapping")
            getattr(play, section).append(_parse_task(item, path, number, section == "handlers"))
    names = {}
    for handler in play.handlers:
        names[handler.name] = handler
        for topic in handler.listen:
            names[topic] = handler
    for task in play.tasks + play.handlers:
        for target in task.notify:
            if target not in names:
                raise PlaybookError(f"{task.where}: notify names no handler: '{target}'")
    return play


def _has_template(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return is_template(value)


def parse_serial(value: Any, where: str) -> list[int | str]:
    """``serial``: a number, a percentage or a list of them -> batch sizes; raises
    :class:`PlaybookError` prefixed with ``where``."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[int | str] = []
    for item in items:
        text = str(item).strip()
        if re.fullmatch(r"\d+", text) and int(text) > 0:
            out.append(int(text))
        elif re.fullmatch(r"\d+(\.\d+)?%", text) and float(text[:-1]) > 0:
            out.append(text)
        else:
            raise PlaybookError(f"{where}: 'serial' must be a number, a percentage or a list")
    return out


def _parse_task(raw: LineDict, path: str, number: int, handler: bool) -> Task:
    kind = "handler" if handler else "task"
    name = str(raw.get("name") or f"{kind} {number}")
    where = f"{path}:{raw.line}: {kind} '{name}'"
    modules = [key for key in raw if key not in TASK_KEYWORDS]
    for key in modules:
        if module_named(key) is None:
            raise PlaybookError(f"{where}: unknown module or keyword '{key}'")
    if not modules:
        raise PlaybookError(f"{where}: no module given")
    if len(modules) > 1:
        raise PlaybookError(f"{where}: more than one module in one task: {', '.join(modules)}")
    written = modules[0]  # as the task names it (ansible.builtin.copy, systemd, ...)
    module_name = module_named(written) or written
    module = MODULES[module_name]
    value = raw[written]
    if value is None:
        args: dict[str, Any] = {}
    elif isinstance(value, dict):
        args = dict(value)
    elif isinstance(value, str):
        args = _string_args(value, module, written, where)
    else:
        raise PlaybookError(f"{where}: arguments of '{written}' must be a mapping")
    extra = raw.get("args")
    if extra is not None:
        if not isinstance(extra, dict):
            raise PlaybookError(f"{where}: 'args' must be a mapping")
        args = {**extra, **args}
    try:
        args = module.canonical(args)
        module.check_static(args)
    except ArgError as exc:
        raise PlaybookError(f"{where}: {exc}") from None
    task = Task(name=name, module=module_name, args=args, file=path, line=raw.line)
    task.when = raw.get("when")
    if "notify" in raw:
        task.notify = _str_list(raw["notify"], where, "notify")
    if "listen" in raw:
        task.listen = _str_list(raw["listen"], where, "listen")
    if "tags" in raw:
        task.tags = _str_list(raw["tags"], where, "tags")
    if "become" in raw:
        task.become = _bool(raw["become"], where, "become")
    if "register" in raw:
        register = raw["register"]
        if not isinstance(register, str) or not _IDENT.match(register):
            raise PlaybookError(f"{where}: 'register' must be a variable name")
        task.register = register
    if "loop" in raw:
        loop = raw["loop"]
        if not isinstance(loop, list) and not is_template(loop):
            raise PlaybookError(f"{where}: 'loop' must be a list or a template")
        task.loop = loop
    for key in ("ignore_errors", "no_log"):
        if key in raw:
            setattr(task, key, _bool(raw[key], where, key))
    task.changed_when = raw.get("changed_when")
    task.failed_when = raw.get("failed_when")
    task_vars = raw.get("vars") or {}
    if not isinstance(task_vars, dict):
        raise PlaybookError(f"{where}: 'vars' must be a mapping")
    task.vars = dict(task_vars)
    _retry_keywords(task, raw, where)
    if "check_mode" in raw:
        task.check_mode = _bool(raw["check_mode"], where, "check_mode")
    return task


# The options Ansible takes out of a command's or shell's free form (parsing/splitter.py
# parse_kv with check_raw): every other ``k=v`` word stays part of the command.
_FREE_FORM_OPTIONS = frozenset(
    {
        "creates",
        "removes",
        "chdir",
        "executable",
        "warn",
        "stdin",
        "stdin_add_newline",
        "strip_empty_ends",
    }
)


def _string_args(text: str, module: Module, written: str, where: str) -> dict[str, Any]:
    """A module's arguments written as one string, as Ansible reads them: ``k=v`` words
    (``copy: src=a dest=b``); for a free-form module the other words are the command, and only
    its options (``chdir=``, ``creates=``, ``removes=``...) are taken out of it."""
    try:
        words = split_args(text)
    except ValueError as exc:
        raise PlaybookError(f"{where}: arguments of '{written}': {exc}") from None
    args: dict[str, Any] = {}
    raw: list[str] = []
    for word in words:
        key, sep, value = _split_kv(word)
        free = module.free_form is not None
        if not sep or (free and key not in _FREE_FORM_OPTIONS):
            raw.append(word.replace("\\=", "=") if not sep else word)
        else:
            args[key.strip()] = _unquote(value.strip())
    if raw and module.free_form is None:
        raise PlaybookError(
            f"{where}: arguments of '{written}' must be a mapping or key=value words, "
            f"got {raw[0]!r}"
        )
    if raw:
        args[module.free_form] = " ".join(raw)  # type: ignore[index]
    return args


def _split_kv(word: str) -> tuple[str, str, str]:
    """(key, "=", value) at the first ``=`` not escaped as ``\\=``; ("", "", word) if none."""
    pos = word.find("=", 1)
    while pos > 0 and word[pos - 1] == "\\":
        pos = word.find("=", pos + 1)
    if pos <= 0:
        return "", "", word
    return word[:pos], "=", word[pos + 1 :]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def split_args(text: str) -> list[str]:
    """Words split on whitespace outside quotes and Jinja blocks, quotes kept (Ansible's
    ``split_args``); raises ValueError on an unclosed quote or block."""
    words: list[str] = []
    current: list[str] = []
    quote: str | None = None
    depth = 0
    i = 0
    while i < len(text):
        c, two = text[i], text[i : i + 2]
        if quote is None and two in ("{{", "{%", "{#"):
            depth += 1
            current.append(two)
            i += 2
            continue
        if quote is None and depth and two in ("}}", "%}", "#}"):
            depth -= 1
            current.append(two)
            i += 2
            continue
        if quote is not None:
            if c == quote and text[i - 1] != "\\":
                quote = None
            current.append(c)
        elif c in "'\"" and not depth:
            quote = c
            current.append(c)
        elif c.isspace() and not depth:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(c)
        i += 1
    if quote is not None or depth:
        raise ValueError("an unclosed quote or Jinja block; close it or use a mapping")
    if current:
        words.append("".join(current))
    return words


def _number(value: Any, where: str, key: str, *, integer: bool) -> int | float | str:
    """A non-negative number, or a template rendered when the task runs."""
    if is_template(value):
        return value
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(str(value)) if integer else float(str(value))
    except ValueError:
        kind = "an integer" if integer else "a number of seconds"
        raise PlaybookError(f"{where}: '{key}' must be {kind}, got {value!r}") from None
    if number < 0:
        raise PlaybookError(f"{where}: '{key}' must not be negative")
    return number


def _retry_keywords(task: Task, raw: LineDict, where: str) -> None:
    if raw.get("retries") is not None:
        task.retries = _number(raw["retries"], where, "retries", integer=True)
    if raw.get("delay") is not None:
        task.delay = _number(raw["delay"], where, "delay", integer=False)
    task.until = raw.get("until")
    if "backoff" in raw:
        task.backoff = _bool(raw["backoff"], where, "backoff")
    if raw.get("throttle") is not None:
        throttle = raw["throttle"]
        if is_template(throttle):
            task.throttle = throttle
        elif isinstance(throttle, bool) or not re.fullmatch(r"\d+", str(throttle).strip()):
            raise PlaybookError(f"{where}: 'throttle' must be a number of hosts, got {throttle!r}")
        else:
            task.throttle = int(str(throttle))
