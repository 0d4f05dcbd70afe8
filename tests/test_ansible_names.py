"""Ansible's module names and argument forms for the modules provision has (issue 14, item 1):
FQCN names, ``systemd``/``systemd_service``/``package``, argument aliases, ``k=v`` strings,
``chdir=``/``creates=``/``removes=`` in a command's free form, ``shell`` ``executable``, and
``systemd`` ``masked``/``daemon_reload``. The same playbook is run by the real ansible-playbook
(ansible-core 2.19, a test dependency) and by provision, and the results compared.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.modules import MODULES
from provision.playbook import PlaybookError, leaf_tasks, parse_playbook
from tests.ansible_local import (
    ANSIBLE_ENV,
    provision,
    recap,
    run_ansible_playbook_locally,
    run_provision_locally,
    tree,
    write_local_inventory,
)
from tests.conftest import venv_tool
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)

REPO = Path(__file__).resolve().parent.parent

# Every form this item adds, in one playbook: run against a directory ``out``.
SITE = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: a directory (k=v string, dest alias of path)
      ansible.builtin.file: dest={{ out }}/etc state=directory mode=0750
    - name: a file (FQCN, mapping)
      ansible.builtin.copy:
        content: "hello\\n"
        dest: "{{ out }}/etc/greeting"
        mode: "0640"
    - name: a templated boolean argument (force false keeps the file)
      copy:
        dest: "{{ out }}/etc/greeting"
        content: "replaced\n"
        force: "{{ overwrite }}"
      vars:
        overwrite: "{{ 1 > 2 }}"
    - name: a line (dest alias, quoted k=v value)
      ansible.builtin.lineinfile: dest={{ out }}/etc/lines line="second line" create=yes
    - name: the installer
      copy:
        dest: "{{ out }}/installer.sh"
        mode: "0755"
        content: |
          #!/bin/sh
          echo "args=$* pwd=$(pwd)" > result.txt
          touch done
    - name: run it (chdir= and creates= in the free form; a=b stays an argument)
      ansible.builtin.command: ./installer.sh first a=b chdir={{ out }} creates={{ out }}/done
    - name: bash syntax through executable
      ansible.builtin.shell: if [[ -f done ]]; then echo "bash ran" > shell.txt; fi
      args:
        chdir: "{{ out }}"
        executable: /bin/bash
        creates: "{{ out }}/shell.txt"
    - name: removes= in the free form (nothing to remove, so ok)
      command: rm {{ out }}/never removes={{ out }}/never
    - name: package (apt on Debian), k=v with pkg alias
      ansible.builtin.package: pkg=coreutils state=present
"""


def apply_with_both(hosts: list[BootedHost], tmp_path: Path, playbook: str) -> list[str]:
    """Run ``playbook`` (in tmp_path) with the real ansible-playbook on hosts[0] and with
    provision on hosts[1]; both must succeed. Returns provision's arguments, for a rerun."""
    return run_with_both(hosts, tmp_path, playbook).args


@dataclass
class BothRuns:
    args: list[str]  # provision's arguments, for a rerun
    ansible: subprocess.CompletedProcess[str]
    provision: subprocess.CompletedProcess[str]


def run_with_both(hosts: list[BootedHost], tmp_path: Path, playbook: str) -> BothRuns:
    """:func:`apply_with_both`, with both runs' output (their recaps)."""
    theirs_inv = write_inventory(hosts[:1], tmp_path / "ansible.ini")
    mine_inv = write_inventory(hosts[1:], tmp_path / "provision.ini")
    known = write_known_hosts(hosts, tmp_path / "known_hosts")
    done = subprocess.run(
        [venv_tool("ansible-playbook"), "-i", str(theirs_inv), playbook],
        cwd=tmp_path,
        env={**ANSIBLE_ENV, "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={known}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    args = ["apply", "-i", str(mine_inv), "-p", playbook, "--known-hosts", str(known)]
    first = provision(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    return BothRuns(args, done, first)


def test_same_playbook_same_result_as_ansible_playbook(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text(SITE)
    write_local_inventory(tmp_path)
    theirs, mine = tmp_path / "ansible", tmp_path / "provision"
    theirs.mkdir()
    mine.mkdir()
    run_ansible_playbook_locally(tmp_path, "site.yml", "-e", f"out={theirs}")
    first = run_provision_locally(tmp_path, "site.yml", "-e", f"out={mine}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert tree(mine) == tree(theirs)
    assert (mine / "result.txt").read_text() == f"args=first a=b pwd={mine}\n"
    assert (mine / "shell.txt").read_text() == "bash ran\n"
    assert (mine / "etc" / "greeting").read_text() == "hello\n"  # force: "{{ false }}"
    # converged: nothing to do
    again = run_provision_locally(tmp_path, "site.yml", "-e", f"out={mine}")
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout


def test_chdir_in_free_form_is_an_option_not_an_argument(tmp_path: Path) -> None:
    # The hazard the issue names: `./installer chdir=/usr/local` used to hand the program
    # "chdir=/usr/local" and run it wherever the shell was.
    play = parse_playbook(
        "- hosts: all\n  tasks:\n    - command: ./installer --prefix=/opt chdir=/usr/local\n"
    )
    task = leaf_tasks(play.plays[0].tasks)[0]
    assert task.module == "command"
    assert task.args == {"cmd": "./installer --prefix=/opt", "chdir": "/usr/local"}


@pytest.mark.parametrize(
    ("written", "ours"),
    [
        ("ansible.builtin.copy", "copy"),
        ("ansible.builtin.command", "command"),
        ("systemd", "service"),
        ("ansible.builtin.systemd_service", "service"),
        ("package", "apt"),
    ],
)
def test_ansible_names_resolve_to_our_modules(written: str, ours: str) -> None:
    arg = {"copy": "dest=/x content=y", "command": "/bin/true", "service": "name=ssh"}.get(
        ours, "name=jq"
    )
    parsed = parse_playbook(f"- hosts: all\n  tasks:\n    - {written}: {arg}\n")
    task = leaf_tasks(parsed.plays[0].tasks)[0]
    assert task.module == ours and ours in MODULES


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("copy: dest=/x just-a-word", "must be a mapping or key=value words, got 'just-a-word'"),
        ("file: path=/x dest=/y", "'dest' and 'path' are the same argument"),
        ('copy: dest="/x content=y', "unclosed quote"),
        ("ansible.builtin.nosuch: x=1", "unknown module or keyword 'ansible.builtin.nosuch'"),
        ("systemd: enabled=true", "missing required argument 'name'"),
    ],
)
def test_bad_ansible_forms_are_one_line_errors(task: str, message: str) -> None:
    with pytest.raises(PlaybookError) as info:
        parse_playbook(f"- hosts: all\n  tasks:\n    - {task}\n", "site.yml")
    assert str(info.value).startswith("site.yml:3: ") and message in str(info.value)
    assert "\n" not in str(info.value)


# -- systemd on booted hosts ------------------------------------------------------------------

SYSTEMD = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: a unit
      ansible.builtin.copy:
        dest: /etc/systemd/system/p14-demo.service
        content: |
          [Unit]
          Description=issue 14 demo
          [Service]
          ExecStart=/bin/sleep infinity
          [Install]
          WantedBy=multi-user.target
    - name: reload alone
      ansible.builtin.systemd_service: daemon_reload=true
    - name: enabled and started (FQCN, unit alias)
      ansible.builtin.systemd:
        unit: p14-demo
        enabled: true
        state: started
    - name: masked
      systemd: name=e2scrub_all.timer masked=yes
    - name: a masked unit unmasked and started in one task
      ansible.builtin.systemd:
        name: p14-back
        masked: false
        state: started
"""
BACK_UNIT = "[Service]\nExecStart=/bin/sleep infinity\n"


def unit_state(host: BootedHost, unit: str) -> str:
    return host.exec(
        f"systemctl show -p LoadState -p ActiveState -p UnitFileState {unit}; "
        f"systemctl is-enabled {unit} || true"
    ).stdout


def test_systemd_forms_match_ansible_playbook_on_booted_hosts(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    hosts = booted_hosts(2, prefix="names")
    for host in hosts:  # p14-back: installed under /lib (a unit in /etc cannot be masked)
        host.exec(
            "cat > /lib/systemd/system/p14-back.service && systemctl daemon-reload && "
            "systemctl mask p14-back",
            input=BACK_UNIT,
        )
    (tmp_path / "systemd.yml").write_text(SYSTEMD)
    args = apply_with_both(hosts, tmp_path, "systemd.yml")
    for unit in ("p14-demo.service", "e2scrub_all.timer", "p14-back.service"):
        assert unit_state(hosts[1], unit) == unit_state(hosts[0], unit), unit
    assert "ActiveState=active" in unit_state(hosts[1], "p14-back.service")
    assert "LoadState=masked" in unit_state(hosts[1], "e2scrub_all.timer")
    again = provision(*args, cwd=tmp_path)
    assert again.returncode == 0
    # only the explicit daemon_reload task reports a change on a converged host
    assert recap(again.stdout)["changed"] == 1, again.stdout


# -- file links, copy force and validate ------------------------------------------------------

FILES = """\
- hosts: all
  gather_facts: false
  tasks:
    - file: path={{ out }}/data state=directory
    - copy:
        dest: "{{ out }}/data/a.conf"
        content: "a=1\\n"
    - name: force=no leaves an existing file as it is
      copy:
        dest: "{{ out }}/data/keep.conf"
        content: "new\\n"
        force: no
    - name: a symbolic link (relative src)
      ansible.builtin.file: src=a.conf dest={{ out }}/data/link.conf state=link
    - name: a link over a file, forced
      file: src=a.conf path={{ out }}/data/was-file state=link force=yes
    - name: a dangling link, forced
      file: src=/nonexistent/p14 path={{ out }}/dangling state=link force=yes
    - name: a hard link
      file: src={{ out }}/data/a.conf dest={{ out }}/hard.conf state=hard
    - name: mode for everything inside
      file: path={{ out }}/data state=directory mode=0750 recurse=yes
    - name: a first line
      lineinfile: dest={{ out }}/sshd.conf line="# managed" insertbefore=BOF
    - name: a line before the last match, validated
      ansible.builtin.lineinfile:
        path: "{{ out }}/sshd.conf"
        line: PasswordAuthentication no
        insertbefore: ^PermitRootLogin
        validate: grep -q '^Port' %s
    - name: a validated copy
      copy:
        dest: "{{ out }}/valid.json"
        content: '{"ok": true}'
        validate: python3 -m json.tool %s
"""


def file_tree(root: Path) -> dict[str, tuple[str, str]]:
    """Like tree(), with links as links and hard links named by their first path."""
    out: dict[str, tuple[str, str]] = {}
    inodes: dict[int, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = (oct(st.st_mode & 0o7777), "")
        else:
            first = inodes.setdefault(st.st_ino, rel)
            out[rel] = (oct(st.st_mode & 0o7777), f"{path.read_text()} (inode of {first})")
    return out


def test_links_force_recurse_and_validate_like_ansible_playbook(tmp_path: Path) -> None:
    (tmp_path / "files.yml").write_text(FILES)
    write_local_inventory(tmp_path)
    theirs, mine = tmp_path / "ansible", tmp_path / "provision"
    for out in (theirs, mine):
        (out / "data").mkdir(parents=True)
        (out / "data" / "keep.conf").write_text("old\n")
        (out / "data" / "was-file").write_text("a plain file\n")
        (out / "sshd.conf").write_text("Port 22\nPermitRootLogin yes\n")
    run_ansible_playbook_locally(tmp_path, "files.yml", "-e", f"out={theirs}")
    first = run_provision_locally(tmp_path, "files.yml", "-e", f"out={mine}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert file_tree(mine) == file_tree(theirs)
    assert (mine / "data" / "keep.conf").read_text() == "old\n"
    assert os.readlink(mine / "data" / "was-file") == "a.conf"
    assert (mine / "sshd.conf").read_text() == (
        "# managed\nPort 22\nPasswordAuthentication no\nPermitRootLogin yes\n"
    )
    again = run_provision_locally(tmp_path, "files.yml", "-e", f"out={mine}")
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout


def test_validate_refusal_leaves_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "conf.json"
    dest.write_text('{"old": 1}\n')
    (tmp_path / "bad.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - copy:\n"
        f"        dest: {dest}\n        content: 'not json'\n"
        "        validate: python3 -m json.tool %s\n"
    )
    (tmp_path / "hosts.ini").write_text("[here]\nlocalhost ansible_connection=local\n")
    done = provision("apply", "-i", "hosts.ini", "-p", "bad.yml", cwd=tmp_path)
    assert done.returncode == 2 and recap(done.stdout)["failed"] == 1
    assert dest.read_text() == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".provision")] == []
    with pytest.raises(PlaybookError, match="validate must name the file to check as %s"):
        parse_playbook("- hosts: all\n  tasks:\n    - copy: dest=/x content=y validate=true\n")


# -- reboot post_reboot_delay and test_command on a booted host --------------------------------

REBOOT = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: reboot
      ansible.builtin.reboot:
        post_reboot_delay: 3
        test_command: test -e /run/p14-ready
        reboot_timeout: 120
    - name: after the reboot
      command: cat /run/p14-ready
"""
# Ready only ten seconds after boot: the play must wait on test_command, not on SSH alone.
READY_UNIT = """\
[Service]
ExecStart=/bin/sh -c 'sleep 10; echo ready > /run/p14-ready'
[Install]
WantedBy=multi-user.target
"""


def test_reboot_waits_post_reboot_delay_and_test_command(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    from provision.engine import ApplyOptions, run_playbook
    from provision.inventory import load_inventory

    (host,) = booted_hosts(1, prefix="rbt14")
    host.exec(
        "cat > /etc/systemd/system/p14-ready.service && systemctl enable p14-ready",
        input=READY_UNIT,
    )
    before = host.boot_id()
    (tmp_path / "reboot.yml").write_text(REBOOT)
    inventory = write_inventory([host], tmp_path / "hosts.ini")
    opts = ApplyOptions(
        known_hosts=(str(write_known_hosts([host], tmp_path / "known_hosts")),),
        extra_vars={"allow_reboot": True},
        connect_timeout=5.0,
    )
    result = run_playbook(load_inventory(str(inventory)), str(tmp_path / "reboot.yml"), opts)
    assert result.exit_code == 0, [r.msg for r in result.results]
    reboot, after = result.results
    assert reboot.status == "changed" and reboot.data["elapsed"] >= 3
    assert reboot.data["boot_id"] != before == reboot.data["boot_id_before"]
    assert after.status == "changed" and after.data["stdout"] == "ready"


# -- stat ---------------------------------------------------------------------------------------

STAT = """\
- hosts: all
  gather_facts: false
  vars:
    keys: [exists, isdir, isreg, islnk, mode, size, pw_name, checksum, lnk_source, executable]
  tasks:
    - {ansible.builtin.stat: "path={{ out }}/file", register: f}
    - {stat: {path: "{{ out }}/dir"}, register: d}
    - {stat: "path={{ out }}/link", register: l}
    - {stat: {path: "{{ out }}/link", follow: true, checksum_algorithm: sha256}, register: lf}
    - {stat: "path={{ out }}/missing", register: m}
    - name: only when it is missing
      copy:
        dest: "{{ out }}/created"
        content: "{% for r in [f, d, l, lf, m] %}{% for k in keys %}{{ k }}={{ r.stat[k] |
          default('-') }} {% endfor %}| {% endfor %}"
      when: not m.stat.exists
"""


def test_stat_registers_what_ansible_stat_registers(tmp_path: Path) -> None:
    (tmp_path / "stat.yml").write_text(STAT)
    write_local_inventory(tmp_path)
    outs = {}
    for tool in ("ansible", "provision"):
        out = tmp_path / f"by-{tool[0]}"  # the same length: a link's size is its target's
        (out / "dir").mkdir(parents=True)
        (out / "file").write_text("some content\n")
        (out / "file").chmod(0o640)
        (out / "link").symlink_to(out / "file")
        outs[tool] = out
    run_ansible_playbook_locally(tmp_path, "stat.yml", "-e", f"out={outs['ansible']}")
    mine = run_provision_locally(tmp_path, "stat.yml", "-e", f"out={outs['provision']}")
    assert mine.returncode == 0, mine.stdout + mine.stderr
    theirs_text = (outs["ansible"] / "created").read_text().replace(str(outs["ansible"]), "OUT")
    mine_text = (outs["provision"] / "created").read_text().replace(str(outs["provision"]), "OUT")
    assert mine_text == theirs_text
    assert "isreg=True islnk=False mode=0640 size=13" in mine_text
    # read only: a --check run and a second run change nothing
    again = run_provision_locally(tmp_path, "stat.yml", "-e", f"out={outs['provision']}")
    assert recap(again.stdout)["changed"] == 0, again.stdout


# -- user and group on booted hosts --------------------------------------------------------------

ACCOUNTS = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.group: name=p14lab gid=3100
    - {group: {name: p14sys, system: true}}
    - {group: {name: p14old, state: absent}}
    - name: a lab user
      ansible.builtin.user:
        name: alice
        uid: 3101
        groups: p14lab,sudo
        shell: /bin/bash
        comment: Alice A
    - name: a service account
      user: name=p14svc system=yes create_home=no shell=/usr/sbin/nologin
    - name: one more group for bob, keeping his others
      user: name=bob groups=p14lab append=yes
    - name: exactly these groups for dave
      user: {name: dave, groups: [p14lab]}
    - {user: {name: carol, state: absent, remove: true}}
"""
ACCOUNTS_SETUP = (
    "groupadd p14old && useradd -m carol && useradd -m -G users bob && useradd -m -G users dave"
)
ACCOUNTS_READ = (
    "getent passwd alice p14svc bob carol dave; getent group p14lab p14sys p14old; "
    "for u in alice bob dave; do echo $u: $(id -nG $u); done; "
    "ls -d /home/* ; ls -d /home/p14svc 2>&1 || true"
)


def test_user_and_group_match_ansible_playbook_on_booted_hosts(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    hosts = booted_hosts(2, prefix="acct")
    for host in hosts:
        host.exec(ACCOUNTS_SETUP)
    (tmp_path / "accounts.yml").write_text(ACCOUNTS)
    args = apply_with_both(hosts, tmp_path, "accounts.yml")
    assert hosts[1].exec(ACCOUNTS_READ).stdout == hosts[0].exec(ACCOUNTS_READ).stdout
    assert "alice: alice sudo p14lab" in hosts[1].exec(ACCOUNTS_READ).stdout
    again = provision(*args, cwd=tmp_path)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout
