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
from provision.modules import MODULES
from provision.modules.base import ArgError, is_template

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
}
UNSUPPORTED_PLAY = {"roles", "pre_tasks", "post_tasks", "import_playbook", "include"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PlaybookError(ProvisionError):
    """An invalid playbook; the message starts with ``FILE:LINE:``."""


class LineDict(dict):
    """A mapping that remembers the (1-based) line it started on."""

    line: int = 0


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise PlaybookError(
                f"{loader.name}:{key_node.start_mark.line + 1}: duplicate key '{key}'"
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


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
    vars: dict[str, Any] = field(default_factory=dict)
    become: bool | None = None
    become_user: str | None = None
    serial: list[int | str] = field(default_factory=list)
    max_fail_percentage: float | None = None
    gather_facts: bool = True
    tasks: list[Task] = field(default_factory=list)
    handlers: list[Task] = field(default_factory=list)


@dataclass
class Playbook:
    path: str
    plays: list[Play]

    @property
    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))


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


def load_playbook(path: str) -> Playbook:
    """Read and validate a playbook; raises :class:`PlaybookError` naming file:line."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise PlaybookError(f"{path}: cannot read playbook: {exc.strerror}") from None
    return parse_playbook(text, path)


def parse_playbook(text: str, path: str = "<playbook>") -> Playbook:
    """Parse playbook text (pure); ``path`` is only used in messages."""
    loader = _LineLoader(text)
    loader.name = path
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        raise PlaybookError(f"{path}:{line}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise PlaybookError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, list):
        raise PlaybookError(f"{path}:1: a playbook is a list of plays")
    plays = []
    for index, raw in enumerate(data, 1):
        if not isinstance(raw, LineDict):
            raise PlaybookError(f"{path}: play {index} is not a mapping")
        plays.append(_parse_play(raw, path, index))
    return Playbook(path, plays)


def _parse_play(raw: LineDict, path: str, index: int) -> Play:
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
    if "become" in raw:
        play.become = _bool(raw["become"], where, "become")
    if raw.get("become_user") is not None:
        play.become_user = str(raw["become_user"])
    play.serial = _serial(raw.get("serial"), where)
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


def _serial(value: Any, where: str) -> list[int | str]:
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
        if key not in MODULES:
            raise PlaybookError(f"{where}: unknown module or keyword '{key}'")
    if not modules:
        raise PlaybookError(f"{where}: no module given")
    if len(modules) > 1:
        raise PlaybookError(f"{where}: more than one module in one task: {', '.join(modules)}")
    module_name = modules[0]
    module = MODULES[module_name]
    value = raw[module_name]
    if value is None:
        args: dict[str, Any] = {}
    elif isinstance(value, dict):
        args = dict(value)
    elif isinstance(value, str) and module.free_form:
        args = {module.free_form: value}
    else:
        raise PlaybookError(f"{where}: arguments of '{module_name}' must be a mapping")
    extra = raw.get("args")
    if extra is not None:
        if not isinstance(extra, dict):
            raise PlaybookError(f"{where}: 'args' must be a mapping")
        args = {**extra, **args}
    try:
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
    return task
