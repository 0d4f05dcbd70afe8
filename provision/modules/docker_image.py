"""docker_image: an image present (pulled only when missing, or when the registry's digest
differs with ``refresh: true``) or absent; reports bytes pulled and seconds.

The lookup follows the audit's (:func:`provision.audit.probe.image_facts`): an image pulled by
digest has no tag, so ``name@digest`` is inspected first, then ``name``. Registry credentials
travel on stdin (``docker login --password-stdin``), never in a command line, a log or a diff.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step, noop
from provision.shell import quote

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_FORMAT = "{{.Id}}|{{.Size}}|{{json .RepoDigests}}"


def split_ref(ref: str) -> tuple[str, str]:
    """``repo:tag@sha256:...`` -> (``repo:tag``, ``sha256:...``); the digest may be empty."""
    name, _, digest = ref.partition("@")
    return name, digest


def registry_of(name: str) -> str | None:
    """The registry host of a reference, None for Docker Hub (as the docker CLI decides)."""
    first, sep, _ = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def state_script(name: str, digest: str, refresh: bool) -> str:
    """Print ``local=<candidate>|<id>|<size>|<digests json>`` for the first reference found and,
    for refresh, ``remote=<json>`` from the registry (``docker manifest inspect -v``)."""
    candidates = [f"{name}@{digest}", name] if digest else [name]
    lines = ["command -v docker >/dev/null 2>&1 || { echo docker=missing; exit 0; }"]
    loop = " ".join(quote(c) for c in candidates)
    lines.append(
        f"for c in {loop}; do "
        f'o=$(docker image inspect --format {quote(_FORMAT)} "$c" 2>/dev/null) && '
        '{ echo "local=$c|$o"; break; }; done'
    )
    if refresh and not digest:
        # dockerd trusts loopback registries over plain HTTP by default; the CLI must be told.
        registry = (registry_of(name) or "").rsplit(":", 1)[0]
        insecure = "--insecure " if registry == "localhost" or registry.startswith("127.") else ""
        lines.append(
            f'echo "remote=$(docker manifest inspect -v {insecure}{quote(name)} 2>&1'
            " | tr -d '\\n')\""
        )
    return "\n".join(lines)


def parse_state(text: str | None) -> dict[str, Any]:
    """The snippet's output -> {docker_missing, found, id, size, digests, remote, remote_error}."""
    out: dict[str, Any] = {"docker_missing": False, "found": None, "digests": []}
    for line in (text or "").splitlines():
        key, _, value = line.partition("=")
        if key == "docker" and value.strip() == "missing":
            out["docker_missing"] = True
        elif key == "local":
            found, image_id, size, digests = [*value.split("|", 3), "", "", ""][:4]
            out.update(found=found, id=image_id, size=int(size) if size.isdigit() else None)
            try:
                out["digests"] = json.loads(digests) or []
            except ValueError:
                out["digests"] = []
        elif key == "remote":
            remote, error = remote_digests(value)
            out["remote"], out["remote_error"] = remote, error
    return out


def remote_digests(text: str) -> tuple[list[str], str | None]:
    """``docker manifest inspect -v`` output -> the digests it names, or an error.

    One manifest is an object, a multi-platform list a list of them (the list's own digest is
    not printed). Each gives its manifest digest (``Descriptor.digest``, what ``RepoDigests``
    records for a single manifest) and its config digest (the image ID once pulled), so a local
    image matches by either."""
    try:
        doc = json.loads(text)
    except ValueError:
        return [], text.strip()[-300:] or "no answer from the registry"
    out: list[str] = []
    for entry in doc if isinstance(doc, list) else [doc]:
        if not isinstance(entry, dict):
            continue
        out.append(str((entry.get("Descriptor") or {}).get("digest") or ""))
        for key in ("SchemaV2Manifest", "OCIManifest"):
            config = (entry.get(key) or {}).get("config") or {}
            out.append(str(config.get("digest") or ""))
    return [d for d in dict.fromkeys(out) if d], None


def pull_steps(args: dict[str, Any], ref: str) -> list[Step]:
    """Login (password on stdin) when asked, pull with a bound, then print the size."""
    steps: list[Step] = []
    if args["username"]:
        registry = registry_of(split_ref(args["name"])[0])
        cmd = f"docker login --username {quote(args['username'])} --password-stdin"
        if registry:
            cmd += f" {quote(registry)}"
        steps.append(Step(cmd + " >/dev/null", stdin=args["password"].encode()))
    steps.append(Step(f"timeout {int(args['timeout'])} docker pull --quiet {quote(ref)}"))
    steps.append(Step(f"echo size=$(docker image inspect --format '{{{{.Size}}}}' {quote(ref)})"))
    return steps


class DockerImageModule(Module):
    name = "docker_image"
    spec = (
        Arg("name", required=True),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("refresh", "bool", default=False),
        Arg("timeout", "int", default=600),
        Arg("username"),
        Arg("password"),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if bool(args.get("username")) != bool(args.get("password")):
            raise ArgError("module 'docker_image': give both 'username' and 'password', or neither")
        name = args.get("name")
        if isinstance(name, str) and "{{" not in name:
            _, digest = split_ref(name)
            if not name or name.startswith("@") or (digest and not _DIGEST.match(digest)):
                raise ArgError(f"argument 'name': {name!r} is not an image reference")
        timeout = args.get("timeout")
        if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout <= 0:
            raise ArgError("argument 'timeout' must be a positive number of seconds")

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        name, digest = split_ref(args["name"])
        return state_script(name, digest, args["refresh"] and args["state"] == "present")

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        ref = args["name"]
        name, digest = split_ref(ref)
        st = parse_state(state)
        if st["docker_missing"]:
            raise ModuleError("docker is not installed on the host (no docker command)")
        found = st["found"]
        local_digests = [d.split("@", 1)[1] for d in st["digests"] if "@" in d]
        # By digest: found by name@digest, or under the name with that digest or image ID.
        matches = found is not None and (
            not digest or found == ref or digest in local_digests or st.get("id") == digest
        )
        info = {"image": ref, "id": st.get("id"), "size": st.get("size")}
        if args["state"] == "absent":
            if found is None or not matches:
                return noop(f"{ref} is already absent", **info)
            return Plan(
                True,
                changes=[f"remove {found}"],
                steps=[Step(f"docker image rm {quote(found)}")],
                result=info,
            )
        if found is not None and not matches:
            return self._pull(args, ref, f"pull {ref} (local {name} has another digest)", info)
        if found is None:
            return self._pull(args, ref, f"pull {ref}", info)
        if not args["refresh"] or digest:
            why = "pinned by digest" if digest else "refresh: false"
            return noop(f"{ref} is present ({st.get('id')}, {why})", **info)
        if st.get("remote_error"):
            raise ModuleError(f"cannot read {ref}'s digest from the registry: {st['remote_error']}")
        remote = st.get("remote") or []
        if any(d in local_digests or d == st.get("id") for d in remote):
            return noop(f"{ref} is present and matches the registry ({remote[0]})", **info)
        return self._pull(
            args, ref, f"pull {ref} (registry digest {', '.join(remote) or '?'} differs)", info
        )

    @staticmethod
    def _pull(args: dict[str, Any], ref: str, change: str, info: dict[str, Any]) -> Plan:
        return Plan(
            True,
            changes=[change],
            steps=pull_steps(args, ref),
            result={**info, "id_before": info["id"]},
        )

    def execute(
        self,
        args: dict[str, Any],
        plan: Plan,
        session: Any,
        reconnect: Callable[[], None],
        become: bool | None,
    ) -> dict[str, Any]:
        """Run the plan's steps, timing the pull, and report bytes (the image's size) and time."""
        started = time.monotonic()
        size: int | None = None
        for step in plan.steps:
            done = session.run(
                step.script, stdin=step.stdin, become=become, timeout=args["timeout"] + 30
            )
            if done.exit_code != 0:
                what = "docker login" if step.stdin is not None else step.script
                detail = done.stderr.strip()[-400:]
                if done.exit_code == 124:
                    detail = f"timed out after {args['timeout']} s"
                raise ModuleError(f"{what} failed (exit {done.exit_code}): {detail}")
            for line in done.stdout.splitlines():
                if line.startswith("size=") and line[5:].strip().isdigit():
                    size = int(line[5:].strip())
        seconds = round(time.monotonic() - started, 2)
        if args["state"] == "absent":
            return {"seconds": seconds}
        return {"pulled": True, "bytes": size, "seconds": seconds, "size": size}


__all__ = ["DockerImageModule", "parse_state", "registry_of", "remote_digests", "split_ref"]
