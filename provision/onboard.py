"""``provision onboard``: a freshly installed workstation to a managed, audited lab host.

A fresh Ubuntu workstation has a user with a password, sudo rights behind that password, no SSH
key and a host key nobody has recorded. Steps 1-5 of the onboarding live here, each idempotent so
a rerun after an interruption carries on where it stopped:

1. host key: shown with its SHA256 fingerprint and confirmed (prompt, ``--host-key-fingerprint``
   or ``--accept-new-host-keys``) before anything is sent; a changed key is refused as always;
   then a first login by password (paramiko's password authentication, nothing on a command line);
2. the admin's public key appended to ``~/.ssh/authorized_keys`` (modes 700/600, temp file and
   rename, existing keys kept), then a key-only login proven on a new connection;
3. sudo checked with the password on stdin; optionally a NOPASSWD drop-in, ``visudo -cf`` first;
4. optionally password logins switched off by an ``sshd_config.d`` drop-in: ``sshd -t``, the
   effective value checked with ``sshd -T``, reload, key login proven again and the running
   sshd asked which methods it offers, else rolled back;
5. the host added to the inventory (:mod:`provision.inifile`).

Step 6 (apply, then audit) and the printing belong to the CLI; :func:`followups` and
:func:`exit_code` turn the audit into the summary's "needs a reboot or a person" and the exit code.
The password is asked for only when a step needs it (a rerun after step 2 needs none).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from provision import inifile
from provision.audit import HostReport, Status
from provision.errors import ConfigError, ProvisionError
from provision.hostkeys import HostKeyError, KnownHosts, RevokedHostKey, fingerprint, host_key_name
from provision.inventory import load_inventory
from provision.shell import quote
from provision.ssh import (
    _KEY_ALGORITHMS,
    AuthenticationFailed,
    BecomeError,
    CommandResult,
    ConnectError,
    SSHSession,
    _quiet_paramiko,
)
from provision.target import ConnSpec, conn_spec

# The keys paramiko's SSHClient looks for, in its order (look_for_keys): what provision logs in
# with when neither --private-key nor the inventory names a key. Source: paramiko
# SSHClient.connect, https://docs.paramiko.org/en/stable/api/client.html
DEFAULT_KEYS = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")
# Host key types tried, in turn, when the fingerprint given is not of the type negotiated first:
# ssh-keygen -lf on the console may have been run on any of the host's keys.
SCAN_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")

# sshd_config(5): "for each keyword, the first obtained value will be used", and Debian's and
# Ubuntu's sshd_config start with `Include /etc/ssh/sshd_config.d/*.conf`: a name sorting first
# wins over later drop-ins (Ubuntu Server installs carry 50-cloud-init.conf with
# `PasswordAuthentication yes`: https://github.com/canonical/cloud-init/issues/5934).
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-provision-no-password.conf"
SSHD_DROPIN_TEXT = (
    "# Written by `provision onboard --disable-password-login`: key logins only.\n"
    "# Remove this file and run `systemctl reload ssh` to allow passwords again.\n"
    "PasswordAuthentication no\n"
    "KbdInteractiveAuthentication no\n"
)
# The RFC 4252 / RFC 4256 method names that take a password.
PASSWORD_METHODS = {"password", "keyboard-interactive"}
# sudoers(5): files in /etc/sudoers.d whose names contain a '.' are skipped, so temp files and
# backups named with one are never read by sudo half-written.
SUDOERS_DIR = "/etc/sudoers.d"
# Debian/Ubuntu user names (adduser's NAME_REGEX, relaxed to allow upper case and dots).
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")


class OnboardError(ProvisionError):
    """A step failed; the message is one line naming the host, the step and what to do."""


class Interaction(Protocol):
    """What onboarding asks a person (the CLI implements it with getpass and a prompt)."""

    def password(self) -> str:
        """The login (and sudo) password of the user; asked at most once."""
        ...

    def confirm_host_key(self, name: str, keytype: str, fingerprint: str) -> bool:
        """Whether this never-seen host key is the machine's (read on its console)."""
        ...


@dataclass(frozen=True)
class Step:
    """One line of the summary: ``status`` is "done", "already" or "skipped"."""

    name: str
    status: str
    detail: str


@dataclass
class Request:
    """Everything onboarding needs, from the command line."""

    name: str  # the inventory name
    hostname: str  # the address (ansible_host)
    port: int
    user: str
    group: str
    inventory: str
    private_key: str
    public_key: str
    known_hosts: tuple[str, ...] = ()
    accept_new_host_keys: bool = False
    host_key_fingerprint: str | None = None
    sudo_nopasswd: bool = False
    disable_password_login: bool = False
    connect_timeout: float = 10.0
    command_timeout: float = 120.0


@dataclass
class Result:
    steps: list[Step] = field(default_factory=list)
    # What the baseline run needs for sudo: None when sudo works without a password.
    become_password: str | None = field(default=None, repr=False)


# --------------------------------------------------------------------------- keys and options


def default_private_key(home_keys: Sequence[str] = DEFAULT_KEYS) -> str:
    """The first key of :data:`DEFAULT_KEYS` that exists; ConfigError when there is none."""
    for candidate in home_keys:
        path = os.path.expanduser(candidate)
        if os.path.isfile(path):
            return path
    raise ConfigError(
        "no SSH key found (~/.ssh/id_rsa, id_ecdsa, id_ed25519): create one with "
        "`ssh-keygen -t ed25519` or pass --private-key"
    )


def read_public_key(path: str) -> tuple[str, str, str]:
    """(line, keytype, base64 blob) of an OpenSSH public key file; one clear line if bad."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the public key: {exc.strerror}") from None
    words = text.split()
    if (
        len(text.splitlines()) != 1
        or len(words) < 2
        or not words[0].startswith(("ssh-", "ecdsa-", "sk-"))
    ):
        raise ConfigError(f"{path}:1: not an OpenSSH public key (want `TYPE BASE64 [comment]`)")
    try:
        base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{path}:1: the key is not valid base64") from None
    return " ".join(words), words[0], words[1]


def check_request(req: Request) -> None:
    """Refuse bad input before anything connects."""
    if not _USER.match(req.user):
        raise ConfigError(f"--user {req.user!r} is not a valid user name")
    if req.host_key_fingerprint is not None and not _FINGERPRINT.match(req.host_key_fingerprint):
        raise ConfigError(
            f"--host-key-fingerprint {req.host_key_fingerprint!r}: want SHA256:<43 characters>, "
            "as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it"
        )
    if req.host_key_fingerprint and req.accept_new_host_keys:
        raise ConfigError("give --host-key-fingerprint or --accept-new-host-keys, not both")
    inifile.check_name(req.name)
    inifile.check_name(req.group)
    _, _, blob = read_public_key(req.public_key)
    if _matches_private_key(req.private_key, blob) is False:
        raise ConfigError(f"{req.public_key} is not the public key of {req.private_key}")


def _matches_private_key(private_key: str, blob: str) -> bool | None:
    """Whether the private key file holds the public key ``blob`` (None: cannot tell)."""
    import paramiko

    try:
        key = paramiko.PKey.from_path(private_key)
    except Exception:  # encrypted or a type paramiko cannot read: the login proof will tell
        return None
    return bool(key.get_base64() == blob)


# --------------------------------------------------------------------------- step 1: host key


@contextlib.contextmanager
def _handshake(
    hostname: str, port: int, timeout: float, keytype: str | None = None
) -> Iterator[Any]:
    """A paramiko Transport after key exchange, before any authentication; closed after."""
    import paramiko

    _quiet_paramiko()  # a host without the key type asked for is not worth a traceback
    try:
        sock = socket.create_connection((hostname, port), timeout=timeout)
    except OSError as exc:
        raise ConnectError(
            f"{hostname}: cannot connect to port {port}: {exc.strerror or exc}"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    disabled = None
    if keytype is not None:
        allowed = _KEY_ALGORITHMS.get(keytype, {keytype})
        disabled = {"keys": [k for k in paramiko.Transport._preferred_keys if k not in allowed]}
    transport = paramiko.Transport(sock, disabled_algorithms=disabled)
    try:
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectError(f"{hostname}: SSH handshake failed: {str(exc)[:200]}") from None
        yield transport
    finally:
        transport.close()
        sock.close()


def offered_host_key(
    hostname: str, port: int, timeout: float, keytype: str | None = None
) -> tuple[str, str]:
    """(keytype, base64) of the host key the server offers, from a handshake with no login."""
    with _handshake(hostname, port, timeout, keytype) as transport:
        key = transport.get_remote_server_key()
        return key.get_name(), key.get_base64()


def auth_methods(req: Request, store: KnownHosts) -> list[str]:
    """The login methods the *running* sshd offers the user (RFC 4252 "none" request).

    Only the user name is sent, after the host key is checked; ``sshd -T`` reads the files on
    disk, this asks the daemon that answers.
    """
    import paramiko

    with _handshake(req.hostname, req.port, req.connect_timeout) as transport:
        key = transport.get_remote_server_key()
        store.check(host_key_name(req.hostname, req.port), key.get_name(), key.get_base64())
        try:
            transport.auth_none(req.user)
        except paramiko.BadAuthenticationType as exc:
            return list(exc.allowed_types)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectError(f"{req.name}: SSH handshake failed: {str(exc)[:200]}") from None
        return []  # no authentication at all


def confirm_host_key(req: Request, store: KnownHosts, ui: Interaction) -> Step:
    """Make sure the host's key is on record, confirmed by a person or a fingerprint.

    A key already on record is left to the SSH layer, which refuses a changed one before any
    password is sent (the same check as every other command).
    """
    name = host_key_name(req.hostname, req.port)
    known = store.known(name)
    if known:
        expected = req.host_key_fingerprint
        if expected and not any(fingerprint(e.key) == expected for e in known):
            raise HostKeyError(
                f"{name}: the key on record ({known[0].source}) is not {expected}; refusing"
            )
        try:
            offered = offered_host_key(
                req.hostname, req.port, req.connect_timeout, known[0].keytype
            )
        except ConnectError:  # not of that type: the SSH layer says "changed" when it connects
            offered = None
        if offered is not None:
            store.check(name, *offered)  # a changed or revoked key: refused, as everywhere
        return Step("host key", "already", f"{name} on record in {known[0].source}")
    keytype, key = offered_host_key(req.hostname, req.port, req.connect_timeout)
    if req.host_key_fingerprint:
        keytype, key = _key_with_fingerprint(req, keytype, key)
        how = "matches --host-key-fingerprint"
    elif req.accept_new_host_keys:
        how = "accepted (--accept-new-host-keys)"
    elif ui.confirm_host_key(name, keytype, fingerprint(key)):
        how = "confirmed"
    else:
        raise HostKeyError(f"{name}: host key {keytype} {fingerprint(key)} not confirmed; stopped")
    if store.is_revoked(name, keytype, key):
        raise RevokedHostKey(f"host key for {name} ({keytype} {fingerprint(key)}) is @revoked")
    store.record(name, keytype, key)
    return Step(
        "host key", "done", f"{keytype} {fingerprint(key)} {how}, saved in {store.write_path}"
    )


def _key_with_fingerprint(req: Request, keytype: str, key: str) -> tuple[str, str]:
    """The host key whose fingerprint is the one given, trying each type the host may have."""
    expected = req.host_key_fingerprint
    seen = [f"{keytype} {fingerprint(key)}"]
    if fingerprint(key) == expected:
        return keytype, key
    for other in SCAN_TYPES:
        if other == keytype:
            continue
        try:
            found = offered_host_key(req.hostname, req.port, req.connect_timeout, other)
        except ConnectError:  # the host has no key of this type
            continue
        if fingerprint(found[1]) == expected:
            return found
        seen.append(f"{found[0]} {fingerprint(found[1])}")
    raise HostKeyError(
        f"{host_key_name(req.hostname, req.port)}: host key fingerprint is not {expected} "
        f"(the host offers {', '.join(seen)}); refusing: check it on the machine's console"
    )


# --------------------------------------------------------------------------- sessions


def _spec(req: Request, *, become: bool = False) -> ConnSpec:
    hostvars = {"ansible_host": req.hostname, "ansible_port": req.port, "ansible_user": req.user}
    spec = conn_spec(req.name, hostvars, default_key=req.private_key)
    # The key being installed is the one proven, whatever ~/.ssh/config names for the host.
    return dataclasses.replace(spec, key_filenames=(req.private_key,), become=become)


def _session(
    req: Request,
    store: KnownHosts,
    *,
    become: bool = False,
    become_password: str | None = None,
    **kw: Any,
) -> SSHSession:
    """An open session to the host; host keys checked strictly (step 1 recorded the key)."""
    return SSHSession(
        _spec(req, become=become),
        known_hosts=store,
        accept_new_host_keys=False,
        connect_timeout=req.connect_timeout,
        command_timeout=req.command_timeout,
        become_password=become_password,
        **kw,
    ).open()


def key_session(req: Request, store: KnownHosts) -> SSHSession | None:
    """A login with exactly the admin's key (no agent, no password); None when refused."""
    try:
        return _session(req, store, key_files_only=True)
    except AuthenticationFailed:
        return None


# --------------------------------------------------------------------------- step 2: key login

# Runs as the user, in the login shell. `$HOME` is expanded there; every value we add is quoted.
_AUTHORIZE = """\
umask 077; d="$HOME/.ssh"; f="$d/authorized_keys"
mkdir -p "$d" && chmod 700 "$d" || exit 1
if [ -f "$f" ] && awk -v k={blob} '$0 !~ /^[ \\t]*#/ {{
    for (i = 1; i <= NF; i++) if ($i == k) found = 1 }} END {{ exit !found }}' "$f"
then echo PRESENT; exit 0; fi
t=$(mktemp "$d/.authorized_keys.XXXXXX") || exit 1
trap 'rm -f "$t"' EXIT
if [ -f "$f" ]; then
  cat "$f" > "$t" || exit 1
  if [ -s "$t" ] && [ -n "$(tail -c 1 "$t")" ]; then echo >> "$t"; fi
fi
printf '%s\\n' {line} >> "$t" && grep -qxF {line} "$t" || exit 1
chmod 600 "$t" && mv -f "$t" "$f" || exit 1
trap - EXIT; echo ADDED
"""


def authorize_key(session: SSHSession, line: str, blob: str) -> bool:
    """Append the key to the user's authorized_keys unless it is there; True when added."""
    result = session.run(_AUTHORIZE.format(blob=quote(blob), line=quote(line)))
    words = result.stdout.split()
    if not result.ok or not words or words[-1] not in ("ADDED", "PRESENT"):
        raise OnboardError(f"{session.name}: cannot write ~/.ssh/authorized_keys: {_tail(result)}")
    return words[-1] == "ADDED"


def _tail(result: CommandResult) -> str:
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return lines[-1][:200] if lines else f"exit status {result.exit_code}"


def ensure_key_login(
    req: Request, store: KnownHosts, ui: Interaction
) -> tuple[SSHSession, list[Step]]:
    """Steps 1-2: a proven key-only session, by way of a password login when needed."""
    line, _, blob = read_public_key(req.public_key)
    session = key_session(req, store)
    if session is not None:
        return session, [
            Step("password login", "skipped", "not needed: key login works"),
            Step("key login", "already", f"{req.user}@{req.name} accepts {req.private_key}"),
        ]
    password = ui.password()
    try:
        first = _session(req, store, login_password=password)
    except AuthenticationFailed:
        raise OnboardError(
            f"{req.name}: password login as {req.user} failed: wrong password, or the host "
            "allows no password logins (then install the key by hand)"
        ) from None
    try:
        added = authorize_key(first, line, blob)
    finally:
        first.close()
    session = key_session(req, store)
    if session is None:
        raise OnboardError(
            f"{req.name}: the key is in ~{req.user}/.ssh/authorized_keys but a key login still "
            "fails: check that the home folder is not group-writable (sshd StrictModes) and "
            "sshd's AuthorizedKeysFile and PubkeyAuthentication"
        )
    status = "done" if added else "already"
    return session, [
        Step("password login", "done", f"logged in as {req.user} with the password"),
        Step("key login", status, f"{_key_name(line)} authorized; key-only login proven"),
    ]


def _key_name(line: str) -> str:
    words = line.split()
    return f"{words[0]} {fingerprint(words[1])}"


# --------------------------------------------------------------------------- step 3: sudo

_SUDOERS_INSTALL = """\
f={path}; want={text}
if [ -f "$f" ] && [ "$(cat "$f"; echo x)" = "$want""x" ]; then echo PRESENT; exit 0; fi
t=$(mktemp {dir}/.provision.XXXXXX) || exit 1
trap 'rm -f "$t"' EXIT
printf '%s' "$want" > "$t" || exit 1
visudo -cf "$t" >&2 || {{ echo "visudo -cf rejected the drop-in; nothing installed" >&2; exit 3; }}
if [ -f "$f" ]; then cp -p "$f" "$f.bak" || exit 1; fi
chown root:root "$t" && chmod 0440 "$t" && mv -f "$t" "$f" || exit 1
trap - EXIT; echo ADDED
"""


def sudoers_path(user: str) -> str:
    return f"{SUDOERS_DIR}/provision-{user.replace('.', '_').rstrip('$')}"


def sudoers_text(user: str) -> str:
    return (
        f"# Written by `provision onboard --sudo-nopasswd`.\n{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"
    )


def ensure_sudo(
    req: Request, session: SSHSession, store: KnownHosts, ui: Interaction
) -> tuple[list[Step], str | None]:
    """Step 3: the user can become root; returns the steps and the password sudo needs."""
    if session.run("sudo -n true").ok:
        steps = [Step("sudo", "already", f"{req.user} may use sudo without a password")]
        if req.sudo_nopasswd:
            steps.append(Step("sudo without password", "already", "sudo -n works already"))
        return steps, None
    password = ui.password()
    become = _session(req, store, become=True, become_password=password, key_files_only=True)
    try:
        result = become.run("id -u")
        if not result.ok or result.stdout.strip() != "0":
            raise OnboardError(f"{req.name}: sudo did not make {req.user} root: {_tail(result)}")
        # A check, not a change: the installer gave the rights.
        steps = [Step("sudo", "already", f"{req.user} becomes root with the password (on stdin)")]
        if not req.sudo_nopasswd:
            return steps, password
        steps.append(_install_sudoers(req, become))
    except BecomeError as exc:
        raise OnboardError(f"{exc}; {req.user} must be allowed to use sudo") from None
    finally:
        become.close()
    if not session.run("sudo -n true").ok:
        raise OnboardError(f"{req.name}: {sudoers_path(req.user)} is installed but sudo -n fails")
    return steps, None


def _install_sudoers(req: Request, become: SSHSession) -> Step:
    path = sudoers_path(req.user)
    script = _SUDOERS_INSTALL.format(
        path=quote(path), text=quote(sudoers_text(req.user)), dir=quote(SUDOERS_DIR)
    )
    result = become.run(script, become=True)
    if not result.ok or not result.stdout.split():
        raise OnboardError(f"{req.name}: {path} not installed: {_tail(result)}")
    added = result.stdout.split()[-1] == "ADDED"
    return Step(
        "sudo without password",
        "done" if added else "already",
        f"{path} (validated with visudo -cf)",
    )


# --------------------------------------------------------------------------- step 4: sshd

# Ubuntu 22.10+ starts sshd from ssh.socket: when ssh.service is not running the next connection
# starts one that reads the new configuration, and `systemctl reload` would fail; reload only a
# running one (https://discourse.ubuntu.com/t/sshd-now-uses-socket-based-activation-ubuntu-22-10-and-later/30189).
_RELOAD_SSH = "if systemctl is-active --quiet ssh; then systemctl reload ssh; fi"
_SSHD_INSTALL = """\
f={path}; b="$f.bak"; want={text}
effective() {{ sshd -T 2>/dev/null | grep -qix 'passwordauthentication no'; }}
if ! {{ [ -f "$f" ] && [ "$(cat "$f"; echo x)" = "$want""x" ]; }}; then
  if [ -f "$f" ]; then cp -p "$f" "$b" || exit 1; else rm -f "$b"; fi
  t=$(mktemp "$f.XXXXXX") || exit 1
  printf '%s' "$want" > "$t" && chmod 644 "$t" && mv -f "$t" "$f" || {{ rm -f "$t"; exit 1; }}
fi
if ! out=$(sshd -t 2>&1); then {restore}
  printf 'sshd -t rejects the configuration with the drop-in: %s\\n' "$out" >&2; exit 3; fi
if ! effective; then {restore}
  echo "sshd -T still shows passwordauthentication yes: an earlier file sets it" >&2; exit 4; fi
{reload} || {{ {restore} {reload}; exit 5; }}
echo RELOADED
"""
_SSHD_RESTORE = 'if [ -f "$b" ]; then mv -f "$b" "$f"; else rm -f "$f"; fi;'
_SSHD_ROLLBACK = 'f={path}; b="$f.bak"; ' + _SSHD_RESTORE + " sshd -t && " + _RELOAD_SSH


def disable_password_login(req: Request, become: SSHSession, store: KnownHosts) -> Step:
    """Step 4: the drop-in, validated, reloaded and proven with a new key login; else undone.

    "Already" needs both: our drop-in on disk and the running sshd offering no password method
    (a drop-in written by an interrupted run but never reloaded is reloaded now).
    """
    in_place = become.run(f"cat {quote(SSHD_DROPIN)}").stdout == SSHD_DROPIN_TEXT
    if in_place and not PASSWORD_METHODS & set(auth_methods(req, store)):
        return Step("password logins off", "already", f"{SSHD_DROPIN} in effect")
    script = _SSHD_INSTALL.format(
        path=quote(SSHD_DROPIN),
        text=quote(SSHD_DROPIN_TEXT),
        restore=_SSHD_RESTORE,
        reload=_RELOAD_SSH,
    )
    result = become.run(script, become=True)
    words = result.stdout.split()
    if not result.ok or not words:
        raise OnboardError(
            f"{req.name}: password logins left on, nothing changed: {_first_problem(result)}"
        )
    why = _key_login_after_reload(req, store)
    if not why:
        left = sorted(PASSWORD_METHODS & set(auth_methods(req, store)))
        why = f"sshd still offers {', '.join(left)} (a Match block?)" if left else ""
    if why:
        undo = become.run(_SSHD_ROLLBACK.format(path=quote(SSHD_DROPIN)), become=True)
        state = "rolled back" if undo.ok else f"ROLLBACK FAILED ({_tail(undo)})"
        raise OnboardError(
            f"{req.name}: after the reload a key login failed ({why}); {SSHD_DROPIN} {state}, "
            "password logins stay on"
        )
    return Step(
        "password logins off",
        "done",
        f"{SSHD_DROPIN} (sshd -t, sshd -T, reload; key login proven again, sshd offers no "
        "password method)",
    )


def _key_login_after_reload(req: Request, store: KnownHosts, wait: float = 15.0) -> str:
    """Prove a key login on a new connection; "" when it worked, else why not.

    sshd re-executes itself on SIGHUP and listens again only after that: connections are
    refused for a moment (seen: the first try right after the reload), so those are retried.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            proof = key_session(req, store)
        except ConnectError as exc:
            if time.monotonic() >= deadline:
                return str(exc)
            time.sleep(0.2)
            continue
        except Exception as exc:  # anything else: roll back all the same, then report it
            return f"{type(exc).__name__}: {exc}"
        if proof is None:
            return "the key was refused"
        proof.close()
        return ""


def _first_problem(result: CommandResult) -> str:
    """sshd -t names the file and line of the first error: show that line."""
    for line in result.stderr.splitlines():
        if line.strip():
            return line.strip()[:300]
    return f"exit status {result.exit_code}"


# --------------------------------------------------------------------------- step 5: inventory


def inventory_plan(req: Request) -> inifile.Plan:
    """What step 5 will do; a conflict raises here (a missing file is a new inventory)."""
    inv, text = None, ""
    if os.path.exists(req.inventory):
        inv = load_inventory(req.inventory)
        with open(req.inventory, encoding="utf-8", newline="") as fh:
            text = fh.read()
    entry = inifile.HostEntry(req.name, req.hostname, req.port, req.user)
    return inifile.plan_host(inv, text, req.inventory, req.group, entry)


def add_to_inventory(req: Request) -> Step:
    """Step 5, planned again: the file may have changed while the host was set up."""
    path = req.inventory
    plan = inventory_plan(req)
    if plan.text is None:
        return Step("inventory", "already", f"{path}:{plan.lineno}: {plan.line}")
    backup = inifile.write_inventory(path, plan.text)
    saved = f" (previous file kept as {backup})" if backup else " (new file)"
    return Step("inventory", "done", f"{path}:{plan.lineno}: added `{plan.line}`{saved}")


# --------------------------------------------------------------------------- steps 1-5


def onboard(req: Request, ui: Interaction, on_step: Callable[[Step], None] | None = None) -> Result:
    """Steps 1-5 in order; raise a one-line ProvisionError at the first that fails."""
    check_request(req)
    if _spec(req).proxy_jump:
        raise ConfigError(
            f"{req.name}: ~/.ssh/config reaches it through a jump host; onboard connects directly "
            "(run it from a machine on the host's network)"
        )
    result = Result()

    def done(step: Step) -> None:
        result.steps.append(step)
        if on_step is not None:
            on_step(step)

    store = KnownHosts(req.known_hosts)
    inventory_plan(req)  # a conflict is found before anything touches the host
    done(confirm_host_key(req, store, ui))
    session, steps = ensure_key_login(req, store, ui)
    try:
        for step in steps:
            done(step)
        sudo_steps, result.become_password = ensure_sudo(req, session, store, ui)
        for step in sudo_steps:
            done(step)
        if req.disable_password_login:
            done(_harden(req, store, result.become_password))
        else:
            done(Step("password logins off", "skipped", "not asked (--disable-password-login)"))
    finally:
        session.close()
    done(add_to_inventory(req))
    return result


def _harden(req: Request, store: KnownHosts, password: str | None) -> Step:
    become = _session(req, store, become=True, become_password=password, key_files_only=True)
    try:
        return disable_password_login(req, become, store)
    finally:
        become.close()


# --------------------------------------------------------------------------- step 6-7 helpers


def exit_code(apply_code: int, reports: Iterable[HostReport]) -> int:
    """apply's codes (0, 2 failed, 4 unreachable), worst of the run and the audit.

    An audit FAIL or UNKNOWN counts as failed, UNREACHABLE as unreachable; WARN is listed in
    the summary but does not fail the onboarding (a fresh host often waits for a reboot).
    """
    code = apply_code
    for report in reports:
        if report.status is Status.UNREACHABLE:
            code = max(code, 4)
        elif report.status in (Status.FAIL, Status.UNKNOWN):
            code = max(code, 2)
    return code


def followups(reports: Iterable[HostReport]) -> list[str]:
    """What the audit says needs a reboot or a person at the machine (Secure Boot, MOK)."""
    todo: list[str] = []
    for report in reports:
        for check in report.checks:
            if check.status not in (Status.WARN, Status.FAIL):
                continue
            fix = check.remediation or check.message
            if check.id == "secure_boot" or "mok" in fix.lower():
                todo.append(f"a person at the console: {check.message}: {fix}")
            elif check.id == "reboot.required" or "reboot" in fix.lower():
                todo.append(f"a reboot: {check.message} (rerun with --allow-reboot)")
    return list(dict.fromkeys(todo))
