"""deb822_repository: ansible.builtin.deb822_repository on apt_repository's deb822 writer.

The ``.sources`` file is the one Ansible writes (``/etc/apt/sources.list.d/SLUG.sources``, SLUG
being ``name`` lower-cased, ``_``/spaces as ``-``; the fields in the order of Ansible's argument
names, ``X-Repolib-Name`` for ``name``, booleans as yes/no). ``signed_by`` is a keyring path on
the host, an armored key (embedded in the field), or a URL: that key is fetched on the
controller and written to ``/etc/apt/keyrings/SLUG.asc`` (``.gpg`` when binary), as Ansible's
module names it. Ansible checks no fingerprint; neither does this module (apt_repository's
deb822 form, with ``key_fingerprint``, does). Written by :func:`repository_writes`: atomically,
backed up, and another source file that declares only our URIs is moved aside first (apt refuses
two Signed-By for one repository). No cache update, as in Ansible: an ``apt`` task with
``update_cache`` follows.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from provision.modules.apt_repository import (
    KEYRINGS_DIR,
    SOURCES_DIR,
    RepoFile,
    fetch_key,
    others_script,
    parse_others,
    repository_writes,
)
from provision.modules.base import (
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    Step,
    noop,
    parse_probe,
    path_probe,
)
from provision.shell import quote

_ARMORED = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_BOOLS = (
    "allow_downgrade_to_insecure",
    "allow_insecure",
    "allow_weak",
    "by_hash",
    "check_date",
    "check_valid_until",
    "enabled",
    "pdiffs",
    "trusted",
)
_LISTS = ("architectures", "components", "languages", "suites", "targets", "types", "uris")
FETCH_TIMEOUT = 30.0


def slug(name: str) -> str:
    """Ansible's file name for ``name``: ``Docker CE`` -> ``docker-ce``."""
    return re.sub(r"[^a-z0-9-]+", "", re.sub(r"[_\s]+", "-", name.lower()))


def sources_file(name: str) -> str:
    return f"{SOURCES_DIR}/{slug(name)}.sources"


def key_file(name: str, ext: str) -> str:
    return f"{KEYRINGS_DIR}/{slug(name)}.{ext}"


def field_name(arg: str) -> str:
    """Ansible's ``format_field_name``."""
    if arg == "name":
        return "X-Repolib-Name"
    if arg == "uris":
        return "URIs"
    return arg.replace("_", "-").title()


def render(fields: dict[str, Any]) -> bytes:
    """The stanza as python-debian's Deb822 dumps it for Ansible: ``Key: value``, a multi-line
    value (an embedded key) indented on the lines after ``Key:``."""
    lines: list[str] = []
    for arg, value in sorted(fields.items()):
        if value is None:
            continue
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, list):
            text = " ".join(str(v) for v in value)
        else:
            text = str(value)
        if "\n" in text.strip():
            body = "\n".join(line.strip() or "." for line in text.strip().splitlines())
            lines.append(f"{field_name(arg)}:\n{textwrap.indent(body, '    ')}")
        else:
            lines.append(f"{field_name(arg)}: {text}")
    return ("\n".join(lines) + "\n").encode()


class Deb822RepositoryModule(Module):
    name = "deb822_repository"
    spec = (
        Arg("name", required=True),
        *(Arg(name, "list") for name in _LISTS if name != "types"),
        Arg("types", "list", default=["deb"]),
        *(Arg(name, "bool") for name in _BOOLS),
        Arg("date_max_future", "int"),
        Arg("inrelease_path"),
        Arg("signed_by"),
        Arg("mode", "mode", default="644"),
        Arg("state", choices=("present", "absent"), default="present"),
        Arg("install_python_debian", "bool", default=False),  # accepted: nothing to install
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        types = args.get("types")
        if isinstance(types, list) and not all(t in ("deb", "deb-src") for t in types):
            raise ArgError(f"module 'deb822_repository': types must be deb and/or deb-src: {types}")
        if args.get("state", "present") == "present":
            for key in ("uris", "suites"):
                if not args.get(key) and key in args:
                    raise ArgError(f"module 'deb822_repository': missing required argument '{key}'")

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """A ``signed_by`` URL's key fetched here; the stanza rendered."""
        args = dict(args)
        if args["state"] == "absent":
            return args
        signed_by = args["signed_by"]
        fields = {
            k: v for k, v in args.items() if k not in ("mode", "state", "install_python_debian")
        }
        args["key"] = None
        if signed_by and "://" in signed_by and _ARMORED not in signed_by:
            data = fetch_key(signed_by, FETCH_TIMEOUT)
            ext = "asc" if _ARMORED.encode() in data else "gpg"
            args["key"] = (key_file(args["name"], ext), data)
            fields["signed_by"] = key_file(args["name"], ext)
        args["sources"] = render(fields)
        return args

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        return None  # may move other source files aside

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        content = ctx.diff and not ctx.no_log
        name = args["name"]
        lines = ["echo @@sources", path_probe(sources_file(name), content=content)]
        for ext in ("asc", "gpg"):
            lines += [f"echo @@{ext}", path_probe(key_file(name, ext))]
        if args["state"] == "present":
            lines.append(others_script(args["uris"], sources_file(name)))
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        st = _sections(state)
        name = args["name"]
        paths = {"sources": sources_file(name), **{e: key_file(name, e) for e in ("asc", "gpg")}}
        for part, path in paths.items():
            if st[part]["type"] not in ("absent", "file"):
                raise ModuleError(f"{path} exists and is a {st[part]['type']}, not a regular file")
        if args["state"] == "absent":
            present = [p for part, p in paths.items() if st[part]["type"] == "file"]
            if not present:
                return noop(f"{paths['sources']} is already absent")
            step = Step("rm -f -- " + " ".join(quote(p) for p in present))
            return Plan(True, changes=[f"remove {p}" for p in present], steps=[step])
        written = []
        if args["key"] is not None:
            path, data = args["key"]
            written.append(RepoFile(path, data, st[path.rsplit(".", 1)[1]]))
        written.append(
            RepoFile(paths["sources"], args["sources"], st["sources"], mode=args["mode"])
        )
        changes, steps, diff = repository_writes(
            written, parse_others(state), args["uris"], paths["sources"], ctx, strict=False
        )
        result = {"dest": paths["sources"], "key_filename": args["key"][0] if args["key"] else None}
        if not changes:
            return noop(f"{paths['sources']} is up to date", **result)
        return Plan(True, changes=changes, steps=steps, diff=diff, result=result)


def _sections(text: str | None) -> dict[str, dict[str, str]]:
    parts: dict[str, list[str]] = {"sources": [], "asc": [], "gpg": []}
    section = ""
    for line in (text or "").splitlines():
        if line.startswith("@@"):
            section = line[2:].strip()
        elif section in parts:
            parts[section].append(line)
    return {k: parse_probe("\n".join(v)) for k, v in parts.items()}
