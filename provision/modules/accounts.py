"""user and group: local accounts with Ansible's arguments (ansible.builtin.user / group).

The arguments and their meanings are Ansible's (docs.ansible.com/ansible/latest/collections/
ansible/builtin/user_module.html and group_module.html): ``groups`` with ``append: false`` (the
default) is the user's exact list of supplementary groups; ``create_home`` defaults to true;
``remove`` with ``state: absent`` removes the home too. The work is done with shadow-utils'
useradd/usermod/userdel and groupadd/groupmod/groupdel, as Ansible does on Linux. Passwords are
not managed here (a hash would travel in the state read).
"""

from __future__ import annotations

from typing import Any

from provision.modules.base import Arg, Context, Module, ModuleError, Plan, Step, noop
from provision.shell import join, quote


def _fields(state: str | None, tag: str) -> list[str] | None:
    """The ``TAG<TAB>...`` line of a state read, split; None when absent."""
    for line in (state or "").splitlines():
        parts = line.split("\t")
        if parts[0] == tag:
            return parts[1:]
    return None


class GroupModule(Module):
    name = "group"
    spec = (
        Arg("name", required=True),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("gid", "int"),
        Arg("system", "bool", default=False),
    )

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        g = quote(args["name"])
        return (
            f"if line=$(getent group {g}); then "
            'printf \'group\\t%s\\n\' "$(echo "$line" | cut -d: -f3)"; fi'
        )

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        name, gid = args["name"], args["gid"]
        found = _fields(state, "group")
        if args["state"] == "absent":
            if found is None:
                return noop(f"group {name} does not exist")
            return Plan(
                True, changes=[f"remove group {name}"], steps=[Step(join(["groupdel", name]))]
            )
        if found is None:
            argv = ["groupadd", *(["-g", str(gid)] if gid is not None else [])]
            argv += ["-r"] if args["system"] else []
            return Plan(True, changes=[f"create group {name}"], steps=[Step(join([*argv, name]))])
        if gid is not None and str(gid) != found[0]:
            return Plan(
                True,
                changes=[f"group {name}: gid {found[0]} -> {gid}"],
                steps=[Step(join(["groupmod", "-g", str(gid), name]))],
            )
        return noop(f"group {name} exists (gid {found[0]})", gid=int(found[0]))


class UserModule(Module):
    name = "user"
    spec = (
        Arg("name", required=True, aliases=("user",)),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("uid", "int"),
        Arg("group"),  # the primary group (it must exist)
        Arg("groups", "list"),  # supplementary groups; a comma-separated string is split
        Arg("append", "bool", default=False),
        Arg("shell"),
        Arg("home"),
        Arg("comment"),
        Arg("create_home", "bool", default=True, aliases=("createhome",)),
        Arg("system", "bool", default=False),
        Arg("remove", "bool", default=False),
    )

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        u = quote(args["name"])
        fields = f'"$line" "$(id -gn {u})" "$(id -nG {u})"'
        lines = [f"if line=$(getent passwd {u}); then printf 'user\\t%s\\t%s\\t%s\\n' {fields}; fi"]
        for group in self._wanted_groups(args) + ([args["group"]] if args["group"] else []):
            g = quote(group)
            lines.append(f"if getent group {g} >/dev/null; then printf 'group\\t%s\\n' {g}; fi")
        return "\n".join(lines)

    @staticmethod
    def _wanted_groups(args: dict[str, Any]) -> list[str]:
        groups = args.get("groups")
        if groups is None:
            return []
        out: list[str] = []
        for item in groups:
            out += [g.strip() for g in str(item).split(",") if g.strip()]
        return out

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        name = args["name"]
        found = _fields(state, "user")
        if args["state"] == "absent":
            if found is None:
                return noop(f"user {name} does not exist")
            argv = ["userdel", *(["-r"] if args["remove"] else []), name]
            return Plan(True, changes=[f"remove user {name}"], steps=[Step(join(argv))])
        existing = {
            line.split("\t")[1] for line in (state or "").splitlines() if line.startswith("group\t")
        }
        wanted = self._wanted_groups(args)
        needed = wanted + ([args["group"]] if args["group"] else [])
        missing = [g for g in needed if g not in existing]
        if missing:
            raise ModuleError(f"group {', '.join(missing)} does not exist; create it first")
        if found is None:
            return self._create(args, wanted)
        return self._modify(args, wanted, found)

    def _create(self, args: dict[str, Any], wanted: list[str]) -> Plan:
        argv = ["useradd"]
        for flag, key in (("-u", "uid"), ("-g", "group"), ("-s", "shell"), ("-d", "home")):
            if args[key] is not None:
                argv += [flag, str(args[key])]
        if args["comment"] is not None:
            argv += ["-c", args["comment"]]
        if wanted:
            argv += ["-G", ",".join(wanted)]
        argv += ["-m"] if args["create_home"] else ["-M"]
        argv += ["-r"] if args["system"] else []
        return Plan(
            True, changes=[f"create user {args['name']}"], steps=[Step(join([*argv, args["name"]]))]
        )

    def _modify(self, args: dict[str, Any], wanted: list[str], found: list[str]) -> Plan:
        name = args["name"]
        _n, _x, uid, _gid, comment, home, shell = (found[0].split(":") + [""] * 7)[:7]
        primary, member = found[1], set(found[2].split()) - {found[1]}
        argv: list[str] = []
        changes: list[str] = []
        for flag, key, now in (
            ("-u", "uid", uid),
            ("-g", "group", primary),
            ("-s", "shell", shell),
            ("-d", "home", home),
            ("-c", "comment", comment),
        ):
            if args[key] is not None and str(args[key]) != now:
                argv += [flag, str(args[key])]
                changes.append(f"{key} {now or '-'} -> {args[key]}")
        if args["groups"] is not None:
            if args["append"]:
                add = [g for g in wanted if g not in member]
                if add:
                    argv += ["-a", "-G", ",".join(add)]
                    changes.append(f"add to {', '.join(add)}")
            elif set(wanted) != member:
                argv += ["-G", ",".join(wanted)]
                changes.append(f"groups {','.join(sorted(member)) or '-'} -> {','.join(wanted)}")
        if not argv:
            return noop(f"user {name} is as wanted (uid {uid})", uid=int(uid or 0))
        return Plan(
            True,
            changes=[f"user {name}: " + "; ".join(changes)],
            steps=[Step(join(["usermod", *argv, name]))],
        )
