"""Ansible Vault against the real ansible-vault, ansible-inventory and ansible-playbook
(ansible-core 2.19, a test dependency): files and ``!vault`` values they encrypt are read,
listed as Ansible lists them, refused in one line without a password, and never shown in logs,
progress or diffs; group_vars/ and host_vars/ beside the playbook are read as Ansible reads them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provision.errors import InventoryError
from provision.inventory import load_inventory
from provision.target import conn_spec
from provision.vault import Locked, VaultError, VaultSecret, decrypt, load_secrets
from tests.conftest import venv_tool
from tests.test_cli import cli

REPO = Path(__file__).resolve().parent.parent
SECRET = "Tr0ub4dor&3 vaulted ünïcode"  # a value with shell metacharacters and non-ASCII
ANSIBLE_ENV = {
    **os.environ,
    "ANSIBLE_DEPRECATION_WARNINGS": "False",
    "ANSIBLE_LOCALHOST_WARNING": "False",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_HOST_KEY_CHECKING": "False",
}


def ansible(tool: str, *args: str, cwd: Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [venv_tool(tool), *args],
        cwd=cwd,
        env=ANSIBLE_ENV,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{tool} failed: {done.stderr}"
    return done.stdout


def provision(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, run in ``cwd`` (where the playbook and its files are)."""
    return cli(*args, cwd=str(cwd), timeout=180)


def password_file(directory: Path, name: str, password: str) -> Path:
    path = directory / name
    path.write_text(password + "\n", encoding="utf-8")
    return path


def encrypt_string(directory: Path, name: str, value: str, *vault_args: str) -> str:
    """``name: !vault |...`` as the real ``ansible-vault encrypt_string`` writes it."""
    return ansible(
        "ansible-vault", "encrypt_string", *vault_args, "--name", name, value, cwd=directory
    )


# -- the format ------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [None, "lab"], ids=["1.1", "1.2-vault-id"])
def test_decrypts_what_the_real_ansible_vault_encrypts(tmp_path: Path, label: str | None) -> None:
    pw = password_file(tmp_path, "pw", "correct horse")
    plain = ("line one\n" + SECRET + "\n" + "x" * 1000 + "\n").encode()
    (tmp_path / "plain.txt").write_bytes(plain)
    source = f"{label}@{pw}" if label else str(pw)
    vaulted = ansible(
        "ansible-vault", "encrypt", "--vault-id", source, "--output", "-", "plain.txt", cwd=tmp_path
    )
    assert vaulted.startswith("$ANSIBLE_VAULT;1.2;AES256;lab" if label else "$ANSIBLE_VAULT;1.1")
    right = VaultSecret(label or "default", b"correct horse")
    wrong = VaultSecret("other", b"wrong horse")
    assert decrypt(vaulted, [right]) == plain
    assert decrypt(vaulted, [wrong, right]) == plain  # every password is tried
    with pytest.raises(VaultError, match="no vault password given decrypts it"):
        decrypt(vaulted, [wrong])
    with pytest.raises(VaultError, match="no vault password was given"):
        decrypt(vaulted, [])
    # One changed hex digit of the ciphertext: the HMAC refuses it, nothing is decrypted.
    lines = vaulted.splitlines()
    lines[-1] = lines[-1][:-1] + ("0" if lines[-1][-1] != "0" else "1")
    with pytest.raises(VaultError):
        decrypt("\n".join(lines), [right])


def test_password_sources_file_script_prompt_and_vault_id(tmp_path: Path) -> None:
    pw = password_file(tmp_path, "pw", "from a file")
    script = tmp_path / "vault-pass.sh"
    script.write_text("#!/bin/sh\necho 'from a script'\n", encoding="utf-8")
    script.chmod(0o700)
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "typed"

    secrets = load_secrets([str(pw)], [f"prod@{script}", "dev@prompt"], ask=True, prompt=prompt)
    assert [(s.vault_id, s.password) for s in secrets] == [
        ("prod", b"from a script"),
        ("dev", b"typed"),
        ("default", b"from a file"),  # stripped of its newline, as Ansible reads it
        ("default", b"typed"),
    ]
    assert asked == ["Vault password (dev): ", "Vault password: "]
    assert "from a file" not in repr(secrets)
    with pytest.raises(VaultError, match="cannot read the vault password file"):
        load_secrets([str(tmp_path / "missing")])


def test_vaulted_values_keep_their_vault_text_through_copies() -> None:
    import copy
    import pickle

    from provision.vault import VaultedText, secrets_in

    value = VaultedText("plain secret", "$ANSIBLE_VAULT;1.1;AES256\n3031\n")
    for again in (copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert isinstance(again, VaultedText) and again == "plain secret"
        assert again.ciphertext == value.ciphertext
    assert secrets_in({"a": [value, "not secret"]}) == ["plain secret"]


# -- inventories -----------------------------------------------------------------------------


def vaulted_lab(tmp_path: Path) -> Path:
    """An inventory whose group_vars hold inline !vault values under two vault ids and a whole
    vault-encrypted host_vars file; hosts.ini is returned."""
    password_file(tmp_path, "dev.pw", "dev password")
    password_file(tmp_path, "prod.pw", "prod password")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(
        "plain_var: visible\n"
        + encrypt_string(tmp_path, "db_password", SECRET, "--vault-id", "dev@dev.pw")
        + encrypt_string(tmp_path, "api_token", "t0ken", "--vault-id", "prod@prod.pw"),
        encoding="utf-8",
    )
    (tmp_path / "ws1.yml").write_text("ws1_secret: s3cret-of-ws1\nport_list: [1, 2]\n")
    ansible(
        "ansible-vault",
        "encrypt",
        "--vault-id",
        "prod@prod.pw",
        "--output",
        "host_vars/ws1.yml",
        "ws1.yml",
        cwd=tmp_path,
    )
    (tmp_path / "hosts.ini").write_text("[gpu]\nws1\nws2\n", encoding="utf-8")
    return tmp_path / "hosts.ini"


def test_inventory_list_shows_vaults_as_ansible_inventory_does(tmp_path: Path) -> None:
    hosts = vaulted_lab(tmp_path)
    work = tmp_path / "empty"
    work.mkdir()
    ids = ["--vault-id", f"dev@{tmp_path / 'dev.pw'}", "--vault-id", f"prod@{tmp_path / 'prod.pw'}"]
    theirs = ansible("ansible-inventory", "-i", str(hosts), "--list", *ids, cwd=work)
    mine = provision("inventory", "-i", str(hosts), "--list", *ids, cwd=work)
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout) == json.loads(theirs)
    # The values themselves, as a task sees them: decrypted per vault id.
    inv = load_inventory(
        str(hosts),
        [VaultSecret("dev", b"dev password"), VaultSecret("prod", b"prod password")],
    )
    assert inv.hosts["ws1"].vars["db_password"] == SECRET
    assert inv.hosts["ws2"].vars["api_token"] == "t0ken"
    assert inv.hosts["ws1"].vars["ws1_secret"] == "s3cret-of-ws1"
    assert set(inv.vault_secrets()) >= {SECRET, "t0ken", "s3cret-of-ws1"}


def test_inline_vault_without_password_lists_and_refuses_where_used(tmp_path: Path) -> None:
    hosts = vaulted_lab(tmp_path)
    (tmp_path / "host_vars" / "ws1.yml").unlink()  # only the inline values are left
    work = tmp_path / "empty"
    work.mkdir()
    theirs = ansible("ansible-inventory", "-i", str(hosts), "--list", cwd=work)
    mine = provision("inventory", "-i", str(hosts), "--list", cwd=work)
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout) == json.loads(theirs)
    value = load_inventory(str(hosts)).hosts["ws1"].vars["db_password"]
    assert isinstance(value, Locked)
    # A connection password that is a locked vault: one line, with the file and the flags.
    with pytest.raises(VaultError) as info:
        conn_spec("ws1", {"ansible_become_password": value}, ssh_config_path="")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'group_vars' / 'all.yml'}:2: ")
    assert "--vault-password-file" in message and "\n" not in message
    assert SECRET not in message


def test_whole_vault_inventory_needs_a_password_and_reads_with_one(tmp_path: Path) -> None:
    pw = password_file(tmp_path, "pw", "inventory password")
    (tmp_path / "plain.ini").write_text(
        "[gpu]\nws1 ansible_host=10.0.0.5 ansible_become_password=hunter2-sudo\n"
    )
    ansible(
        "ansible-vault",
        "encrypt",
        "--vault-password-file",
        str(pw),
        "--output",
        "hosts.ini",
        "plain.ini",
        cwd=tmp_path,
    )
    hosts = tmp_path / "hosts.ini"
    refused = provision("inventory", "-i", str(hosts), "--list", cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert f"{hosts}: it is vault-encrypted" in refused.stderr
    assert "--ask-vault-pass" in refused.stderr
    theirs = ansible(
        "ansible-inventory",
        "-i",
        str(hosts),
        "--list",
        "--vault-password-file",
        str(pw),
        cwd=tmp_path,
    )
    for flags in (["--vault-password-file", str(pw)], ["--vault-id", f"lab@{pw}"]):
        mine = provision("inventory", "-i", str(hosts), "--list", *flags, cwd=tmp_path)
        assert mine.returncode == 0, mine.stderr
        assert json.loads(mine.stdout) == json.loads(theirs)
    wrong = password_file(tmp_path, "wrong", "not it")
    bad = provision(
        "inventory", "-i", str(hosts), "--list", "--vault-password-file", str(wrong), cwd=tmp_path
    )
    assert bad.returncode == 1 and "no vault password given decrypts it" in bad.stderr
    with pytest.raises(InventoryError):
        load_inventory(str(hosts))


def test_ask_vault_pass_prompts_once(tmp_path: Path, monkeypatch, capsys) -> None:
    from provision import cli

    hosts = vaulted_lab(tmp_path)
    (tmp_path / "host_vars" / "ws1.yml").unlink()
    asked: list[str] = []

    def getpass(text: str) -> str:
        asked.append(text)
        return "dev password"

    monkeypatch.setattr("getpass.getpass", getpass)
    assert cli.main(["inventory", "-i", str(hosts), "--host", "ws1", "--ask-vault-pass"]) == 0
    assert asked == ["Vault password: "]
    assert "__ansible_vault" in capsys.readouterr().out


# -- apply: values used, never shown -----------------------------------------------------------


def test_apply_uses_vaulted_values_and_never_shows_them(tmp_path: Path) -> None:
    pw = password_file(tmp_path, "pw", "apply password")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(
        encrypt_string(tmp_path, "db_password", SECRET, "--vault-password-file", str(pw))
    )
    (tmp_path / "hosts.ini").write_text("[here]\nlocalhost ansible_connection=local\n")
    out = tmp_path / "db.conf"
    (tmp_path / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - name: write the config\n      copy:\n"
        f'        content: "password={{{{ db_password }}}}\\n"\n        dest: {out}\n'
        "    - name: echo it\n      command: echo {{ db_password }}\n"
    )
    base = ["apply", "-i", "hosts.ini", "-p", "site.yml", "--vault-password-file", str(pw)]
    for extra in (["--diff", "-vvv"], ["--format", "json", "-vvv"]):
        out.unlink(missing_ok=True)
        done = provision(*base, *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert out.read_text() == f"password={SECRET}\n"  # the host got the real value
        for shown in (done.stdout, done.stderr):
            assert SECRET not in shown and "Tr0ub4dor" not in shown
        assert "********" in done.stdout + done.stderr
    refused = provision(*base[:-2], cwd=tmp_path)  # no password: the task says so, once
    assert refused.returncode == 2
    assert "group_vars/all.yml:1: it is vault-encrypted" in refused.stderr
    assert "Traceback" not in refused.stderr


# -- group_vars/ and host_vars/ beside the playbook -------------------------------------------


def trellis_layout(tmp_path: Path) -> Path:
    """The trellis layout: the inventory in hosts/, group_vars/ and host_vars/ at the root beside
    the playbook, and an inventory-side group_vars/ they must override as in Ansible."""
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "group_vars").mkdir()
    (tmp_path / "hosts" / "development").write_text(
        "[development]\nlocalhost ansible_connection=local from_line=line "
        f"ansible_python_interpreter={sys.executable}\n\n[web]\nlocalhost\n"
    )
    (tmp_path / "hosts" / "group_vars" / "all.yml").write_text(
        "site: inv-all\nlevel_all: inv-all\nlevel_group: inv-all\n"
    )
    (tmp_path / "hosts" / "group_vars" / "web.yml").write_text("level_group: inv-web\n")
    for sub in ("group_vars/development", "host_vars"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "group_vars" / "all.yml").write_text("level_all: pb-all\nlevel_group: pb-all\n")
    (tmp_path / "group_vars" / "development" / "main.yml").write_text(
        "wordpress_env: development\nlevel_group: pb-development\n"
    )
    (tmp_path / "host_vars" / "localhost.yml").write_text("from_line: pb-host\n")
    return tmp_path / "hosts" / "development"


def test_playbook_dir_vars_listed_as_ansible_inventory_does(tmp_path: Path) -> None:
    hosts = trellis_layout(tmp_path)
    work = tmp_path / "hosts"  # neither tool may pick the root up from the working directory
    args = ["-i", str(hosts), "--list", "--playbook-dir", str(tmp_path)]
    theirs = json.loads(ansible("ansible-inventory", *args, cwd=work))
    mine = provision("inventory", *args, cwd=work)
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout) == theirs
    assert theirs["_meta"]["hostvars"]["localhost"]["level_group"] == "pb-development"
    without = provision("inventory", "-i", str(hosts), "--list", cwd=work)
    assert "wordpress_env" not in without.stdout  # only a playbook there brings them in


def test_apply_reads_vars_beside_the_playbook_like_ansible_playbook(tmp_path: Path) -> None:
    hosts = trellis_layout(tmp_path)
    names = ["site", "level_all", "level_group", "from_line", "wordpress_env"]
    line = " ".join(f"{n}={{{{ {n} }}}}" for n in names)
    for tool in ("ansible", "provision"):
        (tmp_path / f"{tool}.yml").write_text(
            "- hosts: all\n  gather_facts: false\n  tasks:\n"
            f'    - name: write\n      copy:\n        content: "{line}\\n"\n'
            f"        dest: {tmp_path / tool}.out\n"
        )
    ansible("ansible-playbook", "-i", str(hosts), "ansible.yml", cwd=tmp_path)
    done = provision("apply", "-i", str(hosts), "-p", "provision.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = (tmp_path / "ansible.out").read_text()
    assert expected == (
        "site=inv-all level_all=pb-all level_group=pb-development from_line=pb-host "
        "wordpress_env=development\n"
    )
    assert (tmp_path / "provision.out").read_text() == expected


# -- vaults on the playbook side ------------------------------------------------------------------


def test_vaulted_vars_files_and_play_vars_like_ansible_playbook(tmp_path: Path) -> None:
    pw = password_file(tmp_path, "pw", "playbook password")
    (tmp_path / "secrets.plain.yml").write_text(f"api_key: {SECRET}\n")
    ansible(
        "ansible-vault",
        "encrypt",
        "--vault-password-file",
        str(pw),
        "--output",
        "secrets.yml",
        "secrets.plain.yml",
        cwd=tmp_path,
    )
    (tmp_path / "secrets.plain.yml").unlink()
    inline = encrypt_string(
        tmp_path, "db_password", "inline-s3cret", "--vault-password-file", str(pw)
    )
    (tmp_path / "hosts.ini").write_text(
        f"[here]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    for tool in ("ansible", "provision"):
        (tmp_path / f"{tool}.yml").write_text(
            "- hosts: all\n  gather_facts: false\n  vars_files: [secrets.yml]\n  vars:\n"
            + "".join("    " + line + "\n" for line in inline.splitlines())
            + "  tasks:\n    - copy:\n"
            f"        dest: {tmp_path / tool}.out\n"
            '        content: "{{ api_key }} {{ db_password }}\\n"\n'
        )
    ansible(
        "ansible-playbook",
        "-i",
        "hosts.ini",
        "ansible.yml",
        "--vault-password-file",
        str(pw),
        cwd=tmp_path,
    )
    base = ["apply", "-i", "hosts.ini", "-p", "provision.yml"]
    done = provision(*base, "--vault-password-file", str(pw), "--diff", "-vvv", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "provision.out").read_text() == (tmp_path / "ansible.out").read_text()
    assert (tmp_path / "provision.out").read_text() == f"{SECRET} inline-s3cret\n"
    for shown in (done.stdout, done.stderr):
        assert "Tr0ub4dor" not in shown and "inline-s3cret" not in shown
    refused = provision(*base, cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "secrets.yml:1: it is vault-encrypted and no vault password was given" in refused.stderr
