"""Inventory passwords (issue 13, item 11): ``ansible_password``/``ansible_ssh_pass`` log in and
``ansible_become_password``/``ansible_become_pass`` answer sudo, as in Ansible, and the password
never shows in stdout, stderr or the -vv log. Real sshd lab hosts; the ``sudo`` fault host logs in
as a user whose sudo asks for :data:`SUDO_PASSWORD`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from provision.errors import ConfigError
from provision.target import conn_spec
from tests.conftest import need
from tests.lab.sshd import SUDO_PASSWORD, SUDO_USER, SshdLab
from tests.test_cli import cli, host_lines


def _sudo_lab(lab: SshdLab) -> None:
    need(shutil.which("sudo") is not None, "needs sudo (Debian package sudo)")
    assert lab.host("sudo").user == SUDO_USER


@pytest.mark.parametrize("var", ["ansible_become_password", "ansible_become_pass"])
def test_become_password_from_the_inventory(sshd_lab: SshdLab, tmp_path: Path, var: str) -> None:
    _sudo_lab(sshd_lab)
    inv = sshd_lab.write_inventory(
        str(tmp_path / "hosts.ini"),
        [sshd_lab.host("sudo")],
        extra_vars={"ansible_become": "true", var: SUDO_PASSWORD},
    )
    r = cli("-vv", "run", "-i", inv, "id -u", env=sshd_lab.env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert host_lines(r.stdout) == {"fault-sudo": "OK"}
    assert r.stdout.split(">>", 1)[1].split() == ["0"]  # root, through sudo
    assert SUDO_PASSWORD not in r.stdout + r.stderr


def test_a_wrong_inventory_become_password_is_refused_without_showing_it(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    _sudo_lab(sshd_lab)
    wrong = "wrong-canary-Pw-0c3a"
    inv = sshd_lab.write_inventory(
        str(tmp_path / "hosts.ini"),
        [sshd_lab.host("sudo")],
        extra_vars={"ansible_become": "true", "ansible_become_password": wrong},
    )
    r = cli("-vv", "run", "-i", inv, "id -u", env=sshd_lab.env(), cwd=str(tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"sudo rejected the become password for user {SUDO_USER}" in r.stdout
    assert wrong not in r.stdout + r.stderr


@pytest.mark.parametrize("var", ["ansible_password", "ansible_ssh_pass"])
def test_ssh_password_from_the_inventory(
    sshd_lab_factory: Callable[..., SshdLab], tmp_path: Path, var: str
) -> None:
    need(shutil.which("sudo") is not None, "needs sudo (Debian package sudo)")
    lab = sshd_lab_factory(n=0, faults=["sudo"], extra_config={"*": ["PasswordAuthentication yes"]})
    host = lab.host("sudo")
    inv = tmp_path / "hosts.ini"
    # no key file: only the password can log in
    inv.write_text(
        f"{host.name} ansible_host={host.address} ansible_port={host.port} "
        f"ansible_user={SUDO_USER} {var}={SUDO_PASSWORD}\n"
    )
    r = cli("-vv", "run", "-i", str(inv), "whoami", env=lab.env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split(">>", 1)[1].split() == [SUDO_USER]
    assert SUDO_PASSWORD not in r.stdout + r.stderr
    inv.write_text(inv.read_text().replace(SUDO_PASSWORD, "not-the-password"))
    refused = cli("run", "-i", str(inv), "whoami", env=lab.env(), cwd=str(tmp_path))
    assert refused.returncode == 4
    assert f"authentication failed for user {SUDO_USER}" in refused.stdout


def test_a_templated_password_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as err:
        conn_spec("ws1", {"ansible_become_password": "{{ vault_pw }}"}, ssh_config_path="")
    assert str(err.value).startswith(
        "host ws1: ansible_become_password is a template; provision does not render inventory "
        "variables or read vaults"
    )


def test_passwords_never_show_in_a_spec_repr() -> None:
    spec = conn_spec(
        "ws1",
        {"ansible_password": "pw-one", "ansible_become_pass": "pw-two"},
        ssh_config_path="",
    )
    assert (spec.password, spec.become_password) == ("pw-one", "pw-two")
    assert "pw-one" not in repr(spec) and "pw-two" not in repr(spec)
