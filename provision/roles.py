"""Ansible roles: found on Ansible's role search path, read from their directories and laid out
in the order Ansible runs them (pure apart from reading the role files and ansible.cfg).

A role (docs.ansible.com/ansible/latest/playbook_guide/playbooks_reuse_roles.html) is a
directory: ``tasks/main.yml``, ``handlers/main.yml``, ``defaults/main.yml`` (lowest
precedence), ``vars/main.yml``, ``meta/main.yml`` (``dependencies``, ``allow_duplicates``;
``galaxy_info`` ignored), ``files/`` and ``templates/``. The semantics follow ansible-core's
``lib/ansible/playbook/role/`` and ``role_include.py``:

- where a role is (``RoleDefinition._load_role_path``): ``roles/`` beside the playbook, the
  configured roles path (``ANSIBLE_ROLES_PATH``, else ansible.cfg ``roles_path``, else
  ``~/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles``), the directory of the role
  that depends on it, the playbook's directory, then the name as a path;
- what runs (``Role.compile``): a role's dependencies (recursively) before its own tasks;
- once (``PlayIterator``: "skipped because role has already run"): a role that already ran in
  the play with the same identity (``Role._get_hash_dict``: path, params, when, tags, vars,
  ``*_from``) runs again only with ``allow_duplicates: true`` (its meta; ``import_role``'s and
  ``include_role``'s option defaults to true);
- variables (``Role.get_vars``): the parents' ``vars:`` and ``vars/``, the dependencies'
  ``vars/``, the role's ``vars/``, its ``vars:``; role params (``- role: x``, ``port: 80``)
  above the task's own vars.

This module knows no task objects: it returns :class:`RoleUse` records (which files, what each
inherits); provision/playbook.py parses the files into tasks, so nothing here imports it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from provision.booleans import NotABoolean, boolean
from provision.errors import ProvisionError


class RoleError(ProvisionError):
    """A role that cannot be found or read; the message starts with ``FILE:LINE:``."""


class RoleFiles(Protocol):
    """How role files are read (provision/playbook.py's YAML reader, with lines and vault)."""

    def data(self, path: str) -> Any:
        """A YAML file's data (mappings remember their line as ``.line``)."""

    def mapping(self, path: str, key: str) -> dict[str, Any]:
        """A vars/defaults file's variables (``key`` names the kind, for messages)."""


# What a role entry (``roles:``, meta ``dependencies``) takes besides the role's name:
# inherited by every task of the role, as a block's keywords are by its tasks.
INHERITED_KEYWORDS = frozenset(
    {
        "when",
        "tags",
        "become",
        "become_method",
        "ignore_errors",
        "no_log",
        "check_mode",
        "environment",
    }
)
# Accepted and without effect here: FQCN module names already resolve (provision/modules).
IGNORED_KEYWORDS = frozenset({"collections"})
# The rest of Ansible's role-definition attributes (playbook/base.py): refused in one line,
# since each would otherwise turn into a role parameter and silently do nothing.
REFUSED_KEYWORDS = frozenset(
    {
        "become_user",
        "become_flags",
        "become_exe",
        "connection",
        "port",
        "remote_user",
        "module_defaults",
        "run_once",
        "ignore_unreachable",
        "diff",
        "any_errors_fatal",
        "throttle",
        "timeout",
        "debugger",
        "delegate_to",
        "delegate_facts",
    }
)
# import_role's and include_role's options (role_include.py VALID_ARGS).
FROM_ARGS = ("tasks_from", "vars_from", "defaults_from", "handlers_from")
INCLUDE_ARGS = frozenset(
    {"name", "role", *FROM_ARGS, "allow_duplicates", "public", "rolespec_validate", "apply"}
)
# ns.collection.role: a role inside a collection (AnsibleCollectionRef.is_valid_fqcr)
_FQCR = re.compile(r"^[A-Za-z_]\w*\.[A-Za-z_]\w*\.[A-Za-z_]\w*$")
ANSIBLE_DEFAULT_ROLES = ("/usr/share/ansible/roles", "/etc/ansible/roles")


@dataclass(frozen=True)
class RoleRef:
    """One role as a play names it: a ``roles:`` entry, a dependency, an import/include."""

    name: str
    file: str  # where it is written
    line: int
    params: dict[str, Any] = field(default_factory=dict)  # - {role: x, port: 80}
    vars: dict[str, Any] = field(default_factory=dict)  # - {role: x, vars: {...}}
    keywords: dict[str, Any] = field(default_factory=dict)  # INHERITED_KEYWORDS as written
    from_files: dict[str, str] = field(default_factory=dict)  # tasks_from: x -> {"tasks": x}
    allow_duplicates: bool | None = None  # import/include_role's option; None: the role's meta

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}: role '{self.name}'"


@dataclass
class RoleUse:
    """One run of one role's own tasks, after its dependencies' uses: the files to parse and
    what their tasks inherit."""

    name: str  # as Ansible shows it in "ROLE : TASK"
    path: str  # the role's directory
    tasks_file: str | None
    handlers_file: str | None
    chain: tuple[RoleRef, ...]  # the entries on the way here, outermost first, its own last
    vars: dict[str, Any]  # role-level variables (below the task's own vars)
    params: dict[str, Any]  # the chain's role params (above the task's own vars)
    defaults: dict[str, Any]  # this role's defaults/ (each dependency has its own use)


@dataclass
class _RoleDir:
    """What one role directory holds, read once per play."""

    path: str
    tasks_file: str | None
    handlers_file: str | None
    defaults: dict[str, Any]
    vars: dict[str, Any]
    dependencies: list[tuple[RoleRef, str]]  # each with the directory it was found in
    allow_duplicates: bool


@dataclass
class _Scope:
    """What a role passes down to its dependencies."""

    chain: tuple[RoleRef, ...] = ()
    inherited_vars: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    role_path: str | None = None
    paths: tuple[str, ...] = ()  # the role directories on the way here, for cycles


def configured_roles_path(env: Mapping[str, str] | None = None) -> list[str]:
    """Ansible's DEFAULT_ROLES_PATH: ``ANSIBLE_ROLES_PATH``, else ansible.cfg ``roles_path``,
    else ``$ANSIBLE_HOME/roles`` (``~/.ansible/roles``), /usr/share/ansible/roles,
    /etc/ansible/roles (ansible-core lib/ansible/config/base.yml, DEFAULT_ROLES_PATH)."""
    from provision import config  # reads the environment and ansible.cfg: only when needed

    env = os.environ if env is None else env
    configured = config.load(env).value("roles_path")
    if configured:
        return [p for p in configured if p]
    home = os.path.expanduser(env.get("ANSIBLE_HOME") or "~/.ansible")
    return [os.path.join(home, "roles"), *ANSIBLE_DEFAULT_ROLES]


def role_ref(entry: Any, file: str, line: int) -> RoleRef:
    """A ``roles:`` or ``dependencies:`` entry: a name, or a mapping with ``role:``/``name:``
    whose other keys are keywords (inherited), ``vars:`` or role params."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        entry = str(entry)  # Ansible: a role named by a number
    if isinstance(entry, str):
        name = entry.strip()
        if not name:
            raise RoleError(f"{file}:{line}: a role entry needs a role name")
        if "," in name:
            raise RoleError(
                f"{file}:{line}: role '{name}': old-style 'name,version' entries "
                "are not supported; give the role's name"
            )
        return RoleRef(name, file, line)
    if not isinstance(entry, Mapping):
        raise RoleError(f"{file}:{line}: a role entry is a name or a mapping with 'role:'")
    line = getattr(entry, "line", line) or line
    name = entry.get("role", entry.get("name"))
    if name is None and "src" in entry:  # a requirements-style dependency: {src: x}
        name = _name_from_src(str(entry["src"]))
    if not isinstance(name, str) or not name.strip():
        raise RoleError(f"{file}:{line}: role definitions must contain a role name ('role:')")
    params: dict[str, Any] = {}
    keywords: dict[str, Any] = {}
    role_vars: dict[str, Any] = {}
    for key, value in entry.items():
        if key in ("role", "name", "src", "version", "scm") or key in IGNORED_KEYWORDS:
            continue
        key_line = entry.line_of(key) if hasattr(entry, "line_of") else line
        if key in REFUSED_KEYWORDS:
            raise RoleError(
                f"{file}:{key_line}: role '{name}': '{key}' is not supported on a role entry "
                "(set it on the play, the host or the role's tasks)"
            )
        if key == "vars":
            if value is not None and not isinstance(value, Mapping):
                raise RoleError(f"{file}:{key_line}: role '{name}': 'vars' must be a mapping")
            role_vars = dict(value or {})
        elif key in INHERITED_KEYWORDS:
            keywords[key] = value
        else:
            params[str(key)] = value
    return RoleRef(name.strip(), file, line, params, role_vars, keywords)


def _name_from_src(src: str) -> str:
    """RoleRequirement.role_yaml_parse's name for a ``src`` (a URL, a path, a galaxy name)."""
    tail = src.split(",")[0].rstrip("/").rsplit("/", 1)[-1]
    return tail.removesuffix(".tar.gz").removesuffix(".git")


def include_ref(args: Mapping[str, Any], file: str, line: int, module: str) -> RoleRef:
    """The role an ``import_role``/``include_role`` names, with its ``*_from`` files and
    ``allow_duplicates`` (default true, as in role_include.py)."""
    where = f"{file}:{line}: {module}"
    unknown = sorted(str(k) for k in args if k not in INCLUDE_ARGS)
    if unknown:
        known = ", ".join(sorted(INCLUDE_ARGS))
        raise RoleError(f"{where}: unknown option '{unknown[0]}' (known: {known})")
    name = args.get("name", args.get("role"))
    if not isinstance(name, str) or not name.strip():
        raise RoleError(f"{where}: 'name' (the role) is required")
    if args.get("apply") is not None and "import_role" in module:
        raise RoleError(f"{where}: 'apply' is only for include_role (an import inherits directly)")
    from_files: dict[str, str] = {}
    for key in FROM_ARGS:
        value = args.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise RoleError(f"{where}: '{key}' must be a file name")
        from_files[key.removesuffix("_from")] = value
    allow = _flag(args.get("allow_duplicates", True), f"{where}: 'allow_duplicates'")
    return RoleRef(name.strip(), file, line, from_files=from_files, allow_duplicates=allow)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class RoleLoader:
    """The roles of one play: found, read once each, expanded dependencies first, each
    identity used once unless duplicates are allowed."""

    def __init__(
        self,
        play_dir: str,
        files: RoleFiles,
        roles_path: Sequence[str] | Callable[[], Sequence[str]] = configured_roles_path,
    ) -> None:
        self.play_dir = play_dir
        self.files = files
        self._roles_path = roles_path
        self._configured: list[str] | None = None
        self._read: dict[tuple[str, str], _RoleDir] = {}
        self.seen: set[str] = set()  # identities of the roles already laid out in this play

    # -- where a role is ---------------------------------------------------------------------

    def roles_path(self) -> list[str]:
        if self._configured is None:
            given = self._roles_path
            self._configured = list(given() if callable(given) else given)
        return self._configured

    def search_path(self, parent_role: str | None) -> list[str]:
        """The directories a role name is looked up in, in Ansible's order."""
        parent = [os.path.dirname(parent_role)] if parent_role else []
        return [os.path.join(self.play_dir, "roles"), *self.roles_path(), *parent, self.play_dir]

    def find(self, ref: RoleRef, parent_role: str | None = None) -> str:
        """The directory of the role ``ref`` names; RoleError listing the places searched."""
        if is_template(ref.name):
            raise RoleError(
                f"{ref.where}: a templated role name is not supported here; name the role"
            )
        places = self.search_path(parent_role)
        name = os.path.expanduser(ref.name)
        for base in places:
            candidate = os.path.normpath(os.path.join(base, name))
            if os.path.isdir(candidate):
                return candidate
        if os.path.isdir(name):  # a role given as a path (relative to the working directory)
            return os.path.abspath(name)
        if _FQCR.match(ref.name):
            raise RoleError(
                f"{ref.where}: a collection role, not found as a role directory in "
                f"{':'.join(places)}; provision does not read collections: copy the role into "
                "roles/ beside the playbook (its tasks must use modules provision has)"
            )
        raise RoleError(
            f"{ref.where}: the role '{ref.name}' was not found in {':'.join(places)} (put it "
            "in roles/ beside the playbook, or name its directory in ANSIBLE_ROLES_PATH or "
            "ansible.cfg roles_path)"
        )

    # -- what a role holds -------------------------------------------------------------------

    def read(self, path: str, ref: RoleRef) -> _RoleDir:
        key = (os.path.realpath(path), json.dumps(ref.from_files, sort_keys=True))
        if key not in self._read:
            self._read[key] = self._read_dir(path, ref)
        return self._read[key]

    def _read_dir(self, path: str, ref: RoleRef) -> _RoleDir:
        fr = ref.from_files
        meta_file = _role_file(path, "meta", None, ref)
        meta = self.files.data(meta_file) if meta_file else None
        if meta is None:
            meta = {}
        if not isinstance(meta, Mapping):
            raise RoleError(
                f"{meta_file}:1: the meta/main.yml of role '{ref.name}' must be a mapping"
            )
        deps = meta.get("dependencies") or []
        if not isinstance(deps, list):
            raise RoleError(
                f"{meta_file}:{_line_of(meta, 'dependencies')}: 'dependencies' must be a list"
            )
        dependencies = []
        for number, entry in enumerate(deps, 1):  # a plain name: one entry per line
            line = getattr(entry, "line", 0) or _line_of(meta, "dependencies") + number
            dep = role_ref(entry, str(meta_file), line)
            dependencies.append((dep, self.find(dep, path)))
        allow = _flag(meta.get("allow_duplicates", False), f"{meta_file}: 'allow_duplicates'")
        return _RoleDir(
            path=path,
            tasks_file=_role_file(path, "tasks", fr.get("tasks"), ref),
            handlers_file=_role_file(path, "handlers", fr.get("handlers"), ref),
            defaults=self._variables(path, "defaults", fr.get("defaults"), ref),
            vars=self._variables(path, "vars", fr.get("vars"), ref),
            dependencies=dependencies,
            allow_duplicates=allow,
        )

    def _variables(self, path: str, subdir: str, main: str | None, ref: RoleRef) -> dict[str, Any]:
        """defaults/ or vars/: the main file, or every file of a ``main/`` directory in name
        order (later files win), as Role._load_role_yaml with allow_dir."""
        found = _role_file(path, subdir, main, ref, allow_dir=True)
        if found is None:
            return {}
        files = [found]
        if os.path.isdir(found):
            files = [
                os.path.join(found, n)
                for n in sorted(os.listdir(found))
                if n.endswith((".yml", ".yaml", ".json")) and os.path.isfile(os.path.join(found, n))
            ]
        out: dict[str, Any] = {}
        for name in files:
            out.update(self.files.mapping(name, subdir))
        return out

    def exported_vars(self, role: _RoleDir, visiting: tuple[str, ...] = ()) -> dict[str, Any]:
        """The vars/ of every dependency, deepest first (Role.get_vars' "exported" vars)."""
        out: dict[str, Any] = {}
        visiting = (*visiting, os.path.realpath(role.path))
        for dep, dep_path in role.dependencies:
            if os.path.realpath(dep_path) in visiting:
                raise RoleError(f"{dep.where}: role dependency cycle through {dep_path}")
            dep_dir = self.read(dep_path, dep)
            out.update(self.exported_vars(dep_dir, visiting))
            out.update(dep_dir.vars)
        return out

    # -- the order they run in ---------------------------------------------------------------

    def uses(
        self, ref: RoleRef, scope: _Scope | None = None, path: str | None = None
    ) -> list[RoleUse]:
        """``ref``'s dependencies' uses, then its own; none when this identity already ran in
        the play and duplicates are not allowed."""
        scope = scope or _Scope()
        path = path or self.find(ref, scope.role_path)
        if os.path.realpath(path) in scope.paths:
            route = " -> ".join([*(r.name for r in scope.chain), ref.name])
            raise RoleError(f"{ref.where}: role dependency cycle: {route}")
        role = self.read(path, ref)
        identity = _identity(path, ref)
        allowed = (
            ref.allow_duplicates if ref.allow_duplicates is not None else role.allow_duplicates
        )
        if identity in self.seen and not allowed:
            return []
        self.seen.add(identity)
        chain = (*scope.chain, ref)
        params = {**scope.params, **ref.params}
        own_vars = {**scope.inherited_vars, **self.exported_vars(role), **role.vars, **ref.vars}
        inherited = {**scope.inherited_vars, **ref.vars, **role.vars}
        below = _Scope(chain, inherited, params, path, (*scope.paths, os.path.realpath(path)))
        out: list[RoleUse] = []
        for dep, dep_path in role.dependencies:
            out += self.uses(dep, below, dep_path)
        name = os.path.basename(path) if os.sep in ref.name else ref.name
        out.append(
            RoleUse(
                name,
                path,
                role.tasks_file,
                role.handlers_file,
                chain,
                own_vars,
                params,
                dict(role.defaults),
            )
        )
        return out


def _identity(path: str, ref: RoleRef) -> str:
    """Role._get_hash_dict: the same role with the same params, when, tags, vars and files."""
    return json.dumps(
        [
            os.path.realpath(path),
            ref.params,
            ref.vars,
            ref.keywords.get("when"),
            ref.keywords.get("tags"),
            ref.from_files,
        ],
        sort_keys=True,
        default=str,
    )


def _line_of(data: Any, key: str) -> int:
    line_of = getattr(data, "line_of", None)
    return int(line_of(key)) if line_of else 1


def _role_file(
    path: str, subdir: str, main: str | None, ref: RoleRef, allow_dir: bool = False
) -> str | None:
    """``SUBDIR/main.yml`` (main.yaml, main.json, main), or ``SUBDIR/MAIN`` given by a
    ``*_from`` (with or without its extension); None when the role has none. A ``*_from`` file
    that is missing is an error (ansible-core: "Could not find specified file in role")."""
    directory = os.path.join(path, subdir)
    if main is None:
        names = ["main.yml", "main.yaml", "main.json", "main"]
    else:
        names = [main, f"{main}.yml", f"{main}.yaml", f"{main}.json"]
    for name in names:
        candidate = os.path.normpath(os.path.join(directory, name))
        if not candidate.startswith(os.path.join(directory, "")):
            raise RoleError(f"{ref.where}: '{subdir}_from: {main}' is outside the role's {subdir}/")
        if os.path.isfile(candidate) or (allow_dir and os.path.isdir(candidate)):
            return candidate
    if main is not None:
        raise RoleError(
            f"{ref.where}: could not find the specified file in role: {subdir}/{main} "
            f"(looked in {directory})"
        )
    return None


def _flag(value: Any, where: str) -> bool:
    """A role's boolean setting by the one boolean rule (provision.booleans)."""
    try:
        return boolean(value)
    except NotABoolean as exc:
        raise RoleError(f"{where}: {exc}") from None
