"""stat: what a path is, read only, registered as Ansible's ``stat`` module registers it.

Roles gate their work on it (``when: not r.stat.exists``). Like the other read-only modules its
plan is a no-op whose result is registered; the read rides in the batched state read. The keys
are the ones of ansible.builtin.stat that roles read (docs.ansible.com/ansible/latest/
collections/ansible/builtin/stat_module.html, "Return Values"): exists, path, isdir, isreg,
islnk, mode, uid, gid, pw_name, gr_name, size, inode, dev, nlink, executable, readable,
writeable, lnk_target, lnk_source, and checksum (sha1 unless checksum_algorithm says otherwise).
"""

from __future__ import annotations

from typing import Any

from provision.modules.base import Arg, Context, Module, Plan, noop
from provision.shell import quote

_DIGESTS = {"sha1": "sha1sum", "sha224": "sha224sum", "sha256": "sha256sum", "md5": "md5sum"}
_STAT_FORMAT = (
    "mode=%a\\nuid=%u\\ngid=%g\\npw_name=%U\\ngr_name=%G\\nsize=%s\\ninode=%i\\ndev=%d\\n"
    "nlink=%h\\nkind=%F\\n"
)


class StatModule(Module):
    name = "stat"
    path_arg = "path"
    spec = (
        Arg("path", required=True, aliases=("dest", "name")),
        Arg("follow", "bool", default=False),
        Arg("get_checksum", "bool", default=True),
        Arg("checksum_algorithm", default="sha1", choices=tuple(_DIGESTS)),
    )

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        p = quote(args["path"])
        follow = args["follow"]
        # a link is described itself unless follow (then what it points to, as Ansible)
        link = "false" if follow else '[ -L "$p" ]'
        lines = [
            f"p={p}",
            'if [ -e "$p" ] || [ -L "$p" ]; then echo exists=1; '
            f"stat {'-L ' if follow else ''}--printf '{_STAT_FORMAT}' -- \"$p\"; "
            'for t in x r w; do if [ -$t "$p" ]; then echo "$t=1"; fi; done; '
            f'if {link}; then printf "lnk_target=%s\\n" "$(readlink -- "$p")"; '
            'printf "lnk_source=%s\\n" "$(readlink -f -- "$p")"; fi; '
            "else echo exists=0; fi",
        ]
        if args["get_checksum"]:
            digest = _DIGESTS[args["checksum_algorithm"]]
            lines.append(
                f'if [ -f "$p" ] && ! {link}; then printf "checksum="; {digest} < "$p"; fi'
            )
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        result = parse_stat(args["path"], state)
        what = result["kind"] if result.get("exists") else "absent"
        result.pop("kind", None)
        return noop(f"{args['path']}: {what}", stat=result)


def parse_stat(path: str, text: str | None) -> dict[str, Any]:
    """The state read's ``key=value`` lines -> Ansible's ``stat`` dictionary."""
    raw: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            raw[key] = value
    if raw.get("exists") != "1":
        return {"exists": False}
    kind = raw.get("kind", "")
    out: dict[str, Any] = {
        "exists": True,
        "path": path,
        "kind": kind,
        "isdir": kind == "directory",
        "isreg": kind.startswith("regular"),
        "islnk": kind == "symbolic link",
        "mode": raw.get("mode", "0").zfill(4),
        "executable": raw.get("x") == "1",
        "readable": raw.get("r") == "1",
        "writeable": raw.get("w") == "1",
    }
    for key in ("uid", "gid", "size", "inode", "dev", "nlink"):
        if raw.get(key, "").isdigit():
            out[key] = int(raw[key])
    for key in ("pw_name", "gr_name", "lnk_target", "lnk_source"):
        if key in raw:
            out[key] = raw[key]
    if "checksum" in raw and raw["checksum"].split():
        out["checksum"] = raw["checksum"].split()[0]
    return out
