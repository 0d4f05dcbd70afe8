"""apt_repository's Ansible form: one ``repo:`` line (``deb [arch=amd64 signed-by=KEYRING] URI
SUITE COMPONENTS``) in a ``.list`` file, with ansible.builtin.apt_repository's meaning.

A line already present anywhere (``/etc/apt/sources.list`` or any ``sources.list.d/*.list``,
compared with its whitespace collapsed) is left as it is; one present but commented out is
enabled again; otherwise the line is appended to ``sources.list.d/FILENAME.list`` (``filename``,
default derived from the URI as Ansible derives it: ``download.docker.com/linux/ubuntu`` ->
``download_docker_com_linux_ubuntu.list``). ``state: absent`` removes every enabled copy of the
line, and a file left empty. Files are rewritten atomically, a replaced one backed up; the cache
is updated only when something changed (``update_cache`` defaults to true, as in Ansible).

A ``ppa:OWNER/NAME`` is Ansible's line ``deb https://ppa.launchpadcontent.net/OWNER/NAME/ubuntu
CODENAME main`` (``codename``, default the host's ``VERSION_CODENAME``): it is removed, or found
present, exactly as that line. Adding one that is not there needs Launchpad's API (it names the
PPA's signing key, then fetched from a keyserver), which provision does not query: that task
fails saying so, with the deb line to write instead.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from provision.modules.base import ArgError, Step, atomic_write_script
from provision.shell import quote

SOURCES_DIR = "/etc/apt/sources.list.d"
MAIN_LIST = "/etc/apt/sources.list"
TYPES = ("deb", "deb-src")
PPA_URI = "https://ppa.launchpadcontent.net"  # Ansible's UbuntuSourcesList.PPA_URI
_PPA = re.compile(r"^ppa:([A-Za-z0-9][A-Za-z0-9.+_-]*)(?:/([A-Za-z0-9][A-Za-z0-9.+_-]*))?$")


def ppa_parts(text: str) -> tuple[str, str]:
    """``ppa:OWNER/NAME`` -> (OWNER, NAME); NAME defaults to ``ppa``, as in Ansible."""
    match = _PPA.match(text)
    if not match:
        raise ArgError(f"module 'apt_repository': {text!r} is not ppa:OWNER/NAME")
    return match.group(1), match.group(2) or "ppa"


def expand_ppa(text: str, codename: str) -> str:
    """Ansible's ``_expand_ppa``: the deb line a ``ppa:`` stands for on this codename."""
    owner, name = ppa_parts(text)
    return f"deb {PPA_URI}/{owner}/{name}/ubuntu {codename} main"


def ppa_refusal(text: str, codename: str) -> str:
    owner, name = ppa_parts(text)
    return (
        f"adding {text} needs Launchpad's API for the PPA's signing key, which provision does "
        f"not query; give its line and key instead: repo: 'deb [signed-by=/etc/apt/keyrings/"
        f"{owner}-{name}.gpg] {PPA_URI}/{owner}/{name}/ubuntu {codename} main' (the key with "
        "apt_key or get_url)"
    )


def normalize_line(line: str) -> str:
    """A repository line as Ansible compares it: whitespace collapsed; ArgError if it is not
    ``deb``/``deb-src`` followed by a URI and a suite (or a ``ppa:``, refused)."""
    text = " ".join(line.split())
    if text.startswith("ppa:"):
        ppa_parts(text)
        return text
    words = re.sub(r"\[[^\]]*\]", " ", text).split()
    if not words or words[0] not in TYPES or len(words) < 3:
        raise ArgError(
            f"module 'apt_repository': invalid repository line {line!r} (expected "
            "'deb [OPTIONS] URI SUITE [COMPONENTS...]')"
        )
    if "://" not in words[1] and not words[1].startswith(("file:", "cdrom:")):
        raise ArgError(f"module 'apt_repository': {words[1]!r} in {line!r} is not a URI")
    return text


def line_uri(source: str) -> str:
    if source.startswith("ppa:"):
        return line_uri(expand_ppa(source, "CODENAME"))
    return re.sub(r"\[[^\]]*\]", " ", source).split()[1]


def suggest_filename(source: str, filename: str | None) -> str:
    """The ``.list`` file a new line goes to: Ansible's ``_suggest_filename``."""
    if filename:
        name = filename
    else:
        text = re.sub(r"\w+://", "", re.sub(r"\[[^\]]+\]", "", source))
        first = next(part for part in text.split() if part not in TYPES)
        first = first.split("@", 1)[-1]  # no user:password@ in a file name
        name = "_".join(re.sub("[^a-zA-Z0-9]", " ", first).split())
    path = name if "/" in name else f"{SOURCES_DIR}/{name}"
    return f"{path}.list"


@dataclass
class Line:
    """One line of a sources file as Ansible's SourcesList parses it."""

    raw: str
    valid: bool
    enabled: bool
    source: str
    comment: str

    @classmethod
    def parse(cls, raw: str) -> Line:
        line, enabled = raw.strip(), True
        if line.startswith("#"):
            enabled, line = False, line[1:]
        comment = ""
        i = line.find("#")
        if i > 0:
            comment, line = line[i + 1 :].strip(), line[:i]
        source = " ".join(line.split())
        valid = bool(source) and source.split()[0] in TYPES
        return cls(raw, valid, enabled, source, comment)

    def enabled_text(self) -> str:
        """The line enabled again, as Ansible writes it (``SOURCE # COMMENT``)."""
        return self.source + (f" # {self.comment}" if self.comment else "")


def state_script(source: str, target: str) -> str:
    """Print ``@@file PATH`` + the base64 of the target ``.list`` and of every other list file
    that mentions the line's URI (the line can only be in one of those)."""
    uri = quote(line_uri(source))
    files = f"{quote(MAIN_LIST)} {quote(SOURCES_DIR)}/*.list"
    return "\n".join(
        [
            "echo @@lists",
            f"t={quote(target)}",
            f'for f in "$t" {files}; do',
            '  [ -f "$f" ] || continue',
            '  if [ "$f" != "$t" ]; then grep -qF -e ' + uri + ' "$f" 2>/dev/null || continue; fi',
            '  echo "@@file $f"; base64 -w0 < "$f"; echo',
            "done",
            '[ -e "$t" ] && [ ! -f "$t" ] && echo "@@notfile $t"',
            # a ppa: line is Ansible's expansion on the host's codename
            'echo "@@codename $( (. /etc/os-release; echo "${VERSION_CODENAME:-$UBUNTU_CODENAME}")'
            ' 2>/dev/null)"',
        ]
    )


def parse_lists(text: str | None) -> tuple[dict[str, str], list[str], str]:
    """({path: content} of the files the state read printed, paths that are not files, the
    host's codename)."""
    files: dict[str, str] = {}
    odd: list[str] = []
    current = codename = ""
    for line in (text or "").splitlines():
        if line.startswith("@@codename"):
            codename = line[len("@@codename") :].strip()
        elif line.startswith("@@file "):
            current = line[len("@@file ") :]
            files[current] = ""
        elif line.startswith("@@notfile "):
            odd.append(line[len("@@notfile ") :])
        elif line.startswith("@@"):
            current = ""
        elif current:
            try:
                files[current] = base64.b64decode(line.strip()).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                files[current] = ""
            current = ""
    return files, odd, codename


def _text(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def new_contents(
    source: str, target: str, state: str, files: dict[str, str]
) -> dict[str, str | None]:
    """{path: new content, or None to remove the file} for every file that changes."""
    out: dict[str, str | None] = {}
    parsed = {path: [Line.parse(raw) for raw in text.splitlines()] for path, text in files.items()}
    if state == "absent":
        for path, lines in parsed.items():
            kept = [ln for ln in lines if not (ln.valid and ln.enabled and ln.source == source)]
            if len(kept) != len(lines):
                out[path] = _text([ln.raw for ln in kept]) if kept else None
        return out
    copies = [(p, ln) for p, lines in parsed.items() for ln in lines if ln.valid]
    if any(ln.source == source and ln.enabled for _p, ln in copies):
        return out
    disabled = {p for p, ln in copies if ln.source == source}
    for path in disabled:  # a commented-out copy is enabled again, where it is
        out[path] = _text(
            [
                ln.enabled_text() if ln.valid and ln.source == source else ln.raw
                for ln in parsed[path]
            ]
        )
    if not disabled:
        out[target] = files.get(target, "") + f"{source}\n"
    return out


def write_steps(
    changes: dict[str, str | None], existing: set[str], mode: str | None
) -> tuple[list[str], list[Step]]:
    """(change lines, steps): each file written atomically (the old one backed up) or removed."""
    lines: list[str] = []
    steps: list[Step] = []
    for path, content in sorted(changes.items()):
        if content is None:
            lines.append(f"remove {path} (no lines left)")
            steps.append(Step(f"rm -f -- {quote(path)}"))
            continue
        data = content.encode()
        verb = "update" if path in existing else "create"
        lines.append(f"{verb} {path}")
        new_mode = mode if path in existing else (mode or "644")  # Ansible's for a new file
        script = atomic_write_script(
            path, data, owner="root", group="root", mode=new_mode, backup=path in existing
        )
        steps.append(Step(f"mkdir -p {quote(SOURCES_DIR)}\n{script}", data))
    return lines, steps


def check_line_args(args: dict[str, Any]) -> None:
    repo = args.get("repo")
    if isinstance(repo, str) and "{" not in repo:
        normalize_line(repo)
    deb822 = [k for k in ("uris", "suites", "key_url", "key_fingerprint") if args.get(k)]
    if deb822:
        raise ArgError(
            f"module 'apt_repository': 'repo' (a one-line source) and {', '.join(deb822)} (a "
            "deb822 source) are two forms; give one"
        )
