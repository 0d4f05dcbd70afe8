"""apt_repository: a deb822 ``.sources`` file whose ``Signed-By`` is its own keyring file.

The key is fetched on the CONTROLLER (``key_url``, with urllib) and checked there against the full
fingerprint given in the task before anything reaches the host: the check then does not depend on
what the host has installed (curl, wget, gpg), a wrong key never touches the host, and ``plan``
stays pure. The OpenPGP packets are read in Python (v4 fingerprints are SHA-1 over the key packet,
v6 ones SHA-256), an ASCII-armored key is dearmored to the binary form apt reads, and the keyring
and the source are compared with the host's files by sha256 (only differing files are sent, with
the atomic write and backup of the ``copy`` module). ``apt-key`` is never used.

A host set up from the vendors' own pages already has a source for the same URI (NVIDIA's
``cuda-<distro>-<arch>.list`` from cuda-keyring, Docker's ``docker.list``, the toolkit's
``nvidia-container-toolkit.list``), signed by another keyring: apt then refuses every command
("Conflicting values set for option Signed-By"). Such a file is moved aside (kept as
``FILE.DATE@TIME~``, which apt ignores) before ours is written, so apt always has one source per
repository and never a broken list. A file that also holds other repositories is not edited: the
task stops before any change and names the file and line.

Ansible's own form, one ``repo:`` line in a ``.list`` file, is :mod:`provision.modules.apt_lines`;
the task picks the form by its arguments (``repo`` or ``uris``/``suites``/``key_url``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from provision.modules import apt_lines
from provision.modules.apt import AptModule, step_timeout
from provision.modules.base import (
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    Step,
    atomic_write_script,
    attr_changes,
    content_of,
    noop,
    parse_probe,
    path_probe,
    unified_diff,
)
from provision.shell import quote

SOURCES_DIR = "/etc/apt/sources.list.d"
MAIN_LIST = "/etc/apt/sources.list"
MAX_SOURCE_LINES = 400  # lines read of another source file (vendor files have one or two)
KEYRINGS_DIR = "/etc/apt/keyrings"
MAX_KEY_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_FETCH_TTL = 60.0
_fetched: dict[str, tuple[float, bytes]] = {}


def sources_path(name: str) -> str:
    return f"{SOURCES_DIR}/{name}.sources"


def keyring_path(name: str) -> str:
    return f"{KEYRINGS_DIR}/{name}.gpg"


def normalize_fingerprint(value: str) -> str:
    """``"ABCD 1234 ..."`` / ``0xabcd...`` -> 40 (v4) or 64 (v6) upper-case hex digits."""
    text = re.sub(r"\s+", "", value).upper().removeprefix("0X")
    if len(text) not in (40, 64) or not re.fullmatch(r"[0-9A-F]+", text):
        raise ArgError(
            f"module 'apt_repository': key_fingerprint must be a FULL fingerprint "
            f"(40 hex digits, spaces allowed), got {value!r}"
        )
    return text


def dearmor(data: bytes) -> bytes:
    """ASCII-armored key -> its binary packets (what ``gpg --dearmor`` writes); binary as is."""
    text = data.decode("ascii", "replace")
    if _ARMOR_BEGIN not in text:
        return data
    body = text.split(_ARMOR_BEGIN, 1)[1].split("-----END", 1)[0]
    # Armor headers ("Version: x") hold ':', the CRC line starts with '=': neither is base64.
    lines = [ln.strip() for ln in body.splitlines()]
    payload = "".join(ln for ln in lines if ln and ":" not in ln and not ln.startswith("="))
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise ModuleError("the key is ASCII-armored but its base64 body is corrupt") from None


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    """OpenPGP packets (RFC 4880/9580 framing) -> (tag, body)."""
    return [(tag, body) for tag, body, _start, _end in packet_spans(data)]


def packet_spans(data: bytes) -> list[tuple[int, bytes, int, int]]:
    """OpenPGP packets -> (tag, body, first byte, end): where each packet lies, header
    included, so that a keyring can be cut into its keys (apt_key)."""
    out: list[tuple[int, bytes, int, int]] = []
    i = 0
    while i < len(data):
        start = i
        head = data[i]
        if not head & 0x80:
            raise ModuleError(f"not an OpenPGP key (bad packet header at byte {i})")
        if head & 0x40:  # new format
            tag = head & 0x3F
            first = data[i + 1] if i + 1 < len(data) else 0
            if first < 192:
                length, i = first, i + 2
            elif first < 224:
                length = ((first - 192) << 8) + data[i + 2] + 192
                i += 3
            elif first == 255:
                length, i = int.from_bytes(data[i + 2 : i + 6], "big"), i + 6
            else:
                raise ModuleError("OpenPGP partial body lengths are not valid in a key")
        else:
            tag, kind = (head >> 2) & 0x0F, head & 0x03
            if kind == 3:
                length, i = len(data) - i - 1, i + 1
            else:
                size = (1, 2, 4)[kind]
                length = int.from_bytes(data[i + 1 : i + 1 + size], "big")
                i += 1 + size
        if i + length > len(data):
            raise ModuleError("the OpenPGP key is truncated")
        out.append((tag, data[i : i + length], start, i + length))
        i += length
    return out


def _fingerprint(body: bytes) -> str:
    version = body[0] if body else 0
    if version == 4:
        return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    if version == 6:
        return hashlib.sha256(b"\x9b" + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    raise ModuleError(f"OpenPGP key version {version} is not supported (only 4 and 6)")


def primary_fingerprints(binary: bytes) -> list[str]:
    """Fingerprints of the primary public keys in a binary keyring; secret keys are refused."""
    prints: list[str] = []
    for tag, body in _packets(binary):
        if tag in (5, 7):
            raise ModuleError("the key file holds a SECRET key; refusing to install it")
        if tag == 6:
            prints.append(_fingerprint(body))
    if not prints:
        raise ModuleError("the key file holds no OpenPGP public key")
    return prints


def checked_keyring(data: bytes, expected: str, url: str) -> bytes:
    """The binary keyring when it holds exactly the expected primary key, else ModuleError
    naming both fingerprints (an extra key would be trusted by apt as well)."""
    binary = dearmor(data)
    prints = primary_fingerprints(binary)
    if prints != [expected]:
        actual = ", ".join(prints)
        raise ModuleError(
            f"key from {url} has the wrong fingerprint: expected {expected}, got {actual}; "
            "nothing was written"
        )
    return binary


def fetch_key(url: str, timeout: float) -> bytes:
    """The key's bytes from ``url`` (http, https or file), cached a short while because the
    engine prepares tasks ahead of time for its batched state reads."""
    now = time.monotonic()
    hit = _fetched.get(url)
    if hit and now - hit[0] < _FETCH_TTL:
        return hit[1]
    if not url.startswith(("http://", "https://", "file://")):
        raise ArgError(f"module 'apt_repository': key_url must be http(s):// or file://: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise ModuleError(f"fetching the key from {url} failed: {exc}") from None
    if len(data) > MAX_KEY_BYTES:
        raise ModuleError(f"the key at {url} is larger than {MAX_KEY_BYTES} bytes")
    _fetched[url] = (now, data)
    return data


def render_sources(args: dict[str, Any]) -> bytes:
    """The deb822 stanza; ``Components`` is left out for a flat repository (``Suites: ./``)."""
    lines = [
        f"Types: {' '.join(args['types'])}",
        f"URIs: {' '.join(args['uris'])}",
        f"Suites: {' '.join(args['suites'])}",
    ]
    if args["components"]:
        lines.append(f"Components: {' '.join(args['components'])}")
    if args["architectures"]:
        lines.append(f"Architectures: {' '.join(args['architectures'])}")
    lines.append(f"Signed-By: {keyring_path(args['name'])}")
    return ("\n".join(lines) + "\n").encode()


def _norm_uri(uri: str) -> str:
    return uri.strip().rstrip("/")


def source_entries(text: str) -> list[tuple[int, str]]:
    """The active repositories of a ``.list`` (one-line) or deb822 ``.sources`` file:
    (line number, URI) for each; comments, blank lines and ``Enabled: no`` stanzas skipped."""
    entries: list[tuple[int, str]] = []
    stanza: list[tuple[int, str]] = []
    enabled = True

    def flush() -> None:
        if enabled:
            entries.extend(stanza)

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            flush()
            stanza, enabled = [], True
            continue
        key, sep, value = line.partition(":")
        if line.startswith(("deb ", "deb-src ", "deb\t", "deb-src\t")):
            words = re.sub(r"\[[^\]]*\]", " ", line).split()  # drop [signed-by=... arch=...]
            if len(words) >= 2:
                entries.append((number, words[1]))
        elif sep and key.strip().lower() == "uris":
            stanza += [(number, uri) for uri in value.split()]
        elif sep and key.strip().lower() == "enabled":
            enabled = value.strip().lower() not in ("no", "false", "0")
    flush()
    return entries


def parse_others(text: str | None) -> dict[str, str]:
    """The ``@@others`` section of the state read: {path: content} of the other source files
    that name one of our URIs."""
    files: dict[str, list[str]] = {}
    inside, current = False, ""
    for line in (text or "").splitlines():
        if line.startswith("@@file "):
            current = line[len("@@file ") :]
            files[current] = []
        elif line.startswith("@@"):
            inside = line.strip() == "@@others"
            current = ""
        elif inside and current:
            files[current].append(line)
    return {path: "\n".join(lines) for path, lines in files.items()}


def conflicting_sources(
    others: dict[str, str], uris: list[str], ours: str
) -> tuple[list[str], list[str]]:
    """(files to move aside: every entry is one of our URIs; problems: a file that mixes our
    URI with other repositories, or the main sources.list, which is never moved)."""
    wanted = {_norm_uri(u) for u in uris}
    move: list[str] = []
    problems: list[str] = []
    for path, text in sorted(others.items()):
        if path == ours:
            continue
        entries = source_entries(text)
        hits = [(n, u) for n, u in entries if _norm_uri(u) in wanted]
        if not hits:
            continue
        if path != MAIN_LIST and len(hits) == len(entries):
            move.append(path)
            continue
        number, uri = hits[0]
        problems.append(
            f"{path}:{number} also declares {uri} (with its own Signed-By, apt would refuse "
            "both): remove that entry, then run again"
        )
    return move, problems


def others_script(uris: list[str], ours: str) -> str:
    """Print every other source file that mentions one of the URIs (cheap grep first)."""
    needles = " ".join(f"-e {quote(_norm_uri(u))}" for u in uris)
    folder = quote(SOURCES_DIR)
    return "\n".join(
        [
            "echo @@others",
            f"for f in {quote(MAIN_LIST)} {folder}/*.list {folder}/*.sources; do",
            '  [ -f "$f" ] || continue',
            f'  [ "$f" = {quote(ours)} ] && continue',
            f'  grep -qF {needles} "$f" 2>/dev/null || continue',
            '  echo "@@file $f"',
            f"  sed -n '1,{MAX_SOURCE_LINES}p' \"$f\"",
            "done",
        ]
    )


def move_aside_script(paths: list[str]) -> str:
    """Each file renamed to FILE.DATE@TIME~ (apt ignores names ending in ~, silently)."""
    lines = ["set -e", "s=$(date +%Y-%m-%d@%H:%M:%S)"]
    lines += [f'mv -- {quote(p)} {quote(p)}."$s~"' for p in paths]
    return "\n".join(lines)


@dataclass
class RepoFile:
    """One file of a deb822 repository: the keyring or the ``.sources`` file."""

    path: str
    data: bytes
    have: dict[str, str]  # its path_probe in the state read
    note: str = ""  # added to its change line (the key's fingerprint)
    mode: str = "644"  # apt reads as the _apt user: a keyring it cannot read breaks the source


def repository_writes(
    written: list[RepoFile],
    others: dict[str, str],
    uris: list[str],
    ours: str,
    ctx: Context,
    *,
    strict: bool = True,
) -> tuple[list[str], list[Step], str | None]:
    """The writer both deb822 forms share (apt_repository's and deb822_repository): other
    source files that only declare our URIs moved aside, then each file that differs written
    atomically with a backup (one with the right content only gets its attributes back).
    ``strict``: a file that mixes our URI with other repositories stops the task; otherwise it
    is left as it is (deb822_repository, which Ansible never checks). -> (changes, steps, diff)"""
    changes: list[str] = []
    steps: list[Step] = []
    diff: str | None = None
    move, problems = conflicting_sources(others, uris, ours)
    if problems and strict:
        raise ModuleError(problems[0] + "; nothing was changed")
    if move:
        changes += [
            f"move {p} aside (same repository, another Signed-By; kept as {p}.DATE~)" for p in move
        ]
        steps.append(Step(move_aside_script(move)))
    for f in written:
        if f.have["type"] == "file" and f.have.get("sha256") == hashlib.sha256(f.data).hexdigest():
            fixes, cmds = attr_changes(f.path, f.have, "root", "root", f.mode)
            if fixes:
                changes += [f"{f.path}: {fix}" for fix in fixes]
                steps.append(Step("\n".join(["set -e", *cmds])))
            continue
        verb = "create" if f.have["type"] == "absent" else "update"
        changes.append(f"{verb} {f.path} ({len(f.data)} bytes){f.note}")
        script = atomic_write_script(
            f.path, f.data, owner="root", group="root", mode=f.mode, backup=True
        )
        if f.path.startswith(f"{KEYRINGS_DIR}/"):
            script = f"mkdir -p -m 755 {quote(KEYRINGS_DIR)}\n{script}"
        elif ctx.diff:
            diff = unified_diff(f.path, content_of(f.have), f.data, ctx.no_log)
        steps.append(Step(script, f.data))
    return changes, steps, diff


def _split_state(text: str | None) -> dict[str, dict[str, str]]:
    parts: dict[str, list[str]] = {"sources": [], "keyring": []}
    section = ""
    for line in (text or "").splitlines():
        if line.startswith("@@"):
            section = line[2:].strip()
        elif section in parts:
            parts[section].append(line)
    return {k: parse_probe("\n".join(v)) for k, v in parts.items()}


class AptRepositoryModule(Module):
    name = "apt_repository"
    spec = (
        Arg("name"),  # the deb822 form's file names (required there)
        Arg("repo"),  # Ansible's form: one line for a .list file
        Arg("filename"),  # with repo: the .list file's name
        Arg("mode", "mode"),  # with repo: a new .list file's mode (644)
        Arg("codename"),  # accepted: Ansible uses it for ppa: lines only, refused here
        Arg("validate_certs", "bool", default=True),  # accepted (ppa: only, in Ansible)
        Arg("install_python_apt", "bool", default=True),  # accepted: no python-apt is used
        Arg("update_cache_retries", "int", default=5),  # accepted: one update, its failure shown
        Arg("update_cache_retry_max_delay", "int", default=12),  # accepted, as above
        Arg("uris", "list"),
        Arg("suites", "list"),
        Arg("components", "list", default=[]),
        Arg("types", "list", default=["deb"]),
        Arg("architectures", "list", default=[]),
        Arg("key_url"),
        Arg("key_fingerprint"),
        Arg("state", default="present", choices=("present", "absent")),
        # default: true with repo (Ansible), false in the deb822 form (the shipped playbooks ask)
        Arg("update_cache", "bool", aliases=("update-cache",)),
        Arg("lock_timeout", "int", default=120),
        Arg("fetch_timeout", "int", default=30),
    )

    def finalize(self, args: dict[str, Any]) -> dict[str, Any]:
        out = super().finalize(args)
        if out["update_cache"] is None:
            out["update_cache"] = out["repo"] is not None
        return out

    def check_combination(self, args: dict[str, Any]) -> None:
        if args.get("repo") is not None:
            apt_lines.check_line_args(args)
            return
        if args.get("name") is None:
            raise ArgError("module 'apt_repository': give 'repo' (a one-line source) or 'name'")
        name = args.get("name")
        if isinstance(name, str) and "{" not in name and not _NAME.match(name):
            raise ArgError(
                f"module 'apt_repository': name {name!r} must be letters, digits, '.', '_', '-'"
            )
        if args.get("state", "present") == "absent":
            return
        for key in ("uris", "suites", "key_url", "key_fingerprint"):
            if not args.get(key):
                raise ArgError(f"module 'apt_repository': missing required argument '{key}'")
        fp = args.get("key_fingerprint")
        if isinstance(fp, str) and "{" not in fp:
            normalize_fingerprint(fp)
        suites, comps = args.get("suites"), args.get("components")
        if isinstance(suites, str):
            suites = [suites]
        if isinstance(suites, list) and all(isinstance(s, str) for s in suites):
            flat = [s for s in suites if s.endswith("/")]
            if flat and comps:
                raise ArgError(
                    "module 'apt_repository': a flat repository (suite ending in '/') "
                    "takes no components"
                )
            if len(flat) != len(suites) and not comps and "{" not in "".join(suites):
                raise ArgError(
                    "module 'apt_repository': 'components' is required unless the suite is "
                    "a flat path ending in '/' (like './')"
                )

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Fetch and check the key on the controller; render the source."""
        args = dict(args)
        if args["repo"] is not None:
            args["source"] = apt_lines.normalize_line(args["repo"])
            args["list"] = apt_lines.suggest_filename(args["source"], args["filename"])
            return args
        if args["state"] == "absent":
            return args
        expected = normalize_fingerprint(args["key_fingerprint"])
        raw = fetch_key(args["key_url"], float(args["fetch_timeout"]))
        args["keyring"] = checked_keyring(raw, expected, args["key_url"])
        args["fingerprint"] = expected
        args["sources"] = render_sources(args)
        return args

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        if args["repo"] is not None:
            return apt_lines.state_script(args["source"], args["list"])
        content = ctx.diff and not ctx.no_log
        lines = [
            "echo @@sources",
            path_probe(sources_path(args["name"]), content=content),
            "echo @@keyring",
            path_probe(keyring_path(args["name"])),
        ]
        if args["state"] == "present":
            lines.append(others_script(args["uris"], sources_path(args["name"])))
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        if args["repo"] is not None:
            return self.plan_line(args, state, ctx)
        name = args["name"]
        st = _split_state(state)
        files = {"sources": sources_path(name), "keyring": keyring_path(name)}
        for part, path in files.items():
            if st[part]["type"] not in ("absent", "file"):
                raise ModuleError(f"{path} exists and is a {st[part]['type']}, not a regular file")
        changes: list[str] = []
        steps: list[Step] = []
        diff: str | None = None
        if args["state"] == "absent":
            present = [p for part, p in files.items() if st[part]["type"] == "file"]
            if not present:
                return noop(f"{files['sources']} and {files['keyring']} are already absent")
            changes += [f"remove {p}" for p in present]
            steps.append(Step("rm -f -- " + " ".join(quote(p) for p in present)))
        else:
            written = [
                RepoFile(
                    files["keyring"], args["keyring"], st["keyring"], f", key {args['fingerprint']}"
                ),
                RepoFile(files["sources"], args["sources"], st["sources"]),
            ]
            changes, steps, diff = repository_writes(
                written, parse_others(state), args["uris"], files["sources"], ctx
            )
            if not changes:
                return noop(
                    f"{files['sources']} and {files['keyring']} are up to date "
                    f"(key {args['fingerprint']})",
                    fingerprint=args["fingerprint"],
                )
        if args["update_cache"]:
            changes.append("update the package cache")
            steps.append(Step(AptModule().update_cache(args), timeout=step_timeout(args)))
        return Plan(True, changes=changes, steps=steps, diff=diff, result={"files": files})

    def plan_line(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        """Ansible's form: the line added, enabled or removed where it is (apt_lines)."""
        files, odd, host_codename = apt_lines.parse_lists(state)
        if odd:
            raise ModuleError(f"{odd[0]} exists and is not a regular file")
        source, target = args["source"], args["list"]
        ppa = source if source.startswith("ppa:") else None
        if ppa:
            codename = args["codename"] or host_codename
            if not codename:
                raise ModuleError(f"{ppa}: the host names no codename; give 'codename'")
            source = apt_lines.expand_ppa(ppa, codename)
        changed = apt_lines.new_contents(source, target, args["state"], files)
        if ppa and args["state"] == "present" and changed:
            raise ModuleError(apt_lines.ppa_refusal(ppa, codename))
        if not changed:
            where = "present" if args["state"] == "present" else "absent"
            return noop(f"{source}: {where}", repo=source, filename=target)
        changes, steps = apt_lines.write_steps(changed, set(files), args["mode"])
        diff = None
        if ctx.diff:
            diff = "".join(
                unified_diff(
                    path,
                    files[path].encode() if path in files else None,
                    None if text is None else text.encode(),
                    ctx.no_log,
                )
                for path, text in sorted(changed.items())
            )
        if args["update_cache"]:
            changes.append("update the package cache")
            steps.append(Step(AptModule().update_cache(args), timeout=step_timeout(args)))
        return Plan(
            True,
            changes=changes,
            steps=steps,
            diff=diff,
            result={"repo": source, "filename": target},
        )
