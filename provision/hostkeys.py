"""known_hosts loading, host key verification and locked, atomic accept-new writes.

paramiko's own known_hosts loader is not OpenSSH's (``@revoked``/``@cert-authority`` lines can
break it) and fabric silently auto-adds unknown keys, so verification lives here: our parser reads
what OpenSSH reads, the SSH layer checks every server key against it, an unknown key is refused
(or recorded, with accept-new), and a changed or revoked key is always refused (field notes G1, G2).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from provision.errors import ConfigError, ProvisionError
from provision.localfile import replace_file

log = logging.getLogger(__name__)
# One line per key that accept-new recorded: the CLI shows these at every verbosity, so a user
# learns which keys went into known_hosts (OpenSSH prints "Permanently added ..." the same way).
recorded_log = logging.getLogger(f"{__name__}.recorded")


class HostKeyError(ProvisionError):
    """A host key problem: the host gets state "host key refused" and runs nothing."""


class KnownHostsUnreadable(ConfigError):
    """A known_hosts file exists but cannot be read (a directory, no permission): the run stops
    before any host is contacted, as no host key could be checked."""


class UnknownHostKey(HostKeyError):
    """No key on record for the host and accept-new is off."""


class ChangedHostKey(HostKeyError):
    """The host offers a key other than the one on record: never accepted, never retried."""


class RevokedHostKey(HostKeyError):
    """The host offers a key marked ``@revoked``."""


class Verdict(Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    CHANGED = "changed"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Entry:
    """One usable known_hosts line."""

    marker: str  # "" or "@revoked" ("@cert-authority" lines are skipped at parse time)
    patterns: tuple[str, ...]
    keytype: str
    key: str  # base64 blob as written in the file
    source: str  # "file:line", for messages


def host_key_name(hostname: str, port: int = 22) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, ``[host]:port`` otherwise."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def fingerprint(key_b64: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a base64 key blob."""
    try:
        blob = base64.b64decode(key_b64)
    except (binascii.Error, ValueError):
        blob = key_b64.encode()
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_known_hosts(text: str, source: str = "known_hosts") -> list[Entry]:
    """Parse known_hosts text like OpenSSH: skip comments, bad lines and ``@cert-authority``."""
    entries: list[Entry] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = ""
        if fields[0].startswith("@"):
            marker = fields[0]
            fields = fields[1:]
            if marker == "@cert-authority":
                log.debug(
                    "%s:%d: @cert-authority line skipped (certificates unsupported)", source, lineno
                )
                continue
            if marker != "@revoked":
                log.debug("%s:%d: unknown marker %s skipped", source, lineno, marker)
                continue
        if len(fields) < 3:
            log.debug("%s:%d: malformed line skipped", source, lineno)
            continue
        patterns, keytype, key = fields[0], fields[1], fields[2]
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            log.debug("%s:%d: bad base64 key skipped", source, lineno)
            continue
        entries.append(
            Entry(marker, tuple(patterns.split(",")), keytype, key, f"{source}:{lineno}")
        )
    return entries


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            _, _, salt_b64, hash_b64 = pattern.split("|", 3)
            salt = base64.b64decode(salt_b64)
            expected = base64.b64decode(hash_b64)
        except (ValueError, binascii.Error):
            return False
        actual = hmac.new(salt, name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(actual, expected)
    if any(c in pattern for c in "*?"):
        return fnmatch.fnmatchcase(name.lower(), pattern.lower().replace("[", "[[]"))
    return pattern.lower() == name.lower()


def entry_matches(entry: Entry, name: str) -> bool:
    """OpenSSH pattern-list semantics: any positive match, and no negated (``!``) match."""
    matched = False
    for pattern in entry.patterns:
        if pattern.startswith("!"):
            if _pattern_matches(pattern[1:], name):
                return False
        elif _pattern_matches(pattern, name):
            matched = True
    return matched


def user_known_hosts() -> str:
    """``~/.ssh/known_hosts`` of the current ``$HOME`` (tests point ``HOME`` elsewhere)."""
    return os.path.expanduser("~/.ssh/known_hosts")


class KnownHosts:
    """The known host keys of one run: loaded once, shared by all hosts, thread-safe.

    ``write_path`` is where accept-new records keys: the first extra file when one is given
    (so tests and labs never touch the user's own file), else ``~/.ssh/known_hosts``.
    """

    def __init__(self, paths: Iterable[str] = (), *, include_user: bool = True) -> None:
        extra = [os.path.expanduser(p) for p in paths]
        self.paths: list[str] = ([user_known_hosts()] if include_user else []) + extra
        self.write_path = extra[0] if extra else user_known_hosts()
        self._lock = threading.Lock()
        self.entries: list[Entry] = []
        for path in self.paths:
            self.entries.extend(self._read(path))

    @staticmethod
    def _read(path: str) -> list[Entry]:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return parse_known_hosts(fh.read(), path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KnownHostsUnreadable(
                f"cannot read known_hosts file {path}: {exc.strerror}; "
                "it must be a readable file (or absent)"
            ) from None

    def known(self, name: str) -> list[Entry]:
        """Non-revoked entries for ``name`` (``host`` or ``[host]:port``)."""
        with self._lock:
            return [e for e in self.entries if not e.marker and entry_matches(e, name)]

    def is_revoked(self, name: str, keytype: str, key: str) -> bool:
        with self._lock:
            return any(
                e.marker == "@revoked" and e.key == key and entry_matches(e, name)
                for e in self.entries
            )

    def verify(self, name: str, keytype: str, key: str) -> Verdict:
        """Judge the key a server offered: revoked beats everything, then match, else changed."""
        if self.is_revoked(name, keytype, key):
            return Verdict.REVOKED
        known = self.known(name)
        if not known:
            return Verdict.UNKNOWN
        if any(e.key == key and e.keytype == keytype for e in known):
            return Verdict.OK
        return Verdict.CHANGED

    def check(self, name: str, keytype: str, key: str, *, accept_new: bool = False) -> None:
        """Raise the right :class:`HostKeyError` unless the key is acceptable.

        With ``accept_new`` an unknown host's key is recorded (locked, atomic) and accepted,
        exactly like OpenSSH's ``StrictHostKeyChecking=accept-new``.
        """
        verdict = self.verify(name, keytype, key)
        if verdict is Verdict.OK:
            return
        fp = fingerprint(key)
        if verdict is Verdict.REVOKED:
            raise RevokedHostKey(f"host key for {name} ({keytype} {fp}) is marked @revoked")
        if verdict is Verdict.CHANGED:
            raise ChangedHostKey(changed_message(name, keytype, key, self.known(name)))
        if not accept_new:
            raise UnknownHostKey(unknown_message(name, keytype, key, self.write_path))
        self.record(name, keytype, key)

    def record(self, name: str, keytype: str, key: str) -> None:
        """Append ``name keytype key`` to ``write_path`` under a lock, atomically."""
        with self._lock:
            current = append_known_host(self.write_path, name, keytype, key)
            self.entries.extend(e for e in current if e not in self.entries)
        recorded_log.info(
            "recorded new host key for %s (%s %s) in %s",
            name,
            keytype,
            fingerprint(key),
            self.write_path,
        )


def unknown_message(name: str, keytype: str, key: str, path: str) -> str:
    host, port = _split_name(name)
    scan = f"ssh-keyscan -t {keytype} -p {port} {host} >> {path}"
    return (
        f"host key for {name} is unknown ({keytype} {fingerprint(key)}); after checking the "
        f"fingerprint add it with `{scan}`, or rerun with --accept-new-host-keys"
    )


def changed_message(name: str, keytype: str, key: str, known: list[Entry]) -> str:
    where = ", ".join(e.source for e in known) or "known_hosts"
    path = known[0].source.rsplit(":", 1)[0] if known else user_known_hosts()
    return (
        f"HOST KEY CHANGED for {name}: it offers {keytype} {fingerprint(key)} but {where} "
        f"records another key; refusing (possible man-in-the-middle). If the host was "
        f"reinstalled, remove the old key with `ssh-keygen -R '{name}' -f {path}`"
    )


def _split_name(name: str) -> tuple[str, int]:
    if name.startswith("[") and "]:" in name:
        host, _, port = name[1:].partition("]:")
        return host, int(port)
    return name, 22


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``path.lock``: the file itself is replaced by rename."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def hashed_name(name: str, salt: bytes | None = None) -> str:
    """OpenSSH's hashed known_hosts name: ``|1|base64(salt)|base64(HMAC-SHA1(salt, name))``."""
    salt = os.urandom(20) if salt is None else salt
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


SSH_CONFIGS = ("~/.ssh/config", "/etc/ssh/ssh_config")  # OpenSSH reads them in this order


def hash_known_hosts(name: str, configs: Iterable[str] = SSH_CONFIGS) -> bool:
    """OpenSSH's ``HashKnownHosts`` for this host: the first value set in the user's, then the
    system's ssh config (Debian and Ubuntu ship ``HashKnownHosts yes``); default no."""
    from provision.target import ssh_config_lookup

    host, _ = _split_name(name)
    for config in configs:
        value = ssh_config_lookup(host, os.path.expanduser(config)).get("hashknownhosts")
        if value is not None:
            return str(value).lower() == "yes"
    return False


def append_known_host(path: str, name: str, keytype: str, key: str) -> list[Entry]:
    """Add one line to ``path`` with temp file + rename under a lock; return the file's entries.

    The file is re-read under the lock, so a key another process recorded meanwhile is seen: the
    same key is not written twice, and a different one makes this a changed key, not a second entry.
    Like OpenSSH: a symlinked file is written through (its target is replaced, the link stays);
    the name is hashed when ``HashKnownHosts`` says so, and also whenever the file already holds
    hashed names (a new plain name would undo what hashing hides).
    """
    path = os.path.realpath(path)
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise HostKeyError(f"cannot create {directory}: {exc.strerror}") from None
    with _locked(path):
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            text, mode = "", 0o600
        entries = parse_known_hosts(text, path)
        mine = [e for e in entries if not e.marker and entry_matches(e, name)]
        if any(e.key == key and e.keytype == keytype for e in mine):
            return entries
        if mine:
            raise ChangedHostKey(changed_message(name, keytype, key, mine))
        if text and not text.endswith("\n"):
            text += "\n"
        hashed = any(p.startswith("|1|") for e in entries for p in e.patterns)
        written = hashed_name(name) if hashed or hash_known_hosts(name) else name
        text += f"{written} {keytype} {key}\n"
        try:
            replace_file(path, text, mode)
        except OSError as exc:
            if exc.errno == errno.EACCES:
                raise HostKeyError(f"cannot write {path}: permission denied") from None
            raise HostKeyError(f"cannot write {path}: {exc.strerror}") from None
        return parse_known_hosts(text, path)


class VerifyingPolicy:
    """paramiko ``MissingHostKeyPolicy`` replacement (duck-typed: no paramiko import needed).

    paramiko calls it only when it has no key of the offered type on record for the host; the
    store then decides unknown (refuse or accept-new), changed (another type on record) or revoked.
    """

    def __init__(self, store: KnownHosts, accept_new: bool) -> None:
        self.store = store
        self.accept_new = accept_new

    def missing_host_key(self, client: object, hostname: str, key: object) -> None:
        self.store.check(
            hostname,
            key.get_name(),  # type: ignore[attr-defined]
            key.get_base64(),  # type: ignore[attr-defined]
            accept_new=self.accept_new,
        )
