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

from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step, noop
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
        Arg("force", "bool", default=False),  # state absent: userdel --force; a new ssh key
        Arg("move_home", "bool", default=False),  # a changed home: its content moved there
        Arg("generate_ssh_key", "bool", default=False),
        Arg("ssh_key_type", default="rsa"),
        Arg("ssh_key_bits", "int", default=0),  # 0: ssh-keygen's default for the type
        Arg("ssh_key_file"),  # relative: to the home; default .ssh/id_TYPE
        Arg("ssh_key_comment"),  # default "ansible-generated on HOSTNAME" (the host's name)
        Arg("ssh_key_passphrase"),  # refused: it would be on ssh-keygen's command line
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if args.get("ssh_key_passphrase") is not None:
            raise ArgError(
                f"module '{self.name}': ssh_key_passphrase is not supported (ssh-keygen would "
                "get it on its command line); generate the key without one or with ssh-keygen"
            )

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        u = quote(args["name"])
        fields = f'"$line" "$(id -gn {u})" "$(id -nG {u})"'
        lines = [f"if line=$(getent passwd {u}); then printf 'user\\t%s\\t%s\\t%s\\n' {fields}; fi"]
        if args["generate_ssh_key"] and args["state"] == "present":
            lines.append(_ssh_key_probe(args))
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
            flags = ["-f"] * args["force"] + ["-r"] * args["remove"]
            argv = ["userdel", *flags, name]
            return Plan(True, changes=[f"remove user {name}"], steps=[Step(join(argv))])
        existing = {
            line.split("\t")[1] for line in (state or "").splitlines() if line.startswith("group\t")
        }
        wanted = self._wanted_groups(args)
        needed = wanted + ([args["group"]] if args["group"] else [])
        missing = [g for g in needed if g not in existing]
        if missing:
            raise ModuleError(f"group {', '.join(missing)} does not exist; create it first")
        plan = self._create(args, wanted) if found is None else self._modify(args, wanted, found)
        return _with_ssh_key(plan, args, state)

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
                if key == "home" and args["move_home"]:  # usermod -m: the content moves too
                    argv.append("-m")
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


def _ssh_key_file(args: dict[str, Any]) -> str:
    """The key's path as a shell word: relative paths are under the user's home ("$h")."""
    path = args["ssh_key_file"] or f".ssh/id_{args['ssh_key_type']}"
    return quote(path) if path.startswith("/") else f'"$h"/{quote(path)}'


def _ssh_key_probe(args: dict[str, Any]) -> str:
    """``sshkey<TAB>private|public`` when a key file is there, and the public key."""
    u = quote(args["name"])
    return "\n".join(
        [
            f'if h=$(getent passwd {u} | cut -d: -f6) && [ -n "$h" ]; then f={_ssh_key_file(args)}',
            "  if [ -e \"$f\" ]; then printf 'sshkey\\tprivate\\n'; "
            "elif [ -e \"$f.pub\" ]; then printf 'sshkey\\tpublic\\n'; fi",
            '  if [ -e "$f.pub" ]; then printf \'sshpub\\t%s\\n\' "$(head -n1 "$f.pub")"; '
            'printf \'sshfp\\t%s\\n\' "$(ssh-keygen -lf "$f.pub" 2>/dev/null)"; fi',
            "fi",
        ]
    )


def _with_ssh_key(plan: Plan, args: dict[str, Any], state: str | None) -> Plan:
    """Ansible's generate_ssh_key: a key made with ssh-keygen (no passphrase) unless the key
    or its .pub is there already (force: made again, every run, as in Ansible), in a ~/.ssh
    made 0700, both owned by the user. ``ssh_key_file`` is registered, and the public key and
    fingerprint when the key was there before."""
    if not args["generate_ssh_key"]:
        return plan
    found = _fields(state, "sshkey")
    relative = args["ssh_key_file"] or f".ssh/id_{args['ssh_key_type']}"
    plan.result["ssh_key_file"] = relative
    public, fingerprint = _fields(state, "sshpub"), _fields(state, "sshfp")
    if public:
        plan.result["ssh_public_key"] = public[0]
    if fingerprint:
        plan.result["ssh_fingerprint"] = fingerprint[0]
    if found is not None and not args["force"]:
        if not plan.changed:
            plan.reason = (
                f"{plan.reason}; its ssh key {relative} exists (force: yes makes a new one)"
            )
        return plan
    u = quote(args["name"])
    keygen = ["ssh-keygen", "-q", "-t", args["ssh_key_type"]]
    keygen += ["-b", str(args["ssh_key_bits"])] if args["ssh_key_bits"] > 0 else []
    comment = (
        quote(args["ssh_key_comment"])
        if args["ssh_key_comment"] is not None
        else '"ansible-generated on $(hostname)"'
    )
    script = "\n".join(
        [
            "set -e",
            f"h=$(getent passwd {u} | cut -d: -f6)",
            f"f={_ssh_key_file(args)}",
            'd=$(dirname -- "$f")',
            f'if [ ! -d "$d" ]; then mkdir -m 700 -- "$d"; chown {u}: "$d"; fi',
            'rm -f -- "$f" "$f.pub"',  # reached only without a key, or with force
            f"{join(keygen)} -C {comment} -N '' -f \"$f\" >/dev/null",
            f'chown {u}: "$f" "$f.pub"',
        ]
    )
    change = f"generate the ssh key {relative} of {args['name']}"
    if not plan.changed:
        return Plan(True, changes=[change], steps=[Step(script)], result=plan.result)
    plan.changes.append(change)
    plan.steps.append(Step(script))
    return plan
