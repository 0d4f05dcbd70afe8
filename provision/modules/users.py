"""user_groups: users made (or kept from being) members of supplementary groups.

Group membership is what grants lab users the ``docker`` socket, so the module never guesses: a
missing group is an error (it comes from a package, which should be installed first), and a
missing user is created only when ``create: true`` asks for it.
"""

from __future__ import annotations

from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step, noop
from provision.shell import quote


class UserGroupsModule(Module):
    name = "user_groups"
    spec = (
        Arg("users", "list", required=True),
        Arg("groups", "list", required=True),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("create", "bool", default=False),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        for key in ("users", "groups"):
            value = args.get(key)
            if isinstance(value, list) and not value:
                raise ArgError(f"module '{self.name}': argument '{key}' must not be empty")

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        """One tab-separated line per user (primary group, all groups) and per group."""
        lines = []
        for user in args["users"]:
            u = quote(str(user))
            lines.append(
                f"if getent passwd {u} >/dev/null; then "
                f'printf \'user\\t%s\\t%s\\t%s\\n\' {u} "$(id -gn {u})" "$(id -nG {u})"; '
                f"else printf 'nouser\\t%s\\n' {u}; fi"
            )
        for group in args["groups"]:
            g = quote(str(group))
            lines.append(
                f"if getent group {g} >/dev/null; then printf 'group\\t%s\\n' {g}; "
                f"else printf 'nogroup\\t%s\\n' {g}; fi"
            )
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        users = [str(u) for u in args["users"]]
        groups = [str(g) for g in args["groups"]]
        st = parse_state(state)
        missing = [g for g in groups if g not in st["groups"]]
        if missing:
            raise ModuleError(
                f"group {', '.join(missing)} does not exist on the host "
                "(user_groups never creates groups: install the package that provides it first)"
            )
        changes: list[str] = []
        cmds: list[str] = []
        present = args["state"] == "present"
        for user in users:
            info = st["users"].get(user)
            if info is None:
                if not present:
                    continue
                if not args["create"]:
                    raise ModuleError(
                        f"user {user} does not exist (user_groups creates users only with "
                        "create: true)"
                    )
                changes.append(f"create user {user} in {', '.join(groups)}")
                cmds.append(
                    f"useradd --create-home --groups {quote(','.join(groups))} {quote(user)}"
                )
                continue
            primary, member = info
            if present:
                add = [g for g in groups if g not in member]
                if add:
                    changes.append(f"add {user} to {', '.join(add)}")
                    cmds.append(f"usermod -aG {quote(','.join(add))} {quote(user)}")
                continue
            for group in groups:
                if group == primary:
                    raise ModuleError(
                        f"{group} is the primary group of {user}; it cannot be removed here"
                    )
                if group in member:
                    changes.append(f"remove {user} from {group}")
                    cmds.append(f"gpasswd -d {quote(user)} {quote(group)} >/dev/null")
        if not changes:
            if present:
                return noop(f"{', '.join(users)}: already in {', '.join(groups)}")
            return noop(f"{', '.join(users)}: in none of {', '.join(groups)}")
        return Plan(True, changes=changes, steps=[Step("set -e\n" + "\n".join(cmds))])


def parse_state(text: str | None) -> dict[str, Any]:
    """State lines -> {"users": {name: (primary, {groups})}, "groups": {existing names}}."""
    users: dict[str, tuple[str, set[str]]] = {}
    groups: set[str] = set()
    for line in (text or "").splitlines():
        fields = line.split("\t")
        if fields[0] == "user" and len(fields) >= 4:
            users[fields[1]] = (fields[2], set(fields[3].split()))
        elif fields[0] == "group" and len(fields) >= 2:
            groups.add(fields[1])
    return {"users": users, "groups": groups}
