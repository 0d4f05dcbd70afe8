"""fetch: a file from each host to the controller, as ansible.builtin.fetch.

Lab admins collect logs and reports this way (``/var/log/nvidia-installer.log`` from every
workstation). The host's file is read whole (base64 through the open connection), its sha1 is
checked against the state read's, and only then is it written on the controller, atomically
(``provision.localfile``): a dropped connection never leaves half a file. Where it goes is
Ansible's rule (docs.ansible.com/ansible/latest/collections/ansible/builtin/fetch_module.html):
``DEST/INVENTORY_HOSTNAME/SRC`` (the host's full path under the host's name), or with ``flat``
``DEST`` itself (``DEST/basename(SRC)`` when DEST ends with ``/``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any

from provision.localfile import replace_file
from provision.modules.base import (
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    key_values,
    noop,
)
from provision.shell import quote
from provision.ssh import Session


class FetchModule(Module):
    name = "fetch"
    acts_on_controller = True
    spec = (
        Arg("src", required=True),
        Arg("dest", required=True),
        Arg("flat", "bool", default=False),
        Arg("fail_on_missing", "bool", default=True),
        Arg("validate_checksum", "bool", default=True),
    )

    def paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        return (args["src"],)

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        p = quote(args["src"])
        return (
            f'p={p}; if [ -d "$p" ]; then echo kind=directory; elif [ -r "$p" ]; then '
            'echo kind=file; printf "sha1="; sha1sum < "$p"; '
            'elif [ -e "$p" ]; then echo kind=unreadable; else echo kind=absent; fi'
        )

    def destination(self, args: dict[str, Any], ctx: Context) -> str:
        src, dest = args["src"], os.path.expanduser(args["dest"])
        if not os.path.isabs(dest):
            dest = os.path.join(ctx.base_dir, dest)
        if args["flat"]:
            return os.path.join(dest, os.path.basename(src)) if dest.endswith("/") else dest
        host = ctx.value_of("inventory_hostname") if ctx.value_of is not None else None
        if not isinstance(host, str) or not host:
            raise ArgError("module 'fetch': the host's inventory name is not known")
        return os.path.join(dest, host, src.lstrip("/"))

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        seen = key_values(state)
        kind, src = seen.get("kind", "absent"), args["src"]
        if kind != "file":
            why = {"directory": "is a directory", "unreadable": "cannot be read"}.get(
                kind, "does not exist"
            )
            if args["fail_on_missing"] or kind == "directory":
                raise ModuleError(f"the remote file {src} {why}")
            return noop(f"the remote file {src} {why}; not fetched (fail_on_missing: false)")
        remote = seen.get("sha1", "").split()[0] if seen.get("sha1", "").split() else ""
        dest = self.destination(args, ctx)
        local = _sha1_of(dest)
        result = {"checksum": remote, "dest": dest, "remote_checksum": remote, "file": src}
        if local == remote:
            return noop(f"{dest} is already the host's {src}", md5sum=None, **result)
        return Plan(True, changes=[f"fetch {src} -> {dest}"], result=result)

    def execute(
        self,
        args: dict[str, Any],
        plan: Plan,
        session: Session,
        reconnect: Callable[[], None],
        become: bool | None,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        done = session.run(f"base64 -w0 < {quote(args['src'])}", become=become)
        if done.exit_code != 0:
            raise ModuleError(f"reading {args['src']} failed: {done.stderr.strip()[-300:]}")
        try:
            data = base64.b64decode(done.stdout.strip(), validate=True)
        except ValueError:
            raise ModuleError(f"reading {args['src']}: the host's answer was cut") from None
        got = hashlib.sha1(data).hexdigest()
        if args["validate_checksum"] and got != plan.result["remote_checksum"]:
            raise ModuleError(
                f"{args['src']} changed while it was fetched (sha1 {got}, read before as "
                f"{plan.result['remote_checksum']}); nothing was written: run again"
            )
        dest = plan.result["dest"]
        try:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            replace_file(dest, data)
        except OSError as exc:
            raise ModuleError(f"cannot write {dest}: {exc.strerror}") from None
        return {"checksum": got, "size": len(data)}


def _sha1_of(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha1(fh.read()).hexdigest()
    except OSError:
        return None
