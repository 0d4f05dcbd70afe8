"""Ansible's Jinja filters, tests and lookups that real roles use, with Ansible's semantics
(ansible-core's lib/ansible/plugins/filter/core.py and mathstuff.py, plugins/test/core.py,
files.py and mathstuff.py, plugins/lookup/; docs.ansible.com/ansible/latest/playbook_guide/
playbooks_filters.html, playbooks_tests.html, playbooks_lookups.html). Pure apart from the
lookups, which read the controller (files, the environment, a command), as Ansible's do.

Every filter and test is registered under its short name and its ``ansible.builtin.`` name.
"""

from __future__ import annotations

import base64
import collections
import glob
import hashlib
import itertools
import json
import os
import random
import re
import subprocess
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import jinja2
import yaml

# Module arguments whose value renders to this are left out, as Ansible's ``omit`` does
# (a fresh token per run, so no real value can collide with it).
OMIT = f"__omit_place_holder__{uuid.uuid4().hex}"
# Ansible's default ``ansible_managed`` (ansible.cfg's DEFAULT_MANAGED_STR).
ANSIBLE_MANAGED = "Ansible managed"


def remove_omit(value: Any) -> Any:
    """``value`` without the mappings' entries and lists' items that are ``omit`` (Ansible's
    ``remove_omit``, applied to a task's rendered arguments)."""
    if isinstance(value, dict):
        return {k: remove_omit(v) for k, v in value.items() if v != OMIT}
    if isinstance(value, list):
        return [remove_omit(v) for v in value if v != OMIT]
    return value


def _flags(ignorecase: bool, multiline: bool) -> int:
    return (re.I if ignorecase else 0) | (re.M if multiline else 0)


def regex_search(
    value: Any, regex: str, *args: str, ignorecase: bool = False, multiline: bool = False
) -> Any:
    """The match, or with ``'\\1'``/``'\\g<name>'`` arguments the list of those groups; None
    when nothing matches."""
    match = re.search(regex, str(value), _flags(ignorecase, multiline))
    if match is None:
        return None
    if not args:
        return match.group()
    groups: list[Any] = []
    for arg in args:
        if arg.startswith("\\g<"):
            groups.append(match.group(arg[3:-1]))
        elif arg.startswith("\\"):
            groups.append(match.group(int(arg[1:])))
        else:
            raise jinja2.TemplateRuntimeError(f"regex_search: unknown argument {arg!r}")
    return groups


def regex_replace(
    value: Any,
    pattern: str = "",
    replacement: str = "",
    ignorecase: bool = False,
    multiline: bool = False,
    count: int = 0,
) -> str:
    return re.sub(
        pattern, replacement, str(value), count=count, flags=_flags(ignorecase, multiline)
    )


def regex_findall(value: Any, regex: str, multiline: bool = False, ignorecase: bool = False):
    return re.findall(regex, str(value), _flags(ignorecase, multiline))


def _unique(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


# Ansible's set filters (plugins/filter/mathstuff.py): set operations when the items are
# hashable, so the order is the set's, as there; else the first list's order, without repeats.
def union(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    a, b = list(a), list(b)
    try:
        return list(set(a) | set(b))
    except TypeError:
        return _unique([*a, *b])


def intersect(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    a, b = list(a), list(b)
    try:
        return list(set(a) & set(b))
    except TypeError:
        return _unique(x for x in a if x in b)


def difference(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    a, b = list(a), list(b)
    try:
        return list(set(a) - set(b))
    except TypeError:
        return _unique(x for x in a if x not in b)


def symmetric_difference(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    a, b = list(a), list(b)
    try:
        return list(set(a) ^ set(b))
    except TypeError:
        both = intersect(a, b)
        return [x for x in union(a, b) if x not in both]


def flatten(value: Any, levels: int | None = None, skip_nulls: bool = True) -> list[Any]:
    out: list[Any] = []
    for item in value:
        if skip_nulls and (item is None or item == "None"):
            continue
        if isinstance(item, list | tuple) and (levels is None or levels > 0):
            out.extend(flatten(item, None if levels is None else levels - 1, skip_nulls))
        else:
            out.append(item)
    return out


def _hash(value: Any, algorithm: str = "sha1") -> str:
    try:
        h = hashlib.new(algorithm)
    except ValueError:
        raise jinja2.TemplateRuntimeError(f"hash: unknown algorithm {algorithm!r}") from None
    h.update(str(value).encode())
    return h.hexdigest()


def to_nice_yaml(value: Any, indent: int = 4, **kw: Any) -> str:
    return yaml.safe_dump(value, indent=indent, default_flow_style=False, allow_unicode=True)


def human_readable(size: Any, isbits: bool = False, unit: str | None = None) -> str:
    """Ansible's ``human_readable``: 1024-based, ``1.00 KB`` / ``1.00 Kb``."""
    number = float(size)
    suffix = "b" if isbits else "B"
    units = ["", "K", "M", "G", "T", "P", "E", "Z", "Y"]
    for prefix in units:
        if (unit is None and abs(number) < 1024) or (unit is not None and unit[0] == prefix):
            break
        number /= 1024
    return f"{number:.2f} {prefix}{suffix}"


_HUMAN = re.compile(r"^\s*(?P<n>\d+(\.\d+)?)\s*(?P<u>[KMGTPEZY]?)(i?)(?P<b>[Bb]?)\w*\s*$")


def human_to_bytes(value: Any, default_unit: str | None = None, isbits: bool = False) -> int:
    match = _HUMAN.match(str(value))
    if match is None:
        raise jinja2.TemplateRuntimeError(f"human_to_bytes: cannot read {value!r}")
    unit = match.group("u") or (default_unit or "")[:1]
    power = "KMGTPEZY".find(unit) + 1 if unit else 0
    return int(float(match.group("n")) * 1024**power)


def subelements(items: Any, key: str, skip_missing: bool = False) -> list[tuple[Any, Any]]:
    if isinstance(items, Mapping):
        items = list(items.values())
    out: list[tuple[Any, Any]] = []
    for item in items:
        values = item.get(key)
        if values is None:
            if skip_missing:
                continue
            raise jinja2.TemplateRuntimeError(f"subelements: key {key!r} not found in {item!r}")
        out.extend((item, v) for v in values)
    return out


def extract(item: Any, container: Any, morekeys: Any = None) -> Any:
    value = container[item]
    keys = [] if morekeys is None else morekeys if isinstance(morekeys, list) else [morekeys]
    for key in keys:
        value = value[key]
    return value


def items2dict(items: Any, key_name: str = "key", value_name: str = "value") -> dict[Any, Any]:
    return {i[key_name]: i[value_name] for i in items}


def dict2items(d: Mapping[Any, Any], key_name: str = "key", value_name: str = "value"):
    return [{key_name: k, value_name: v} for k, v in d.items()]


def strftime(fmt: str, second: Any = None, utc: bool = False) -> str:
    import time

    seconds = float(second) if second is not None else time.time()
    stamp = time.gmtime(seconds) if utc else time.localtime(seconds)
    return time.strftime(fmt, stamp)


def to_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> datetime:
    return datetime.strptime(str(value), fmt)


def _path_join(paths: Any) -> str:
    return os.path.join(*paths) if isinstance(paths, list | tuple) else str(paths)


def _b64encode(value: Any, encoding: str = "utf-8") -> str:
    return base64.b64encode(str(value).encode(encoding)).decode()


def _b64decode(value: Any, encoding: str = "utf-8") -> str:
    return base64.b64decode(str(value)).decode(encoding)


def _shuffle(value: Any, seed: Any = None) -> list[Any]:
    items = list(value)
    random.Random(seed).shuffle(items)
    return items


def _type_debug(value: Any) -> str:
    return {"str": "str", "dict": "dict", "list": "list"}.get(
        type(value).__name__, type(value).__name__
    )


def _urlsplit(value: Any, query: str = "") -> Any:
    parts = urlsplit(str(value))
    out = {
        "fragment": parts.fragment,
        "hostname": parts.hostname,
        "netloc": parts.netloc,
        "password": parts.password,
        "path": parts.path,
        "port": parts.port,
        "query": parts.query,
        "scheme": parts.scheme,
        "username": parts.username,
    }
    return out[query] if query else out


FILTERS: dict[str, Callable[..., Any]] = {
    "regex_search": regex_search,
    "regex_replace": regex_replace,
    "regex_findall": regex_findall,
    "regex_escape": lambda v, re_type="python": re.escape(str(v)),
    "union": union,
    "intersect": intersect,
    "difference": difference,
    "symmetric_difference": symmetric_difference,
    "flatten": flatten,
    "hash": _hash,
    "checksum": lambda v: _hash(v, "sha1"),
    "sha1": lambda v: _hash(v, "sha1"),
    "md5": lambda v: _hash(v, "md5"),
    "b64encode": _b64encode,
    "b64decode": _b64decode,
    "to_nice_yaml": to_nice_yaml,
    "to_nice_json": lambda v, indent=4, sort_keys=True, **kw: json.dumps(
        v, indent=indent, sort_keys=sort_keys, separators=(",", ": "), **kw
    ),
    "human_readable": human_readable,
    "human_to_bytes": human_to_bytes,
    "zip": lambda *lists: [list(t) for t in zip(*lists, strict=False)],
    "zip_longest": lambda *lists, fillvalue=None: [
        list(t) for t in itertools.zip_longest(*lists, fillvalue=fillvalue)
    ],
    "product": lambda *lists: [list(t) for t in itertools.product(*lists)],
    "permutations": lambda v, r=None: [list(t) for t in itertools.permutations(v, r)],
    "combinations": lambda v, r: [list(t) for t in itertools.combinations(v, r)],
    "subelements": subelements,
    "extract": extract,
    "items2dict": items2dict,
    "dict2items": dict2items,
    "splitext": lambda v: list(os.path.splitext(str(v))),
    "expanduser": lambda v: os.path.expanduser(str(v)),
    "realpath": lambda v: os.path.realpath(str(v)),
    "relpath": lambda v, start=os.curdir: os.path.relpath(str(v), start),
    "path_join": _path_join,
    "split": lambda v, sep=None, maxsplit=-1: str(v).split(sep, maxsplit),
    "strftime": strftime,
    "to_datetime": to_datetime,
    "shuffle": _shuffle,
    "type_debug": _type_debug,
    "urlsplit": _urlsplit,
    "d": jinja2.filters.do_default,
}


def _regex_test(value: Any, pattern: str, ignorecase: bool, multiline: bool, kind: str) -> bool:
    find = re.match if kind == "match" else re.search
    return find(pattern, str(value), _flags(ignorecase, multiline)) is not None


def _result_test(key: str, want: bool = True) -> Callable[[Any], bool]:
    def test(result: Any) -> bool:
        if not isinstance(result, Mapping):
            raise jinja2.TemplateRuntimeError(
                f"the '{key}' test expects a registered result (a dictionary)"
            )
        return bool(result.get(key, False)) == want

    return test


TESTS: dict[str, Callable[..., bool]] = {
    "match": lambda v, p, ignorecase=False, multiline=False: _regex_test(
        v, p, ignorecase, multiline, "match"
    ),
    "search": lambda v, p, ignorecase=False, multiline=False: _regex_test(
        v, p, ignorecase, multiline, "search"
    ),
    "regex": lambda v, p, ignorecase=False, multiline=False, match_type="search": _regex_test(
        v, p, ignorecase, multiline, match_type
    ),
    "subset": lambda a, b: set(_hashable(a)) <= set(_hashable(b)),
    "superset": lambda a, b: set(_hashable(a)) >= set(_hashable(b)),
    "contains": lambda seq, value: value in seq,
    "any": lambda seq: any(seq),
    "all": lambda seq: all(seq),
    "exists": lambda p: os.path.exists(os.path.expanduser(str(p))),
    "file": lambda p: os.path.isfile(str(p)),
    "directory": lambda p: os.path.isdir(str(p)),
    "link": lambda p: os.path.islink(str(p)),
    "abs": lambda p: os.path.isabs(str(p)),
    "same_file": lambda a, b: os.path.samefile(str(a), str(b)),
    "changed": _result_test("changed"),
    "change": _result_test("changed"),
    "failed": _result_test("failed"),
    "failure": _result_test("failed"),
    "succeeded": _result_test("failed", False),
    "success": _result_test("failed", False),
    "successful": _result_test("failed", False),
    "skipped": _result_test("skipped"),
    "skip": _result_test("skipped"),
    "finished": lambda r: not (isinstance(r, Mapping) and r.get("finished") == 0),
    "started": lambda r: not (isinstance(r, Mapping) and r.get("started") == 0),
    "reachable": _result_test("unreachable", False),
    "unreachable": _result_test("unreachable"),
    "truthy": lambda v, convert_bool=False: bool(v),
    "falsy": lambda v, convert_bool=False: not v,
}


def _hashable(items: Any) -> list[Any]:
    return [json.dumps(i, sort_keys=True) if isinstance(i, dict | list) else i for i in items]


# -- lookups ------------------------------------------------------------------------------------


class LookupError_(jinja2.TemplateRuntimeError):
    pass


def _search_dirs(variables: Mapping[str, Any], subdir: str) -> list[str]:
    """Where a lookup's relative file is looked for, as Ansible searches: the role's
    ``subdir``/ and the role, then the play's ``subdir``/ and the play's directory."""
    out = []
    for key in ("role_path", "playbook_dir"):
        base = variables.get(key)
        if isinstance(base, str) and base:
            out += [os.path.join(base, subdir), base]
    return out or [os.curdir]


def _find(variables: Mapping[str, Any], name: str, subdir: str) -> str | None:
    name = os.path.expanduser(name)
    if os.path.isabs(name):
        return name if os.path.exists(name) else None
    for base in _search_dirs(variables, subdir):
        path = os.path.join(base, name)
        if os.path.exists(path):
            return path
    return None


def _read_found(
    variables: Mapping[str, Any], term: Any, subdir: str, lookup: str
) -> tuple[str, str]:
    """(path, text) of a lookup's controller file, found as Ansible searches for it."""
    path = _find(variables, str(term), subdir)
    if path is None:
        raise LookupError_(f"lookup('{lookup}'): could not find {term!r}")
    try:
        with open(path, encoding="utf-8") as fh:
            return path, fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise LookupError_(f"lookup('{lookup}'): cannot read {path}: {exc}") from None


def _lookup_file(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    out = []
    for term in terms:
        _, text = _read_found(variables, term, "files", "file")
        if kw.get("rstrip", True):
            text = text.rstrip()
        if kw.get("lstrip", False):
            text = text.lstrip()
        out.append(text)
    return out


def _lookup_env(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    return [os.environ.get(str(t), kw.get("default", "")) for t in terms]


def _lookup_pipe(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    out = []
    for term in terms:
        # a controller command, run through the shell as Ansible's pipe lookup does; only the
        # playbook's own text reaches here (host output is never templated: Unsafe values)
        done = subprocess.run(
            str(term), shell=True, capture_output=True, text=True, check=False, timeout=300
        )
        if done.returncode != 0:
            raise LookupError_(f"lookup('pipe'): {term!r} exited {done.returncode}")
        out.append(done.stdout.rstrip())
    return out


def _lookup_fileglob(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    out: list[Any] = []
    for term in terms:
        pattern = os.path.expanduser(str(term))
        bases = [""] if os.path.isabs(pattern) else _search_dirs(variables, "files")
        for base in bases:
            found = sorted(p for p in glob.glob(os.path.join(base, pattern)) if os.path.isfile(p))
            if found:
                out += found
                break
    return out


def _lookup_first_found(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    names: list[str] = []
    paths: list[str] = []
    for term in terms:
        if isinstance(term, Mapping):
            names += list(term.get("files", []))
            paths += list(term.get("paths", []))
        elif isinstance(term, list):
            names += [str(t) for t in term]
        else:
            names.append(str(term))
    names += list(kw.get("files", []))
    paths += list(kw.get("paths", []))
    for name in names:
        candidates = [os.path.join(p, name) for p in paths] if paths else [name]
        for candidate in candidates:
            path = _find(variables, candidate, "files")
            if path is not None:
                return [path]
    if kw.get("skip"):
        return []
    raise LookupError_("lookup('first_found'): none of the files was found")


def _lookup_vars(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    out = []
    for term in terms:
        if str(term) in variables:
            out.append(variables[str(term)])
        elif "default" in kw:
            out.append(kw["default"])
        else:
            raise LookupError_(f"lookup('vars'): no variable {term!r}")
    return out


def _lookup_template(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    from provision.templating import render_text

    out = []
    for term in terms:
        path, text = _read_found(variables, term, "templates", "template")
        out.append(render_text(text, variables, path))
    return out


def _lookup_items(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    """One level flattened, nulls kept (LookupBase._flatten)."""
    return [x for term in terms for x in (term if isinstance(term, list) else [term])]


def _lookup_lines(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    out: list[Any] = []
    for term in terms:
        out += _lookup_pipe(variables, [term])[0].splitlines()
    return out


def _lookup_dict(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    out: list[Any] = []
    for term in terms:
        if not isinstance(term, Mapping):
            raise LookupError_("lookup('dict') expects a dictionary")
        out += [{"key": k, "value": v} for k, v in term.items()]
    return out


def _lookup_nested(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    lists = [t if isinstance(t, list) else [t] for t in terms]
    return [list(t) for t in itertools.product(*lists)]


def _lookup_together(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    lists = [t if isinstance(t, list) else [t] for t in terms]
    return [list(t) for t in itertools.zip_longest(*lists)]


def _lookup_subelements(variables: Mapping[str, Any], terms: list[Any], **kw: Any):
    if len(terms) < 2:
        raise LookupError_("lookup('subelements') expects a list and a key")
    flags = terms[2] if len(terms) > 2 and isinstance(terms[2], Mapping) else {}
    pairs = subelements(terms[0], terms[1], bool(flags.get("skip_missing")))
    # unlike the filter, the lookup's item is the element without its subelement key
    return [[{k: v for k, v in item.items() if k != terms[1]}, sub] for item, sub in pairs]


def _lookup_indexed_items(variables: Mapping[str, Any], terms: list[Any], **kw: Any):
    return [[i, item] for i, item in enumerate(terms)]


def _lookup_sequence(variables: Mapping[str, Any], terms: list[Any], **kw: Any) -> list[Any]:
    """``start=1 end=5 stride=1 format=web%02d`` or ``count=3`` (or the short form
    ``1-5/2:%d``), as Ansible's sequence lookup."""
    out: list[Any] = []
    for term in terms:
        fields = dict(kw)
        text = str(term).strip()
        if "=" in text:
            fields.update(dict(w.split("=", 1) for w in text.split()))
        else:
            match = re.fullmatch(r"(\d+)(?:-(\d+))?(?:/(\d+))?(?::(.+))?", text)
            if match is None:
                raise LookupError_(f"lookup('sequence'): cannot read {text!r}")
            start, end, stride, fmt = match.groups()
            fields.update(start=start, end=end or start, stride=stride or 1, format=fmt or "%d")
        start = int(str(fields.get("start", 1)), 0)
        stride = int(str(fields.get("stride", 1)), 0)
        if "count" in fields:
            end = start + (int(str(fields["count"]), 0) - 1) * stride
        else:
            end = int(str(fields.get("end", start)), 0)
        fmt = str(fields.get("format", "%d"))
        step = stride if stride else 1
        out += [fmt % n for n in range(start, end + (1 if step > 0 else -1), step)]
    return out


LOOKUPS: dict[str, Callable[..., list[Any]]] = {
    "nested": _lookup_nested,
    "together": _lookup_together,
    "subelements": _lookup_subelements,
    "indexed_items": _lookup_indexed_items,
    "sequence": _lookup_sequence,
    "file": _lookup_file,
    "env": _lookup_env,
    "pipe": _lookup_pipe,
    "fileglob": _lookup_fileglob,
    "first_found": _lookup_first_found,
    "vars": _lookup_vars,
    "template": _lookup_template,
    "items": _lookup_items,
    "list": lambda variables, terms, **kw: list(terms),
    "lines": _lookup_lines,
    "dict": _lookup_dict,
}


def _variables(ctx: Any) -> Mapping[str, Any]:
    """The variables a lookup sees: the template's own (``{% set %}``, loop) over the task's,
    without rendering every variable (the task's are the lazy ``Vars`` parent)."""
    return collections.ChainMap(ctx.vars, ctx.parent) if ctx.vars else ctx.parent


# Lookups that take their terms as given: a list term is one argument, not several.
_WHOLE_TERMS = ("first_found", "nested", "together", "subelements", "list", "items")


def run_lookup(name: str, terms: list[Any], variables: Mapping[str, Any], **kw: Any) -> list[Any]:
    """Lookup ``name`` (short or ``ansible.builtin.``) over ``terms``: the one rule for
    ``lookup()``, ``query()`` and a task's ``with_<name>`` loop."""
    short = name.removeprefix("ansible.builtin.")
    if short not in LOOKUPS:
        raise LookupError_(f"lookup plugin '{name}' is not supported (see docs/playbooks.md)")
    kw.pop("errors", None)
    flat: list[Any] = []
    for term in terms:  # lookup('x', [a, b]) is lookup('x', a, b), as in Ansible
        if isinstance(term, list) and short not in _WHOLE_TERMS:
            flat += term
        else:
            flat.append(term)
    return LOOKUPS[short](variables, flat, **kw)


def _run_lookup(ctx: Any, name: str, terms: tuple[Any, ...], kw: dict[str, Any]) -> list[Any]:
    return run_lookup(name, list(terms), _variables(ctx), **kw)


@jinja2.pass_context
def lookup(ctx: Any, name: str, *terms: Any, wantlist: bool = False, **kw: Any) -> Any:
    """Ansible's ``lookup``: one value, or several joined by commas (``wantlist=True``: a
    list)."""
    values = _run_lookup(ctx, name, terms, kw)
    if wantlist:
        return values
    if len(values) == 1:
        return values[0]
    return ",".join(str(v) for v in values)


@jinja2.pass_context
def query(ctx: Any, name: str, *terms: Any, wantlist: bool = True, **kw: Any) -> list[Any]:
    """Ansible's ``query``/``q``: always a list."""
    return _run_lookup(ctx, name, terms, kw)


GLOBALS: dict[str, Any] = {
    "lookup": lookup,
    "query": query,
    "q": query,
    "omit": OMIT,
    "ansible_managed": ANSIBLE_MANAGED,
}


def with_builtin_names(plugins: Mapping[str, Any]) -> dict[str, Any]:
    """Each plugin under its own name and Ansible's fully qualified one."""
    return {**plugins, **{f"ansible.builtin.{k}": v for k, v in plugins.items()}}
