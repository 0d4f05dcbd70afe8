"""Connection variables and ~/.ssh/config -> ConnSpec, with Ansible's precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.errors import ConfigError
from provision.target import conn_spec, parse_proxy_jump
from provision.varparse import to_bool

SSH_CONFIG = """\
Host ws*
    User labadmin
    Port 2222
    IdentityFile ~/.ssh/lab_ed25519

Host ws07
    HostName 10.1.2.7
    ProxyJump jump@bastion:2200

Host legacy
    HostName 10.9.9.9
    ProxyCommand ssh -q -W %h:%p -l gate oldbastion

Host *
    User fallback
"""


@pytest.fixture
def ssh_config(tmp_path: Path) -> str:
    path = tmp_path / "config"
    path.write_text(SSH_CONFIG)
    return str(path)


def test_defaults_without_vars_or_config() -> None:
    spec = conn_spec("node1", {}, ssh_config_path="")
    assert (spec.hostname, spec.port, spec.user, spec.key_filenames) == ("node1", 22, None, ())
    assert (spec.proxy_jump, spec.connection, spec.become, spec.become_user) == (
        None,
        "ssh",
        False,
        "root",
    )


def test_ssh_config_supplies_hostname_user_port_key_jump(ssh_config: str) -> None:
    spec = conn_spec("ws07", {}, ssh_config_path=ssh_config)
    assert spec.hostname == "10.1.2.7"
    assert spec.user == "labadmin"
    assert spec.port == 2222
    assert spec.key_filenames == (str(Path("~/.ssh/lab_ed25519").expanduser()),)
    assert spec.proxy_jump == "jump@bastion:2200"


def test_ansible_vars_beat_ssh_config(ssh_config: str) -> None:
    hostvars = {
        "ansible_host": "192.168.5.7",
        "ansible_port": "2200",
        "ansible_user": "alice",
        "ansible_ssh_private_key_file": "/keys/id",
        "ansible_ssh_common_args": "-o ProxyJump=ops@gw",
    }
    spec = conn_spec("ws07", hostvars, ssh_config_path=ssh_config)
    assert (spec.hostname, spec.port, spec.user) == ("192.168.5.7", 2200, "alice")
    assert spec.key_filenames == ("/keys/id",)
    assert spec.proxy_jump == "ops@gw"


def test_command_line_user_and_key_sit_between_vars_and_config(ssh_config: str) -> None:
    spec = conn_spec("ws01", {}, ssh_config_path=ssh_config, default_user="cli", default_key="/k")
    assert (spec.user, spec.key_filenames) == ("cli", ("/k",))
    spec = conn_spec(
        "ws01", {"ansible_user": "var"}, ssh_config_path=ssh_config, default_user="cli"
    )
    assert spec.user == "var"


def test_config_user_for_unmatched_host_comes_from_wildcard(ssh_config: str) -> None:
    assert conn_spec("other", {}, ssh_config_path=ssh_config).user == "fallback"


@pytest.mark.parametrize(
    ("args", "jump"),
    [
        ("-J bastion", "bastion"),
        ("-Jbastion:2022", "bastion:2022"),
        ("-o ProxyJump=u@b1,u@b2", "u@b1,u@b2"),
        ("-oProxyJump=gw", "gw"),
        ("-o 'ProxyJump gw2'", "gw2"),
        ("-o StrictHostKeyChecking=no -o ProxyJump=gw3 -C", "gw3"),
        ('-o ProxyCommand="ssh -W %h:%p -q user@bastion"', "user@bastion"),
        ("-o ProxyCommand='ssh -p 2200 -W %h:%p jumphost'", "jumphost:2200"),
        ("-o UserKnownHostsFile=/x -o StrictHostKeyChecking=yes", None),
        ("-o ProxyJump=none", None),
    ],
)
def test_proxy_jump_from_ssh_common_args(args: str, jump: str | None) -> None:
    assert parse_proxy_jump(args) == jump
    assert conn_spec("h", {"ansible_ssh_common_args": args}, ssh_config_path="").proxy_jump == jump


def test_unsupported_proxy_command_is_an_error() -> None:
    with pytest.raises(ConfigError, match="ProxyCommand"):
        parse_proxy_jump("-o ProxyCommand='nc -X 5 -x socks:1080 %h %p'", "h")


def test_proxy_command_in_ssh_config_becomes_a_jump(ssh_config: str) -> None:
    spec = conn_spec("legacy", {}, ssh_config_path=ssh_config)
    assert (spec.hostname, spec.proxy_jump) == ("10.9.9.9", "gate@oldbastion")


@pytest.mark.parametrize(
    ("value", "kind"), [("ssh", "ssh"), ("paramiko", "ssh"), ("local", "local")]
)
def test_connection_types(value: str, kind: str) -> None:
    assert conn_spec("h", {"ansible_connection": value}, ssh_config_path="").connection == kind


def test_unknown_connection_type_is_an_error() -> None:
    with pytest.raises(ConfigError, match="winrm"):
        conn_spec("h", {"ansible_connection": "winrm"}, ssh_config_path="")


def test_become_var_beats_command_line() -> None:
    assert conn_spec("h", {}, ssh_config_path="", become=True).become is True
    assert conn_spec("h", {"ansible_become": "no"}, ssh_config_path="", become=True).become is False
    spec = conn_spec(
        "h", {"ansible_become": True, "ansible_become_user": "svc"}, ssh_config_path=""
    )
    assert (spec.become, spec.become_user) == (True, "svc")


def test_become_method_other_than_sudo_is_refused() -> None:
    with pytest.raises(ConfigError, match="su"):
        conn_spec("h", {"ansible_become_method": "su"}, ssh_config_path="")


@pytest.mark.parametrize("bad", ["abc", "99999", "0"])
def test_bad_port_is_an_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="port"):
        conn_spec("h", {"ansible_port": bad}, ssh_config_path="")


def test_to_bool_follows_ansible() -> None:
    assert [to_bool(v) for v in ("yes", "On", "1", "TRUE", "t", True)] == [True] * 6
    assert [to_bool(v) for v in ("no", "off", "0", "False", "", False)] == [False] * 6
    with pytest.raises(ConfigError):
        to_bool("maybe")
