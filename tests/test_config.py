"""ansible.cfg, ANSIBLE_INVENTORY and PROVISION_INVENTORY: read as the real ansible-config reads
them (compared with ansible-core's `ansible-config dump` in the venv), used by the real CLI
against lab sshd hosts."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from provision import config
from provision.errors import ConfigError
from tests.conftest import venv_tool
from tests.lab.sshd import SshdLab
from tests.test_cli import cli, host_lines

CFG = """\
[defaults]
inventory = ../lab.ini, b.ini
remote_user = 'admin' ; a comment
forks = 7
timeout = 3
private_key_file = keys/id
host_key_checking = yes
gathering = smart

[ssh_connection]
pipelining = True
"""


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PROVISION_"))}
    return {**env, "HOME": str(home), "ANSIBLE_NOCOLOR": "1", **extra}


def _ansible_dump(cwd: Path, env: dict[str, str]) -> dict[str, object]:
    r = subprocess.run(
        [venv_tool("ansible-config"), "dump", "--only-changed", "-f", "json"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "ANSIBLE_LOCAL_TEMP": str(cwd / ".ansible-tmp")},
        timeout=120,
        check=True,
    )
    return {d["name"]: d["value"] for d in json.loads(r.stdout) if "name" in d}


def _ours(cwd: Path, env: dict[str, str]) -> config.Config:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return config.load(env)
    finally:
        os.chdir(old)


SAME_AS = {
    "inventory": "DEFAULT_HOST_LIST",
    "remote_user": "DEFAULT_REMOTE_USER",
    "private_key_file": "DEFAULT_PRIVATE_KEY_FILE",
    "forks": "DEFAULT_FORKS",
    "timeout": "DEFAULT_TIMEOUT",
    "host_key_checking": "HOST_KEY_CHECKING",
}


@pytest.mark.parametrize("source", ["cwd", "ANSIBLE_CONFIG dir", "ANSIBLE_CONFIG file", "home"])
def test_settings_and_file_are_those_ansible_config_reads(tmp_path: Path, source: str) -> None:
    home, work, elsewhere = tmp_path / "home", tmp_path / "work", tmp_path / "etc" / "sub"
    for d in (home, work, elsewhere):
        d.mkdir(parents=True)
    env = _clean_env(home)
    where = {"cwd": work, "home": home}.get(source, elsewhere)
    cfg = where / (".ansible.cfg" if source == "home" else "ansible.cfg")
    cfg.write_text(CFG)
    if source == "ANSIBLE_CONFIG dir":
        env["ANSIBLE_CONFIG"] = str(elsewhere)
    elif source == "ANSIBLE_CONFIG file":
        env["ANSIBLE_CONFIG"] = str(cfg)
    theirs = _ansible_dump(work, env)
    ours = _ours(work, env)
    assert theirs["CONFIG_FILE"] == ours.path == str(cfg)
    for key, name in SAME_AS.items():
        assert ours.value(key) == theirs[name], key
    assert ours.ignored == ["[defaults] gathering", "[ssh_connection] pipelining"]


def test_environment_beats_the_file_as_in_ansible(tmp_path: Path) -> None:
    (tmp_path / "ansible.cfg").write_text(CFG)
    env = _clean_env(
        tmp_path,
        ANSIBLE_INVENTORY="envinv.ini",
        ANSIBLE_REMOTE_USER="envuser",
        ANSIBLE_FORKS="3",
        ANSIBLE_TIMEOUT="9",
        ANSIBLE_PRIVATE_KEY_FILE="k/env",
        ANSIBLE_HOST_KEY_CHECKING="False",
    )
    theirs = _ansible_dump(tmp_path, env)
    ours = _ours(tmp_path, env)
    for key, name in SAME_AS.items():
        assert ours.value(key) == theirs[name], key
    assert ours.settings["forks"].origin == "ANSIBLE_FORKS"


def test_world_writable_directory_is_skipped_as_ansible_does(tmp_path: Path) -> None:
    work = tmp_path / "shared"
    work.mkdir()
    work.chmod(0o777)
    (work / "ansible.cfg").write_text(CFG)
    env = _clean_env(tmp_path)
    assert _ansible_dump(work, env)["CONFIG_FILE"] is None
    assert _ours(work, env).path is None


def test_etc_ansible_is_read_only_when_asked(tmp_path: Path) -> None:
    """Ansible would fall back to /etc/ansible/ansible.cfg; provision does not, so the lookup
    ends with ~/.ansible.cfg (checked on a made-up cwd and home, whatever /etc holds)."""
    assert config.find_config_file({}, str(tmp_path), str(tmp_path)) is None
    etc = tmp_path / "etc-ansible.cfg"
    etc.write_text("[defaults]\nforks = 2\n")
    env = {"ANSIBLE_CONFIG": str(etc)}
    assert config.find_config_file(env, str(tmp_path), str(tmp_path)) == str(etc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults]\n\nforks = many\n", "ansible.cfg:3: forks = many: not a whole number"),
        ("[defaults]\ntimeout = 0\n", "ansible.cfg:2: timeout = 0: must be at least 1"),
        ("[defaults]\nhost_key_checking = maybe\n", "ansible.cfg:2: host_key_checking = maybe"),
        ("forks = 5\n", "ansible.cfg:1: not an ansible.cfg INI file"),
    ],
)
def test_bad_values_are_one_line_naming_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "ansible.cfg").write_text(text)
    r = cli("ping", "--local", env=_clean_env(tmp_path), cwd=str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"provision: error: {tmp_path}/{message}")


@pytest.mark.parametrize("where", ["file", "env"])
def test_host_key_checking_false_is_refused_with_the_reason(tmp_path: Path, where: str) -> None:
    inv = tmp_path / "lab.ini"
    inv.write_text("ws01 ansible_host=127.0.0.1\n")
    env = _clean_env(tmp_path)
    if where == "file":
        (tmp_path / "ansible.cfg").write_text("[defaults]\nhost_key_checking = False\n")
        origin = f"{tmp_path}/ansible.cfg:2"
    else:
        env["ANSIBLE_HOST_KEY_CHECKING"] = "false"
        origin = "ANSIBLE_HOST_KEY_CHECKING"
    r = cli("ping", str(inv), env=env, cwd=str(tmp_path))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"provision: error: {origin}: host_key_checking = False is refused")
    assert "--accept-new-host-keys" in r.stderr and r.stderr.count("\n") == 1
    # showing the inventory contacts no host: the setting does not matter there
    assert cli("inventory", str(inv), "--list", env=env, cwd=str(tmp_path)).returncode == 0


def test_no_inventory_anywhere_is_said_not_localhost(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    for argv in (["ping"], ["run", "true"], ["inventory", "--list"]):
        r = cli(*argv, env=env, cwd=str(tmp_path))
        assert r.returncode == 1 and r.stdout == "", argv
        assert r.stderr.startswith("provision: error: no inventory: ")
        assert "ANSIBLE_INVENTORY" in r.stderr and "Traceback" not in r.stderr
    r = cli("ping", "--local", env=env, cwd=str(tmp_path))
    assert r.returncode == 0 and host_lines(r.stdout) == {"localhost": "SUCCESS"}


def test_inventory_from_environment_and_file_in_order(tmp_path: Path) -> None:
    for name in ("cfg", "ansible", "provision", "arg"):
        (tmp_path / f"{name}.ini").write_text(f"{name}-host\n")
    (tmp_path / "ansible.cfg").write_text("[defaults]\ninventory = cfg.ini\n")
    env = _clean_env(tmp_path)

    def listed(**extra: str) -> list[str]:
        argv = ["inventory", *extra.pop("argv", "").split(), "--list"]
        r = cli(*argv, env={**env, **extra}, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["ungrouped"]["hosts"]

    assert listed() == ["cfg-host"]
    assert listed(ANSIBLE_INVENTORY="ansible.ini") == ["ansible-host"]
    both = {"ANSIBLE_INVENTORY": "ansible.ini", "PROVISION_INVENTORY": "provision.ini"}
    assert listed(**both) == ["provision-host"]
    assert listed(**both, argv="arg.ini") == ["arg-host"]
    assert listed(**both, argv="-i arg.ini") == ["arg-host"]
    (tmp_path / "ansible.cfg").write_text("[defaults]\ninventory = cfg.ini, other.ini\n")
    r = cli("inventory", "--list", env=env, cwd=str(tmp_path))
    assert r.returncode == 1 and "provision reads one inventory file" in r.stderr


def test_ansible_cfg_drives_a_real_run(sshd_lab: SshdLab, tmp_path: Path) -> None:
    """inventory, remote_user and private_key_file from ansible.cfg reach the lab hosts (the
    inventory names neither user nor key); the ignored keys are named once on stderr."""
    hosts = sshd_lab.ok_hosts[:2]
    lines = [f"{h.name} ansible_host={h.address} ansible_port={h.port}" for h in hosts]
    (tmp_path / "lab.ini").write_text("[lab]\n" + "\n".join(lines) + "\n")
    (tmp_path / "ansible.cfg").write_text(
        "[defaults]\ninventory = lab.ini\n"
        f"remote_user = {hosts[0].user}\nprivate_key_file = {hosts[0].key_file}\n"
        "gathering = smart\nretry_files_enabled = False\n"
    )
    env = {**sshd_lab.env(), "PWD": str(tmp_path)}
    r = cli("ping", "-T", "5", env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert host_lines(r.stdout) == {h.name: "SUCCESS" for h in hosts}
    assert r.stderr.count("provision ignores") == 1
    assert "[defaults] gathering, [defaults] retry_files_enabled" in r.stderr


def test_ansible_cfg_timeout_is_the_connect_timeout(sshd_lab: SshdLab, tmp_path: Path) -> None:
    """The tarpit host accepts TCP and never speaks: `timeout = 1` ends it in about a second
    (the default is 10 s), and -T on the command line still wins."""
    inv = sshd_lab.write_inventory(str(tmp_path / "hosts.ini"), [sshd_lab.host("tarpit")])
    (tmp_path / "ansible.cfg").write_text("[defaults]\ntimeout = 1\n")
    start = time.monotonic()
    r = cli("ping", inv, env=sshd_lab.env(), cwd=str(tmp_path))
    took = time.monotonic() - start
    assert r.returncode == 4 and host_lines(r.stdout) == {"fault-tarpit": "UNREACHABLE"}
    assert took < 6, took
    start = time.monotonic()
    r = cli("ping", inv, "-T", "4", env=sshd_lab.env(), cwd=str(tmp_path))
    assert r.returncode == 4 and time.monotonic() - start >= 3.5


def test_parse_config_names_the_line_of_each_setting() -> None:
    parsed = config.parse_config("[defaults]\n# c\nforks=2\n\ntimeout : 4\n", "/x/ansible.cfg")
    assert parsed.settings["forks"] == config.Setting(2, "/x/ansible.cfg:3")
    assert parsed.settings["timeout"] == config.Setting(4, "/x/ansible.cfg:5")
    with pytest.raises(ConfigError, match="names 0 sources"):
        config.parse_config("[defaults]\ninventory = ,\n", "/x/a.cfg").inventory()
