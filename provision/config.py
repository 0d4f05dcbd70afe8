"""ansible.cfg and the inventory environment variables, read the way Ansible reads them.

Which file (ansible-core 2.19, ``lib/ansible/config/manager.py: find_ini_config_file``): the
first readable one of ``$ANSIBLE_CONFIG`` (a directory means ``DIR/ansible.cfg``),
``./ansible.cfg`` (skipped when the working directory is world-writable), ``~/.ansible.cfg``.
Ansible goes on to ``/etc/ansible/ansible.cfg``; provision reads it only when asked
(``ANSIBLE_CONFIG=/etc/ansible/ansible.cfg``), so a system-wide file cannot silently point a lab
run somewhere else.

What (``lib/ansible/config/base.yml``): ``[defaults]`` ``inventory`` (a comma-separated path list,
relative to the file's directory; env ``ANSIBLE_INVENTORY``, relative to the working
directory), ``remote_user`` (``ANSIBLE_REMOTE_USER``), ``private_key_file``
(``ANSIBLE_PRIVATE_KEY_FILE``), ``forks`` (``ANSIBLE_FORKS``), ``timeout`` (``ANSIBLE_TIMEOUT``),
``host_key_checking`` (``ANSIBLE_HOST_KEY_CHECKING``), ``roles_path`` (a colon-separated path list,
relative to the file's directory; ``ANSIBLE_ROLES_PATH``). An environment variable beats the file,
as in Ansible; ``PROVISION_INVENTORY`` beats both. Values are parsed as Ansible does:
``configparser`` with ``;`` inline comments, surrounding quotes removed.

Pure apart from :func:`load`, which reads the environment and the file.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provision.booleans import NotABoolean, boolean
from provision.errors import ConfigError

# [defaults] keys provision uses, with the environment variable that overrides each.
ENV_NAMES = {
    "inventory": "ANSIBLE_INVENTORY",
    "remote_user": "ANSIBLE_REMOTE_USER",
    "private_key_file": "ANSIBLE_PRIVATE_KEY_FILE",
    "forks": "ANSIBLE_FORKS",
    "timeout": "ANSIBLE_TIMEOUT",
    "host_key_checking": "ANSIBLE_HOST_KEY_CHECKING",
    "roles_path": "ANSIBLE_ROLES_PATH",
}
PROVISION_INVENTORY = "PROVISION_INVENTORY"


@dataclass(frozen=True)
class Setting:
    value: Any
    origin: str  # "/path/ansible.cfg:4" or "ANSIBLE_FORKS"


@dataclass
class Config:
    path: str | None = None  # the ansible.cfg read, if any
    settings: dict[str, Setting] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # "[defaults] gathering", file order

    def value(self, key: str) -> Any:
        setting = self.settings.get(key)
        return None if setting is None else setting.value

    def inventory(self) -> Setting | None:
        """The one inventory file named by the environment or the file (``None``: none)."""
        setting = self.settings.get("inventory")
        if setting is None:
            return None
        paths = [p for p in setting.value if p]
        if len(paths) != 1:
            raise ConfigError(
                f"{setting.origin}: inventory names {len(paths)} sources; provision reads one "
                "inventory file: name it there, or pass one with -i"
            )
        return Setting(paths[0], setting.origin)

    def refuse_unchecked_host_keys(self) -> None:
        setting = self.settings.get("host_key_checking")
        if setting is not None and setting.value is False:
            raise ConfigError(
                f"{setting.origin}: host_key_checking = False is refused: provision always "
                "checks host keys (an unchecked key lets another machine read the sudo "
                "password); remove the setting and use --accept-new-host-keys to record the "
                "keys of new hosts (a changed key is still refused)"
            )


def find_config_file(env: Mapping[str, str], cwd: str, home: str) -> str | None:
    """The ansible.cfg Ansible would read, without /etc/ansible (see the module docstring)."""
    candidates = []
    from_env = env.get("ANSIBLE_CONFIG")
    if from_env is not None:
        path = os.path.abspath(os.path.expanduser(from_env))
        candidates.append(os.path.join(path, "ansible.cfg") if os.path.isdir(path) else path)
    try:
        if not os.stat(cwd).st_mode & stat.S_IWOTH:
            candidates.append(os.path.join(cwd, "ansible.cfg"))
    except OSError:
        pass
    candidates.append(os.path.join(home, ".ansible.cfg"))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.R_OK):
            return path
    return None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(section, key) -> line number, for messages that point at the line."""
    lines: dict[tuple[str, str], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        if m := re.match(r"\s*\[([^\]]+)\]", line):
            section = m.group(1).strip()
        elif m := re.match(r"([^\s#;=:][^=:]*?)\s*[=:]", line):
            lines.setdefault((section, m.group(1).strip().lower()), number)
    return lines


def _typed(key: str, raw: str, origin: str, base_dir: str) -> Any:
    if key == "inventory":
        return [_path(p.strip(), base_dir) if p.strip() else "" for p in raw.split(",")]
    if key == "private_key_file":
        return _path(raw, base_dir)
    if key == "roles_path":  # Ansible's "pathspec": os.pathsep-separated
        return [_path(p.strip(), base_dir) for p in raw.split(os.pathsep) if p.strip()]
    if key in ("forks", "timeout"):
        try:
            number = int(raw)
        except ValueError:
            raise ConfigError(f"{origin}: {key} = {raw}: not a whole number") from None
        if number < 1:
            raise ConfigError(f"{origin}: {key} = {raw}: must be at least 1")
        return number
    if key == "host_key_checking":
        try:
            return boolean(raw)
        except NotABoolean:
            raise ConfigError(f"{origin}: {key} = {raw}: not a boolean (true or false)") from None
    return raw


def _path(value: str, base_dir: str) -> str:
    value = os.path.expandvars(os.path.expanduser(value.replace("{{CWD}}", os.getcwd())))
    return os.path.normpath(os.path.join(base_dir, value))


def parse_config(text: str, path: str) -> Config:
    """The settings of one ansible.cfg's text; every other key is listed as ignored."""
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",))
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        lineno = getattr(exc, "lineno", None)
        where = f"{path}:{lineno}" if lineno else path
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not an ansible.cfg INI file: {first}") from None
    lines = _key_lines(text)
    config = Config(path=path)
    base_dir = os.path.dirname(os.path.abspath(path))
    for section in parser.sections():
        for key in parser[section]:
            origin = f"{path}:{lines.get((section, key), 0)}".removesuffix(":0")
            if section == "defaults" and key in ENV_NAMES:
                try:
                    raw = parser.get(section, key)
                except configparser.Error as exc:
                    raise ConfigError(f"{origin}: {str(exc).splitlines()[0]}") from None
                value = _typed(key, _unquote(raw.strip()), origin, base_dir)
                config.settings[key] = Setting(value, origin)
            else:
                config.ignored.append(f"[{section}] {key}")
    return config


def with_environment(config: Config, env: Mapping[str, str], cwd: str) -> Config:
    """The environment variables over the file's settings, as Ansible ranks them."""
    settings = dict(config.settings)
    for key, name in ENV_NAMES.items():
        if env.get(name):
            settings[key] = Setting(_typed(key, env[name], name, cwd), name)
    if env.get(PROVISION_INVENTORY):
        path = _path(env[PROVISION_INVENTORY], cwd)
        settings["inventory"] = Setting([path], PROVISION_INVENTORY)
    return Config(config.path, settings, list(config.ignored))


def load(env: Mapping[str, str] | None = None) -> Config:
    """The configuration this process runs with: the file Ansible would find, then the
    environment over it."""
    env = os.environ if env is None else env
    cwd = os.getcwd()
    path = find_config_file(env, cwd, env.get("HOME") or os.path.expanduser("~"))
    config = Config()
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        config = parse_config(text, path)
    return with_environment(config, env, cwd)
