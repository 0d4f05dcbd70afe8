"""docker_image: an image present (pulled only when missing, or when the registry's digest
differs with ``refresh: true``) or absent; reports bytes pulled, seconds and attempts.

The lookup follows the audit's (:func:`provision.audit.probe.image_facts`): an image pulled by
digest has no tag, so ``name@digest`` is inspected first, then ``name``. Registry credentials
travel on stdin (``docker login --password-stdin``), never in a command line, a log or a diff.

Before a pull the state read also asks dockerd for its root dir (and the free space there) and
the registry for the image's compressed size, so a pull that cannot fit is refused before it
fills the disk halfway. A pull that fails on a transient network or registry error is retried
with a doubling back-off; "not found", "unauthorized" and "denied" are final at once.

With ``fanout: true`` (the baseline's ``images_fanout``) the hosts of a run share each image: one
pulls it from the registry, the others receive it over the LAN (``docker save`` on a host that
holds it into ``docker load``, through the controller's connections or host to host), see
:mod:`provision.fanout` (who sends to whom) and :mod:`provision.image_transfer` (the
transfers). A received image is verified by its image ID (the config digest, which ``docker load``
checks every layer against) before it gets its name, so a cut stream leaves nothing that is
reported present; a digest pin is then recorded as provision's pin tag
(:func:`provision.audit.probe.pin_tag`), which this module and the audit look up.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from provision import pull
from provision.audit.probe import pin_tag
from provision.fanout import RECEIVERS, FanOutFailed, Member
from provision.image_refs import registry_of, split_ref
from provision.image_transfer import (
    REPORT_EVERY,
    StreamFailed,
    lan_end,
    lead_transfer,
    report_progress,
)
from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step, noop
from provision.results import human_bytes
from provision.shell import quote
from provision.ssh import CommandResult
from provision.stream import CHUNK, StreamError, open_stream, progress

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_FORMAT = "{{.Id}}|{{.Size}}|{{json .RepoDigests}}"
_INFO = "{{.DockerRootDir}}|{{.OSType}}|{{.Architecture}}"
_REGISTRY_TIMEOUT = 30  # seconds for one `docker manifest inspect` in the batched state read

# `docker info` reports the kernel's machine name; manifests name Go's GOARCH (and a variant).
_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}

# Errors that end a pull for good: retrying cannot make an image exist or a login valid, and a
# full disk stays full. Checked before the transient ones.
_FINAL = re.compile(
    r"not found|manifest unknown|unauthorized|denied|authentication required|"
    r"invalid reference|no matching manifest|no space left|no such host",
    re.IGNORECASE,
)
# Network and registry hiccups worth another attempt (dockerd's and Go's net/http wording).
_TRANSIENT = re.compile(
    r"timeout|timed out|deadline exceeded|connection refused|connection reset|broken pipe|"
    r"tls handshake|\bEOF\b|network is unreachable|no route to host|temporary failure|"
    r"server misbehaving|too many open connections|"
    r"(?:status|HTTP)[: ]+5\d\d\b|"
    r"\b5\d\d (?:Internal Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out)",
    re.IGNORECASE,
)


def state_script(name: str, digest: str, refresh: bool, disk: bool = False) -> str:
    """Print ``local=<candidate>|<id>|<size>|<digests json>`` for the first reference found; for
    refresh, or for the disk check when the exact reference is missing (a pull is coming),
    ``root=<DockerRootDir>|<os>|<arch>``, ``free=<bytes>`` and ``remote=<json>`` from the
    registry (``docker manifest inspect -v``). A converged run never asks the registry."""
    pinned = pin_tag(f"{name}@{digest}") if digest else None
    candidates = [f"{name}@{digest}", *([pinned] if pinned else []), name] if digest else [name]
    lines = ["command -v docker >/dev/null 2>&1 || { echo docker=missing; exit 0; }", "hit="]
    loop = " ".join(quote(c) for c in candidates)
    lines.append(
        f"for c in {loop}; do "
        f'o=$(docker image inspect --format {quote(_FORMAT)} "$c" 2>/dev/null) && '
        '{ echo "local=$c|$o"; hit=$c; break; }; done'
    )
    remote_ref = candidates[0]
    refresh = refresh and not digest
    if not (refresh or disk):
        return "\n".join(lines)
    # dockerd trusts loopback registries over plain HTTP by default; the CLI must be told.
    registry = (registry_of(name) or "").rsplit(":", 1)[0]
    insecure = "--insecure " if registry == "localhost" or registry.startswith("127.") else ""
    reads = []
    if disk:
        reads += [
            f"r=$(docker info --format {quote(_INFO)} 2>/dev/null)",
            'echo "root=$r"',
            'd=${r%%|*}; [ -n "$d" ] && echo "free=$(df -B1 --output=avail "$d" 2>/dev/null'
            " | tail -n 1 | tr -d ' ')\"",
        ]
    reads.append(
        f'echo "remote=$(timeout {_REGISTRY_TIMEOUT} docker manifest inspect -v {insecure}'
        f"{quote(remote_ref)} 2>&1 | tr -d '\\n')\""
    )
    body = "\n".join(reads)
    if refresh:
        lines.append(body)
    else:
        # found by the pin (registry digest or pin tag): converged, the registry is not asked
        found_pinned = " ".join(
            f'[ "$hit" != {quote(c)} ] &&' for c in candidates[:-1] or [remote_ref]
        )
        lines.append(f"if {found_pinned} true; then\n{body}\nfi")
    return "\n".join(lines)


def parse_state(text: str | None) -> dict[str, Any]:
    """The snippet's output -> {docker_missing, found, id, size, digests, remote, remote_error,
    data_root, platform, free, compressed, size_error}."""
    out: dict[str, Any] = {"docker_missing": False, "found": None, "digests": []}
    remote_text: str | None = None
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
        elif key == "root":
            root, ostype, arch = [*value.strip().split("|", 2), "", ""][:3]
            out["data_root"] = root or None
            out["platform"] = (ostype, arch) if ostype and arch else None
        elif key == "free":
            out["free"] = int(value.strip()) if value.strip().isdigit() else None
        elif key == "remote":
            remote_text = value
            remote, error = remote_digests(value)
            out["remote"], out["remote_error"] = remote, error
    if remote_text is not None:
        out["compressed"], out["size_error"] = compressed_size(remote_text, out.get("platform"))
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


def compressed_size(text: str, platform: tuple[str, str] | None) -> tuple[int | None, str | None]:
    """The sum of the layer sizes (compressed, as they travel) of the manifest this host pulls,
    or None and why not. A single manifest counts as it is; from a multi-platform list the entry
    for the host's os/architecture (and variant, for arm) is chosen, as dockerd does."""
    try:
        doc = json.loads(text)
    except ValueError:
        why = text.strip()[-200:] or "no answer"
        return None, f"the registry did not tell the image's size: {why}"
    entries = [e for e in (doc if isinstance(doc, list) else [doc]) if isinstance(e, dict)]
    if isinstance(doc, list):
        if platform is None:
            return None, "docker info gave no platform to choose from the registry's list"
        want_os = platform[0].lower()
        want_arch, want_variant = _ARCH.get(platform[1].lower(), (platform[1].lower(), ""))

        def platform_of(entry: dict[str, Any]) -> dict[str, Any]:
            return (entry.get("Descriptor") or {}).get("platform") or {}

        matching = [
            e
            for e in entries
            if platform_of(e).get("os") == want_os
            and platform_of(e).get("architecture") == want_arch
        ]
        exact = [e for e in matching if platform_of(e).get("variant", "") == want_variant]
        entries = (exact or matching)[:1]
        if not entries:
            return None, f"the registry lists no image for {want_os}/{want_arch}"
    for entry in entries:
        manifest = entry.get("SchemaV2Manifest") or entry.get("OCIManifest") or {}
        layers = manifest.get("layers")
        if isinstance(layers, list) and layers:
            sizes = [layer.get("size") for layer in layers if isinstance(layer, dict)]
            counted = [s for s in sizes if isinstance(s, int) and not isinstance(s, bool)]
            if len(counted) == len(sizes):
                return sum(counted), None
    return None, "the registry's manifest gives no layer sizes"


def is_transient(detail: str) -> bool:
    """Whether a failed pull or login is worth another attempt (see _FINAL and _TRANSIENT)."""
    return not _FINAL.search(detail) and bool(_TRANSIENT.search(detail))


def retry_delays(retries: int, delay: float) -> list[float]:
    """The waits before each retry: ``delay``, doubling per attempt."""
    return [delay * 2**i for i in range(max(0, retries))]


def disk_check(ref: str, factor: float, st: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(result keys, a note when the check could not be made); refuses (ModuleError) a pull
    that needs more than ``factor`` x the compressed size free on Docker's root dir: layers
    arrive compressed and are extracted beside them."""
    root, free, compressed = st.get("data_root"), st.get("free"), st.get("compressed")
    keys: dict[str, Any] = {"data_root": root, "free_bytes": free, "compressed_bytes": compressed}
    if factor <= 0:
        return {**keys, "disk_check": "disabled (disk_factor: 0)"}, None
    note = None
    if root is None:
        note = "disk space not checked: docker info gave no root dir"
    elif free is None:
        note = f"disk space not checked: free space on {root} is unknown"
    elif compressed is None:
        note = f"disk space not checked: {st.get('size_error') or 'image size unknown'}"
    if note or root is None or free is None or compressed is None:
        return {**keys, "disk_check": note}, note
    needed = math.ceil(factor * compressed)
    keys["needed_bytes"] = needed
    if free < needed:
        raise ModuleError(
            f"{ref} needs about {human_bytes(needed)} ({factor:g} x the compressed size "
            f"{human_bytes(compressed)}, for extraction), {human_bytes(free)} free on {root}; "
            "free space or set docker_data_root"
        )
    return {**keys, "disk_check": "ok"}, None


def pull_steps(args: dict[str, Any], ref: str, *, progress: bool = False) -> list[Step]:
    """Login (password on stdin) when a username is given, pull with a bound, print the size.
    With ``progress`` the pull goes through the Engine API, whose JSON lines tell the bytes
    downloaded (:mod:`provision.pull`; the credentials again on stdin): the fan-out's pull."""
    steps: list[Step] = []
    registry = registry_of(split_ref(args["name"])[0])
    if args["username"]:
        cmd = f"docker login --username {quote(args['username'])} --password-stdin"
        if registry:
            cmd += f" {quote(registry)}"
        steps.append(Step(cmd + " >/dev/null", stdin=args["password"].encode()))
    if progress:
        auth = pull.auth_header(args["username"], args["password"] or "", registry)
        steps.append(Step(pull.command(ref), stdin=auth))
    else:
        steps.append(Step(f"timeout {int(args['timeout'])} docker pull --quiet {quote(ref)}"))
    steps.append(Step(f"echo size=$(docker image inspect --format '{{{{.Size}}}}' {quote(ref)})"))
    return steps


class PullFailed(ModuleError):
    """A pull (or its login) failed for good; ``data`` carries ``attempts`` for the result."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.data: dict[str, Any] = {"attempts": attempts}


def _sleep(seconds: float) -> None:
    """The back-off wait (a function of its own so spec tests can record it)."""
    time.sleep(seconds)


def _number(name: str, value: Any) -> float | None:
    """A non-negative number (int, float or numeric string); None for an unrendered template."""
    if isinstance(value, str) and "{{" in value:
        return None
    if isinstance(value, bool):
        raise ArgError(f"argument '{name}' must be a number, got a boolean")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ArgError(f"argument '{name}' must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ArgError(f"argument '{name}' must be a number >= 0, got {value!r}")
    return number


class DockerImageModule(Module):
    name = "docker_image"
    acts_on_controller = True  # a pull for the lab, or a stream from another host
    spec = (
        Arg("name", required=True),
        Arg("state", default="present", choices=("present", "absent")),
        Arg("refresh", "bool", default=False),
        Arg("timeout", "int", default=600),
        Arg("username"),
        Arg("password"),
        Arg("disk_factor", "raw", default=2.5),
        Arg("retries", "int", default=2),
        Arg("retry_delay", "raw", default=5),
        Arg("fanout", "bool", default=False),
        Arg("fanout_rate", "raw", default=0),
        Arg("fanout_transport", default="ssh", choices=("ssh", "direct")),
        Arg("fanout_address", default=""),
        Arg("fanout_port", "int", default=0),
        Arg("fanout_receivers", "int", default=0),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        user, password = args.get("username"), args.get("password")
        if not any(isinstance(v, str) and "{{" in v for v in (user, password)):
            # An empty username means "no login" (a playbook's default); a password then is a
            # forgotten username, not something to drop silently.
            user = str(user or "").strip()
            if user and not password:
                raise ArgError("module 'docker_image': 'username' needs a 'password'")
            if password and not user:
                raise ArgError("module 'docker_image': a 'password' without a 'username'")
        name = args.get("name")
        if isinstance(name, str) and "{{" not in name:
            _, digest = split_ref(name)
            if not name or name.startswith("@") or (digest and not _DIGEST.match(digest)):
                raise ArgError(f"argument 'name': {name!r} is not an image reference")
        timeout = args.get("timeout")
        if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout <= 0:
            raise ArgError("argument 'timeout' must be a positive number of seconds")
        retries = args.get("retries")
        if isinstance(retries, int) and not isinstance(retries, bool) and retries < 0:
            raise ArgError("argument 'retries' must be 0 or more")
        width = args.get("fanout_receivers")
        if isinstance(width, int) and not isinstance(width, bool) and width < 0:
            raise ArgError("argument 'fanout_receivers' must be 1 or more, or 0 for the default")
        port = args.get("fanout_port")
        if isinstance(port, int) and not isinstance(port, bool) and not 0 <= port <= 65535:
            raise ArgError("argument 'fanout_port' must be a TCP port (1-65535), or 0 for any")
        for key in ("disk_factor", "retry_delay", "fanout_rate"):
            if args.get(key) is not None:
                _number(key, args[key])

    def finalize(self, args: dict[str, Any]) -> dict[str, Any]:
        out = super().finalize(args)
        for key in ("disk_factor", "retry_delay", "fanout_rate"):
            out[key] = _number(key, out[key])
        out["username"] = (out["username"] or "").strip()
        return out

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        name, digest = split_ref(args["name"])
        present = args["state"] == "present"
        return state_script(
            name, digest, args["refresh"] and present, present and args["disk_factor"] > 0
        )

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        ref = args["name"]
        name, digest = split_ref(ref)
        st = parse_state(state)
        if st["docker_missing"]:
            raise ModuleError("docker is not installed on the host (no docker command)")
        found = st["found"]
        local_digests = [d.split("@", 1)[1] for d in st["digests"] if "@" in d]
        # By digest: found by name@digest or by the pin tag of an image received over the LAN
        # (verified then), or under the name with that digest or image ID.
        matches = found is not None and (
            not digest
            or found in (ref, pin_tag(ref))
            or digest in local_digests
            or st.get("id") == digest
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
            return self._pull(args, ref, f"local {name} has another digest", info, st, ctx)
        if found is None:
            return self._pull(args, ref, None, info, st, ctx)
        if not args["refresh"] or digest:
            why = "pinned by digest" if digest else "refresh: false"
            peers = _peers(args, ctx)
            if peers is not None and digest and _DIGEST.match(str(st.get("id"))):
                peers.offer(ref, str(st.get("id")), st.get("size"))  # verified: a source
            elif peers is not None:  # a tag held from before may not be the registry's now
                peers.report(ref)
            return noop(f"{ref} is present ({st.get('id')}, {why})", **info)
        if st.get("remote_error"):
            raise ModuleError(f"cannot read {ref}'s digest from the registry: {st['remote_error']}")
        remote = st.get("remote") or []
        if any(d in local_digests or d == st.get("id") for d in remote):
            if (peers := _peers(args, ctx)) is not None:
                peers.report(ref)  # nothing to receive; the meeting need not wait for it
            return noop(f"{ref} is present and matches the registry ({remote[0]})", **info)
        why = f"registry digest {', '.join(remote) or '?'} differs"
        return self._pull(args, ref, why, info, st, ctx)

    @staticmethod
    def _pull(
        args: dict[str, Any],
        ref: str,
        why: str | None,
        info: dict[str, Any],
        st: dict[str, Any],
        ctx: Context,
    ) -> Plan:
        """A pull, after the disk check (which may refuse it or add a note to the change); with
        fan-out, a pull for the lab or a transfer over the LAN, as the hosts' meeting decides."""
        disk, note = disk_check(ref, args["disk_factor"], st)
        notes = "; ".join(n for n in (why, note) if n)
        result = {**info, **disk, "id_before": info["id"]}
        peers = _peers(args, ctx)
        fanout = ""
        if peers is not None:
            try:
                role = peers.role(ref, st.get("free"))
            except FanOutFailed as exc:
                raise ModuleError(str(exc)) from None
            fanout = "pull" if role.pull else "receive"
            result["fanout"] = fanout
            if not role.pull:
                via = f" from {role.via}" if role.via and ctx.check else ""
                notes = "; ".join(n for n in ("fan-out", note) if n)
                return Plan(True, changes=[f"receive {ref} over the LAN{via} ({notes})"],
                            result=result)  # fmt: skip
            notes = "; ".join(n for n in (why, "fan-out: the source for the others", note) if n)
        return Plan(
            True,
            changes=[f"pull {ref} ({notes})" if notes else f"pull {ref}"],
            steps=pull_steps(args, ref, progress=bool(fanout)),
            result=result,
        )

    def counters(self, data: dict[str, Any]) -> dict[str, float]:
        """The recap's pull columns: pulls, bytes and seconds of the task's pulls."""
        pulls, size, seconds = pull_totals(data)
        return {"pulls": pulls, "pulled_bytes": size, "pull_seconds": seconds}

    def execute(
        self,
        args: dict[str, Any],
        plan: Plan,
        session: Any,
        reconnect: Callable[[], None],
        become: bool | None,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """Run the plan: a pull or removal, or with fan-out a pull for the lab or a transfer
        from another host over the LAN."""
        peers = _peers(args, ctx) if ctx is not None else None
        fanout = plan.result.get("fanout")
        if peers is None or not fanout:
            return run_steps(args, plan.steps, session, become)
        if fanout == "pull":
            total = plan.result.get("compressed_bytes")
            return pull_for_lab(args, plan.steps, session, become, peers, total)
        return receive(args, plan, session, become, peers)


def pull_totals(data: Mapping[str, Any]) -> tuple[int, int, float]:
    """(pulls, bytes, seconds) in a task's result data, loop items included: each result
    that carries ``bytes`` and ``seconds`` is one pull."""
    items = [data, *[r for r in data.get("results", []) if isinstance(r, Mapping)]]
    pulls, size, seconds = 0, 0, 0.0
    for item in items:
        if "bytes" in item and "seconds" in item:
            try:
                size += int(item["bytes"])
                seconds += float(item["seconds"])
            except (TypeError, ValueError):
                continue
            pulls += 1
    return pulls, size, seconds


def run_steps(
    args: dict[str, Any],
    steps: list[Step],
    session: Any,
    become: bool | None,
    run: Callable[[Step], CommandResult | None] | None = None,
) -> dict[str, Any]:
    """Run the steps, timing them; a login or pull that fails on a transient error is tried
    again after ``retry_delay`` (doubling), up to ``retries`` more times. ``run`` runs a step
    itself (a pull that reports progress) or returns None for the plain way."""
    started = time.monotonic()
    size: int | None = None
    pulling = args["state"] == "present"
    delays = retry_delays(args["retries"], args["retry_delay"]) if pulling else []
    attempts = 1
    for step in steps:
        while True:
            done = run(step) if run is not None else None
            if done is None:
                done = session.run(
                    step.script, stdin=step.stdin, become=become, timeout=args["timeout"] + 30
                )
            if done.exit_code == 0:
                break
            what = "docker login" if step.stdin is not None else step.script
            detail = (done.stderr.strip() or done.stdout.strip())[-400:]
            if done.exit_code == 124:
                detail = f"timed out after {args['timeout']} s"
            if delays and is_transient(detail):
                wait = delays.pop(0)
                log.warning(
                    "%s: %s failed (%s); retrying in %g s (%d left)",
                    getattr(session, "name", "?"),
                    what,
                    detail.splitlines()[-1] if detail else f"exit {done.exit_code}",
                    wait,
                    len(delays) + 1,
                )
                _sleep(wait)
                attempts += 1
                continue
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            raise PullFailed(f"{what} failed (exit {done.exit_code}){tries}: {detail}", attempts)
        for line in done.stdout.splitlines():
            if line.startswith("size=") and line[5:].strip().isdigit():
                size = int(line[5:].strip())
    seconds = round(time.monotonic() - started, 2)
    if not pulling:
        return {"seconds": seconds}
    return {
        "pulled": True,
        "bytes": size,
        "seconds": seconds,
        "size": size,
        "attempts": attempts,
    }


def _peers(args: dict[str, Any], ctx: Context | None) -> Member | None:
    """The fan-out handle when this task shares its image with the run's other hosts."""
    if ctx is None or not args.get("fanout") or args["state"] != "present":
        return None
    return ctx.peers


def pull_for_lab(
    args: dict[str, Any],
    steps: list[Step],
    session: Any,
    become: bool | None,
    peers: Member,
    total: int | None,
) -> dict[str, Any]:
    """Pull from the registry for the whole lab, reporting its progress (of ``total``, the
    manifest's compressed size, when known), then offer the image to the others (or hand the
    failure to them, so they do not each try the registry in turn)."""
    ref = args["name"]
    api = pull.command(ref)

    def run(step: Step) -> CommandResult | None:
        if step.script != api:
            return None
        return pull_with_progress(args, step, session, become, peers, total)

    try:
        data = run_steps(args, steps, session, become, run)
        done = session.run(
            f"docker image inspect --format '{{{{.Id}}}}|{{{{.Size}}}}' {quote(ref)}",
            become=become,
        )
        image_id, _, size = done.stdout.strip().partition("|")
        if done.exit_code != 0 or not _DIGEST.match(image_id):
            raise PullFailed(f"{ref} is not there after the pull: {done.stderr.strip()}", 1)
    except PullFailed as exc:  # final, or retried out: the others would fail the same way
        peers.pull_failed(ref, str(exc))
        raise
    except BaseException:  # the connection died, a timeout: another host may do better
        peers.gave_up(ref)
        raise
    peers.offer(ref, image_id, int(size) if size.isdigit() else None)
    return {**data, "source": "registry", "id": image_id}


def pull_with_progress(
    args: dict[str, Any],
    step: Step,
    session: Any,
    become: bool | None,
    peers: Member,
    total: int | None,
) -> CommandResult:
    """The API pull on its own channel, its JSON lines tallied as they come and reported every
    2 s; the outcome as a command's (an error line of dockerd's is the failure's text)."""
    ref, limit = args["name"], float(args["timeout"])
    started = last = time.monotonic()
    tally = pull.PullTally()
    code, err = -1, ""
    try:
        stream = open_stream(session, step.script, become=become, limit=limit, idle=limit)
    except StreamError as exc:
        return CommandResult("docker pull (Engine API)", 255, "", str(exc), 0.0)
    try:
        if step.stdin:
            stream.write(step.stdin)
        stream.close_input()
        rest = b""
        while chunk := stream.read(CHUNK):
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                tally.feed(line.decode("utf-8", errors="replace"))
            now = time.monotonic()
            if now - last >= REPORT_EVERY:
                last = now
                p = progress(tally.done, total or tally.told or None, now - started)
                report_progress(peers, ref, "the registry", p)
        tally.feed(rest.decode("utf-8", errors="replace"))
        code, err = stream.wait(60)
    except StreamError as exc:
        code, err = 255, str(exc)
    finally:
        stream.abort()
    seconds = time.monotonic() - started
    if code == 124:
        return CommandResult("docker pull (Engine API)", 124, "", err, seconds)
    if tally.error is not None:
        return CommandResult("docker pull (Engine API)", code or 1, "", tally.error, seconds)
    moved = total or tally.done
    peers.count(ref, moved, moved)
    return CommandResult("docker pull (Engine API)", code, "", err, seconds)


def receive(
    args: dict[str, Any], plan: Plan, session: Any, become: bool | None, peers: Member
) -> dict[str, Any]:
    """Receive the image over the LAN, from a transfer this host leads or joins; one that
    breaks is tried again (another source when the source's side broke) after
    ``retry_delay``, doubling."""
    ref = args["name"]
    started = time.monotonic()
    delays = retry_delays(args["retries"], args["retry_delay"])
    attempts, broken = 0, set[str]()
    end = lan_end(args, session)
    width = args["fanout_receivers"] or RECEIVERS[args["fanout_transport"]]
    while True:
        attempts += 1
        try:
            transfer = peers.acquire(ref, broken, become, end, width)
        except FanOutFailed as exc:
            raise PullFailed(str(exc), attempts) from None
        if transfer is None:  # nobody holds it and nobody pulls it (the puller gave up): pull
            plan.changes[:] = [f"pull {ref} (fan-out: no host holds it)"]
            steps = pull_steps(args, ref, progress=True)
            total = plan.result.get("compressed_bytes")
            return pull_for_lab(args, steps, session, become, peers, total)
        src = transfer.source
        if transfer.leads(peers.host):
            try:
                outcome = lead_transfer(args, transfer, peers)
            except BaseException:  # this host's own connection: the others go on without it
                peers.gave_up(ref)
                raise
        else:
            outcome = transfer.wait(peers.host, float(args["timeout"]) + 120)
            if outcome is None:
                outcome = StreamFailed(f"the transfer from {src.host} did not end", False)
        if isinstance(outcome, StreamFailed):
            if outcome.source_side:
                broken.add(src.host)
            if not delays:
                peers.gave_up(ref)
                tries = f" after {attempts} attempts" if attempts > 1 else ""
                raise PullFailed(
                    f"receiving {ref} from {src.host} failed{tries}: {outcome}", attempts
                ) from None
            wait = delays.pop(0)
            log.warning("%s: %s; retrying in %g s", peers.host, outcome, wait)
            _sleep(wait)
            continue
        peers.offer(ref, src.image_id, src.size)
        plan.changes[:] = [f"receive {ref} from {src.host} over the LAN (fan-out)"]
        return {
            "received": True,
            "source": src.host,
            "id": src.image_id,
            "bytes": outcome.bytes,
            "transport": outcome.transport,
            "seconds": round(time.monotonic() - started, 2),
            "size": src.size,
            "attempts": attempts,
            "stream_with": [r.host for r in transfer.receivers if r.host != peers.host],
        }


__all__ = [
    "DockerImageModule",
    "compressed_size",
    "disk_check",
    "is_transient",
    "parse_state",
    "pull_totals",
    "remote_digests",
    "retry_delays",
]
