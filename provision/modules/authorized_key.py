"""authorized_key: SSH public keys in a user's authorized_keys, as ansible.posix.authorized_key.

Keys are matched by their type and base64 blob, as OpenSSH does (sshd(8), "AUTHORIZED_KEYS FILE
FORMAT": ``[options] keytype base64 [comment]``); options and comment are what a present key may
need updated. The file is rewritten atomically (a dropped connection leaves the old file), mode
0600 and owned by the user; with ``manage_dir`` the ``.ssh`` directory is made 0700 first, since
sshd's StrictModes refuses keys in a group- or world-writable place.
Source of the arguments: docs.ansible.com/ansible/latest/collections/ansible/posix/
authorized_key_module.html (user, key, path, manage_dir, state, key_options, exclusive,
comment).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from provision.modules.base import (
    Arg,
    ArgError,
    Context,
    Module,
    Plan,
    Step,
    atomic_write_script,
    key_values,
    noop,
    unified_diff,
)
from provision.shell import quote

# OpenSSH's key types (sshd(8) AUTHORIZED_KEYS FILE FORMAT), the word that starts a key
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


@dataclass(frozen=True)
class Key:
    options: str
    type: str
    blob: str
    comment: str

    @property
    def identity(self) -> tuple[str, str]:
        return self.type, self.blob

    def line(self) -> str:
        words = [self.options, self.type, self.blob, self.comment]
        return " ".join(w for w in words if w)


def parse_key(line: str) -> Key | None:
    """One authorized_keys line -> Key; None for a comment, a blank or an unknown line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    words = text.split()
    for i, word in enumerate(words[:-1]):
        # options may contain quoted spaces: the key type is the first known type word
        # followed by something base64
        if word in KEY_TYPES or word.startswith(("ssh-", "ecdsa-", "sk-")):
            blob = words[i + 1]
            try:
                base64.b64decode(blob, validate=True)
            except ValueError:
                continue
            options = text.split(word, 1)[0].strip() if i else ""
            return Key(options, word, blob, " ".join(words[i + 2 :]))
    return None


class AuthorizedKeyModule(Module):
    name = "authorized_key"
    spec = (
        Arg("user", required=True),
        Arg("key", required=True),
        Arg("path"),
        Arg("manage_dir", "bool", default=True),
        Arg("state", choices=("present", "absent"), default="present"),
        Arg("key_options"),
        Arg("exclusive", "bool", default=False),
        Arg("comment"),
        Arg("follow", "bool", default=False),
        Arg("validate_certs", "bool", default=True),
    )

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        return (args["path"],) if args.get("path") else None

    def wanted(self, args: dict[str, Any]) -> list[Key]:
        keys = []
        for line in str(args["key"]).splitlines():
            if not line.strip() or line.strip().startswith("#"):
                continue
            if line.strip().startswith(("http://", "https://")):
                raise ArgError(
                    "module 'authorized_key': keys from a URL are not supported; give the "
                    "key text (e.g. with lookup('file', ...))"
                )
            key = parse_key(line)
            if key is None:
                raise ArgError(f"module 'authorized_key': not an SSH public key: {line[:40]!r}")
            options = args["key_options"] if args.get("key_options") is not None else key.options
            comment = args["comment"] if args.get("comment") is not None else key.comment
            keys.append(Key(options or "", key.type, key.blob, comment or ""))
        if not keys:
            raise ArgError("module 'authorized_key': 'key' holds no key")
        return keys

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        user = quote(args["user"])
        path = quote(args["path"]) if args.get("path") else '"$h/.ssh/authorized_keys"'
        return "\n".join(
            [
                f'if h=$(getent passwd {user} | cut -d: -f6) && [ -n "$h" ]; then',
                '  echo "home=$h"',
                f'  echo "group=$(id -gn {user})"',
                f"  p={path}",
                '  echo "path=$p"',
                '  if [ -d "$(dirname "$p")" ]; then echo dir=1; fi',
                '  if [ -f "$p" ]; then echo "content=$(base64 -w0 < "$p")"; fi',
                "fi",
            ]
        )

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        seen = key_values(state)
        if "home" not in seen:
            raise ArgError(f"module 'authorized_key': user '{args['user']}' does not exist")
        path = seen["path"]
        old = base64.b64decode(seen["content"]) if "content" in seen else None
        lines = (old or b"").decode("utf-8", "replace").splitlines()
        new_lines = self.edited(lines, self.wanted(args), args)
        new = ("\n".join(new_lines) + "\n").encode() if new_lines else b""
        if old == new or (old is None and not new_lines):
            return noop(f"{path}: keys as wanted", user=args["user"], key=args["key"])
        steps = []
        directory = path.rsplit("/", 1)[0] or "/"
        if "dir" not in seen and args["manage_dir"]:
            steps.append(
                Step(
                    f"install -d -m 0700 -o {quote(args['user'])} -g {quote(seen['group'])} "
                    f"{quote(directory)}"
                )
            )
        steps.append(
            Step(
                atomic_write_script(
                    path, new, owner=args["user"], group=seen["group"], mode="0600", backup=False
                ),
                new,
            )
        )
        return Plan(
            True,
            changes=[f"{path}: {'remove' if args['state'] == 'absent' else 'authorize'} key"],
            steps=steps,
            diff=unified_diff(path, old, new, ctx.no_log),
            result={"user": args["user"], "key": args["key"], "keyfile": path},
        )

    @staticmethod
    def edited(lines: list[str], wanted: list[Key], args: dict[str, Any]) -> list[str]:
        """The file's lines with ``wanted`` present (updated in place where their options or
        comment differ) or absent; ``exclusive`` drops every other key line."""
        ids = {k.identity: k for k in wanted}
        out: list[str] = []
        placed: set[tuple[str, str]] = set()
        for line in lines:
            key = parse_key(line)
            if key is None:
                if not args["exclusive"] or not line.strip() or line.strip().startswith("#"):
                    out.append(line)
                continue
            if key.identity in ids:
                if args["state"] == "present" and key.identity not in placed:
                    want = ids[key.identity]  # its options or comment may need updating
                    out.append(line if want == key else want.line())
                    placed.add(key.identity)
                continue
            if not args["exclusive"]:
                out.append(line)
        if args["state"] == "present":
            out += [k.line() for k in wanted if k.identity not in placed]
        return out
