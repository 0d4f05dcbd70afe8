"""Module spec tests: arguments + a recorded state -> the exact plan, or a no-op and its reason.

Pure: no host involved. The recorded states are what the modules' own state snippets print; one
test runs those snippets for real on local files so the recordings stay honest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from provision.engine import frame_reads, split_reads
from provision.modules import MODULES
from provision.modules.base import ArgError, Context, ModuleError, Plan, parse_probe
from provision.shell import verify_received

CTX = Context()


def plan(module: str, args: dict, state: str | None, ctx: Context = CTX) -> Plan:
    m = MODULES[module]
    final = m.prepare(m.finalize(args), ctx)
    return m.plan(final, state, ctx)


def file_state(
    kind: str = "file",
    *,
    owner: str = "root",
    group: str = "root",
    mode: str = "644",
    content: bytes | None = None,
) -> str:
    if kind == "absent":
        return "type=absent"
    lines = [f"type={kind}", f"owner={owner}", "uid=0", f"group={group}", "gid=0", f"mode={mode}"]
    if content is not None:
        lines.append(f"sha256={hashlib.sha256(content).hexdigest()}")
        lines.append(f"content={base64.b64encode(content).decode()}")
    return "\n".join(lines)


# -- argument specs ------------------------------------------------------------------------------


def test_finalize_fills_defaults_and_converts_types() -> None:
    args = MODULES["copy"].finalize({"dest": "/x", "content": "a", "mode": 0o640, "backup": "yes"})
    assert args == {
        "dest": "/x",
        "content": "a",
        "src": None,
        "owner": None,
        "group": None,
        "mode": "640",
        "backup": True,
        "force": True,
        "validate": None,
        "remote_src": False,
    }
    assert MODULES["file"].finalize({"path": "/d", "mode": "0755"})["mode"] == "755"
    assert MODULES["file"].finalize({"path": "/d"})["state"] == "file"


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        (
            "file",
            {"path": "/x", "state": "pipe"},
            "argument 'state' must be one of file, directory",
        ),
        ("file", {"path": "/x", "mode": "rwx"}, "argument 'mode': mode 'rwx' is not an octal"),
        ("file", {}, "missing required argument 'path'"),
        ("copy", {"dest": "/x"}, "give exactly one of 'content' or 'src'"),
        ("copy", {"dest": "/x", "content": "a", "src": "b"}, "exactly one of 'content' or 'src'"),
        ("copy", {"dest": "/x", "content": "a", "backup": "maybe"}, "must be a boolean"),
        ("json_merge", {"path": "/x", "data": [1]}, "argument 'data' must be a mapping"),
        ("command", {"creates": "/x"}, "give exactly one of 'cmd' or 'argv'"),
        ("file", {"path": "/x", "colour": "red"}, "unknown argument 'colour'"),
    ],
)
def test_bad_arguments_are_refused(module: str, args: dict, message: str) -> None:
    with pytest.raises(ArgError) as err:
        MODULES[module].check_static(args)
        MODULES[module].finalize(args)
    assert message in str(err.value)


# -- file ----------------------------------------------------------------------------------------


def test_file_directory_created_with_attributes_on_every_directory_it_makes(
    tmp_path: Path,
) -> None:
    """As Ansible's file module (ensure_directory): each missing directory on the way gets the
    task's owner, group and mode; the directories that were there keep theirs."""
    tmp_path.chmod(0o700)
    path = tmp_path / "a b" / "c" / "d"
    user = Path("/proc/self").owner()
    p = plan("file", {"path": str(path), "state": "directory", "mode": "0750", "owner": user}, "")
    assert p.changed and p.changes == [f"create directory {path}"]
    (step,) = p.steps
    subprocess.run(["sh", "-c", step.script], check=True, timeout=30)
    made = [tmp_path / "a b", tmp_path / "a b" / "c", path]
    assert [oct(d.stat().st_mode & 0o7777) for d in made] == ["0o750"] * 3
    assert {d.owner() for d in made} == {user}
    assert tmp_path.stat().st_mode & 0o7777 == 0o700


def test_directories_made_at_once_by_several_processes_all_succeed(tmp_path: Path) -> None:
    """Eight tasks making sibling directories under the same missing parents at the same time
    (hosts sharing a file system, or another program): each finds a parent another one has
    just made, which is no error (Ansible's ensure_directory: EEXIST on a directory is fine)."""
    for trial in range(10):
        scripts = []
        for n in range(8):
            path = tmp_path / str(trial) / "a" / "b" / f"h{n}"
            args = {"path": str(path), "state": "directory", "mode": "0750"}
            scripts.append(plan("file", args, "type=absent").steps[0].script)
        running = [subprocess.Popen(["sh", "-c", s], stderr=subprocess.PIPE) for s in scripts]
        errors = [p.communicate()[1].decode() for p in running if p.wait() != 0]
        assert errors == []
        assert sorted(d.name for d in (tmp_path / str(trial) / "a" / "b").iterdir()) == [
            f"h{n}" for n in range(8)
        ]


def test_file_directory_present_is_a_noop_or_fixes_only_what_differs() -> None:
    state = file_state("directory", mode="755")
    same = plan("file", {"path": "/srv", "state": "directory", "mode": "0755"}, state)
    assert not same.changed and same.steps == []
    assert same.reason == "/srv is a directory with the wanted owner, group and mode"
    fix = plan("file", {"path": "/srv", "state": "directory", "mode": "0700", "group": "0"}, state)
    assert fix.changes == ["mode 755 -> 700"]  # group given as the gid that is already there
    assert [s.script for s in fix.steps] == ["set -e\nchmod 700 /srv"]


def test_file_absent_and_wrong_kind() -> None:
    assert plan("file", {"path": "/x", "state": "absent"}, "type=absent").reason == (
        "/x is already absent"
    )
    gone = plan("file", {"path": "/x; rm -rf /", "state": "absent"}, file_state())
    assert [s.script for s in gone.steps] == ["rm -rf -- '/x; rm -rf /'"]
    with pytest.raises(ModuleError, match="/x exists and is a file, not a directory"):
        plan("file", {"path": "/x", "state": "directory"}, file_state())
    with pytest.raises(ModuleError, match="does not exist"):
        plan("file", {"path": "/x", "state": "file"}, "type=absent")


def test_file_touch_creates_only_when_missing() -> None:
    new = plan("file", {"path": "/x", "state": "touch"}, "type=absent")
    assert [s.script for s in new.steps] == ["set -e\ntouch -- /x"]
    assert not plan("file", {"path": "/x", "state": "touch"}, file_state()).changed


# -- copy / template -----------------------------------------------------------------------------


def test_copy_same_hash_is_a_noop_and_sends_nothing() -> None:
    state = file_state(content=b"hello\n")
    p = plan("copy", {"dest": "/etc/x", "content": "hello\n"}, state)
    assert not p.changed and p.steps == []
    assert p.reason.startswith("/etc/x already has this content (sha256 ")


def test_copy_same_content_other_mode_fixes_mode_only() -> None:
    state = file_state(content=b"hello\n", mode="644")
    p = plan("copy", {"dest": "/etc/x", "content": "hello\n", "mode": "0600"}, state)
    assert p.changes == ["mode 644 -> 600"]
    assert [(s.script, s.stdin) for s in p.steps] == [("set -e\nchmod 600 /etc/x", None)]


def test_copy_new_content_is_an_atomic_write_with_data_on_stdin() -> None:
    ctx = Context(diff=True)
    p = plan(
        "copy",
        {"dest": "/etc/x", "content": "new\n", "backup": True, "mode": "0640"},
        file_state(content=b"old\n"),
        ctx,
    )
    assert p.changes == ["update /etc/x (4 bytes)"]
    (step,) = p.steps
    assert step.stdin == b"new\n"
    assert "new" not in step.script  # content never in the command line
    # streamed on stdin it is checked whole before the rename; carried inside a batch's
    # command (which arrives whole or not at all) the same write without that check
    assert "sha256sum -c" in step.script and step.inline is not None
    assert step.inline.replace("\n", "") in step.script.replace("\n", "").replace(
        verify_received('"$t"', 4, hashlib.sha256(b"new\n").hexdigest(), '"$d"'), ""
    )
    lines = step.script.splitlines()
    assert lines[:3] == ["set -e", "d=/etc/x", "t=$(mktemp /etc/.provision.XXXXXX)"]
    assert 'chmod 640 "$t"' in lines
    assert lines[-2:] == ['mv -f "$t" "$d"', "trap - EXIT"]
    assert any(line.startswith('if [ -f "$d" ]; then b="$d.$(date') for line in lines)
    assert p.diff == ("--- /etc/x (before)\n+++ /etc/x (after)\n@@ -1 +1 @@\n-old\n+new\n")


@pytest.mark.parametrize(("mode", "wanted"), [(None, 0o600), ("0640", 0o640), ("u+x", 0o700)])
def test_a_replaced_file_keeps_what_the_task_does_not_set(
    tmp_path: Path, mode: str | None, wanted: int
) -> None:
    """Run for real: without a mode the new content keeps the old file's mode; with one it
    gets that mode (a symbolic one from the old mode), and the owner stays."""
    dest = tmp_path / "conf"
    dest.write_text("old\n")
    dest.chmod(0o600)
    args = {"dest": str(dest), "content": "new\n", **({"mode": mode} if mode else {})}
    state = file_state(content=b"old\n", mode="600")
    (step,) = plan("copy", args, state).steps
    subprocess.run(["sh", "-c", step.script], input=step.stdin, check=True, timeout=30)
    assert dest.read_text() == "new\n"
    assert dest.stat().st_mode & 0o7777 == wanted and dest.owner() == Path("/proc/self").owner()
    assert [p.name for p in tmp_path.iterdir()] == ["conf"]  # no temp file left


def test_copy_no_log_suppresses_the_diff() -> None:
    ctx = Context(diff=True, no_log=True)
    p = plan(
        "copy", {"dest": "/k", "content": "secret=1\n"}, file_state(content=b"secret=0\n"), ctx
    )
    assert p.diff == "--- /k: diff suppressed (no_log: true)\n"


def test_copy_refuses_a_directory_destination() -> None:
    with pytest.raises(ModuleError, match="/etc exists and is a directory, not a regular file"):
        plan("copy", {"dest": "/etc", "content": "x"}, file_state("directory"))


def test_template_renders_on_the_controller(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.j2").write_text("name={{ who }}\n")
    ctx = Context(base_dir=str(tmp_path), render=lambda text: text.replace("{{ who }}", "lab"))
    p = plan("template", {"src": "t.j2", "dest": "/etc/t"}, "type=absent", ctx)
    assert p.steps[0].stdin == b"name=lab\n"
    same = plan(
        "template", {"src": "t.j2", "dest": "/etc/t"}, file_state(content=b"name=lab\n"), ctx
    )
    assert not same.changed
    with pytest.raises(ModuleError, match=r"source file nope\.j2 not found"):
        plan("template", {"src": "nope.j2", "dest": "/etc/t"}, "type=absent", ctx)


# -- json_merge ----------------------------------------------------------------------------------


DATA = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}


def test_json_merge_keeps_existing_keys_in_order() -> None:
    site = {"data-root": "/srv/docker", "runtimes": {"custom": {"path": "/c"}}, "debug": True}
    raw = json.dumps(site).encode()
    p = plan(
        "json_merge", {"path": "/etc/docker/daemon.json", "data": DATA}, file_state(content=raw)
    )
    assert p.changed
    stdin = p.steps[0].stdin
    assert stdin is not None
    merged = json.loads(stdin)
    assert merged == {
        "data-root": "/srv/docker",
        "runtimes": {
            "custom": {"path": "/c"},
            "nvidia": {"path": "nvidia-container-runtime", "args": []},
        },
        "debug": True,
    }
    assert list(merged) == ["data-root", "runtimes", "debug"]
    assert 'cp -p "$d" "$b"' in p.steps[0].script  # backup is on by default


def test_json_merge_noop_when_every_key_is_there() -> None:
    raw = json.dumps({"a": 1, **DATA}, indent=8).encode()  # formatting is not a difference
    p = plan("json_merge", {"path": "/d.json", "data": DATA}, file_state(content=raw))
    assert not p.changed and p.reason == "/d.json already holds every key of data"


def test_json_merge_creates_a_missing_or_empty_file() -> None:
    p = plan("json_merge", {"path": "/d.json", "data": {"a": 1}}, "type=absent")
    assert p.steps[0].stdin == b'{\n  "a": 1\n}\n'
    empty = plan("json_merge", {"path": "/d.json", "data": {"a": 1}}, file_state(content=b"\n"))
    assert empty.steps[0].stdin == b'{\n  "a": 1\n}\n'


def test_json_merge_refuses_invalid_json_naming_the_file() -> None:
    with pytest.raises(ModuleError) as err:
        plan(
            "json_merge",
            {"path": "/etc/docker/daemon.json", "data": DATA},
            file_state(content=b"{,"),
        )
    assert str(err.value).startswith(
        "/etc/docker/daemon.json holds invalid JSON (line 1 column 2: "
    )
    with pytest.raises(ModuleError, match="holds a JSON list, not an object"):
        plan("json_merge", {"path": "/d", "data": DATA}, file_state(content=b"[]"))


# -- command / shell -----------------------------------------------------------------------------


def test_command_quotes_every_word_and_is_unpredictable() -> None:
    p = plan("command", {"argv": ["echo", "$(id)", "a b"], "chdir": "/tmp/x y"}, None)
    assert [s.script for s in p.steps] == ["cd '/tmp/x y' && echo '$(id)' 'a b'"]
    assert p.changed and not p.predictable
    free = plan("command", {"cmd": "touch '/tmp/a b' ;"}, None)
    assert free.steps[0].script == "touch '/tmp/a b' ';'"


def test_command_creates_and_removes_guards() -> None:
    args = {"cmd": "make", "creates": "/opt/done"}
    assert MODULES["command"].state_script(MODULES["command"].finalize(args), CTX) == (
        "if [ -e /opt/done ]; then echo creates=1; fi"
    )
    done = plan("command", args, "creates=1")
    assert not done.changed and done.reason == "/opt/done exists (creates)"
    assert plan("command", args, "").changed
    rm = {"cmd": "rm /x", "removes": "/x"}
    assert plan("command", rm, "").reason == "/x does not exist (removes)"
    assert plan("command", rm, "removes=1").changed


def test_shell_runs_through_sh() -> None:
    p = plan("shell", {"cmd": "echo a | wc -l > /tmp/n"}, None)
    assert p.steps[0].script == "sh -c 'echo a | wc -l > /tmp/n'"


# -- the state snippets, run for real ---------------------------------------------------------


def test_state_snippets_batched_in_one_command(tmp_path: Path) -> None:
    f = tmp_path / "it's a file"
    f.write_bytes(b"data\n")
    os.chmod(f, 0o640)
    d = tmp_path / "dir"
    d.mkdir()
    ctx = Context(diff=True)
    scripts = [
        MODULES["copy"].state_script({"dest": str(f)}, ctx),
        MODULES["file"].state_script({"path": str(d)}, ctx),
        MODULES["file"].state_script({"path": str(tmp_path / "missing")}, ctx),
        MODULES["command"].state_script({"creates": str(f), "removes": None}, ctx),
    ]
    snippets = [s for s in scripts if s is not None]
    assert len(snippets) == len(scripts)  # each of these modules reads the target first
    script = frame_reads(snippets, "tok3n")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    outputs = split_reads(done.stdout, "tok3n", len(snippets))
    first = parse_probe(outputs[0])
    assert first["type"] == "file" and first["mode"] == "640"
    assert first["sha256"] == hashlib.sha256(b"data\n").hexdigest()
    assert base64.b64decode(first["content"]) == b"data\n"
    assert parse_probe(outputs[1])["type"] == "directory"
    assert parse_probe(outputs[2]) == {"type": "absent"}
    assert outputs[3] == "creates=1"
    same = plan("copy", {"dest": str(f), "content": "data\n", "mode": "0640"}, outputs[0])
    assert not same.changed


# -- service -------------------------------------------------------------------------------------


def svc_state(active: str, enabled: str, load: str = "loaded", reload: str = "no") -> str:
    return f"active={active}\nenabled={enabled}\nLoadState={load}\nNeedDaemonReload={reload}"


def test_service_started_and_enabled_noop() -> None:
    p = plan(
        "service",
        {"name": "docker", "state": "started", "enabled": True},
        svc_state("active", "enabled"),
    )
    assert not p.changed and p.reason == "docker is active, is-enabled enabled"


def test_service_start_enable_with_daemon_reload_first() -> None:
    p = plan(
        "service",
        {"name": "docker", "state": "started", "enabled": "yes"},
        svc_state("inactive", "disabled", reload="yes"),
    )
    assert p.changes == ["systemctl daemon-reload", "start docker", "enable docker"]
    assert [s.script for s in p.steps] == [
        "set -e\nsystemctl daemon-reload\nsystemctl start docker\nsystemctl enable docker"
    ]


@pytest.mark.parametrize(
    ("state", "active", "script"),
    [
        ("stopped", "active", "systemctl stop docker"),
        ("restarted", "active", "systemctl restart docker"),
        ("restarted", "inactive", "systemctl restart docker"),
        ("reloaded", "active", "systemctl reload docker"),
        ("reloaded", "inactive", "systemctl start docker"),
    ],
)
def test_service_state_changes(state: str, active: str, script: str) -> None:
    p = plan("service", {"name": "docker", "state": state}, svc_state(active, "enabled"))
    assert [s.script for s in p.steps] == ["set -e\n" + script]


def test_service_noops_and_refusals() -> None:
    stopped = plan("service", {"name": "x", "state": "stopped"}, svc_state("inactive", "enabled"))
    assert not stopped.changed
    static = plan("service", {"name": "x", "enabled": True}, svc_state("active", "static"))
    assert not static.changed
    disable = plan("service", {"name": "x", "enabled": False}, svc_state("active", "enabled"))
    assert [s.script for s in disable.steps] == ["set -e\nsystemctl disable x"]
    with pytest.raises(ModuleError, match="unit x is masked"):
        plan(
            "service", {"name": "x", "state": "started"}, svc_state("inactive", "masked", "masked")
        )
    with pytest.raises(ModuleError, match="unit nope not found"):
        plan(
            "service", {"name": "nope", "state": "started"}, svc_state("inactive", "", "not-found")
        )


# -- facts ---------------------------------------------------------------------------------------


def test_facts_parse_ubuntu_with_gpu_and_secure_boot() -> None:
    from provision.modules.facts import parse_facts

    text = (
        "id=ubuntu\nid_like=debian\nversion_id=24.04\ncodename=noble\nname=Ubuntu\n"
        "arch=aarch64\nkernel=6.8.0-45-generic\nhostname=gpu01\ninit=systemd\ngpu=1\nsb=1\n"
        "pkg=apt-get\n"
    )
    assert parse_facts(text) == {
        "ansible_distribution": "Ubuntu",
        "ansible_distribution_version": "24.04",
        "ansible_distribution_major_version": "24",
        "ansible_distribution_release": "noble",
        "ansible_distribution_file_variety": "Debian",
        "ansible_lsb": {},  # no /etc/lsb-release line in this read: none, as Ansible
        "ansible_local": {},
        "ansible_os_family": "Debian",
        "ansible_architecture": "aarch64",
        "ansible_kernel": "6.8.0-45-generic",
        "ansible_hostname": "gpu01",
        "ansible_service_mgr": "systemd",
        "ansible_pkg_mgr": "apt",
        "nvidia_gpu_present": True,
        "secure_boot": "enabled",
    }
    derived = parse_facts("id=linuxmint\nid_like=ubuntu debian\nsb=0\ngpu=0\n")
    assert derived["ansible_os_family"] == "Debian"
    assert derived["secure_boot"] == "disabled"
    assert derived["nvidia_gpu_present"] is False
    assert parse_facts("")["ansible_pkg_mgr"] == "unknown"


def test_command_unless_guard() -> None:
    args = MODULES["shell"].finalize(
        {"cmd": "usermod -aG docker lab", "unless": "id -nG lab | grep -qw docker"}
    )
    script = MODULES["shell"].state_script(args, CTX)
    assert script == (
        "if sh -c 'id -nG lab | grep -qw docker' >/dev/null 2>&1 </dev/null; then echo unless=1; fi"
    )
    assert (
        plan("shell", args, "unless=1").reason
        == "`id -nG lab | grep -qw docker` succeeded (unless)"
    )
    assert plan("shell", args, "").changed
