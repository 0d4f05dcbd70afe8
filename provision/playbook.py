"""Playbooks in Ansible's shape, loaded and validated before anything runs (pure).

Every mapping keeps the line it started on, so each error reads
``FILE:LINE: task 'NAME': what is wrong`` and points at the task itself.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import yaml

from provision.booleans import NotABoolean, boolean
from provision.errors import ProvisionError
from provision.loops import WITH_LOOPS
from provision.modules import ANSIBLE_NAMES, MODULES, module_named
from provision.modules.base import ArgError, Module, is_template
from provision.roles import RoleError, RoleLoader, RoleRef, RoleUse, include_ref, role_ref
from provision.suggest import did_you_mean
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
    "loop_control",
    "environment",
    "become_user",
    "become_method",
    "run_once",
    *WITH_LOOPS,
}
LOOP_CONTROL = {"loop_var", "index_var", "label", "pause", "extended"}
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
    "environment",
    "become_method",
    # roles and the sections around them (provision/roles.py), play tags, connection
    "roles",
    "pre_tasks",
    "post_tasks",
    "tags",
    "connection",
    "collections",  # accepted: FQCN module names resolve without it
}
UNSUPPORTED_PLAY = {"include"}
# Ansible's connection plugins provision has: ssh (also as smart and paramiko) and local
# (provision/target.py); a play's ``connection`` is used where a host sets none.
# ansible-core's plugins/connection/: ssh.py, paramiko_ssh.py (documented as paramiko),
# local.py; smart is the default that picks ssh. FQCNs (ansible.builtin.ssh) name the same.
_CONNECTIONS = {"ssh": "ssh", "smart": "ssh", "paramiko": "ssh", "paramiko_ssh": "ssh"}
PLAY_CONNECTIONS = {
    **{
        f"{prefix}{name}": kind
        for name, kind in {**_CONNECTIONS, "local": "local"}.items()
        for prefix in ("", "ansible.builtin.")
    }
}
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
    become: bool | str | None = None  # a str is a template, rendered when the task runs
    register: str | None = None
    loop: Any = None
    ignore_errors: bool | str = False  # a str is a template, rendered when the task runs
    changed_when: Any = None
    failed_when: Any = None
    no_log: bool | str = False  # a str is a template (hidden until rendered)
    vars: dict[str, Any] = field(default_factory=dict)
    listen: list[str] = field(default_factory=list)
    retries: int | float | str | None = None  # a template is rendered when the task runs
    delay: float | str | None = None
    until: Any = None
    backoff: bool = False
    throttle: int | str = 0  # 0: no limit; a template is rendered when the task runs
    check_mode: bool | None = None  # None: the run's --check; False: run even in --check
    environment: Any = None  # a mapping (or a template of one) exported to its commands
    loop_kind: str = "loop"  # loop, or the with_<lookup> it was written as (items, dict...)
    loop_var: str = "item"
    index_var: str | None = None
    loop_label: Any = None
    loop_pause: float = 0
    loop_extended: bool = False
    # Blocks: the keywords written on the task itself; an enclosing block's keyword fills
    # only the others (the task's own value wins, as in Ansible's inheritance).
    keywords: frozenset[str] = frozenset()
    # run_once: the first host of the batch runs it, every host of the batch gets its result.
    run_once: bool = False
    # Roles: the directory of the role the task comes from; its files/, templates/ and vars/
    # are searched before the play's (modules.base.Context.search_dirs).
    role_path: str | None = None

    @property
    def where(self) -> str:
        """``FILE:LINE: task 'NAME'``: the prefix of every message about this task."""
        return f"{self.file}:{self.line}: task '{self.name}'"


@dataclass
class Block:
    """Ansible's ``block``/``rescue``/``always`` (docs.ansible.com/ansible/latest/
    playbook_guide/playbooks_blocks.html): the block's keywords are already on its tasks
    (pushed down at load, the tasks' own values winning); ``rescue`` runs when a task of
    ``block`` fails, ``always`` runs whatever happened. Items nest."""

    name: str
    file: str
    line: int
    block: list[Task | Block] = field(default_factory=list)
    rescue: list[Task | Block] = field(default_factory=list)
    always: list[Task | Block] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}: block '{self.name}'"


def leaf_tasks(items: list[Task | Block]) -> list[Task]:
    """Every task in ``items``, blocks opened (block, rescue, always), in the order written."""
    out: list[Task] = []
    for item in items:
        if isinstance(item, Block):
            out += leaf_tasks([*item.block, *item.rescue, *item.always])
        else:
            out.append(item)
    return out


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
    environment: Any = None  # every task's environment, under the task's own
    tasks: list[Task | Block] = field(default_factory=list)
    handlers: list[Task] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # already on every task of the play
    connection: str | None = None  # "ssh" or "local": a host's ansible_connection beats it

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
    try:
        return boolean(value)
    except NotABoolean:
        raise PlaybookError(f"{where}: '{key}' must be a boolean, got {value!r}") from None


def _bool_or_template(value: Any, where: str, key: str) -> bool | str:
    """A boolean task keyword, or a ``{{ }}`` template the engine renders when the task runs."""
    return value if is_template(value) else _bool(value, where, key)


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
    text = _read_source(path, f"{path}: cannot read playbook")
    return parse_playbook(text, path, secrets)


def _read_source(path: str, failure: str) -> str:
    """The text of a playbook, task or vars file; PlaybookError ``FAILURE: why`` if unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise PlaybookError(f"{failure}: {exc.strerror}") from None


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
    text = _read_source(target_path, f"{where}: cannot read {target_path}")
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
    text = _read_source(file_path, f"{where}: '{key}': cannot read {file_path}")
    return _vars_mapping(text, file_path, key, secrets)


def read_vars_file(path: str) -> dict[str, Any]:
    """A vars file (a YAML mapping) read when a task runs (include_vars); PlaybookError if not."""
    return _vars_mapping(_read_source(path, f"cannot read {path}"), path, "vars")


def _vars_mapping(
    text: str, path: str, key: str, secrets: tuple[VaultSecret, ...] = ()
) -> dict[str, Any]:
    """The variables of a vars/defaults file's text: a YAML mapping (empty file: none)."""
    data = _load_yaml(text, path, secrets)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PlaybookError(f"{path}:1: a {key} file must hold a mapping of variables")
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
            hint = did_you_mean(str(key), PLAY_KEYWORDS)
            raise PlaybookError(f"{where}: unknown play keyword '{key}'{hint}")
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
    _become_method(raw, where)
    play.environment = _environment(raw.get("environment"), where)
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
    _play_sections(play, raw, where, secrets)
    names = {}
    for handler in play.handlers:
        names[handler.name] = handler
        for topic in handler.listen:
            names[topic] = handler
    for task in [*leaf_tasks(play.tasks), *play.handlers]:
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
    for key in raw:
        if isinstance(key, str) and key.startswith("with_") and key not in WITH_LOOPS:
            raise PlaybookError(
                f"{path}:{raw.line_of(key)}: {kind} '{name}': '{key}' is not supported; "
                f"use 'loop:' with a filter (Ansible's 'Migrating from with_X to loop')"
            )
    modules = [key for key in raw if key not in TASK_KEYWORDS]
    for key in modules:
        if module_named(key) is None:
            hint = did_you_mean(key, [*TASK_KEYWORDS, *MODULES, *ANSIBLE_NAMES])
            raise PlaybookError(f"{where}: unknown module or keyword '{key}'{hint}")
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
    task.keywords = frozenset(k for k in raw if k in TASK_KEYWORDS)
    task.when = raw.get("when")
    if "notify" in raw:
        task.notify = _str_list(raw["notify"], where, "notify")
    if "listen" in raw:
        task.listen = _str_list(raw["listen"], where, "listen")
    if "tags" in raw:
        task.tags = _str_list(raw["tags"], where, "tags")
    if "become" in raw:
        task.become = _bool_or_template(raw["become"], where, "become")
    if "register" in raw:
        register = raw["register"]
        if not isinstance(register, str) or not _IDENT.match(register):
            raise PlaybookError(f"{where}: 'register' must be a variable name")
        task.register = register
    _loop_keywords(task, raw, where)
    task.environment = _environment(raw.get("environment"), where)
    _become_method(raw, where)
    if raw.get("become_user") is not None:  # one become user per connection (provision/ssh.py)
        raise PlaybookError(
            f"{where}: a task's 'become_user' is not supported yet; set 'become_user' on the "
            "play, or ansible_become_user on the host"
        )
    for key in ("ignore_errors", "no_log"):
        if key in raw:
            setattr(task, key, _bool_or_template(raw[key], where, key))
    task.changed_when = raw.get("changed_when")
    task.failed_when = raw.get("failed_when")
    task_vars = raw.get("vars") or {}
    if not isinstance(task_vars, dict):
        raise PlaybookError(f"{where}: 'vars' must be a mapping")
    task.vars = dict(task_vars)
    _retry_keywords(task, raw, where)
    if "check_mode" in raw:
        task.check_mode = _bool(raw["check_mode"], where, "check_mode")
    if "run_once" in raw:
        task.run_once = _bool(raw["run_once"], where, "run_once")
    return task


IMPORT_TASKS = ("import_tasks", "ansible.builtin.import_tasks")
# What an import_tasks line may carry; when/tags/vars/become apply to every task it imports.
IMPORT_TASKS_KEYWORDS = {*IMPORT_TASKS, "name", "when", "tags", "vars", "become"}


def parse_tasks(
    items: list[Any], path: str, handler: bool, where: str, open_files: tuple[str, ...]
) -> list[Task | Block]:
    """A list of tasks written in ``path``, ``import_tasks`` inlined (Ansible's static import:
    the imported tasks join the play's, so their state reads join the batched read)."""
    out: list[Task | Block] = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, LineDict):
            raise PlaybookError(f"{where} item {number} is not a mapping")
        if "block" in item:
            out.append(_parse_block(item, path, number, handler, open_files))
            continue
        if any(k in item for k in IMPORT_ROLE):  # roles: see the end of this file
            out.extend(_import_role(item, path, handler))
            continue
        key = next((k for k in IMPORT_TASKS if k in item), None)
        if key is None:
            out.append(_parse_task(item, path, number, handler))
        else:
            out.extend(_import_tasks(item, key, path, handler, open_files))
    return out


def task_file(including: str, name: str, play_dir: str) -> str:
    """Where an included task file is: beside the file that names it, else in the play's
    directory (Ansible searches both)."""
    here = _relative(including, name)
    there = os.path.normpath(os.path.join(play_dir, os.path.expanduser(name)))
    return here if os.path.exists(here) or not os.path.exists(there) else there


def load_task_file(
    path: str, handler: bool, where: str, open_files: tuple[str, ...] = ()
) -> list[Task | Block]:
    """The tasks of one task file (import_tasks, include_tasks); raises PlaybookError."""
    if os.path.abspath(path) in open_files:
        raise PlaybookError(f"{where}: include cycle: {path} is already being read")
    text = _read_source(path, f"{where}: cannot read {path}")
    data = _load_yaml(text, path)
    if data is None:
        return []
    if not isinstance(data, list):
        raise PlaybookError(f"{path}:1: a task file is a list of tasks")
    opened = (*open_files, os.path.abspath(path))
    return parse_tasks(data, path, handler, f"{path}: tasks", opened)


def _import_tasks(
    raw: LineDict, key: str, path: str, handler: bool, open_files: tuple[str, ...]
) -> list[Task | Block]:
    where = f"{path}:{raw.line}: {key}"
    for other in raw:
        if other not in IMPORT_TASKS_KEYWORDS:
            raise PlaybookError(
                f"{path}:{raw.line_of(other)}: {key}: '{other}' is not supported on an import "
                "(use include_tasks, or put it on the imported tasks)"
            )
    name = raw[key]
    if isinstance(name, dict):
        name = name.get("file")
    if not isinstance(name, str) or not name.strip():
        raise PlaybookError(f"{where}: expected a file name")
    if is_template(name):
        raise PlaybookError(
            f"{where}: a templated file name needs include_tasks (imports are static)"
        )
    tasks = load_task_file(task_file(path, name, os.path.dirname(path)), handler, where, open_files)
    extra_vars = raw.get("vars") or {}
    if not isinstance(extra_vars, dict):
        raise PlaybookError(f"{where}: 'vars' must be a mapping")
    tags = _str_list(raw["tags"], where, "tags") if "tags" in raw else []
    become = _bool_or_template(raw["become"], where, "become") if "become" in raw else None
    for task in leaf_tasks(tasks):
        task.when = _all_of(raw.get("when"), task.when)
        task.tags = [*tags, *(t for t in task.tags if t not in tags)]
        task.vars = {**extra_vars, **task.vars}
        if task.become is None:
            task.become = become
    return tasks


# What a block may carry (besides its sections); each is inherited by the block's tasks.
BLOCK_INHERITED = {
    "when",
    "tags",
    "vars",
    "become",
    "ignore_errors",
    "no_log",
    "environment",
    "check_mode",
    "run_once",
}
BLOCK_KEYWORDS = {"block", "rescue", "always", "name", "become_method", *BLOCK_INHERITED}


def _parse_block(
    raw: LineDict, path: str, number: int, handler: bool, open_files: tuple[str, ...]
) -> Block:
    """``- block: [...]`` with optional ``rescue:``/``always:`` and the block's keywords,
    which are pushed down onto every task inside (see :func:`_inherit`)."""
    name = str(raw.get("name") or f"block {number}")
    where = f"{path}:{raw.line}: block '{name}'"
    if handler:
        raise PlaybookError(f"{where}: a block in handlers is not supported; list the handlers")
    for key in raw:
        if key == "become_user":  # one become user per connection (provision/ssh.py)
            raise PlaybookError(
                f"{where}: a block's 'become_user' is not supported yet; set 'become_user' on "
                "the play, or ansible_become_user on the host"
            )
        if key not in BLOCK_KEYWORDS:
            raise PlaybookError(
                f"{path}:{raw.line_of(key)}: block '{name}': '{key}' is not supported on a "
                f"block (known: {', '.join(sorted(BLOCK_KEYWORDS))})"
            )
    _become_method(raw, where)
    block = Block(name, path, raw.line)
    for section in ("block", "rescue", "always"):
        items = raw.get(section) or []
        if not isinstance(items, list):
            raise PlaybookError(f"{where}: '{section}' must be a list of tasks")
        parsed = parse_tasks(items, path, handler, f"{where}: {section}", open_files)
        setattr(block, section, parsed)
    inherited = _block_keywords(raw, where)
    for task in leaf_tasks([block]):
        _inherit(task, inherited)
    return block


def _block_keywords(raw: LineDict, where: str) -> dict[str, Any]:
    """The block's inheritable keywords, checked as a task's are."""
    out: dict[str, Any] = {}
    if raw.get("when") is not None:
        out["when"] = raw["when"]
    if "tags" in raw:
        out["tags"] = _str_list(raw["tags"], where, "tags")
    if raw.get("vars") is not None:
        if not isinstance(raw["vars"], dict):
            raise PlaybookError(f"{where}: 'vars' must be a mapping")
        out["vars"] = dict(raw["vars"])
    for key in ("become", "ignore_errors", "no_log"):
        if key in raw:
            out[key] = _bool_or_template(raw[key], where, key)
    for key in ("check_mode", "run_once"):
        if key in raw:
            out[key] = _bool(raw[key], where, key)
    if raw.get("environment") is not None:
        out["environment"] = _environment(raw["environment"], where)
    return out


def _inherit(task: Task, inherited: dict[str, Any]) -> None:
    """A block's keywords onto one of its tasks: ``when`` joins the task's (the block's
    first), tags and vars merge (the task's vars win), the environment goes under the task's,
    and become/ignore_errors/no_log/check_mode/run_once fill only what the task does not set."""
    if "when" in inherited:
        task.when = _all_of(inherited["when"], task.when)
    tags = inherited.get("tags", [])
    task.tags = [*tags, *(t for t in task.tags if t not in tags)]
    task.vars = {**inherited.get("vars", {}), **task.vars}
    if "environment" in inherited:
        env = task.environment
        below = [] if env is None else env if isinstance(env, list) else [env]
        task.environment = [inherited["environment"], *below] if below else inherited["environment"]
    filled = {"become", "ignore_errors", "no_log", "check_mode", "run_once"} & inherited.keys()
    for key in filled - task.keywords:
        setattr(task, key, inherited[key])
    task.keywords = task.keywords | filled  # an outer block does not override an inner one


def _all_of(*conditions: Any) -> Any:
    """Conditions that must all hold, as one ``when`` (None: none)."""
    out: list[Any] = []
    for cond in conditions:
        if cond is not None:
            out.extend(cond if isinstance(cond, list) else [cond])
    return out or None


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


# Ansible's become plugins; provision becomes through sudo only (provision/ssh.py).
_BECOME_METHODS = {
    "su",
    "pbrun",
    "pfexec",
    "doas",
    "dzdo",
    "ksu",
    "runas",
    "machinectl",
    "pmrun",
    "sesu",
    "enable",
}


def _become_method(raw: LineDict, where: str) -> None:
    """``become_method``: sudo, as provision becomes; any other is refused with the reason."""
    method = raw.get("become_method")
    if method is None or method == "sudo":
        return
    if method in _BECOME_METHODS:
        raise PlaybookError(
            f"{where}: become_method '{method}' is not supported: provision becomes through "
            "sudo only (remove become_method, or set it to sudo)"
        )
    raise PlaybookError(f"{where}: unknown become_method {method!r} (provision uses sudo)")


def _environment(value: Any, where: str) -> Any:
    """``environment``: a mapping of variable names (or a template, or a list of mappings,
    merged in order) exported to the task's commands."""
    if value is None or is_template(value):
        return value
    items = value if isinstance(value, list) else [value]
    merged: dict[str, Any] = {}
    for item in items:
        if is_template(item):
            return value  # rendered when the task runs
        if not isinstance(item, dict):
            raise PlaybookError(f"{where}: 'environment' must be a mapping of variables")
        merged.update(item)
    for key in merged:
        if not isinstance(key, str) or not _IDENT.match(key):
            raise PlaybookError(f"{where}: environment: {key!r} is not a variable name")
    return merged


def _loop_keywords(task: Task, raw: LineDict, where: str) -> None:
    """``loop``, ``with_items``/``with_list``/``with_dict``/``with_fileglob`` (one of them) and
    ``loop_control``."""
    given = [k for k in ("loop", *WITH_LOOPS) if k in raw]
    if len(given) > 1:
        raise PlaybookError(f"{where}: {' and '.join(given)} are exclusive; give one loop")
    if given:
        key = given[0]
        loop = raw[key]
        if key == "loop" and not isinstance(loop, list) and not is_template(loop):
            raise PlaybookError(f"{where}: 'loop' must be a list or a template")
        if loop is None:
            raise PlaybookError(f"{where}: '{key}' needs a value")
        task.loop = loop
        task.loop_kind = WITH_LOOPS.get(key, "loop")
    control = raw.get("loop_control")
    if control is None:
        return
    if not isinstance(control, dict):
        raise PlaybookError(f"{where}: 'loop_control' must be a mapping")
    for key in control:
        if key not in LOOP_CONTROL:
            known = ", ".join(sorted(LOOP_CONTROL))
            raise PlaybookError(f"{where}: unknown loop_control key '{key}' (known: {known})")
    for key in ("loop_var", "index_var"):
        value = control.get(key)
        if value is not None and (not isinstance(value, str) or not _IDENT.match(value)):
            raise PlaybookError(f"{where}: loop_control '{key}' must be a variable name")
    task.loop_var = control.get("loop_var") or "item"
    task.index_var = control.get("index_var")
    task.loop_label = control.get("label")
    if control.get("pause") is not None:
        if is_template(control["pause"]):
            raise PlaybookError(f"{where}: loop_control 'pause' must be a number of seconds")
        task.loop_pause = float(_number(control["pause"], where, "pause", integer=False))
    if "extended" in control:
        task.loop_extended = _bool(control["extended"], where, "extended")


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


# -- roles: roles:, pre_tasks/post_tasks, import_role (provision/roles.py finds and orders) ----

IMPORT_ROLE = ("import_role", "ansible.builtin.import_role")
# What an import_role line may carry besides its options; each applies to every task of the
# role (its vars as the role's ``vars:``). A loop needs include_role, as in Ansible.
IMPORT_ROLE_KEYWORDS = {*IMPORT_ROLE, "name", "when", "tags", "vars", "become", "environment"}
FLUSH_HANDLERS = "meta: flush_handlers"  # Ansible's implicit task between a play's sections


@dataclass
class _PlayRoles:
    """The roles of the play being read: the loader (what already ran: dedup) and what the
    roles add to the play besides tasks (their handlers, their defaults)."""

    loader: RoleLoader
    handlers: list[Task | Block] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)  # the last role's own (include_role)


# The play being read, for import_role anywhere in its task lists (parse_tasks' signature is
# shared with blocks and task files, so the play's roles travel beside it, not through it).
_PLAY_ROLES: ContextVar[_PlayRoles | None] = ContextVar("provision_play_roles", default=None)


class _RoleReader:
    """roles.RoleFiles: role files read as playbook files are (lines, vault)."""

    def __init__(self, secrets: tuple[VaultSecret, ...]) -> None:
        self.secrets = secrets

    def data(self, path: str) -> Any:
        return _load_yaml(_read_source(path, f"{path}: cannot read"), path, self.secrets)

    def mapping(self, path: str, key: str) -> dict[str, Any]:
        text = _read_source(path, f"{path}: cannot read")
        return _vars_mapping(text, path, key, self.secrets)


def _play_sections(
    play: Play, raw: LineDict, where: str, secrets: tuple[VaultSecret, ...] = ()
) -> None:
    """The play's tasks in Ansible's order (Play.compile): pre_tasks, handlers flushed, roles
    (dependencies first), tasks, handlers flushed, post_tasks (the end-of-play flush is the
    engine's); the roles' handlers before the play's, import_role's after; the roles'
    defaults under the play's; play ``tags`` on every task."""
    path = play.file
    collected = _PlayRoles(RoleLoader(play.base_dir, _RoleReader(secrets)))
    token = _PLAY_ROLES.set(collected)
    try:
        role_tasks, role_handlers = _roles_section(raw, path, where, collected)
        sections = {
            name: _section(raw, name, path, where)
            for name in ("pre_tasks", "tasks", "post_tasks", "handlers")
        }
    except RoleError as exc:
        raise PlaybookError(str(exc)) from None
    finally:
        _PLAY_ROLES.reset(token)
    pre, post = sections["pre_tasks"], sections["post_tasks"]
    play.tasks.extend(pre)
    if pre:
        play.tasks.append(_flush_handlers(path, raw.line_of("pre_tasks")))
    play.tasks.extend([*role_tasks, *sections["tasks"]])
    if post:
        play.tasks.extend([_flush_handlers(path, raw.line_of("post_tasks")), *post])
    handlers = [*role_handlers, *sections["handlers"], *collected.handlers]
    play.handlers.extend(_last_copies(leaf_tasks(handlers)))
    play.defaults = {**collected.defaults, **play.defaults}
    if "tags" in raw:
        play.tags = _str_list(raw["tags"], where, "tags")
        for task in leaf_tasks(play.tasks):
            _inherit(task, {"tags": play.tags})
    if raw.get("connection") is not None:
        play.connection = _connection(raw["connection"], f"{path}:{raw.line_of('connection')}")


def _last_copies(handlers: list[Task]) -> list[Task]:
    """A role's handlers once: a role used again (other params, import_role) loads them again,
    and, as in Ansible ("only the last one defined is notified"), the last copy is the one
    that runs, with that use's variables."""
    last = {(h.file, h.line): i for i, h in enumerate(handlers)}
    return [h for i, h in enumerate(handlers) if last[(h.file, h.line)] == i]


def _section(raw: LineDict, name: str, path: str, where: str) -> list[Task | Block]:
    items = raw.get(name) or []
    if not isinstance(items, list):
        raise PlaybookError(f"{where}: '{name}' must be a list of tasks")
    return parse_tasks(items, path, name == "handlers", f"{where}: {name}", ())


def _flush_handlers(path: str, line: int) -> Task:
    """Ansible's implicit ``meta: flush_handlers``; tagged ``always`` so that --tags keeps it
    (Ansible never filters its implicit flushes by tags)."""
    args = {"free_form": "flush_handlers"}
    return Task(FLUSH_HANDLERS, "meta", args, path, line, tags=["always"])


def _connection(value: Any, where: str) -> str:
    """A play's ``connection``: one provision has (ssh, smart, paramiko: ssh; local)."""
    name = str(value).strip().lower()
    if name not in PLAY_CONNECTIONS:
        known = ", ".join(sorted(k for k in PLAY_CONNECTIONS if "." not in k))
        raise PlaybookError(
            f"{where}: connection '{value}' is not supported (provision connects with {known})"
        )
    return PLAY_CONNECTIONS[name]


def _roles_section(
    raw: LineDict, path: str, where: str, collected: _PlayRoles
) -> tuple[list[Task | Block], list[Task | Block]]:
    """``roles:``: each entry's uses (dependencies first), as (tasks, handlers)."""
    entries = raw.get("roles") or []
    if not isinstance(entries, list):
        raise PlaybookError(f"{where}: 'roles' must be a list of roles")
    tasks: list[Task | Block] = []
    handlers: list[Task | Block] = []
    for number, entry in enumerate(entries):
        line = getattr(entry, "line", 0) or raw.line_of("roles") + number + 1
        more_tasks, more_handlers = _role_content(collected, role_ref(entry, path, line))
        tasks += more_tasks
        handlers += more_handlers
    return tasks, handlers


def _role_content(
    collected: _PlayRoles, ref: RoleRef
) -> tuple[list[Task | Block], list[Task | Block]]:
    """The tasks and handlers of every use of ``ref`` (dependencies first); their defaults join
    the play's (later roles winning, as Ansible combines the play's roles' defaults)."""
    tasks: list[Task | Block] = []
    handlers: list[Task | Block] = []
    for use in collected.loader.uses(ref):
        collected.defaults.update(use.defaults)
        collected.vars = use.vars
        where = use.chain[-1].where
        if use.tasks_file:
            tasks += _role_tasks(load_task_file(use.tasks_file, False, where), use, False)
        if use.handlers_file:
            handlers += _role_tasks(load_task_file(use.handlers_file, True, where), use, True)
    return tasks, handlers


def _role_tasks(items: list[Task | Block], use: RoleUse, handler: bool) -> list[Task | Block]:
    """What a role's tasks inherit: each entry's keywords on the way (the nearest first, so it
    wins), the role's variables under the task's own and its params over them; the role's
    directory; Ansible's "ROLE : TASK" name (a handler keeps its name and answers both)."""
    for ref in reversed(use.chain):
        keywords = LineDict(ref.keywords)
        keywords.line = ref.line
        _become_method(keywords, ref.where)
        inherited = _block_keywords(keywords, ref.where)
        for task in leaf_tasks(items):
            _inherit(task, inherited)
    for task in leaf_tasks(items):
        task.vars = {**use.vars, **task.vars, **use.params}
        task.role_path = use.path
        if handler:
            task.listen = [*task.listen, f"{use.name} : {task.name}"]
        else:
            task.name = f"{use.name} : {task.name}"
    return items


def _import_role(raw: LineDict, path: str, handler: bool) -> list[Task | Block]:
    """``import_role``: the role's tasks here (static, like import_tasks); its handlers and
    defaults join the play's. Only while a play is read (see _PLAY_ROLES)."""
    key = next(k for k in IMPORT_ROLE if k in raw)
    where = f"{path}:{raw.line}: {key}"
    if handler:
        raise PlaybookError(f"{where}: import_role as a handler is not supported (as in Ansible)")
    for other in raw:
        if other not in IMPORT_ROLE_KEYWORDS:
            raise PlaybookError(
                f"{path}:{raw.line_of(other)}: {key}: '{other}' is not supported on an import "
                "(use include_role, or put it on the role's tasks)"
            )
    collected = _PLAY_ROLES.get()
    if collected is None:
        raise PlaybookError(
            f"{where}: import_role in a file read while the play runs (include_tasks) is not "
            "supported; import that file with import_tasks, or import the role in the play"
        )
    args = raw[key]
    if isinstance(args, str):  # import_role: name=x tasks_from=y
        args = {k: _unquote(v) for k, _, v in (_split_kv(w) for w in split_args(args)) if k}
    if not isinstance(args, Mapping):
        raise PlaybookError(f"{where}: expected the role's options (name: ROLE)")
    extra_vars = raw.get("vars") or {}
    if not isinstance(extra_vars, dict):
        raise PlaybookError(f"{where}: 'vars' must be a mapping")
    try:
        ref = include_ref(args, path, raw.line, key)
        keywords = {k: raw[k] for k in ("when", "tags", "become", "environment") if k in raw}
        ref = dataclasses.replace(ref, vars=dict(extra_vars), keywords=keywords)
        tasks, handlers = _role_content(collected, ref)
    except RoleError as exc:
        raise PlaybookError(str(exc)) from None
    collected.handlers += handlers
    return tasks


@dataclass
class IncludedRole:
    """What ``include_role`` brings when it runs: the role's tasks (its variables, params and
    directory already on them, as for ``roles:``), its handlers, and its defaults and vars
    (private to these tasks: Ansible's include_role is not public unless asked)."""

    tasks: list[Task | Block]
    handlers: list[Task]
    defaults: dict[str, Any]
    vars: dict[str, Any]


def load_included_role(
    args: Mapping[str, Any],
    file: str,
    line: int,
    play_dir: str,
    secrets: tuple[VaultSecret, ...] = (),
) -> IncludedRole:
    """The role an ``include_role`` task names (its rendered arguments), read now, ``file`` and
    ``line`` being where the task is written and ``play_dir`` the play's directory (the role
    search path starts there). Raises PlaybookError in one line. Each call reads afresh: the
    caller decides whether a role already run on a host runs again (``allow_duplicates``)."""
    collected = _PlayRoles(RoleLoader(play_dir, _RoleReader(secrets)))
    token = _PLAY_ROLES.set(collected)
    try:
        ref = include_ref(args, file, line, "include_role")
        tasks, handlers = _role_content(collected, ref)
    except RoleError as exc:
        raise PlaybookError(str(exc)) from None
    finally:
        _PLAY_ROLES.reset(token)
    found = _last_copies(leaf_tasks([*handlers, *collected.handlers]))
    return IncludedRole(tasks, found, collected.defaults, collected.vars)
