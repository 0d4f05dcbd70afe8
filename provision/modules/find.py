"""find: the paths under directories that match, read only, registered as ansible.builtin.find
registers them (docs.ansible.com/ansible/latest/collections/ansible/builtin/find_module.html).

The host lists every entry once (GNU find, one line each: its lstat fields); which of them match
is decided here with Ansible's rules (ansible-core 2.19 find.py): ``patterns`` are shell globs
(``use_regex``: Python regexes matched at the start) on the base name, ``excludes`` the same,
``file_type`` file/directory/link/any, hidden names skipped unless ``hidden``, ``recurse`` and
``depth``, ``age``/``age_stamp``, ``size``, ``limit``; ``files`` in os.walk's order with
stat's keys, ``matched``, ``examined``. The read rides in the batched state read.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, Plan, is_template, noop
from provision.shell import quote

_DIGESTS = {
    "md5": "md5sum",
    "sha1": "sha1sum",
    "sha224": "sha224sum",
    "sha256": "sha256sum",
    "sha384": "sha384sum",
    "sha512": "sha512sum",
}
# find's fields: type (lstat), type (followed), mode, uid, gid, user, group, size, inode, dev,
# links, atime, mtime, ctime, depth, path
_PRINTF = "%y\\t%Y\\t%m\\t%U\\t%G\\t%u\\t%g\\t%s\\t%i\\t%D\\t%n\\t%A@\\t%T@\\t%C@\\t%d\\t%p\\n"
_AGE = re.compile(r"^(-?\d+)(s|m|h|d|w)?$")
_SIZE = re.compile(r"^(-?\d+)(b|k|m|g|t)?$")
_UNSUPPORTED = ("contains", "mode", "encoding")


def _split(value: Any) -> list[str]:
    """Ansible's list argument: a string is split at commas."""
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        out += [p.strip() for p in str(item).split(",")] if isinstance(item, str) else [str(item)]
    return [p for p in out if p != ""]


def _seconds(text: str) -> int:
    match = _AGE.match(text.lower())
    if match is None:
        raise ArgError(f"module 'find': failed to process age {text!r} (like 2d, -3h, 600)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}.get(match.group(2) or "s", 1)
    return int(match.group(1)) * unit


def _bytes(text: str) -> int:
    match = _SIZE.match(text.lower())
    if match is None:
        raise ArgError(f"module 'find': failed to process size {text!r} (like 10m, -1k)")
    unit = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    return int(match.group(1)) * unit.get(match.group(2) or "b", 1)


class FindModule(Module):
    name = "find"
    spec = (
        Arg("paths", "list", required=True, aliases=("name", "path")),
        Arg("patterns", "list", default=[], aliases=("pattern",)),
        Arg("excludes", "list", aliases=("exclude",)),
        Arg("file_type", default="file", choices=("any", "directory", "file", "link")),
        Arg("recurse", "bool", default=False),
        Arg("hidden", "bool", default=False),
        Arg("depth", "int"),
        Arg("age"),
        Arg("age_stamp", default="mtime", choices=("atime", "ctime", "mtime")),
        Arg("size"),
        Arg("use_regex", "bool", default=False),
        Arg("follow", "bool", default=False),
        Arg("get_checksum", "bool", default=False),
        Arg(
            "checksum_algorithm",
            default="sha1",
            choices=tuple(_DIGESTS),
            aliases=("checksum", "checksum_algo"),
        ),
        Arg("limit", "int"),
        Arg("read_whole_file", "bool", default=False),
        Arg("exact_mode", "bool", default=True),
        *(Arg(name, "raw") for name in _UNSUPPORTED),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        for name in (*_UNSUPPORTED, "follow"):
            if args.get(name) not in (None, False):
                raise ArgError(f"module 'find': '{name}' is not supported yet")
        for key, parse in (("age", _seconds), ("size", _bytes)):
            value = args.get(key)
            if value is not None and not is_template(value):
                parse(str(value))
        limit = args.get("limit")
        if isinstance(limit, int) and limit <= 0:
            raise ArgError(f"module 'find': limit cannot be {limit} (use None for unlimited)")

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        return tuple(_split(args["paths"]))

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        depth = 1 if not args["recurse"] else (args["depth"] + 1 if args["depth"] else None)
        limit = f" -maxdepth {depth}" if depth else ""
        lines = ['echo "now=$(date +%s.%N)"']
        for path in _split(args["paths"]):
            p = quote(path)
            listing = f"find {p} -mindepth 1{limit} -printf {quote(_PRINTF)}"
            lines.append(
                f'if [ -d {p} ]; then printf "@path\\t%s\\n" {p}; {listing} 2>/dev/null; '
                f'else printf "@notdir\\t%s\\n" {p}; fi'
            )
            if args["get_checksum"]:
                tool = _DIGESTS[args["checksum_algorithm"]]
                lines.append(
                    f"if [ -d {p} ]; then find {p} -mindepth 1{limit} -type f -exec {tool} {{}} + "
                    "2>/dev/null | sed 's/^/@sum\\t/'; fi"
                )
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        found = find_files(state or "", args)
        return noop(f"{found['matched']} of {found['examined']} paths matched", **found)


def find_files(text: str, args: dict[str, Any]) -> dict[str, Any]:
    """The state read -> Ansible's result: files (os.walk order), matched, examined, msg."""
    now = 0.0
    walks: list[tuple[str, list[list[str]]]] = []
    sums: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("now="):
            now = float(line[4:] or 0)
        elif line.startswith("@path\t"):
            walks.append((line.split("\t", 1)[1], []))
        elif line.startswith("@notdir\t"):
            path = line.split("\t", 1)[1]
            skipped[path] = f"'{path}' is not a directory"
        elif line.startswith("@sum\t"):
            digest, _, path = line[5:].partition("  ")
            sums[os.path.normpath(path)] = digest
        elif walks and line.count("\t") >= 15:
            walks[-1][1].append(line.split("\t", 15))
    patterns = _split(args["patterns"]) or ([".*"] if args["use_regex"] else ["*"])
    excludes = _split(args["excludes"]) if args["excludes"] else []
    age = _seconds(str(args["age"])) if args["age"] is not None else None
    size = _bytes(str(args["size"])) if args["size"] is not None else None
    files: list[dict[str, Any]] = []
    examined = 0
    for root, entries in walks:
        for listed in _walk_order(root, entries):
            examined += len(listed)  # os.walk lists a directory whole, as Ansible counts it
            for fields in listed:
                entry = _entry(fields, sums)
                if _matches(entry, fields, args, patterns, excludes, now, age, size):
                    files.append(entry)
                    if len(files) == args["limit"]:
                        break
            if len(files) == args["limit"]:
                break
        if len(files) == args["limit"]:
            break
    msg = "All paths examined" if not skipped else "Not all paths examined, check warnings"
    if args["limit"] is not None and len(files) == args["limit"]:
        msg = "Limit of matches reached"
    return {
        "files": files,
        "matched": len(files),
        "examined": examined,
        "msg": msg,
        "skipped_paths": skipped,
    }


def _walk_order(root: str, entries: list[list[str]]) -> list[list[list[str]]]:
    """The entries as os.walk(topdown) lists them, one list per directory: its
    non-directories, then its directories (a link to a directory counts as one, as os.walk has
    it); then each of those directories' lists (a link is not followed)."""
    children: dict[str, list[list[str]]] = {}
    for fields in entries:
        path = os.path.normpath(fields[15])
        children.setdefault(os.path.dirname(path), []).append(fields)
    out: list[list[list[str]]] = []

    def visit(directory: str) -> None:
        listed = children.get(directory, [])
        dirs = [f for f in listed if f[1] == "d"]
        out.append([f for f in listed if f[1] != "d"] + dirs)
        for sub in dirs:
            if sub[0] == "d":
                visit(os.path.normpath(sub[15]))

    visit(os.path.normpath(root))
    return [group for group in out if group]


def _entry(fields: list[str], sums: dict[str, str]) -> dict[str, Any]:
    kind, _, mode, uid, gid, user, group, size, inode, dev, nlink = fields[:11]
    atime, mtime, ctime, path = fields[11], fields[12], fields[13], os.path.normpath(fields[15])
    bits = int(mode, 8)
    entry: dict[str, Any] = {
        "path": path,
        "mode": f"{bits:04o}",
        "isdir": kind == "d",
        "ischr": kind == "c",
        "isblk": kind == "b",
        "isreg": kind == "f",
        "isfifo": kind == "p",
        "islnk": kind == "l",
        "issock": kind == "s",
        "uid": int(uid),
        "gid": int(gid),
        "size": int(size),
        "inode": int(inode),
        "dev": int(dev),
        "nlink": int(nlink),
        "atime": float(atime),
        "mtime": float(mtime),
        "ctime": float(ctime),
        "gr_name": "" if group == gid else group,
        "pw_name": "" if user == uid else user,
    }
    for name, bit in (("usr", 0o100), ("grp", 0o010), ("oth", 0o001)):
        entry[f"w{name}"] = bool(bits & bit << 1)
        entry[f"r{name}"] = bool(bits & bit << 2)
        entry[f"x{name}"] = bool(bits & bit)
    entry["isuid"], entry["isgid"] = bool(bits & 0o4000), bool(bits & 0o2000)
    if path in sums:
        entry["checksum"] = sums[path]
    return entry


def _matches(
    entry: dict[str, Any],
    fields: list[str],
    args: dict[str, Any],
    patterns: list[str],
    excludes: list[str],
    now: float,
    age: int | None,
    size: int | None,
) -> bool:
    limit = args["depth"] if args["recurse"] and args["depth"] else None
    if limit is not None and int(fields[14]) > limit:
        return False
    name = os.path.basename(entry["path"])
    if name.startswith(".") and not args["hidden"]:
        return False
    kinds = {
        "any": True,
        "directory": entry["isdir"],
        "file": entry["isreg"],
        "link": entry["islnk"],
    }
    if not kinds[args["file_type"]]:
        return False
    if not _name_matches(name, patterns, excludes, args["use_regex"]):
        return False
    if age is not None:
        elapsed = now - entry[args["age_stamp"]]
        if not (elapsed >= abs(age) if age >= 0 else elapsed <= abs(age)):
            return False
    if size is not None and entry["isreg"]:  # Ansible sizes regular files only
        return entry["size"] >= abs(size) if size >= 0 else entry["size"] <= abs(size)
    return True


def _name_matches(name: str, patterns: list[str], excludes: list[str], use_regex: bool) -> bool:
    """Ansible's pfilter: a pattern matches and no exclude does."""

    def hit(pattern: str) -> bool:
        return bool(re.match(pattern, name)) if use_regex else fnmatch.fnmatch(name, pattern)

    return any(hit(p) for p in patterns) and not any(hit(e) for e in excludes)
