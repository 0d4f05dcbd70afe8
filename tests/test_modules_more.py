"""The `user_groups`, `kernel_module_blacklist` and `lineinfile` modules: spec tests (arguments +
recorded state -> the exact plan, or a no-op and its reason), their state snippets run for real on
this machine, and one booted Debian host (systemd-nspawn, real OpenSSH) converging a playbook that
uses all three. Host state is asserted inside the host (nsenter), never through the code under
test.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest

from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.inventory import load_inventory
from provision.modules import MODULES
from provision.modules.base import ArgError, Context, ModuleError, Plan, parse_probe
from provision.modules.lineinfile import edit
from provision.modules.users import parse_state
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)

CTX = Context()


def plan(module: str, args: dict, state: str | None, ctx: Context = CTX) -> Plan:
    m = MODULES[module]
    m.check_static(args)
    final = m.prepare(m.finalize(args), ctx)
    return m.plan(final, state, ctx)


def file_state(content: bytes | None, *, mode: str = "644", extra: str = "") -> str:
    if content is None:
        return "type=absent" + extra
    lines = ["type=file", "owner=root", "uid=0", "group=root", "gid=0", f"mode={mode}"]
    lines.append(f"sha256={hashlib.sha256(content).hexdigest()}")
    lines.append(f"content={base64.b64encode(content).decode()}")
    return "\n".join(lines) + extra


# -- argument specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("user_groups", {"users": "alice"}, "missing required argument 'groups'"),
        ("user_groups", {"users": [], "groups": ["docker"]}, "'users' must not be empty"),
        ("user_groups", {"users": "a", "groups": "b", "state": "gone"}, "must be one of present"),
        ("user_groups", {"users": "a", "groups": "b", "create": "maybe"}, "must be a boolean"),
        ("kernel_module_blacklist", {"module": "nou veau"}, "is not a kernel module name"),
        ("kernel_module_blacklist", {"module": "x", "options": "a b"}, "not a module parameter"),
        ("kernel_module_blacklist", {"module": "x", "initramfs": True}, "unknown argument"),
        ("lineinfile", {"path": "/x"}, "state=present needs 'line'"),
        ("lineinfile", {"path": "/x", "state": "absent"}, "needs 'line' or 'regexp'"),
        ("lineinfile", {"path": "/x", "line": "a", "regexp": "("}, "not a valid regular"),
    ],
)
def test_bad_arguments_are_refused(module: str, args: dict, message: str) -> None:
    with pytest.raises(ArgError, match=message):
        MODULES[module].check_static(args)


# -- user_groups ---------------------------------------------------------------------------------


def users_state(users: dict[str, tuple[str, str]], groups: list[str]) -> str:
    lines = [f"user\t{u}\t{p}\t{g}" for u, (p, g) in users.items()]
    lines += [f"group\t{g}" for g in groups]
    return "\n".join(lines)


def test_user_groups_adds_only_missing_memberships() -> None:
    state = users_state(
        {"alice": ("alice", "alice docker"), "bob": ("bob", "bob")}, ["docker", "video"]
    )
    p = plan("user_groups", {"users": ["alice", "bob"], "groups": ["docker", "video"]}, state)
    assert p.changes == ["add alice to video", "add bob to docker, video"]
    assert p.steps[0].script == "set -e\nusermod -aG video alice\nusermod -aG docker,video bob"
    done = users_state({"alice": ("alice", "alice docker video")}, ["docker", "video"])
    noop = plan("user_groups", {"users": "alice", "groups": ["docker", "video"]}, done)
    assert not noop.changed and noop.steps == []
    assert noop.reason == "alice: already in docker, video"


def test_user_groups_absent_removes_with_gpasswd() -> None:
    state = users_state({"alice": ("alice", "alice docker video")}, ["docker", "video"])
    p = plan("user_groups", {"users": "alice", "groups": "docker", "state": "absent"}, state)
    assert p.changes == ["remove alice from docker"]
    assert p.steps[0].script == "set -e\ngpasswd -d alice docker >/dev/null"
    gone = users_state({"alice": ("alice", "alice video")}, ["docker"])
    q = plan(
        "user_groups", {"users": ["alice", "nobody2"], "groups": "docker", "state": "absent"}, gone
    )
    assert not q.changed and q.reason == "alice, nobody2: in none of docker"
    with pytest.raises(ModuleError, match="docker is the primary group of alice"):
        plan(
            "user_groups",
            {"users": "alice", "groups": "docker", "state": "absent"},
            users_state({"alice": ("docker", "docker")}, ["docker"]),
        )


def test_user_groups_missing_group_and_user_are_clear_errors_unless_create() -> None:
    state = users_state({"alice": ("alice", "alice")}, ["docker"])
    with pytest.raises(ModuleError, match=r"group video does not exist on the host \(user_groups"):
        plan("user_groups", {"users": "alice", "groups": ["docker", "video"]}, state)
    with pytest.raises(ModuleError, match=r"user o'brien does not exist .*create: true"):
        plan("user_groups", {"users": "o'brien", "groups": "docker"}, state)
    p = plan("user_groups", {"users": "o'brien", "groups": "docker", "create": True}, state)
    assert p.changes == ["create user o'brien in docker"]
    assert p.steps[0].script == "set -e\nuseradd --create-home --groups docker 'o'\"'\"'brien'"


def test_user_groups_state_snippet_runs_for_real() -> None:
    m = MODULES["user_groups"]
    args = m.finalize({"users": ["root", "no-such-user-x"], "groups": ["root", "no-such-group-x"]})
    script = m.state_script(args, CTX)
    assert script is not None
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    st = parse_state(out)
    primary, member = st["users"]["root"]
    assert primary == "root" and "root" in member
    assert "no-such-user-x" not in st["users"]
    assert st["groups"] == {"root"}
    assert "nouser\tno-such-user-x" in out and "nogroup\tno-such-group-x" in out


# -- kernel_module_blacklist ---------------------------------------------------------------------

NOUVEAU = (
    b"# Managed by provision (kernel_module_blacklist): keep nouveau from loading.\n"
    b"blacklist nouveau\noptions nouveau modeset=0\n"
)
KM = {"module": "nouveau", "options": ["modeset=0"]}


def test_blacklist_written_then_initramfs_rebuilt() -> None:
    p = plan("kernel_module_blacklist", KM, file_state(None, extra="\ninitramfs=1"))
    assert p.changes == [
        f"create /etc/modprobe.d/blacklist-nouveau.conf ({len(NOUVEAU)} bytes)",
        "rebuild the initramfs (update-initramfs -u)",
    ]
    assert p.steps[0].stdin == NOUVEAU
    assert 'mv -f "$t" "$d"' in p.steps[0].script and "backup=" in p.steps[0].script
    assert "d=/etc/modprobe.d/blacklist-nouveau.conf" in p.steps[0].script
    assert p.steps[1].script == "update-initramfs -u"
    assert p.result["initramfs"] == "rebuilt"


def test_blacklist_without_update_initramfs_says_so() -> None:
    old = b"blacklist nouveau\n"
    p = plan("kernel_module_blacklist", KM, file_state(old, extra="\ninitramfs=0"))
    assert p.changes[-1] == "initramfs not rebuilt: update-initramfs is not on the host"
    assert len(p.steps) == 1 and p.result["initramfs"] == "missing"
    off = plan("kernel_module_blacklist", {**KM, "update_initramfs": False}, file_state(old))
    assert len(off.changes) == 1 and "initramfs" not in off.result


def test_blacklist_unchanged_is_a_noop_and_mode_fix_skips_initramfs() -> None:
    same = plan("kernel_module_blacklist", KM, file_state(NOUVEAU, extra="\ninitramfs=1"))
    assert not same.changed and same.reason.endswith(
        "blacklist-nouveau.conf already blacklists nouveau"
    )
    mode = plan(
        "kernel_module_blacklist", KM, file_state(NOUVEAU, mode="600", extra="\ninitramfs=1")
    )
    assert mode.changes == ["mode 600 -> 644"]
    assert mode.steps[0].script == "set -e\nchmod 644 /etc/modprobe.d/blacklist-nouveau.conf"


def test_blacklist_absent_removes_with_backup_and_custom_path() -> None:
    args = {"module": "nouveau", "state": "absent", "path": "/etc/modprobe.d/nv.conf"}
    p = plan("kernel_module_blacklist", args, file_state(NOUVEAU, extra="\ninitramfs=1"))
    assert p.changes == [
        "remove /etc/modprobe.d/nv.conf",
        "rebuild the initramfs (update-initramfs -u)",
    ]
    assert 'cp -p "$p" "$b"' in p.steps[0].script
    assert p.steps[0].script.endswith("rm -f -- /etc/modprobe.d/nv.conf")
    gone = plan("kernel_module_blacklist", args, file_state(None, extra="\ninitramfs=1"))
    assert not gone.changed and "already absent" in gone.reason


def test_blacklist_state_snippet_runs_for_real(tmp_path: Path) -> None:
    m = MODULES["kernel_module_blacklist"]
    target = tmp_path / "blacklist-nouveau.conf"
    target.write_bytes(NOUVEAU)
    args = m.prepare(m.finalize({**KM, "path": str(target)}), CTX)
    script = m.state_script(args, CTX)
    assert script is not None
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    st = parse_probe(out)
    has_tool = subprocess.run(["sh", "-c", "command -v update-initramfs"], capture_output=True)
    assert st["initramfs"] == ("1" if has_tool.returncode == 0 else "0")
    assert not m.plan(args, out, CTX).changed


# -- lineinfile ----------------------------------------------------------------------------------

SSHD = b"# site\nPasswordAuthentication yes\nPort 22\n"


def test_lineinfile_regexp_replaces_the_last_match_atomically_with_diff() -> None:
    args = {
        "path": "/etc/ssh/x.conf",
        "regexp": "^#?PasswordAuthentication",
        "line": "PasswordAuthentication no",
    }
    p = plan("lineinfile", {**args, "backup": True}, file_state(SSHD), Context(diff=True))
    assert p.changes == ["/etc/ssh/x.conf: replaced line 2"]
    assert p.steps[0].stdin == b"# site\nPasswordAuthentication no\nPort 22\n"
    assert "backup=" in p.steps[0].script and 'mv -f "$t" "$d"' in p.steps[0].script
    assert p.diff is not None
    assert "-PasswordAuthentication yes\n+PasswordAuthentication no\n" in p.diff
    done = plan("lineinfile", args, file_state(p.steps[0].stdin))
    assert not done.changed and done.reason == "/etc/ssh/x.conf: line already present"


def test_lineinfile_inserts_at_eof_or_after_a_match() -> None:
    assert edit("a\nb", line="c", regexp=None, present=True, insertafter="EOF") == (
        "a\nb\nc\n",
        "added line at the end",
    )
    assert edit("a\nb\na2\nz\n", line="new", regexp="^x", present=True, insertafter="^a") == (
        "a\nb\na2\nnew\nz\n",
        "added line as line 4",
    )
    assert edit("a\n", line="a", regexp=None, present=True, insertafter="EOF") == (
        "a\n",
        "line already present",
    )


def test_lineinfile_absent_removes_every_match() -> None:
    state = file_state(b"X 1\nkeep\nX 2\n")
    p = plan("lineinfile", {"path": "/f", "regexp": "^X ", "state": "absent"}, state)
    assert p.changes == ["/f: removed 2 lines"]
    assert p.steps[0].stdin == b"keep\n"
    q = plan("lineinfile", {"path": "/f", "line": "nope", "state": "absent"}, state)
    assert not q.changed and q.reason == "/f: no line to remove"
    r = plan("lineinfile", {"path": "/f", "line": "x", "state": "absent"}, "type=absent")
    assert not r.changed and r.reason == "/f does not exist"


def test_lineinfile_missing_file_needs_create() -> None:
    with pytest.raises(ModuleError, match=r"/f does not exist \(create: true creates it\)"):
        plan("lineinfile", {"path": "/f", "line": "x"}, "type=absent")
    p = plan(
        "lineinfile", {"path": "/f", "line": "x", "create": True, "mode": "0600"}, "type=absent"
    )
    assert p.changes == ["/f: added line at the end"]
    assert p.steps[0].stdin == b"x\n" and "chmod 600" in p.steps[0].script
    with pytest.raises(ModuleError, match="/f exists and is a directory"):
        plan("lineinfile", {"path": "/f", "line": "x"}, "type=directory")


# -- one booted host: all three converge ---------------------------------------------------------

PLAY = """
- hosts: all
  tasks:
    - name: lab users in docker
      user_groups:
        users: [alice]
        groups: [docker, video]
    - name: a new lab user
      user_groups:
        users: carol
        groups: docker
        create: true
    - name: nobody in plugdev
      user_groups:
        users: alice
        groups: plugdev
        state: absent
    - name: no nouveau
      kernel_module_blacklist:
        module: nouveau
        options: modeset=0
    - name: no password logins
      lineinfile:
        path: /etc/ssh/sshd_config.d/lab.conf
        regexp: "^#?PasswordAuthentication"
        line: PasswordAuthentication no
        backup: true
    - name: no empty passwords
      lineinfile:
        path: /etc/ssh/sshd_config.d/lab.conf
        regexp: "^PermitEmptyPasswords"
        state: absent
    - name: a new drop-in
      lineinfile:
        path: /etc/ssh/sshd_config.d/new.conf
        line: X11Forwarding no
        create: true
"""
SITE_CONF = "# site settings\nPasswordAuthentication yes\nPermitEmptyPasswords yes\nPort 22\n"


def _fingerprint(host: BootedHost) -> str:
    return host.exec(
        "find /etc /home -xdev -printf '%p %m %u %g %T@ %s\\n' | sort; "
        "find /etc -xdev -type f -exec sha256sum {} + | sort"
    ).stdout


@pytest.fixture(scope="module")
def host(booted_hosts) -> BootedHost:  # noqa: F811
    (h,) = booted_hosts(1, prefix="more")
    h.exec("groupadd docker && groupadd -f video && groupadd -f plugdev")
    h.exec("useradd --create-home alice && usermod -aG plugdev alice")
    h.exec(
        "mkdir -p /etc/ssh/sshd_config.d && cat > /etc/ssh/sshd_config.d/lab.conf", input=SITE_CONF
    )
    return h


def _apply(host: BootedHost, workdir: Path, **opts: object) -> PlaybookResult:
    (workdir / "more.yml").write_text(PLAY)
    inventory = write_inventory([host], workdir / "inventory.ini")
    known = write_known_hosts([host], workdir / "known_hosts")
    options = ApplyOptions(known_hosts=(str(known),), connect_timeout=5.0, **opts)  # type: ignore[arg-type]
    return run_playbook(load_inventory(str(inventory)), str(workdir / "more.yml"), options)


def test_all_three_converge_on_a_booted_host(host: BootedHost, tmp_path: Path) -> None:
    before = _fingerprint(host)
    check = _apply(host, tmp_path, check=True, diff=True)
    assert check.exit_code == 0, [r.msg for r in check.results if r.status == "failed"]
    assert check.stats[host.name].changed == 7
    assert _fingerprint(host) == before

    first = _apply(host, tmp_path)
    assert first.exit_code == 0, [r.msg for r in first.results if r.status == "failed"]
    assert first.stats[host.name].changed == 7
    assert set(host.exec("id -nG alice").stdout.split()) == {"alice", "docker", "video"}
    assert set(host.exec("id -nG carol").stdout.split()) == {"carol", "docker"}
    assert host.exec("test -d /home/carol", check=False).returncode == 0
    conf = "/etc/modprobe.d/blacklist-nouveau.conf"
    assert host.exec(f"cat {conf}").stdout.encode() == NOUVEAU
    assert host.exec(f"stat -c '%a %U' {conf}").stdout.strip() == "644 root"
    has_tool = host.exec("command -v update-initramfs", check=False).returncode == 0
    nouveau = next(r for r in first.results if r.task == "no nouveau")
    if has_tool:
        assert nouveau.data["initramfs"] == "rebuilt"
    else:
        assert nouveau.data["initramfs"] == "missing"
        assert "update-initramfs is not on the host" in nouveau.msg
    lab_conf = host.exec("cat /etc/ssh/sshd_config.d/lab.conf").stdout
    assert lab_conf == "# site settings\nPasswordAuthentication no\nPort 22\n"
    backup = next(r for r in first.results if r.task == "no password logins").data["backup_file"]
    assert host.exec(f"cat {backup}").stdout == SITE_CONF
    assert host.exec("cat /etc/ssh/sshd_config.d/new.conf").stdout == "X11Forwarding no\n"
    # sshd accepts the edited drop-ins.
    host.exec("sshd -t")

    after = _fingerprint(host)
    again = _apply(host, tmp_path)
    assert again.exit_code == 0
    assert again.stats[host.name].changed == 0, [r.msg for r in again.results if r.status != "ok"]
    assert _fingerprint(host) == after
    check_again = _apply(host, tmp_path, check=True)
    assert check_again.stats[host.name].changed == 0
