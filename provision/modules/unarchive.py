"""unarchive: a tar archive (plain, gz, bz2, xz, zstd) unpacked into a directory on the host,
with ansible.builtin.unarchive's arguments and its test for "already unpacked".

Source: docs.ansible.com/ansible/latest/collections/ansible/builtin/unarchive_module.html and
ansible-core's TgzArchive: the host's GNU tar compares the archive with ``dest``
(``tar --diff``): nothing on stderr and no difference, or only differences in what
``owner``/``group``/``mode`` set anyway, means unpacked; then owner, group and mode are applied to
every path the archive lists. ``remote_src``: the archive is a file on the host, compared in the
batched state read (a --check run says exactly what would change). Otherwise it is a controller
file, sent on stdin into a temp file beside ``dest`` and compared there when the task runs
(--check cannot say: the task is skipped in check mode). ``creates``: skipped when that path
exists, as Ansible's action does.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step, noop
from provision.modules.files import read_controller_file
from provision.modules.modes import wanted_mode
from provision.modules.reboot import TaskSkipped
from provision.shell import join, quote, verify_received

_EMPTY_NAME = re.compile(r": : Warning: Cannot stat: No such file or directory$")
EXTRACTED = "provision: unarchive: unpacked"
ATTRS_CHANGED = "provision: unarchive: attributes changed"


class UnarchiveModule(Module):
    name = "unarchive"
    path_arg = "dest"
    spec = (
        Arg("src", required=True),
        Arg("dest", required=True),
        Arg("remote_src", "bool", default=False),
        Arg("copy", "bool"),  # Ansible's old name: copy: false is remote_src: true
        Arg("creates"),
        Arg("extra_opts", "list", default=[]),
        Arg("exclude", "list", default=[]),
        Arg("include", "list", default=[]),
        Arg("keep_newer", "bool", default=False),
        Arg("list_files", "bool", default=False),
        Arg("owner"),
        Arg("group"),
        Arg("mode", "mode"),
        Arg("decrypt", "bool", default=True),  # vault-encrypted sources: not supported
        Arg("validate_certs", "bool", default=True),
        Arg("io_buffer_size", "int", default=65536),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if args.get("include") and args.get("exclude"):
            raise ArgError(f"module '{self.name}': include and exclude are mutually exclusive")

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        return None  # an archive may write anywhere under dest, and src may be anywhere

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        args = dict(args)
        if args["copy"] is False:
            args["remote_src"] = True
        if "://" in args["src"]:
            raise ModuleError(
                f"src {args['src']} is a URL: download it first (get_url), then unarchive the "
                "file with remote_src: true"
            )
        if not args["remote_src"]:
            args["data"] = read_controller_file(args["src"], ctx, "files")
            if not args["data"]:
                raise ModuleError(f"Invalid archive '{args['src']}', the file is 0 bytes")
        return args

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        d = quote(args["dest"])
        lines = [f"if [ -d {d} ]; then echo dest=directory; else echo dest=missing; fi"]
        if args["creates"]:
            lines.append(f"if [ -e {quote(args['creates'])} ]; then echo creates=1; fi")
        if args["remote_src"]:
            lines.append(_remote_probe(args))
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        src, dest = args["src"], args["dest"]
        st = _parse(state)
        if args["creates"] and st.get("creates") == "1":
            raise TaskSkipped(f"skipped, since {args['creates']} exists")
        if st.get("dest") != "directory":
            raise ModuleError(f"Destination '{dest}' is not a directory")
        result: dict[str, Any] = {"dest": dest, "src": src, "handler": "TgzArchive"}
        if not args["remote_src"]:
            return self._plan_upload(args, result)
        if st.get("src") != "file":
            raise ModuleError(f"Source '{src}' does not exist")
        if st.get("src_size") == "0":
            raise ModuleError(f"Invalid archive '{src}', the file is 0 bytes")
        if any("does not look like a tar archive" in e for e in st["err"]):
            raise ModuleError(
                f'Failed to find handler for "{src}": only tar archives (plain, gz, bz2, xz, '
                "zstd) are supported"
            )
        files = st["files"]
        if args["list_files"]:
            result["files"] = files
        unpacked = is_unarchived(st["out"] + st["err"], args, root=st.get("uid") == "0")
        attrs = [] if not unpacked else _attr_differences(args, st["stats"])
        if unpacked and not attrs:
            return noop(f"{dest} already holds the files of {src}", **result)
        changes = [f"unpack {src} into {dest}"] if not unpacked else attrs
        extract = [] if unpacked else [_tar("--extract", args, quote(src))]
        script = "\n".join(["set -e", *extract, *_attr_loop(args, quote(src))])
        return Plan(True, changes=changes, steps=[Step(script)], result=result)

    def _plan_upload(self, args: dict[str, Any], result: dict[str, Any]) -> Plan:
        """A controller archive: sent into a temp file beside dest, compared with tar --diff
        there, unpacked when it differs; the step says whether it changed anything."""
        data: bytes = args["data"]
        digest = hashlib.sha256(data).hexdigest()
        differs = {
            root: quote("|".join(differ_patterns(args, root=root))) for root in (True, False)
        }
        archive = '"$a"'  # the temp file the data goes into
        script = "\n".join(
            [
                "set -e",
                f"a=$(mktemp {quote(args['dest'].rstrip('/') + '/.provision.XXXXXX')})",
                'trap \'rm -f "$a" "$a.err"\' EXIT',
                "trap 'exit 1' HUP INT TERM PIPE",
                'cat > "$a"',
                verify_received('"$a"', len(data), digest, quote(args["src"])),
                f'o=$({_tar("--diff", args, archive)} 2>"$a.err") || true',
                f'if [ "$(id -u)" = 0 ]; then re={differs[True]}; else re={differs[False]}; fi',
                'if { printf "%s\\n" "$o"; cat "$a.err"; } | '
                f'grep -vE {quote(_EMPTY_NAME.pattern)} | grep -qE "$re"; then',
                f"  {_tar('--extract', args, archive)}",
                f"  echo {quote(EXTRACTED)}",
                "fi",
                *_attr_loop(args, archive),
            ]
        )
        size = len(data)
        return Plan(
            True,
            changes=[f"unpack {args['src']} ({size} bytes) into {args['dest']} if it differs"],
            steps=[Step(script, data)],
            result=result,
            predictable=False,
            reason="the archive is compared with dest on the host when it is there: "
            "--check cannot say what would change",
            changed_if=lambda out: EXTRACTED in out or ATTRS_CHANGED in out,
        )


def _tar(action: str, args: dict[str, Any], archive: str) -> str:
    """GNU tar as Ansible's TgzArchive runs it (compression detected by tar)."""
    argv = ["tar", action, "-C", args["dest"]]
    if args["extra_opts"]:
        argv += ["--show-transformed-names", *[str(o) for o in args["extra_opts"]]]
    if args["owner"] is not None:
        argv.append(f"--owner={args['owner']}")
    if args["group"] is not None:
        argv.append(f"--group={args['group']}")
    if args["keep_newer"]:
        argv.append("--keep-newer-files")
    argv += [f"--exclude={e}" for e in args["exclude"]]
    tail = join([str(i) for i in args["include"]])
    return f"LC_ALL=C {join(argv)} -f {archive}" + (f" {tail}" if tail else "")


def _list(args: dict[str, Any], archive: str) -> str:
    return _tar("--list", {**args, "owner": None, "group": None, "keep_newer": False}, archive)


def _remote_probe(args: dict[str, Any]) -> str:
    s = quote(args["src"])
    lines = [
        f'if [ -f {s} ]; then echo src=file; echo "src_size=$(stat -L -c %s {s})"',
        '  echo "uid=$(id -u)"',
        f'  e=$(mktemp); o=$({_tar("--diff", args, s)} 2>"$e") || true',
        '  printf "%s\\n" "$o" | sed "s/^/out:/"; sed "s/^/err:/" "$e"; rm -f "$e"',
        f'  {_list(args, s)} 2>/dev/null | sed "s/^/file:/"',
    ]
    if _to_be_set(args):  # what owner/group/mode would change: each listed path's attributes
        lines.append(
            f"  {_list(args, s)} 2>/dev/null | while IFS= read -r f; do "
            f"stat -c 'stat:%a:%U:%G:%u:%g:%F:%n' -- {quote(args['dest'])}/\"$f\" "
            "2>/dev/null || true; done"
        )
    lines.append("fi")
    return "\n".join(lines)


def _parse(state: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"out": [], "err": [], "files": [], "stats": []}
    lists = {"out": "out", "err": "err", "file": "files", "stat": "stats"}
    for line in (state or "").splitlines():
        tag, colon, value = line.partition(":")
        if colon and tag in lists:
            if value:
                out[lists[tag]].append(value)
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def _to_be_set(args: dict[str, Any]) -> set[str]:
    return {
        name for name, key in (("Mode", "mode"), ("Gid", "group"), ("Uid", "owner")) if args[key]
    }


def differ_patterns(args: dict[str, Any], *, root: bool) -> list[str]:
    """The tar --diff lines that mean "not unpacked" (ansible-core 2.19's TgzArchive): owner
    and group differences count only for root and when not set by the task, a mode difference
    only when ``mode`` is not set (owner, group and mode are applied afterwards anyway)."""
    patterns = [
        ": Mod time differs$",
        ": Warning: Cannot stat: No such file or directory$",
        ": Invalid owner",
        ": Invalid group",
        ": Symlink differs$",
        ": Contents differ$",
        ": Size differs$",
    ]
    if root and not args["owner"]:
        patterns.append(": Uid differs$")
    if root and not args["group"]:
        patterns.append(": Gid differs$")
    if not args["mode"]:
        patterns.append(": Mode differs$")
    return patterns


def is_unarchived(lines: list[str], args: dict[str, Any], *, root: bool) -> bool:
    """Ansible's TgzArchive.is_unarchived on tar --diff's stdout and stderr lines (pure): a
    bogus "cannot stat" of an empty name (a stripped top directory) is ignored."""
    differ = re.compile("|".join(differ_patterns(args, root=root)))
    return not any(differ.search(x) for x in lines if not _EMPTY_NAME.search(x))


def _attr_differences(args: dict[str, Any], stats: list[str]) -> list[str]:
    """What owner/group/mode would change on the unpacked paths (from their stat lines)."""
    changed = []
    for line in stats:
        mode, user, group, uid, gid, kind, path = (line.split(":", 6) + [""] * 7)[:7]
        want = wanted_mode(args["mode"], {"type": _kind(kind), "mode": mode})
        if (
            (args["owner"] is not None and args["owner"] not in (user, uid))
            or (args["group"] is not None and args["group"] not in (group, gid))
            or (want is not None and int(want, 8) != int(mode or "0", 8))
        ):
            changed.append(f"owner, group or mode of {path}")
    return changed


def _kind(stat_kind: str) -> str:
    return "directory" if stat_kind == "directory" else "file"


def _attr_loop(args: dict[str, Any], archive: str) -> list[str]:
    """Owner, group and mode applied to every listed path, saying whether any changed."""
    fix = []
    if args["owner"] is not None:
        fix.append(f'chown -h {quote(args["owner"])} -- "$p"')
    if args["group"] is not None:
        fix.append(f'chgrp -h {quote(args["group"])} -- "$p"')
    if args["mode"] is not None:
        fix.append(f'[ -L "$p" ] || chmod {quote(args["mode"])} -- "$p"')
    if not fix:
        return []
    d = quote(args["dest"])
    return [
        f'{_list(args, archive)} | while IFS= read -r f; do p={d}/"$f"',
        '  before=$(stat -c %a:%u:%g -- "$p")',
        *[f"  {c}" for c in fix],
        f'  [ "$before" = "$(stat -c %a:%u:%g -- "$p")" ] || echo {quote(ATTRS_CHANGED)}',
        "done | sort -u",
    ]
