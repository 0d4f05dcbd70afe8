"""The `apt` and `reboot` modules: spec tests (arguments + recorded state -> exact plan) and
real runs on booted Debian hosts (systemd-nspawn, real OpenSSH, the real Debian mirror).

Every assertion about a host's state is made inside the host (nsenter), never through the code
under test.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.inventory import load_inventory
from provision.modules import MODULES, TaskSkipped
from provision.modules.apt import lock_holder_script, parse_state
from provision.modules.base import ArgError, Context, ModuleError, Plan
from provision.modules.reboot import TRIGGER, controller_machine_id
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)

CTX = Context()
ENV = "DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1"
OPTS = (
    "-y -q -o DPkg::Lock::Timeout={t} -o Dpkg::Options::=--force-confdef "
    "-o Dpkg::Options::=--force-confold"
)
NOW = 1_700_000_000


def plan(module: str, args: dict, state: str | None, ctx: Context = CTX) -> Plan:
    m = MODULES[module]
    final = m.prepare(m.finalize(args), ctx)
    return m.plan(final, state, ctx)


def apt_state(
    pkgs: dict[str, tuple[str, str]] | None = None,
    *,
    candidates: dict[str, str] | None = None,
    age: int | None = 100,
    interrupted: str = "",
) -> str:
    """What the apt module's state snippet prints for such a host (a held package's status
    abbreviation starts with "h", as dpkg-query prints it)."""
    lines = ["@@pkgs"]
    lines += [f"{n}\t{v}\t{a}" for n, (v, a) in (pkgs or {}).items()]
    lines += ["@@policy"]
    for name, cand in (candidates or {}).items():
        lines += [f"{name}:", "  Installed: (none)", f"  Candidate: {cand}", "  Version table:"]
    mtime = 0 if age is None else NOW - age
    lines += ["@@meta", f"cache_mtime={mtime}", f"now={NOW}", f"interrupted={interrupted}"]
    return "\n".join(lines)


def commands(p: Plan) -> list[str]:
    """The apt commands of a plan, in order (the lines of its ``run`` function)."""
    assert len(p.steps) == 1
    return [
        line.strip().removesuffix(" || return $?")
        for line in p.steps[0].script.splitlines()
        if line.endswith("|| return $?")
    ]


# -- apt: spec tests -----------------------------------------------------------------------------


def test_apt_installs_a_missing_package_after_a_stale_cache_update() -> None:
    state = apt_state(candidates={"hello": "2.10-3"}, age=7200)
    p = plan("apt", {"name": "hello", "update_cache": True, "cache_valid_time": 3600}, state)
    assert p.changed
    assert p.changes == [
        "update the package cache (last updated 7200 s ago)",
        "install hello 2.10-3",
    ]
    assert commands(p) == [
        f"{ENV} apt-get {OPTS.format(t=120)} update && mkdir -p /var/lib/apt/periodic"
        " && touch /var/lib/apt/periodic/update-success-stamp",
        f"{ENV} apt-get {OPTS.format(t=120)} install --no-install-recommends hello",
    ]
    # On failure the lock holder is named after the commands.
    assert lock_holder_script() in p.steps[0].script


def test_apt_installed_package_and_fresh_cache_is_a_noop_with_reason() -> None:
    state = apt_state({"hello": ("2.10-3", "ii ")}, age=60)
    p = plan("apt", {"name": ["hello"], "update_cache": True, "cache_valid_time": 3600}, state)
    assert not p.changed and p.steps == []
    assert p.reason == "hello 2.10-3: installed; package cache is fresh"


def test_apt_pins_latest_absent_and_lock_timeout() -> None:
    state = apt_state(
        {"hello": ("2.10-2", "ii "), "cowsay": ("3.03", "ii "), "old": ("1", "rc ")},
        candidates={"cowsay": "3.04"},
    )
    pinned = plan("apt", {"name": "hello=2.10-3", "lock_timeout": 5}, state)
    assert pinned.changes == ["install hello 2.10-3 (was 2.10-2)"]
    assert commands(pinned) == [
        f"{ENV} apt-get {OPTS.format(t=5)} install --no-install-recommends hello=2.10-3"
    ]
    assert not plan("apt", {"name": "hello=2.10-2"}, state).changed
    latest = plan("apt", {"name": "cowsay", "state": "latest"}, state)
    assert latest.changes == ["upgrade cowsay 3.03 -> 3.04"]
    assert not plan("apt", {"name": "cowsay", "state": "present"}, state).changed
    gone = plan("apt", {"name": ["hello", "old", "never"], "state": "absent", "purge": True}, state)
    assert gone.changes == ["remove hello 2.10-2"]
    assert commands(gone) == [f"{ENV} apt-get {OPTS.format(t=120)} purge hello"]
    nothing = plan("apt", {"name": ["old", "never"], "state": "absent"}, state)
    assert not nothing.changed and nothing.reason == "old, never: not installed"


def test_apt_hold_and_unhold() -> None:
    held = apt_state({"hello": ("2.10-3", "hi ")})
    free = apt_state({"hello": ("2.10-3", "ii ")})
    p = plan("apt", {"name": "hello", "hold": True}, free)
    assert p.changes == ["hold hello"] and commands(p) == ["apt-mark hold hello >/dev/null"]
    assert not plan("apt", {"name": "hello", "hold": True}, held).changed
    p = plan("apt", {"name": "hello", "hold": False}, held)
    assert commands(p) == ["apt-mark unhold hello >/dev/null"]
    # Changing the version of a held package needs apt's explicit permission.
    p = plan("apt", {"name": "hello=2.10-4", "hold": True}, held)
    assert "--allow-change-held-packages" in commands(p)[0]


def test_apt_repairs_an_interrupted_dpkg_first() -> None:
    state = apt_state({"hello": ("2.10-3", "iU ")}, interrupted="0001")
    p = plan("apt", {"name": "hello"}, state)
    assert p.changes[0] == "repair: dpkg was interrupted, running dpkg --configure -a"
    first = commands(p)[0]
    assert first.startswith(f"{ENV} dpkg --configure -a || ")
    assert "failed (exit $rc); repair it by hand" in first
    half = plan("apt", {"name": "hello"}, apt_state({"hello": ("2.10-3", "iF ")}))
    assert half.changes == ["repair: hello half-installed, running dpkg --configure -a"]


def test_apt_argument_errors() -> None:
    with pytest.raises(ArgError, match="invalid package 'hello='"):
        MODULES["apt"].check_static({"name": "hello="})
    with pytest.raises(ArgError, match="state' must be one of"):
        MODULES["apt"].check_static({"name": "hello", "state": "installed"})
    with pytest.raises(ArgError, match="give 'name'"):
        MODULES["apt"].finalize({})
    with pytest.raises(ModuleError, match="no installation candidate"):
        plan("apt", {"name": "nosuchpkg"}, apt_state(candidates={"nosuchpkg": "(none)"}))


def test_apt_state_snippet_runs_for_real_on_this_debian_machine() -> None:
    m = MODULES["apt"]
    args = m.finalize({"name": ["dpkg", "no-such-package-xyz"], "state": "latest"})
    script = m.state_script(args, CTX)
    assert script is not None
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    st = parse_state(done.stdout)
    version, abbrev = st.packages["dpkg"]
    assert abbrev.startswith("ii") and version
    assert "no-such-package-xyz" not in st.packages
    assert st.now > 1_600_000_000
    assert st.candidates["dpkg"]  # apt-cache policy was read and parsed


def test_apt_install_recommends_only_when_asked() -> None:
    """Issue 11 item 4: the module can take a package's Recommends (off by default)."""
    state = apt_state(candidates={"nvidia-driver": "535.309.01-0+deb12u1"})
    off = commands(plan("apt", {"name": "nvidia-driver"}, state))
    on = commands(plan("apt", {"name": "nvidia-driver", "install_recommends": True}, state))
    assert off == [
        f"{ENV} apt-get {OPTS.format(t=120)} install --no-install-recommends nvidia-driver"
    ]
    assert on == [f"{ENV} apt-get {OPTS.format(t=120)} install nvidia-driver"]


def test_apt_policy_reads_candidates_with_the_preferences_in_force() -> None:
    """apt_policy (read-only): what apt would install, e.g. a transitional branch package."""
    recorded = (
        "@@policy\nnvidia-headless-570-server-open:\n  Installed: (none)\n"
        "  Candidate: 580.95.05-0ubuntu0.24.04.2\n  Version table:\nnvidia-driver:\n"
        "  Installed: 580.95.05-1\n  Candidate: (none)\n"
    )
    p = plan("apt_policy", {"name": ["nvidia-headless-570-server-open", "nvidia-driver"]}, recorded)
    assert not p.changed and p.steps == []
    assert p.result["candidates"] == {
        "nvidia-headless-570-server-open": "580.95.05-0ubuntu0.24.04.2",
        "nvidia-driver": "",
    }
    assert p.result["installed"] == {
        "nvidia-headless-570-server-open": "",
        "nvidia-driver": "580.95.05-1",
    }
    # for real, on this Debian machine
    m = MODULES["apt_policy"]
    args = m.finalize({"name": ["dpkg"]})
    script = m.state_script(args, CTX)
    assert script is not None
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    real = m.plan(args, done.stdout, CTX).result
    dpkg = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, text=True
    ).stdout
    assert real["installed"] == {"dpkg": dpkg} and real["candidates"]["dpkg"]


# -- reboot: spec tests --------------------------------------------------------------------------


def _ctx(allowed: str) -> Context:
    return Context(render=lambda text: allowed)


def test_reboot_needs_allow_reboot_and_never_the_controller() -> None:
    ids = "0f3b8d0e-0000-4000-8000-000000000001\nabc123\n"
    with pytest.raises(TaskSkipped, match="reboot not allowed: set allow_reboot=true"):
        plan("reboot", {}, ids, _ctx("False"))
    p = plan("reboot", {}, ids, _ctx("True"))
    assert p.changed and [s.script for s in p.steps] == [TRIGGER]
    assert p.result == {"boot_id_before": "0f3b8d0e-0000-4000-8000-000000000001"}
    me = controller_machine_id()
    if me:
        with pytest.raises(TaskSkipped, match="control machine"):
            plan("reboot", {}, f"0f3b8d0e\n{me}\n", _ctx("true"))
    with pytest.raises(ModuleError, match="boot id"):
        plan("reboot", {}, "", _ctx("true"))


# -- booted hosts --------------------------------------------------------------------------------

APT_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: hello
      apt:
        name: hello
        state: "{{ pkg_state | default('present') }}"
        hold: "{{ pkg_hold | default(None) }}"
        update_cache: true
        cache_valid_time: 3600
        lock_timeout: "{{ lock_timeout | default(120) }}"
"""
REBOOT_PLAY = """
- hosts: all
  tasks:
    - name: reboot
      reboot:
        reboot_timeout: "{{ reboot_timeout | default(120) }}"
        down_timeout: "{{ down_timeout | default(30) }}"
    - name: after the reboot
      command: cat /proc/sys/kernel/random/boot_id
      register: after
"""


class Lab:
    def __init__(self, hosts: list[BootedHost], workdir: Path) -> None:
        self.hosts = hosts
        self.workdir = workdir
        self.known_hosts = write_known_hosts(hosts, workdir / "known_hosts")
        (workdir / "apt.yml").write_text(APT_PLAY)
        (workdir / "reboot.yml").write_text(REBOOT_PLAY)

    def apply(self, host: BootedHost, playbook: str, **extra: object) -> PlaybookResult:
        inventory = write_inventory([host], self.workdir / f"{host.name}.ini")
        opts = ApplyOptions(
            known_hosts=(str(self.known_hosts),), extra_vars=dict(extra), connect_timeout=5.0
        )
        return run_playbook(load_inventory(str(inventory)), str(self.workdir / playbook), opts)


@pytest.fixture(scope="module")
def lab(booted_hosts, tmp_path_factory) -> Lab:  # noqa: F811
    return Lab(booted_hosts(2, prefix="aptrb"), tmp_path_factory.mktemp("aptrb"))


def _task(result: PlaybookResult, name: str):
    return next(r for r in result.results if r.task == name)


def _hold_lock(host: BootedHost, seconds: float) -> int:
    """Another process holds dpkg's frontend lock (fcntl, like apt) for ``seconds``."""
    code = (
        "import fcntl,os,time,sys; f=open('/var/lib/dpkg/lock-frontend','a'); "
        "fcntl.lockf(f, fcntl.LOCK_EX); open('/run/lockheld','w').write(str(os.getpid())); "
        f"time.sleep({seconds})"
    )
    host.exec("rm -f /run/lockheld")
    host.exec(f'setsid python3 -c "{code}" >/dev/null 2>&1 < /dev/null &')
    for _ in range(100):
        pid = host.exec("cat /run/lockheld 2>/dev/null", check=False).stdout.strip()
        if pid:
            return int(pid)
        time.sleep(0.1)
    raise AssertionError("the lock holder did not start")


def test_apt_installs_holds_and_removes_on_a_booted_host(lab: Lab) -> None:
    host = lab.hosts[0]
    first = lab.apply(host, "apt.yml")
    assert first.exit_code == 0, [r.msg for r in first.results]
    assert _task(first, "hello").status == "changed"
    status = host.exec("dpkg-query -W -f '${db:Status-Abbrev}' hello").stdout
    assert status.startswith("ii")
    assert host.exec("hello").stdout.strip() == "Hello, world!"

    again = lab.apply(host, "apt.yml")
    assert again.exit_code == 0
    assert again.stats[host.name].changed == 0
    assert "installed; package cache is fresh" in _task(again, "hello").msg
    assert again.round_trips[host.name] == 1

    held = lab.apply(host, "apt.yml", pkg_hold=True)
    assert _task(held, "hello").changes == ["hold hello"]
    assert host.exec("apt-mark showhold").stdout.split() == ["hello"]
    assert lab.apply(host, "apt.yml", pkg_hold=True).stats[host.name].changed == 0

    gone = lab.apply(host, "apt.yml", pkg_state="absent", pkg_hold=False)
    assert gone.exit_code == 0, [r.msg for r in gone.results]
    assert _task(gone, "hello").status == "changed"
    assert host.exec("dpkg-query -W -f '${db:Status-Abbrev}' hello", check=False).stdout[1:2] != "i"
    assert host.exec("apt-mark showhold").stdout == ""


def test_apt_waits_for_the_dpkg_lock_then_names_a_holder_that_stays(lab: Lab) -> None:
    host = lab.hosts[0]
    host.exec("DEBIAN_FRONTEND=noninteractive apt-get -y -q remove hello", check=False)
    _hold_lock(host, 3)
    started = time.monotonic()
    waited = lab.apply(host, "apt.yml", lock_timeout=30)
    assert waited.exit_code == 0, [r.msg for r in waited.results]
    assert _task(waited, "hello").status == "changed"
    assert time.monotonic() - started >= 2
    assert host.exec("dpkg-query -W -f '${db:Status-Abbrev}' hello").stdout.startswith("ii")

    host.exec("DEBIAN_FRONTEND=noninteractive apt-get -y -q remove hello")
    pid = _hold_lock(host, 60)
    try:
        stuck = lab.apply(host, "apt.yml", lock_timeout=2)
        assert stuck.exit_code == 2
        msg = _task(stuck, "hello").msg
        assert f"/var/lib/dpkg/lock-frontend is held by pid {pid} (python3 -c import fcntl" in msg
    finally:
        host.exec(f"kill {pid}", check=False)


def test_apt_lock_wait_may_outlast_the_command_timeout(lab: Lab) -> None:
    """apt waits for the dpkg lock longer than --command-timeout: the step has its own bound
    (lock_timeout + 1800 s), so the holder is named instead of the host "timing out" (issue 13)."""
    host = lab.hosts[0]
    host.exec("DEBIAN_FRONTEND=noninteractive apt-get -y -q remove hello", check=False)
    pid = _hold_lock(host, 60)
    try:
        inventory = write_inventory([host], lab.workdir / f"{host.name}-short.ini")
        opts = ApplyOptions(
            known_hosts=(str(lab.known_hosts),),
            extra_vars={"lock_timeout": 6},
            connect_timeout=5.0,
            command_timeout=3.0,
        )
        stuck = run_playbook(load_inventory(str(inventory)), str(lab.workdir / "apt.yml"), opts)
        assert stuck.exit_code == 2, stuck.host_reasons
        msg = _task(stuck, "hello").msg
        assert f"/var/lib/dpkg/lock-frontend is held by pid {pid} (python3 -c import fcntl" in msg
    finally:
        host.exec(f"kill {pid}", check=False)


def test_apt_repairs_a_package_dpkg_left_unconfigured(lab: Lab) -> None:
    host = lab.hosts[0]
    host.exec("DEBIAN_FRONTEND=noninteractive apt-get -y -q remove hello", check=False)
    host.exec("cd /root && rm -f hello_*.deb && apt-get -q download hello")
    host.exec("dpkg --unpack /root/hello_*.deb && rm -f /root/hello_*.deb")
    assert host.exec("dpkg-query -W -f '${db:Status-Abbrev}' hello").stdout.startswith("iU")
    result = lab.apply(host, "apt.yml")
    assert result.exit_code == 0, [r.msg for r in result.results]
    task = _task(result, "hello")
    assert task.changes[0] == "repair: hello half-installed, running dpkg --configure -a"
    assert host.exec("dpkg-query -W -f '${db:Status-Abbrev}' hello").stdout.startswith("ii")
    assert host.exec("ls -A /var/lib/dpkg/updates").stdout == ""


def test_reboot_is_skipped_unless_allowed_then_really_reboots(lab: Lab) -> None:
    host = lab.hosts[1]
    before = host.boot_id()
    denied = lab.apply(host, "reboot.yml")
    assert denied.exit_code == 0
    assert _task(denied, "reboot").status == "skipped"
    assert "reboot not allowed" in _task(denied, "reboot").msg
    assert host.boot_id() == before and host.boots == 1

    done = lab.apply(host, "reboot.yml", allow_reboot=True)
    assert done.exit_code == 0, [r.msg for r in done.results]
    task = _task(done, "reboot")
    assert task.status == "changed"
    assert task.data["boot_id_before"] == before
    host.wait_ready(60)
    assert host.boots == 2
    new = host.boot_id()
    assert new != before and task.data["boot_id"] == new
    # The play went on over the new connection, on the new boot.
    assert _task(done, "after the reboot").data["stdout"] == new


def test_reboot_that_does_not_go_down_is_told_apart(lab: Lab) -> None:
    host = lab.hosts[0]
    # systemctl on root's PATH that ignores the request: the host stays up.
    host.exec("printf '#!/bin/sh\\nexit 0\\n' > /usr/local/sbin/systemctl")
    host.exec("chmod 755 /usr/local/sbin/systemctl")
    before = host.boot_id()
    try:
        result = lab.apply(host, "reboot.yml", allow_reboot=True, down_timeout=3)
    finally:
        host.exec("rm -f /usr/local/sbin/systemctl")
    assert result.exit_code == 2
    msg = _task(result, "reboot").msg
    assert f"did not go down: same boot id {before} after 3 s" in msg
    assert host.boot_id() == before and host.boots == 1


def test_reboot_that_never_comes_back_fails_clearly(lab: Lab) -> None:
    host = lab.hosts[1]
    host.restart_on_reboot = False
    started = time.monotonic()
    result = lab.apply(host, "reboot.yml", allow_reboot=True, reboot_timeout=15)
    assert time.monotonic() - started < 60
    assert result.exit_code == 2
    msg = _task(result, "reboot").msg
    assert "went down and never came back within 15 s" in msg
    assert not host.running
