"""blockinfile, replace, kernel_blacklist and modprobe (issue 14, item 3).

blockinfile and replace: the same playbook is run by the real ansible-playbook (ansible-core,
a test dependency) and by provision on this machine (a local connection), and the two trees of
files compared byte for byte; then a converged second run, a --check run that changes nothing,
and --diff. kernel_blacklist and modprobe are community.general modules, which ansible-core does
not ship: their outcome is asserted inside a booted Debian host against the rules of their
public source (community.general plugins/modules/kernel_blacklist.py and modprobe.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.inventory import load_inventory
from provision.modules import MODULES, module_named
from provision.modules.base import ArgError, Context, ModuleError, Plan
from provision.modules.textedit import edit_block, replace_text
from tests.ansible_local import (
    provision,
    run_ansible_playbook_locally,
    run_provision_locally,
    write_local_inventory,
)
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.test_ansible_names import recap
from tests.test_modules_more import file_state


def plan(module: str, args: dict, state: str | None, ctx: Context | None = None) -> Plan:
    m = MODULES[module]
    m.check_static(args)
    ctx = ctx or Context()
    return m.plan(m.prepare(m.finalize(args), ctx), state, ctx)


# -- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("blockinfile", {"block": "x"}, "missing required argument 'path'"),
        (
            "blockinfile",
            {"path": "/x", "insertafter": "a", "insertbefore": "b"},
            "give insertafter or insertbefore, not both",
        ),
        ("blockinfile", {"path": "/x", "insertafter": "("}, "not a valid regular expression"),
        ("blockinfile", {"path": "/x", "validate": "true"}, "validate must name the file"),
        ("replace", {"path": "/x"}, "missing required argument 'regexp'"),
        ("replace", {"path": "/x", "regexp": "a", "encoding": "nope"}, "unknown encoding"),
        ("kernel_blacklist", {"name": "nou veau"}, "is not a kernel module name"),
        ("modprobe", {"name": "dummy", "params": "a b;c"}, "is not a module parameter"),
        ("modprobe", {"name": "dummy", "persistent": "yes"}, "must be one of disabled"),
    ],
)
def test_bad_arguments_are_refused(module: str, args: dict, message: str) -> None:
    with pytest.raises(ArgError, match=message):
        MODULES[module].check_static(MODULES[module].canonical(args))


@pytest.mark.parametrize(
    ("written", "ours"),
    [
        ("ansible.builtin.blockinfile", "blockinfile"),
        ("ansible.builtin.replace", "replace"),
        ("community.general.modprobe", "modprobe"),
        ("community.general.kernel_blacklist", "kernel_blacklist"),
    ],
)
def test_fully_qualified_names(written: str, ours: str) -> None:
    assert module_named(written) == ours


# -- the edits, pure -----------------------------------------------------------------------------


def test_blockinfile_replaces_the_block_between_its_markers() -> None:
    text = "a\n# BEGIN ANSIBLE MANAGED BLOCK\nold\n# END ANSIBLE MANAGED BLOCK\nz\n"
    kw: dict[str, Any] = {
        "begin": "# BEGIN ANSIBLE MANAGED BLOCK",
        "end": "# END ANSIBLE MANAGED BLOCK",
        "insertafter": None,
        "insertbefore": None,
    }
    new, what = edit_block(text, block="new 1\nnew 2", **kw)
    assert new == "a\n# BEGIN ANSIBLE MANAGED BLOCK\nnew 1\nnew 2\n# END ANSIBLE MANAGED BLOCK\nz\n"
    assert what == "block inserted"
    assert edit_block(new, block="new 1\nnew 2\n", **kw) == (new, "block already as wanted")
    assert edit_block(text, block="", **kw) == ("a\nz\n", "block removed")
    assert edit_block("a\nz\n", block="", **kw) == ("a\nz\n", "no block to remove")


def test_replace_counts_replacements_within_after_and_before() -> None:
    text = "x=1\n[main]\nx=2\nx=3\n[other]\nx=4\n"
    new, what = replace_text(text, r"^x=(\d)", r"x = \1", after=r"\[main\]", before=r"\[other\]")
    assert new == "x=1\n[main]\nx = 2\nx = 3\n[other]\nx=4\n" and what == "2 replacements made"
    assert replace_text(new, r"^y=", "", after=None, before=None) == (new, "no match to replace")
    assert replace_text(text, "x", "y", after="^nothing", before=None)[1] == (
        "the after/before expressions do not match the file"
    )


def test_missing_files_follow_ansible() -> None:
    with pytest.raises(ModuleError, match=r"^/f does not exist$"):  # replace has no create
        plan("replace", {"path": "/f", "regexp": "a"}, "type=absent")
    with pytest.raises(ModuleError, match=r"/f does not exist \(create: true creates it\)"):
        plan("blockinfile", {"path": "/f", "block": "x"}, "type=absent")
    gone = plan("blockinfile", {"path": "/f", "state": "absent"}, "type=absent")
    assert not gone.changed and gone.reason == "/f does not exist"
    made = plan("blockinfile", {"path": "/d/f", "block": "x", "create": True}, "type=absent")
    assert made.steps[0].script.startswith("mkdir -p -- /d\n")
    assert made.steps[0].stdin == (
        b"# BEGIN ANSIBLE MANAGED BLOCK\nx\n# END ANSIBLE MANAGED BLOCK\n"
    )


def test_replace_plan_backs_up_and_shows_a_diff() -> None:
    p = plan(
        "replace",
        {"path": "/etc/x.conf", "regexp": "yes$", "replace": "no", "backup": True},
        file_state(b"a yes\nb yes\n"),
        Context(diff=True),
    )
    assert p.changes == ["/etc/x.conf: 2 replacements made"]
    assert p.steps[0].stdin == b"a no\nb no\n" and "backup=" in p.steps[0].script
    assert p.diff is not None and "-a yes\n" in p.diff and "+a no\n" in p.diff


# -- blockinfile and replace: the same playbook run by ansible-playbook and by provision ---------

TEXT = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: a block at the end, backed up
      ansible.builtin.blockinfile:
        path: "{{ out }}/hosts"
        block: |
          10.0.0.1 gpu01
          10.0.0.2 gpu02
        backup: true
    - name: a second block, own markers, before a match
      blockinfile:
        dest: "{{ out }}/hosts"
        marker: "## {mark} lab nodes"
        marker_begin: start
        marker_end: stop
        insertbefore: "^127"
        block: "10.0.0.9 login"
    - name: after the last match, with blank lines around
      blockinfile:
        path: "{{ out }}/sshd.conf"
        insertafter: "^Port"
        prepend_newline: true
        append_newline: true
        content: |
          Match Group lab
            X11Forwarding yes
    - name: an existing block updated
      ansible.builtin.blockinfile:
        path: "{{ out }}/limits.conf"
        block: "* soft nofile 65536"
    - name: a block removed
      blockinfile:
        path: "{{ out }}/old.conf"
        state: absent
    - name: a new file in a new directory
      blockinfile:
        path: "{{ out }}/new/dir/block.conf"
        block: "created"
        create: true
        mode: "0600"
    - name: at the very beginning, validated
      blockinfile:
        path: "{{ out }}/sshd.conf"
        insertbefore: BOF
        marker: "# {mark} header"
        block: "# managed by the lab"
        validate: grep -q '^Port' %s
    - name: replace with a back reference, backed up
      ansible.builtin.replace:
        path: "{{ out }}/grub"
        regexp: '^(GRUB_CMDLINE_LINUX_DEFAULT)="(quiet)"$'
        replace: '\\1="\\2 nouveau.modeset=0"'
        backup: yes
    - name: replace only between two sections
      replace:
        path: "{{ out }}/app.ini"
        after: '\\[main\\]'
        before: '\\[other\\]'
        regexp: '^debug = .*$'
        replace: 'debug = false'
    - name: nothing to replace
      replace: path={{ out }}/app.ini regexp=^nosuch replace=x
"""
SEED = {
    "hosts": "127.0.0.1 localhost\n::1 localhost",
    "sshd.conf": "Port 22\nPasswordAuthentication no\n",
    "limits.conf": (
        "# limits\n# BEGIN ANSIBLE MANAGED BLOCK\n* soft nofile 1024\n"
        "# END ANSIBLE MANAGED BLOCK\n* hard core 0\n"
    ),
    "old.conf": "keep\n# BEGIN ANSIBLE MANAGED BLOCK\ngone\n# END ANSIBLE MANAGED BLOCK\n",
    "grub": 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
    "app.ini": "debug = true\n[main]\ndebug = true\n[other]\ndebug = true\n",
}
# Ansible names a backup FILE.PID.DATE@TIME~, provision FILE.DATE@TIME~
BACKUP = re.compile(r"\.(\d+\.)?\d{4}-\d\d-\d\d@\d\d:\d\d:\d\d~$")


def seed(out: Path) -> None:
    out.mkdir()
    for name, text in SEED.items():
        (out / name).write_text(text)


def text_tree(root: Path) -> dict[str, tuple[str, str]]:
    return {
        BACKUP.sub(".BACKUP", str(p.relative_to(root))): (
            oct(p.stat().st_mode & 0o7777),
            "" if p.is_dir() else p.read_text(),
        )
        for p in sorted(root.rglob("*"))
    }


def test_blockinfile_and_replace_match_ansible_playbook(tmp_path: Path) -> None:
    (tmp_path / "text.yml").write_text(TEXT)
    write_local_inventory(tmp_path)
    theirs, mine, checked = tmp_path / "ansible", tmp_path / "provision", tmp_path / "checked"
    for out in (theirs, mine, checked):
        seed(out)
    run_ansible_playbook_locally(tmp_path, "text.yml", "-e", f"out={theirs}")
    untouched = text_tree(checked)
    check = run_provision_locally(tmp_path, "text.yml", "-e", f"out={checked}", "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert text_tree(checked) == untouched
    assert recap(check.stdout)["changed"] == 9, check.stdout
    assert "+10.0.0.1 gpu01" in check.stdout and "+debug = false" in check.stdout

    args = ("text.yml", "-e", f"out={mine}")
    first = run_provision_locally(tmp_path, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] == 9, first.stdout
    assert text_tree(mine) == text_tree(theirs)
    assert (mine / "grub").read_text() == (
        'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet nouveau.modeset=0"\n'
    )
    backups = sorted(p.name for p in mine.iterdir() if BACKUP.search(p.name))
    assert [BACKUP.sub("", b) for b in backups] == ["grub", "hosts"]
    again = run_provision_locally(tmp_path, *args)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout


def test_validate_refusal_keeps_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "sshd.conf"
    conf.write_text("Port 22\n")
    (tmp_path / "bad.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - blockinfile:\n"
        f"        path: {conf}\n        block: 'Bogus yes'\n        validate: 'false %s'\n"
    )
    (tmp_path / "hosts.ini").write_text("[here]\nlocalhost ansible_connection=local\n")
    done = provision("apply", "-i", "hosts.ini", "-p", "bad.yml", cwd=tmp_path)
    assert done.returncode == 2 and recap(done.stdout)["failed"] == 1
    assert conf.read_text() == "Port 22\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".provision")] == []


# -- kernel_blacklist and modprobe on a booted host ---------------------------------------------

KMOD = """
- hosts: all
  gather_facts: false
  tasks:
    - name: nouveau blacklisted in the shared file
      community.general.kernel_blacklist:
        name: nouveau
    - name: a second module in the same file
      kernel_blacklist: name=lbm-nouveau
    - name: radeon no longer blacklisted
      kernel_blacklist: {name: radeon, state: absent}
    - name: a blacklist in its own file
      kernel_blacklist: {name: floppy, blacklist_file: /etc/modprobe.d/p14-floppy.conf}
    - name: dummy loaded, with its options made persistent
      community.general.modprobe:
        name: dummy
        params: numdummies=2
        persistent: present
    - name: an old module kept from loading at boot
      modprobe: name=p14old state=absent persistent=absent
"""
SEEDED = {
    "/etc/modprobe.d/blacklist-ansible.conf": "# site list\nblacklist radeon  \nblacklist ast\n",
    "/etc/modules-load.d/p14old.conf": "p14old\nloop\n",
    "/etc/modprobe.d/p14old.conf": "options p14old level=3\n",
    "/etc/modprobe.d/dummy-site.conf": "options dummy numdummies=1\n",
}
# A stand-in for the kernel's list of built-in modules (the kernel packages' modules.builtin,
# one path per line): the test machine's kernel has none of its own and a container may not
# load modules, so dummy counts as built in, which Ansible's modprobe reads as loaded.
BUILTIN_STANDIN = "kernel/drivers/net/dummy.ko\n"


def _kmod_files(host: BootedHost) -> str:
    return host.exec(
        'for f in /etc/modprobe.d/* /etc/modules-load.d/*; do echo "== $f"; cat $f; done'
    ).stdout


def _run(host: BootedHost, workdir: Path, play: str, **opts: object) -> PlaybookResult:
    (workdir / "kmod.yml").write_text(play)
    inventory = write_inventory([host], workdir / "inventory.ini")
    known = write_known_hosts([host], workdir / "known_hosts")
    options = ApplyOptions(known_hosts=(str(known),), connect_timeout=5.0, **opts)  # type: ignore[arg-type]
    return run_playbook(load_inventory(str(inventory)), str(workdir / "kmod.yml"), options)


def test_kernel_blacklist_and_modprobe_on_a_booted_host(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    (host,) = booted_hosts(1, prefix="kmod")
    for path, text in SEEDED.items():
        host.exec(f"mkdir -p $(dirname {path}) && cat > {path}", input=text)
    host.exec(
        'd=/lib/modules/$(uname -r) && mkdir -p "$d" && cat > "$d/modules.builtin"',
        input=BUILTIN_STANDIN,
    )
    before = _kmod_files(host)
    check = _run(host, tmp_path, KMOD, check=True, diff=True)
    assert check.exit_code == 0, [r.msg for r in check.results if r.status == "failed"]
    assert check.stats[host.name].changed == 6 and _kmod_files(host) == before
    assert "+blacklist nouveau" in (check.results[0].diff or "")

    first = _run(host, tmp_path, KMOD)
    assert first.exit_code == 0, [r.msg for r in first.results if r.status == "failed"]
    assert [r.status for r in first.results] == ["changed"] * 6
    cat = host.exec
    assert cat("cat /etc/modprobe.d/blacklist-ansible.conf").stdout == (
        "# site list\nblacklist ast\nblacklist nouveau\nblacklist lbm-nouveau\n"
    )
    assert cat("cat /etc/modprobe.d/p14-floppy.conf").stdout == "blacklist floppy\n"
    assert cat("cat /etc/modules-load.d/dummy.conf").stdout == "dummy\n"
    assert cat("cat /etc/modprobe.d/dummy.conf").stdout == "options dummy numdummies=2\n"
    assert cat("cat /etc/modprobe.d/dummy-site.conf").stdout == "#options dummy numdummies=1\n"
    assert cat("cat /etc/modules-load.d/p14old.conf").stdout == "#p14old\nloop\n"
    assert cat("cat /etc/modprobe.d/p14old.conf").stdout == "#options p14old level=3\n"
    assert cat("stat -c '%a %U' /etc/modprobe.d/dummy.conf").stdout.strip() == "644 root"
    # modprobe itself reads the result: of /etc's options only numdummies=2 is left (kmod's
    # own /lib/modprobe.d may add its defaults, which Ansible leaves alone too)
    shown = cat("modprobe --showconfig | grep -E '^options (dummy|p14old) '", check=False)
    assert "options dummy numdummies=2" in shown.stdout.splitlines()
    assert "numdummies=1" not in shown.stdout and "p14old" not in shown.stdout

    converged = _kmod_files(host)
    again = _run(host, tmp_path, KMOD)
    assert again.exit_code == 0
    assert again.stats[host.name].changed == 0, [r.msg for r in again.results]
    assert _kmod_files(host) == converged

    # a module that is neither loaded nor built in is loaded with modprobe: its refusal fails
    missing = _run(
        host,
        tmp_path,
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - modprobe: name=p14nosuch\n",
    )
    assert missing.exit_code == 2
    (failed,) = missing.results
    assert failed.status == "failed" and "p14nosuch" in failed.msg
