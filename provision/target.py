"""Host variables + ``~/.ssh/config`` -> how to reach a host (:class:`ConnSpec`).

Users already describe their hosts with Ansible connection variables and an OpenSSH config; both
are honoured so an existing inventory works unchanged. Pure apart from reading the ssh config.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from provision.errors import ConfigError
from provision.varparse import to_bool


@dataclass(frozen=True)
class ConnSpec:
    """Everything the SSH layer needs to open one host's connection."""

    name: str
    hostname: str
    port: int
    user: str | None
    key_filenames: tuple[str, ...]
    proxy_jump: str | None
    connection: str
    become: bool
    become_user: str
    # Ansible's ansible_password / ansible_become_password: they travel only inside the SSH
    # protocol (password auth) and on sudo's stdin, never on a command line; never in a repr.
    password: str | None = field(default=None, repr=False)
    become_password: str | None = field(default=None, repr=False)


def _first(hostvars: dict, *keys: str) -> Any:
    for key in keys:
        value = hostvars.get(key)
        if value is not None and value != "":
            return value
    return None


PASSWORD_VARS = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password")
BECOME_PASSWORD_VARS = ("ansible_become_password", "ansible_become_pass")


def _secret(hostvars: dict, name: str, keys: tuple[str, ...]) -> str | None:
    """A password variable as Ansible reads it (first of its names that is set). A template
    (``{{ vault_pw }}``) is refused: inventory values are not rendered here (no vault), so it
    would be sent as the literal text."""
    for key in keys:
        value = hostvars.get(key)
        if value is None or value == "":
            continue
        text = str(value)
        if "{{" in text or "{%" in text:
            raise ConfigError(
                f"host {name}: {key} is a template; provision does not render inventory "
                "variables or read vaults: put the password itself there, or use "
                "--become-password-file / -K for sudo and a key for SSH"
            )
        return text
    return None


def _port(value: Any, name: str) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"host {name}: port {value!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"host {name}: port {port} is out of range")
    return port


def parse_proxy_jump(args: str, name: str = "?") -> str | None:
    """Find ``-J X``, ``-JX``, ``-o ProxyJump=X``, ``-oProxyJump=X`` or ``-o 'ProxyJump X'``.

    Also accepts the classic ``-o ProxyCommand="ssh -W %h:%p [opts] [user@]bastion"`` and turns
    it into a jump host; any other ProxyCommand is refused rather than silently ignored.
    """
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise ConfigError(f"host {name}: cannot parse ansible_ssh_common_args: {exc}") from None
    jump: str | None = None
    i = 0
    while i < len(words):
        word = words[i]
        option: str | None = None
        if word == "-J" and i + 1 < len(words):
            jump = words[i + 1]
            i += 2
            continue
        if word.startswith("-J") and len(word) > 2:
            jump = word[2:]
        elif word == "-o" and i + 1 < len(words):
            option = words[i + 1]
            i += 1
        elif word.startswith("-o") and len(word) > 2:
            option = word[2:]
        if option is not None:
            key, _, value = option.replace("=", " ", 1).partition(" ")
            value = value.strip()
            if key.lower() == "proxyjump" and value.lower() != "none":
                jump = value
            elif key.lower() == "proxycommand" and value.lower() != "none":
                jump = _jump_from_proxy_command(value, name)
        i += 1
    return jump


def _jump_from_proxy_command(command: str, name: str) -> str:
    words = shlex.split(command)
    if words and os.path.basename(words[0]) == "ssh" and "-W" in words:
        rest: list[str] = []
        skip = False
        for word in words[1:]:
            if skip:
                skip = False
                continue
            if word in ("-W", "-p", "-l", "-i", "-o", "-F"):
                skip = True
                continue
            if word.startswith("-"):
                continue
            rest.append(word)
        if len(rest) == 1:
            host = rest[0]
            if "-p" in words:
                host = f"{host}:{words[words.index('-p') + 1]}"
            if "-l" in words and "@" not in host:
                host = f"{words[words.index('-l') + 1]}@{host}"
            return host
    raise ConfigError(
        f"host {name}: ProxyCommand {command!r} is not supported; use -o ProxyJump=HOST or -J HOST"
    )


@lru_cache(maxsize=8)
def _load_ssh_config(path: str, mtime: float) -> Any:
    import paramiko  # lazy: keeps CLI start-up fast when no ssh config is involved

    try:
        return paramiko.SSHConfig.from_path(path)
    except Exception as exc:  # paramiko raises several types for bad files
        raise ConfigError(f"{path}: cannot parse ssh config: {exc}") from None


def ssh_config_lookup(host: str, path: str | None = None) -> dict[str, Any]:
    """The OpenSSH config options for ``host`` (empty when there is no config file)."""
    path = path if path is not None else os.path.expanduser("~/.ssh/config")
    if not path or not os.path.isfile(path):
        return {}
    config = _load_ssh_config(path, os.path.getmtime(path))
    return dict(config.lookup(host))


def conn_spec(
    name: str,
    hostvars: dict,
    *,
    ssh_config_path: str | None = None,
    default_user: str | None = None,
    default_key: str | None = None,
    become: bool | None = None,
) -> ConnSpec:
    """Resolve one inventory host into a :class:`ConnSpec` with Ansible's precedence.

    hostname: ansible_host > ssh config HostName > name; port: ansible_port > Port > 22;
    user: ansible_user > ``default_user`` (--user) > User > None; keys: ansible key file >
    ``default_key`` > IdentityFile; jump: ansible_ssh_common_args/extra_args > ProxyJump.
    ``ansible_become`` (a connection variable) beats ``become`` (the command line), as in Ansible.
    ``ansible_password`` (or ``ansible_ssh_pass``) is the SSH login password and
    ``ansible_become_password`` (or ``ansible_become_pass``) the sudo password; like any
    connection variable they beat the command line (-K, --become-password-file).
    """
    connection = str(_first(hostvars, "ansible_connection") or "ssh").strip().lower()
    if connection in ("ssh", "paramiko", "smart"):
        connection = "ssh"
    elif connection != "local":
        raise ConfigError(
            f"host {name}: ansible_connection={connection} is not supported (ssh, paramiko, local)"
        )
    ansible_host = _first(hostvars, "ansible_host", "ansible_ssh_host")
    lookup_name = str(ansible_host) if ansible_host is not None else name
    cfg = ssh_config_lookup(lookup_name, ssh_config_path) if connection == "ssh" else {}

    hostname = str(ansible_host) if ansible_host is not None else cfg.get("hostname", name)
    port_value = _first(hostvars, "ansible_port", "ansible_ssh_port") or cfg.get("port") or 22
    port = _port(port_value, name)
    user_value = _first(hostvars, "ansible_user", "ansible_ssh_user")
    user = str(user_value) if user_value is not None else default_user or cfg.get("user")

    key_value = _first(hostvars, "ansible_ssh_private_key_file", "ansible_private_key_file")
    if key_value is not None:
        keys: tuple[str, ...] = (os.path.expanduser(str(key_value)),)
    elif default_key:
        keys = (os.path.expanduser(default_key),)
    else:
        keys = tuple(os.path.expanduser(k) for k in cfg.get("identityfile", []))

    jump: str | None = None
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        args = _first(hostvars, var)
        if args is not None:
            jump = parse_proxy_jump(str(args), name) or jump
    if jump is None and cfg.get("proxyjump", "none").lower() != "none":
        jump = cfg["proxyjump"]
    if jump is None and "proxycommand" in cfg and cfg["proxycommand"].lower() != "none":
        jump = _jump_from_proxy_command(cfg["proxycommand"], name)

    become_var = _first(hostvars, "ansible_become")
    if become_var is not None:
        become_flag = to_bool(become_var, f"host {name}: ansible_become")
    else:
        become_flag = bool(become)
    method = _first(hostvars, "ansible_become_method")
    if method is not None and str(method) != "sudo":
        raise ConfigError(f"host {name}: ansible_become_method={method} is not supported (sudo)")
    become_user = str(_first(hostvars, "ansible_become_user") or "root")
    password = _secret(hostvars, name, PASSWORD_VARS) if connection == "ssh" else None
    become_password = _secret(hostvars, name, BECOME_PASSWORD_VARS)

    return ConnSpec(
        name=name,
        hostname=hostname,
        port=port,
        user=user,
        key_filenames=keys,
        proxy_jump=jump,
        connection=connection,
        become=become_flag,
        become_user=become_user,
        password=password,
        become_password=become_password,
    )
