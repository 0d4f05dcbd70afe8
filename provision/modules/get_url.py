"""get_url: a file downloaded ON the host, checked, then moved into place atomically.

As ansible.builtin.get_url: nothing is downloaded when ``dest`` exists and ``force`` is false
(with a ``checksum``, when the file there has it); ``force: true`` downloads every time and
replaces the file only when the content differs. The host downloads with whichever of curl,
wget or python3 it has (the state read says which), into a temp file beside ``dest``; the
checksum is verified there, and only then is the file renamed over ``dest``.

The URL, the ``headers`` and ``url_username``/``url_password`` travel on stdin, as the tool's
own configuration (curl ``-K -``, a mode-600 wgetrc for wget, JSON for python3): never on a
command line, in a log or in the task's result (a URL's ``user:password@`` is masked).
"""

from __future__ import annotations

import json
import posixpath
import re
import urllib.parse
from typing import Any

from provision.modules.base import (
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    Step,
    attr_changes,
    noop,
    parse_probe,
    path_probe,
)
from provision.shell import quote

TOOLS = ("curl", "wget", "python3")
ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")  # coreutils' *sum tools
UNCHANGED = "provision: get_url: the download is identical to dest"
_HEX = re.compile(r"^[0-9a-f]+$")
# python3 when the host has neither curl nor wget: the request comes as JSON on stdin.
_PYTHON = """\
import base64, json, shutil, ssl, sys, urllib.request as u
r = json.load(sys.stdin)
req = u.Request(r["url"], headers=r["headers"])
if r["user"] is not None:
    pair = (r["user"] + ":" + (r["password"] or "")).encode()
    req.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
ctx = None if r["verify"] else ssl._create_unverified_context()
try:
    with u.urlopen(req, timeout=r["timeout"], context=ctx) as resp, open(sys.argv[1], "wb") as f:
        shutil.copyfileobj(resp, f)
except Exception as exc:
    sys.exit(f"provision: get_url: {exc}")
"""


def mask_url(url: str) -> str:
    """The URL as shown to users: a password in it replaced by ********."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:********@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def split_checksum(value: str) -> tuple[str, str]:
    """``sha256:HEX`` -> (algorithm, hex digest in lower case)."""
    algorithm, sep, digest = value.partition(":")
    algorithm = algorithm.strip().lower()
    if not sep or algorithm not in ALGORITHMS:
        raise ArgError(
            f"module 'get_url': checksum {value!r} must be ALGORITHM:DIGEST "
            f"({', '.join(ALGORITHMS)}), e.g. sha256:9f86d0..."
        )
    if "://" in digest:
        raise ArgError(
            "module 'get_url': a checksum URL (a SHA256SUMS file) is not supported; "
            "give the digest itself"
        )
    digest = re.sub(r"\W+", "", digest).lower()  # as Ansible: spaces and odd characters dropped
    if not _HEX.match(digest):
        raise ArgError(f"module 'get_url': checksum digest {digest!r} is not hexadecimal")
    return algorithm, digest


def _curl_text(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def request_config(tool: str, args: dict[str, Any]) -> bytes:
    """What the download command reads on stdin: the URL, headers and credentials in the
    tool's own configuration syntax."""
    headers = {str(k): str(v) for k, v in (args["headers"] or {}).items()}
    user, password = args["url_username"], args["url_password"]
    if tool == "python3":
        request = {
            "url": args["url"],
            "headers": headers,
            "user": user,
            "password": password,
            "timeout": args["timeout"],
            "verify": args["validate_certs"],
        }
        return json.dumps(request).encode()
    if tool == "curl":
        lines = [f"url = {_curl_text(args['url'])}"]
        lines += [f"header = {_curl_text(f'{k}: {v}')}" for k, v in headers.items()]
        if user is not None:
            lines.append("user = " + _curl_text(f"{user}:{password or ''}"))
        return ("\n".join(lines) + "\n").encode()
    # wget: the URL on the first line (read into a file for --input-file), then a wgetrc
    lines = [args["url"], *(f"header = {k}: {v}" for k, v in headers.items())]
    if user is not None:
        lines += [f"user = {user}", f"password = {password or ''}"]
    if not args["validate_certs"]:
        lines.append("check_certificate = off")
    return ("\n".join(lines) + "\n").encode()


def download_command(tool: str, args: dict[str, Any]) -> str:
    """The command that writes the response body to "$t", reading its request on stdin."""
    timeout = int(args["timeout"])
    if tool == "curl":
        insecure = "" if args["validate_certs"] else " -k"
        return f'curl -fsSL{insecure} --max-time {timeout} -K - -o "$t"'
    if tool == "wget":  # its request files lie beside "$t", removed with it (mode 600)
        return (
            '(umask 077; IFS= read -r line; printf "%s\\n" "$line" > "$t.u"; cat > "$t.c")\n'
            f'wget -q -T {timeout} --config="$t.c" -i "$t.u" -O "$t"'
        )
    return f'python3 -c {quote(_PYTHON)} "$t"'


def _split_state(text: str | None) -> tuple[str, dict[str, dict[str, str]]]:
    """(downloader, {"dest": probe, "indir": probe of dest/NAME for a directory dest}); a
    probe's ``digest`` is the checksum algorithm's digest when it is not sha256."""
    parts: dict[str, list[str]] = {"dest": [], "indir": []}
    tool, section = "", ""
    digests: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition("=")
        if line.startswith("@@"):
            section = line[2:].strip()
        elif key == "downloader":
            tool = value.strip()
        elif key in ("digest_dest", "digest_indir"):
            digests[key.removeprefix("digest_")] = (value.split() or [""])[0]
        elif section in parts:
            parts[section].append(line)
    probes = {name: parse_probe("\n".join(lines)) for name, lines in parts.items()}
    for name, digest in digests.items():
        probes[name]["digest"] = digest
    return tool, probes


def url_filename(url: str) -> str:
    """The last part of the URL's path (Ansible's name for a file saved into a directory)."""
    name = posixpath.basename(urllib.parse.urlsplit(url).path)
    return urllib.parse.unquote(name) or "index.html"


class GetUrlModule(Module):
    name = "get_url"
    spec = (
        Arg("url", required=True),
        Arg("dest", required=True),
        Arg("checksum", default=""),
        Arg("mode", "mode"),
        Arg("owner"),
        Arg("group"),
        Arg("force", "bool", default=False),
        Arg("backup", "bool", default=False),
        Arg("timeout", "int", default=10),
        Arg("headers", "dict"),
        Arg("url_username", aliases=("username",)),
        Arg("url_password", aliases=("password",)),
        Arg("validate_certs", "bool", default=True),
        Arg("force_basic_auth", "bool", default=False),  # accepted: credentials go first anyway
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        url = args.get("url")
        scheme = urllib.parse.urlsplit(url).scheme if isinstance(url, str) else ""
        if isinstance(url, str) and "{" not in url and scheme not in ("http", "https", "ftp"):
            raise ArgError(f"module 'get_url': url {mask_url(url)!r} must be http(s) or ftp")
        checksum = args.get("checksum")
        if isinstance(checksum, str) and checksum and "{" not in checksum:
            split_checksum(checksum)
        dest = args.get("dest")
        if isinstance(dest, str) and "{" not in dest and not dest.startswith("/"):
            raise ArgError(f"module 'get_url': dest {dest!r} must be an absolute path")
        for key, value in (args.get("headers") or {}).items():
            if "\n" in f"{key}{value}" or "\r" in f"{key}{value}":
                raise ArgError(f"module 'get_url': header {key!r} must be one line")

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        return (args["dest"], posixpath.join(args["dest"], url_filename(args["url"])))

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        dest = args["dest"]
        inner = posixpath.join(dest, url_filename(args["url"]))
        tools = " ".join(TOOLS)
        lines = [
            "echo @@get_url",
            f'dl=; for x in {tools}; do if command -v "$x" >/dev/null 2>&1; then dl=$x; break; '
            'fi; done; echo "downloader=$dl"',
            "echo @@dest",
            path_probe(dest),
            "echo @@indir",
            path_probe(inner),
        ]
        if args["checksum"]:
            algorithm, _digest = split_checksum(args["checksum"])
            if algorithm != "sha256":  # path_probe has the sha256 already
                lines.append("echo @@get_url")
                for name, path in (("dest", dest), ("indir", inner)):
                    lines.append(
                        f'if [ -f {quote(path)} ]; then echo "digest_{name}=$({algorithm}sum < '
                        f'{quote(path)})"; fi'
                    )
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        tool, probes = _split_state(state)
        dest, st = args["dest"], probes["dest"]
        # Into a directory: named after the URL, and downloaded every time (Ansible only knows
        # the name after the request), replacing the file only when it differs.
        into_directory = st["type"] == "directory"
        if into_directory:
            dest, st = posixpath.join(dest, url_filename(args["url"])), probes["indir"]
        force = args["force"] or into_directory
        if st["type"] not in ("absent", "file"):
            raise ModuleError(f"{dest} exists and is a {st['type']}, not a regular file")
        algorithm, want = split_checksum(args["checksum"]) if args["checksum"] else ("", "")
        have = st.get("sha256" if algorithm == "sha256" else "digest", "")
        result = {"dest": dest, "url": mask_url(args["url"])}
        exists = st["type"] == "file"
        if exists and not force and (not want or have == want):
            return self.attributes_only(args, dest, st, result)
        if tool not in TOOLS:
            raise ModuleError(
                f"get_url needs curl, wget or python3 on the host to download {result['url']}"
            )
        why = "force" if exists and force else "checksum differs" if exists else "absent"
        changes = [f"download {result['url']} to {dest} ({why}, with {tool})"]
        script = self.download_script(tool, args, dest, algorithm, want)
        step = Step(script, stdin=request_config(tool, args), timeout=args["timeout"] + 60)
        plan = Plan(True, changes=changes, steps=[step], result=result)
        if exists and force:
            # downloaded every time; a change only when the content differs (Ansible)
            plan.reason = f"{dest}: the download is identical"
            plan.changed_if = lambda out: UNCHANGED not in out or "attributes=changed" in out
        return plan

    def attributes_only(
        self, args: dict[str, Any], dest: str, st: dict[str, str], result: dict[str, Any]
    ) -> Plan:
        fixes, cmds = attr_changes(dest, st, args["owner"], args["group"], args["mode"])
        if not fixes:
            return noop(f"{dest} exists (not downloaded again: force is false)", **result)
        return Plan(
            True,
            changes=[f"{dest}: {f}" for f in fixes],
            steps=[Step("\n".join(["set -e", *cmds]))],
            result=result,
        )

    def download_script(
        self, tool: str, args: dict[str, Any], dest: str, algorithm: str, want: str
    ) -> str:
        """Download into a temp file beside dest, verify, keep an identical old file, set the
        attributes, back up, rename; the temp file never outlives the script."""
        d = quote(dest)
        parts = [
            "set -e",
            f"d={d}",
            'if [ ! -d "$(dirname "$d")" ]; then echo "provision: get_url: the directory of '
            '$d does not exist" >&2; exit 1; fi',
            't=$(mktemp "$(dirname "$d")/.provision.XXXXXX")',
            'trap \'rm -f "$t" "$t.c" "$t.u"\' EXIT',
            "trap 'exit 1' HUP INT TERM PIPE",
            download_command(tool, args),
        ]
        if want:
            parts.append(
                f'got=$({algorithm}sum < "$t" | cut -d" " -f1); if [ "$got" != {quote(want)} ]; '
                f'then echo "provision: get_url: the {algorithm} checksum of the download is '
                f'$got, expected {want}; $d left unchanged" >&2; exit 1; fi'
            )
        attrs = [
            (f"chown {quote(args['owner'])}", args["owner"]),
            (f"chgrp {quote(args['group'])}", args["group"]),
            (f"chmod {quote(args['mode'])}", args["mode"]),
        ]
        wanted = [cmd for cmd, value in attrs if value is not None]
        if wanted:  # an identical file keeps its content, but gets the attributes asked for
            fix = "; ".join(f'{cmd} "$d"' for cmd in wanted)
            keep = (
                f'b=$(stat -c %U:%G:%a "$d"); {fix}; '
                'if [ "$(stat -c %U:%G:%a "$d")" != "$b" ]; then echo attributes=changed; fi; '
            )
        else:
            keep = ""
        parts += [
            f'if [ -f "$d" ] && cmp -s "$t" "$d"; then {keep}echo {quote(UNCHANGED)}; exit 0; fi',
            'if [ -e "$d" ]; then chown --reference="$d" "$t"; chmod --reference="$d" "$t"; '
            'else chmod 644 "$t"; fi',
            *(f'{cmd} "$t"' for cmd in wanted),
        ]
        if args["backup"]:
            parts.append(
                'if [ -f "$d" ]; then b="$d.$(date +%Y-%m-%d@%H:%M:%S)~"; '
                'cp -p "$d" "$b"; echo "backup=$b"; fi'
            )
        parts += ['mv -f "$t" "$d"', 'rm -f "$t.c" "$t.u"', "trap - EXIT"]
        return "\n".join(parts)
