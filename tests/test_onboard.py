"""`provision onboard` on booted Debian hosts prepared as a fresh install is (tests/lab/fresh.py):
password SSH logins on, a user with a password and password sudo, no authorized_keys.

The command runs as a real subprocess (`python -m provision onboard`), HOME pointed at a temp
admin home with its own key. Host state is checked from the machine (nsenter) and with the real
OpenSSH client, never through the code under test. Two hosts: `first` is onboarded and rerun,
`second` goes through the refusals in file order (each test leaves it as the next expects).
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from provision import cli
from provision.hostkeys import fingerprint
from provision.shell import quote
from tests.conftest import need_binary
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
)
from tests.lab.fresh import FreshInstall, prepare_fresh_install

SMALL_PLAYBOOK = Path(__file__).parent / "data" / "playbooks" / "onboard_small.yml"
INVENTORY = """\
# The lab; this comment, the blank lines and the order must survive onboarding.
[all:vars]
ansible_python_interpreter=/usr/bin/python3

[gpu]
ws01 ansible_host=10.9.0.1   # an old workstation

; group comment
[gpu:vars]
ansible_port=22

[cpu]
build1 ansible_host=10.9.0.2
"""


@dataclass
class Admin:
    """The admin's side: a home with a key, a known_hosts file, an inventory, a password file."""

    dir: Path
    fresh: FreshInstall

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def key(self) -> Path:
        return self.home / ".ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.dir / "lab.ini"

    @property
    def password_file(self) -> Path:
        return self.dir / "password"

    @classmethod
    def make(cls, root: Path, fresh: FreshInstall) -> Admin:
        admin = cls(root, fresh)
        (admin.home / ".ssh").mkdir(parents=True, mode=0o700)
        keygen(admin.key)
        admin.known_hosts.write_text("")
        admin.inventory.write_text(INVENTORY)
        admin.password_file.write_text(fresh.password + "\n")
        admin.password_file.chmod(0o600)
        return admin

    def argv(self, *extra: str, password_file: Path | None = None) -> list[str]:
        host = self.fresh.host
        return [
            sys.executable,
            "-m",
            "provision",
            "onboard",
            host.name,
            "--address",
            host.address,
            "-i",
            str(self.inventory),
            "--group",
            "gpu",
            "-u",
            self.fresh.user,
            "--password-file",
            str(password_file or self.password_file),
            "--known-hosts",
            str(self.known_hosts),
            "-p",
            str(SMALL_PLAYBOOK),
            *extra,
        ]

    def run(self, *extra: str, **kw: Path) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOME": str(self.home)}
        return subprocess.run(
            self.argv(*extra, **kw),
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
            cwd=self.dir,
        )

    def ssh_key_only(self, command: str = "id -un") -> subprocess.CompletedProcess[str]:
        """The real OpenSSH client with the admin key only: no password, no agent."""
        host = self.fresh.host
        return subprocess.run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-i",
                str(self.key),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "KbdInteractiveAuthentication=no",
                "-o",
                "BatchMode=yes",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                f"{self.fresh.user}@{host.address}",
                command,
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            env={**os.environ, "HOME": str(self.home)},
        )


def keygen(path: Path) -> None:
    """A new ed25519 key pair at ``path`` (real ssh-keygen)."""
    need_binary("ssh-keygen", "openssh-client")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def password_login(fresh: FreshInstall, password: str | None = None) -> str:
    """Try a password login with paramiko directly; "ok" or the exception's class name."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            fresh.host.address,
            username=fresh.user,
            password=password or fresh.password,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        return "ok"
    except paramiko.AuthenticationException as exc:
        return type(exc).__name__
    finally:
        client.close()


class CmdlineSampler:
    """Every process command line on the machine (lab hosts' processes included, nspawn shares
    the PID namespace view), sampled until stopped: what `ps -ef` would show on either side."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                            raw = fh.read()
                    except OSError:
                        continue
                    if raw:
                        self.seen.add(raw.replace(b"\0", b" ").decode(errors="replace"))
            time.sleep(0.01)

    def __enter__(self) -> CmdlineSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def recorded_keys(admin: Admin) -> list[str]:
    """ "TYPE BASE64" of each key on record for the host, as OpenSSH looks it up (hashed or not)."""
    found = subprocess.run(
        ["ssh-keygen", "-F", admin.fresh.host.address, "-f", str(admin.known_hosts)],
        capture_output=True,
        text=True,
    )
    lines = [line for line in found.stdout.splitlines() if line and not line.startswith("#")]
    return [" ".join(line.split()[1:3]) for line in lines]


def host_key_blob(host: BootedHost) -> str:
    return host.exec("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed run prints on stderr (and no traceback), besides the line that
    says which host key --accept-new-host-keys recorded."""
    said = "recorded new host key for "
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith(said)]
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def summary(stdout: str) -> dict[str, str]:
    """The summary's step -> status."""
    tail = stdout.split("\nsummary:\n", 1)[1]
    found = {}
    for line in tail.splitlines():
        m = re.match(r"^  (\S+)\s+(.+)$", line)
        if m and m.group(1) != "needs":
            found[m.group(2)] = m.group(1)
    return found


def tree_digest(host: BootedHost, user: str) -> str:
    return host.exec(
        f"stat -c '%n %a %U %s %Y' ~{user}/.ssh ~{user}/.ssh/authorized_keys; "
        f"sha256sum ~{user}/.ssh/authorized_keys /etc/provision-onboarded"
    ).stdout


@pytest.fixture(scope="module")
def hosts(booted_hosts) -> list[FreshInstall]:  # noqa: F811
    need_binary("ssh", "openssh-client")
    return [prepare_fresh_install(h) for h in booted_hosts(2, prefix="onb")]


@dataclass
class FirstRun:
    admin: Admin
    done: subprocess.CompletedProcess[str]
    seen: set[str]
    seconds: float


@pytest.fixture(scope="module")
def first(hosts: list[FreshInstall], tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    admin = Admin.make(tmp_path_factory.mktemp("onboard-first"), hosts[0])
    started = time.monotonic()
    with CmdlineSampler() as sampler:
        done = admin.run("--accept-new-host-keys", "-vvv")
    return FirstRun(admin, done, sampler.seen, time.monotonic() - started)


# --------------------------------------------------------------------------- the fresh host


def test_onboard_installs_the_key_and_key_only_login_works(first: FirstRun) -> None:
    admin, done = first.admin, first.done
    assert done.returncode == 0, done.stdout + done.stderr
    host, user = admin.fresh.host, admin.fresh.user
    public = (admin.key.parent / "id_ed25519.pub").read_text().strip()
    assert host.exec(f"cat ~{user}/.ssh/authorized_keys").stdout == public + "\n"
    modes = host.exec(f"stat -c '%a %U' ~{user}/.ssh ~{user}/.ssh/authorized_keys").stdout
    assert modes.split("\n")[:2] == [f"700 {user}", f"600 {user}"]
    assert not host.exec(f"ls -A ~{user}/.ssh").stdout.split().count(".authorized_keys")
    login = admin.ssh_key_only()
    assert login.returncode == 0 and login.stdout.strip() == user, login.stderr
    # the first contact was a password login, the proof a key login (sshd's own log)
    assert admin.fresh.journal_count(f"Accepted password for {user}") == 1
    assert admin.fresh.journal_count(f"Accepted publickey for {user}") >= 1
    # the host key recorded is the host's own, found by OpenSSH (the login above used it)
    own = host.exec("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
    assert recorded_keys(admin) == [f"{own[0]} {own[1]}"]
    assert len(admin.known_hosts.read_text().splitlines()) == 1


def test_onboard_adds_exactly_one_inventory_line(first: FirstRun) -> None:
    admin = first.admin
    host = admin.fresh.host
    text = admin.inventory.read_text()
    line = f"{host.name} ansible_host={host.address} ansible_user={admin.fresh.user}"
    lines = text.splitlines(keepends=True)
    assert lines.count(line + "\n") == 1
    lines.remove(line + "\n")
    assert "".join(lines) == INVENTORY
    assert text.splitlines()[text.splitlines().index(line) - 1].startswith("ws01 ")
    backups = list(admin.dir.glob("lab.ini.*.bak"))
    assert [b.read_text() for b in backups] == [INVENTORY]


def test_onboard_ran_the_playbook_and_printed_the_audit(first: FirstRun) -> None:
    done, host = first.done, first.admin.fresh.host
    assert host.exec("cat /etc/provision-onboarded").stdout == "onboarded by provision\n"
    assert re.search(rf"^{host.name} +: ok=\d+ +changed=1 ", done.stdout, re.M), done.stdout
    assert f"audit of {host.name}:" in done.stdout
    audit = done.stdout.split(f"audit of {host.name}:", 1)[1].split("\nsummary:\n")[0]
    assert re.search(rf"^(== )?{host.name}: OK$", audit, re.M), audit  # every check, graded
    assert re.search(r"^ *OK +reboot.required:? +no reboot pending$", audit, re.M), audit
    assert summary(done.stdout) == {
        "host key": "done",
        "password login": "done",
        "key login": "done",
        "sudo": "already",
        "password logins off": "skipped",
        "inventory": "done",
        "baseline and audit": "done",
    }


def test_password_never_in_ps_logs_or_files(first: FirstRun) -> None:
    admin, done = first.admin, first.done
    secret = admin.fresh.password
    # the sampler saw both sides: our own command and sudo running on the host
    assert any("provision onboard" in c for c in first.seen)
    assert any(c.startswith("sudo ") for c in first.seen), sorted(first.seen)[:50]
    assert not [c for c in first.seen if secret in c]
    # -vvv really logged the SSH protocol, password authentication included
    assert "Authentication (password) successful" in done.stderr
    assert secret not in done.stdout and secret not in done.stderr
    local = subprocess.run(
        ["grep", "-rlF", "--", secret, str(admin.dir)], capture_output=True, text=True
    )
    assert local.stdout.split() == [str(admin.password_file)]
    host = admin.fresh.host
    remote = host.exec(
        f"grep -rlF -- {quote(secret)} /etc /home /root /tmp /var/tmp /var/log /run 2>/dev/null",
        check=False,
    )
    assert remote.stdout == ""
    assert admin.fresh.journal_count(secret) == 0


def test_rerun_changes_nothing(first: FirstRun) -> None:
    admin = first.admin
    host, user = admin.fresh.host, admin.fresh.user
    before = {p.name: p.read_bytes() for p in admin.dir.iterdir() if p.is_file()}
    state = tree_digest(host, user)
    again = admin.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p.name: p.read_bytes() for p in admin.dir.iterdir() if p.is_file()} == before
    assert tree_digest(host, user) == state
    assert re.search(rf"^{host.name} +: ok=\d+ +changed=0 ", again.stdout, re.M), again.stdout
    steps = summary(again.stdout)
    assert steps.pop("baseline and audit") == "done"
    assert set(steps.values()) <= {"already", "skipped"}, steps
    assert steps["password login"] == "skipped"  # key login worked: no password sent
    assert admin.fresh.journal_count(f"Accepted password for {user}") == 1


def test_a_pending_reboot_is_in_the_summary(first: FirstRun) -> None:
    host = first.admin.fresh.host
    host.exec("touch /run/reboot-required")  # what apt's update-notifier hooks leave
    try:
        done = first.admin.run()
    finally:
        host.exec("rm -f /run/reboot-required")
    assert done.returncode == 0, done.stdout + done.stderr  # a WARN does not fail onboarding
    tail = done.stdout.split("\nsummary:\n", 1)[1]
    assert (
        "  needs    a reboot: /var/run/reboot-required exists (rerun with --allow-reboot)" in tail
    )


def on_terminal(admin: Admin, answers: list[tuple[str, str]]) -> tuple[int, str]:
    """Run onboard on a pseudo-terminal, answering each prompt as it appears (no password file)."""
    argv = admin.argv()
    at = argv.index("--password-file")
    del argv[at : at + 2]
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "HOME": str(admin.home)},
        cwd=admin.dir,
        start_new_session=True,
    )
    os.close(slave)
    seen, pending = b"", list(answers)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if pending and pending[0][0].encode() in seen.rsplit(b"\n", 1)[-1]:
            os.write(master, pending.pop(0)[1].encode() + b"\n")
        if proc.poll() is not None and not ready:
            break
    os.close(master)
    return proc.wait(30), seen.decode(errors="replace").replace("\r\n", "\n")


def test_prompts_for_the_host_key_and_the_password_on_a_terminal(first: FirstRun) -> None:
    admin = first.admin
    recorded = admin.known_hosts.read_text()
    admin.known_hosts.write_text("")
    try:
        code, out = on_terminal(admin, [("Is it the same? [yes/no]", "no")])
        assert code == 1, out
        assert out.rstrip().endswith("not confirmed; stopped"), out
        assert admin.known_hosts.read_text() == ""
        code, out = on_terminal(
            admin,
            [
                ("Is it the same? [yes/no]", "yes"),
                (f"password of {admin.fresh.user}@{admin.fresh.host.name}: ", admin.fresh.password),
            ],
        )
        assert code == 0, out
        assert admin.fresh.password not in out  # no echo
        own = admin.fresh.host.exec("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout
        assert f"offers host key ssh-ed25519 {own.split()[1]}." in out
        assert recorded_keys(admin) == [f"ssh-ed25519 {host_key_blob(admin.fresh.host)}"]
    finally:
        admin.known_hosts.write_text(recorded)


# --------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def second(hosts: list[FreshInstall], tmp_path_factory: pytest.TempPathFactory) -> Admin:
    return Admin.make(tmp_path_factory.mktemp("onboard-second"), hosts[1])


def _untouched(admin: Admin) -> None:
    user = admin.fresh.user
    assert admin.inventory.read_text() == INVENTORY
    assert admin.fresh.host.exec(f"test -e ~{user}/.ssh", check=False).returncode == 1


def test_changed_host_key_is_refused_before_any_password_is_sent(second: Admin) -> None:
    keygen(second.dir / "impostor")
    blob = (second.dir / "impostor.pub").read_text().split()[1]
    recorded = f"{second.fresh.host.address} ssh-ed25519 {blob}\n"
    second.known_hosts.write_text(recorded)
    done = second.run("--accept-new-host-keys")
    assert done.returncode != 0
    line = error_line(done)
    assert "HOST KEY CHANGED" in line and second.fresh.host.address in line
    assert second.known_hosts.read_text() == recorded
    # no password attempt reached sshd (test_wrong_password... shows such attempts are logged)
    assert second.fresh.journal_count(f"password for {second.fresh.user}") == 0
    _untouched(second)
    second.known_hosts.write_text("")


def test_wrong_host_key_fingerprint_is_refused(second: Admin) -> None:
    wrong = fingerprint("AAAAC3NzaC1lZDI1NTE5AAAAIE" + "A" * 42)
    done = second.run("--host-key-fingerprint", wrong)
    assert done.returncode != 0
    line = error_line(done)
    real = second.fresh.host.exec("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout
    assert f"host key fingerprint is not {wrong}" in line
    assert real.split()[1] in line  # what the host offers, to compare on its console
    assert second.known_hosts.read_text() == ""
    assert second.fresh.journal_count(f"password for {second.fresh.user}") == 0
    _untouched(second)


def test_wrong_password_fails_fast_with_one_line(second: Admin) -> None:
    bad = second.dir / "bad-password"
    bad.write_text("not-the-password\n")
    started = time.monotonic()
    done = second.run("--accept-new-host-keys", password_file=bad)
    seconds = time.monotonic() - started
    assert done.returncode == 1
    line = error_line(done)
    assert line == (
        f"provision: error: {second.fresh.host.name}: password login as {second.fresh.user} "
        "failed: wrong password, or the host allows no password logins (then install the key "
        "by hand)"
    )
    assert seconds < 15, seconds
    # exactly one attempt: no retries that would lock the account
    assert second.fresh.journal_count(f"Failed password for {second.fresh.user}") == 1
    _untouched(second)


def test_disable_password_login_with_a_broken_dropin_is_rolled_back(second: Admin) -> None:
    host, user = second.fresh.host, second.fresh.user
    # An admin's drop-in with a typo: sshd -t fails once ours is in place too.
    host.exec("printf 'PasswordAuthenticaton no\\n' > /etc/ssh/sshd_config.d/zz-local.conf")
    real = host.exec("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
    reloads = second.fresh.journal_count("Received SIGHUP")
    done = second.run("--host-key-fingerprint", real, "--disable-password-login")
    assert done.returncode == 1
    line = error_line(done)
    assert f"{host.name}: password logins left on, nothing changed: sshd -t rejects" in line
    assert "zz-local.conf: line 1: Bad configuration option: PasswordAuthenticaton" in line
    # rolled back: our drop-in and its backup gone, sshd never reloaded, both logins work
    listing = host.exec("ls -A /etc/ssh/sshd_config.d").stdout.split()
    assert sorted(listing) == ["lab.conf", "zz-local.conf"]
    assert second.fresh.journal_count("Received SIGHUP") == reloads
    assert second.ssh_key_only().returncode == 0
    assert password_login(second.fresh) == "ok"
    assert second.inventory.read_text() == INVENTORY  # stopped before the inventory step
    assert host.exec(f"cat ~{user}/.ssh/authorized_keys").stdout.count("\n") == 1


def test_key_login_failing_after_the_reload_is_rolled_back(second: Admin) -> None:
    host = second.fresh.host
    # An edit the admin has not reloaded yet, valid for sshd -t, that breaks key logins once
    # sshd reads it: our reload activates it, the key proof fails, the drop-in must go.
    host.exec(
        "printf 'AuthorizedKeysFile /etc/ssh/nowhere/%%u\\n' > /etc/ssh/sshd_config.d/zz-local.conf"
    )
    done = second.run("--disable-password-login")
    assert done.returncode == 1
    line = error_line(done)
    assert line == (
        f"provision: error: {host.name}: after the reload a key login failed (the key was "
        "refused); /etc/ssh/sshd_config.d/00-provision-no-password.conf rolled back, password "
        "logins stay on"
    )
    assert sorted(host.exec("ls -A /etc/ssh/sshd_config.d").stdout.split()) == [
        "lab.conf",
        "zz-local.conf",
    ]
    effective = host.exec("sshd -T | grep -i '^passwordauthentication '").stdout.strip()
    assert effective == "passwordauthentication yes"
    assert password_login(second.fresh) == "ok"  # not locked out
    assert second.ssh_key_only().returncode != 0  # the admin's own change, now active
    host.exec("rm /etc/ssh/sshd_config.d/zz-local.conf && systemctl reload ssh")


def test_disable_password_login_then_keys_only(second: Admin) -> None:
    host = second.fresh.host
    done = second.run("--disable-password-login")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(done.stdout)["password logins off"] == "done"
    effective = host.exec("sshd -T | grep -iE '^(passwordauthentication|kbdinteractive)'")
    assert sorted(effective.stdout.split("\n")[:2]) == [
        "kbdinteractiveauthentication no",
        "passwordauthentication no",
    ]
    assert password_login(second.fresh) == "BadAuthenticationType"
    assert second.ssh_key_only().returncode == 0
    # the inventory line was added by this run (the earlier ones stopped before it)
    assert summary(done.stdout)["inventory"] == "done"


def test_sudo_nopasswd_dropin_then_no_password_needed_at_all(second: Admin) -> None:
    host, user = second.fresh.host, second.fresh.user
    done = second.run("--disable-password-login", "--sudo-nopasswd")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(done.stdout)["sudo without password"] == "done"
    path = f"/etc/sudoers.d/provision-{user}"
    assert host.exec(f"stat -c '%a %U %G' {path}").stdout.strip() == "440 root root"
    assert host.exec(f"cat {path}").stdout.splitlines()[-1] == f"{user} ALL=(ALL:ALL) NOPASSWD: ALL"
    assert host.exec("visudo -c", check=False).returncode == 0
    assert second.ssh_key_only("sudo -n id -un").stdout.strip() == "root"
    assert host.exec("ls -A /etc/sudoers.d").stdout.split() == ["README", f"provision-{user}"]
    # a rerun needs no password at all: a password file that does not exist is never read;
    # and it rewrites nothing and reloads nothing
    stamps = f"stat -c '%n %Y %s' {path} /etc/ssh/sshd_config.d/* /etc/sudoers.d/*"
    before, reloads = host.exec(stamps).stdout, second.fresh.journal_count("Received SIGHUP")
    again = second.run(
        "--disable-password-login", "--sudo-nopasswd", password_file=second.dir / "nonexistent"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    steps = summary(again.stdout)
    assert steps.pop("baseline and audit") == "done"
    assert set(steps.values()) <= {"already", "skipped"}, steps
    assert steps["password logins off"] == "already"
    assert steps["sudo without password"] == "already"
    assert host.exec(stamps).stdout == before
    assert second.fresh.journal_count("Received SIGHUP") == reloads


def test_dropin_written_but_never_reloaded_is_reloaded_on_rerun(second: Admin) -> None:
    host = second.fresh.host
    dropin = "/etc/ssh/sshd_config.d/00-provision-no-password.conf"
    text = host.exec(f"cat {dropin}").stdout
    # As an interrupted run leaves it: back to passwords on, then the file put back, no reload.
    host.exec(f"rm {dropin} && systemctl reload ssh")
    assert _eventually(lambda: password_login(second.fresh) == "ok")
    host.exec(f"cat > {dropin}", input=text)
    assert password_login(second.fresh) == "ok"  # the running sshd has not read it
    done = second.run("--disable-password-login", "--sudo-nopasswd")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(done.stdout)["password logins off"] == "done"
    assert password_login(second.fresh) == "BadAuthenticationType"


def _eventually(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    """sshd listens again a moment after a reload (it re-executes itself)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (OSError, paramiko.SSHException):
            pass
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------- spec level


def test_default_playbook_is_the_shipped_site_yml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.build_parser().parse_args(
        ["onboard", "ws9", "-i", str(tmp_path / "lab.ini"), "--group", "gpu", "-u", "fresh"]
    )
    argv = cli._onboard_apply_argv(args)
    playbook = argv[argv.index("-p") + 1]
    assert playbook == cli.shipped_playbook("site.yml")
    assert Path(playbook).read_text().startswith("# The whole lab baseline")
    # the same command line, listing its plays, on an inventory holding the new host
    (tmp_path / "lab.ini").write_text("[gpu]\nws9 ansible_user=fresh\n")
    assert cli.main([*argv, "--list-hosts"]) == 0
    out = capsys.readouterr().out
    assert "play: Lab baseline: preflight (reads only) (1 host)\n  ws9" in out
    assert argv[argv.index("-l") + 1] == "ws9"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--host-key-fingerprint", "MD5:ab:cd"], "--host-key-fingerprint 'MD5:ab:cd': want"),
        (["-u", "bad user"], "--user 'bad user' is not a valid user name"),
        (["--private-key", "/nonexistent/key"], "/nonexistent/key.pub: cannot read"),
        (["-p", "/nonexistent/site.yml"], "/nonexistent/site.yml: playbook not found"),
        (["--public-key", str(SMALL_PLAYBOOK)], "onboard_small.yml:1: not an OpenSSH public key"),
        (["--public-key", "OTHER.pub"], "other.pub is not the public key of "),
        (["-e", "@/nonexistent/vars.yml"], "/nonexistent/vars.yml"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    key = tmp_path / "id_ed25519"
    keygen(key)
    base = ["onboard", "ws9", "--address", "127.0.0.1", "--port", "1", "-i", str(tmp_path / "i")]
    base += ["--group", "gpu", "-u", "fresh", "--private-key", str(key)]
    other = tmp_path / "other"
    keygen(other)
    extra = [str(other) + ".pub" if word == "OTHER.pub" else word for word in extra]
    code = cli.main([*base, *extra])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("provision: error: ") and message in err, err
    assert err.count("\n") == 1


def test_inventory_conflict_is_refused_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "id_ed25519"
    keygen(key)
    inventory = tmp_path / "lab.ini"
    inventory.write_text("# lab\n[gpu]\nws9 ansible_host=10.0.0.5\n")
    argv = ["onboard", "ws9", "--address", "127.0.0.1", "--port", "1", "-i", str(inventory)]
    argv += ["--group", "gpu", "-u", "fresh", "--private-key", str(key)]
    argv += ["--known-hosts", str(tmp_path / "known_hosts"), "--accept-new-host-keys"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    # port 1 refuses connections: this message, not "connection refused", proves no connection
    assert err == (
        f"provision: error: {inventory}:3: host ws9 is already in the inventory for "
        "10.0.0.5:22, not 127.0.0.1:1; onboard under another name or fix that line\n"
    )
    assert not (tmp_path / "known_hosts").exists()
    assert inventory.read_text() == "# lab\n[gpu]\nws9 ansible_host=10.0.0.5\n"


def test_summary_needs_and_exit_code_from_real_audit_checks() -> None:
    from provision import audit, onboard

    facts = {
        "nvidia": {"nvml": "no driver", "pci_gpus": [{"slot": "0000:01:00.0", "device": "0x2330"}]},
        "host": {"secure_boot": True, "reboot_required": True},
    }
    report = audit.host_report("ws1", "ok", facts, "", audit.AuditSettings())
    todo = onboard.followups([report])
    assert todo[0].startswith("a person at the console: Secure Boot enabled")
    assert "enroll the MOK" in todo[0]
    assert todo[1] == "a reboot: /var/run/reboot-required exists (rerun with --allow-reboot)"
    assert len(todo) == 2
    assert onboard.exit_code(0, [report]) == 2  # Secure Boot blocks the driver: FAIL
    gone = audit.host_report(
        "ws1", "unreachable", None, "connection refused", audit.AuditSettings()
    )
    assert onboard.exit_code(2, [gone]) == 4
    assert onboard.exit_code(0, []) == 0


@pytest.fixture(autouse=True)
def _no_real_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """In-process tests never read the user's own ~/.ssh."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield
