"""apt_key: an OpenPGP key apt trusts, as ansible.builtin.apt_key, without apt-key.

Ansible's module runs ``apt-key`` (deprecated by apt, gone from Debian 13 and Ubuntu 24.04's
successors). Here the key's packets are written straight into a binary keyring file, which is
what apt (gpgv) reads:

- with ``keyring``: into that file (Ansible: ``apt-key --keyring FILE add``), the keys already
  in it kept; the file a source names with ``signed-by=``;
- without: into ``/etc/apt/trusted.gpg.d/LONGID.gpg``, which apt trusts for every source, as it
  trusted ``apt-key add`` (so a role's later ``deb URI SUITE`` line without ``signed-by`` still
  works). A key already in ``/etc/apt/trusted.gpg`` or any ``trusted.gpg.d/*.gpg`` is present.

``url`` is fetched on the controller (as apt_repository's keys are), ``data`` is the key itself,
``file`` a key file on the host; ASCII armor is removed. ``id`` (a short, long or full id)
must match the key's fingerprint; with it, a present key is ok even when ``url`` cannot be
fetched. ``state: absent`` removes the key with that ``id`` from the keyring (a file left with
no key is removed).
``keyserver`` is refused: no keyserver is asked.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from provision.modules.apt_repository import (
    dearmor,
    fetch_key,
    packet_spans,
    primary_fingerprints,
)
from provision.modules.base import (
    Arg,
    ArgError,
    Context,
    Module,
    ModuleError,
    Plan,
    Step,
    atomic_write_script,
    noop,
)
from provision.shell import quote

TRUSTED = "/etc/apt/trusted.gpg"
TRUSTED_DIR = "/etc/apt/trusted.gpg.d"
FETCH_TIMEOUT = 30.0


def normalize_id(value: str) -> str:
    """``0x1234ABCD`` / ``"9DC8 5822 ..."`` -> upper-case hex of 8, 16, 40 or 64 digits."""
    text = re.sub(r"\s+", "", value).upper().removeprefix("0X")
    if len(text) not in (8, 16, 40, 64) or not re.fullmatch(r"[0-9A-F]+", text):
        raise ArgError(
            f"module 'apt_key': id {value!r} must be a key id of 8 or 16 hex digits or a full "
            "fingerprint"
        )
    return text


def split_keys(keyring: bytes) -> list[tuple[str, bytes]]:
    """A binary keyring -> [(primary fingerprint, that key's packets)], in file order."""
    keys: list[tuple[str, bytes]] = []
    spans = packet_spans(keyring)
    starts = [i for i, (tag, *_rest) in enumerate(spans) if tag in (5, 6)]
    for n, first in enumerate(starts):
        last = starts[n + 1] - 1 if n + 1 < len(starts) else len(spans) - 1
        data = keyring[spans[first][2] : spans[last][3]]
        keys.append((primary_fingerprints(data)[0], data))
    return keys


def parse_files(text: str | None) -> dict[str, dict[str, bytes]]:
    """The state read: {section: {path: bytes}} for ``@@keyrings`` and ``@@keyfile``."""
    out: dict[str, dict[str, bytes]] = {"keyrings": {}, "keyfile": {}}
    section, current = "", ""
    for line in (text or "").splitlines():
        if line.startswith("@@file "):
            current = line[len("@@file ") :]
        elif line.startswith("@@"):
            section, current = line[2:].strip(), ""
        elif current and section in out:
            try:
                out[section][current] = base64.b64decode(line.strip())
            except (binascii.Error, ValueError):
                out[section][current] = b""
            current = ""
    return out


def _file_script(pattern: str) -> str:
    return "\n".join(
        [
            f"for f in {pattern}; do",
            '  [ -f "$f" ] || continue',
            '  echo "@@file $f"; base64 -w0 < "$f"; echo',
            "done",
        ]
    )


def _keys_of(path: str, data: bytes) -> list[tuple[str, bytes]]:
    try:
        return split_keys(data)
    except ModuleError as exc:
        raise ModuleError(f"{path} is not a binary keyring apt can read: {exc}") from None


def _matches(fingerprint: str, key_id: str) -> bool:
    return fingerprint.endswith(key_id)


class AptKeyModule(Module):
    name = "apt_key"
    spec = (
        Arg("id"),
        Arg("url"),
        Arg("data"),
        Arg("file"),
        Arg("keyring"),
        Arg("keyserver"),
        Arg("validate_certs", "bool", default=True),  # accepted: urllib verifies certificates
        Arg("state", choices=("present", "absent"), default="present"),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        given = [k for k in ("data", "file", "keyserver", "url") if args.get(k)]
        if len(given) > 1:
            raise ArgError(f"module 'apt_key': give only one of {', '.join(given)}")
        if args.get("keyserver"):
            raise ArgError(
                "module 'apt_key': keyserver is not supported (provision asks no keyserver); "
                "give the key's url or data"
            )
        key_id = args.get("id")
        if isinstance(key_id, str) and "{" not in key_id:
            normalize_id(key_id)
        state = args.get("state", "present")
        if state == "absent" and not key_id:
            raise ArgError("module 'apt_key': state: absent needs the key's id")
        if state == "present" and not given and "state" in args:  # finalized
            raise ArgError("module 'apt_key': give the key: url, data or file")
        keyring = args.get("keyring")
        if isinstance(keyring, str) and "{" not in keyring and not keyring.startswith("/"):
            raise ArgError(f"module 'apt_key': keyring {keyring!r} must be an absolute path")

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        args = dict(args)
        args["key_id"] = normalize_id(args["id"]) if args["id"] else None
        args["raw"] = args["data"].encode() if args["data"] else None
        args["fetch_error"] = None
        if args["url"] and args["state"] == "present":
            try:
                args["raw"] = fetch_key(args["url"], FETCH_TIMEOUT)
            except ModuleError as exc:
                if not args["key_id"]:
                    raise
                # with an id the key may be present already (then no download is needed)
                args["fetch_error"] = str(exc)
        return args

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        keyrings = (
            quote(args["keyring"])
            if args["keyring"]
            else f"{quote(TRUSTED)} {quote(TRUSTED_DIR)}/*.gpg"
        )
        lines = ["echo @@keyrings", _file_script(keyrings)]
        if args["file"]:
            lines += ["echo @@keyfile", _file_script(quote(args["file"]))]
        return "\n".join(lines)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        files = parse_files(state)
        keyrings = {path: _keys_of(path, data) for path, data in files["keyrings"].items()}
        have = {fp for keys in keyrings.values() for fp, _data in keys}
        key_id = args["key_id"]
        if args["state"] == "absent":
            return self.plan_absent(key_id, keyrings)
        if key_id and any(_matches(fp, key_id) for fp in have):
            return noop(f"key {key_id} is present", id=key_id)
        raw = args["raw"]
        if args["fetch_error"]:
            raise ModuleError(args["fetch_error"])
        if args["file"]:
            if args["file"] not in files["keyfile"]:
                raise ModuleError(f"key file {args['file']} does not exist on the host")
            raw = files["keyfile"][args["file"]]
        binary = dearmor(raw)
        keys = split_keys(binary)
        if not keys:
            raise ModuleError("the key file holds no OpenPGP public key")
        prints = [fp for fp, _data in keys]
        if key_id and not any(_matches(fp, key_id) for fp in prints):
            raise ModuleError(
                f"the key's fingerprint {', '.join(prints)} does not match id {key_id}; "
                "nothing was written"
            )
        missing = [(fp, data) for fp, data in keys if fp not in have]
        if not missing:
            return noop(f"key {', '.join(prints)} is present", fingerprint=prints[0])
        target = args["keyring"] or f"{TRUSTED_DIR}/{missing[0][0][-16:]}.gpg"
        old = files["keyrings"].get(target)
        data = (old or b"") + b"".join(d for _fp, d in missing)
        script = atomic_write_script(
            target, data, owner="root", group="root", mode="644", backup=old is not None
        )
        mkdir = f"mkdir -p -m 755 {quote(target.rsplit('/', 1)[0])}"
        changes = [f"add key {fp} to {target}" for fp, _data in missing]
        return Plan(
            True,
            changes=changes,
            steps=[Step(f"{mkdir}\n{script}", data)],
            result={"fingerprint": missing[0][0], "keyring": target},
        )

    def plan_absent(self, key_id: str, keyrings: dict[str, list[tuple[str, bytes]]]) -> Plan:
        changes: list[str] = []
        steps: list[Step] = []
        for path, keys in sorted(keyrings.items()):
            kept = [(fp, data) for fp, data in keys if not _matches(fp, key_id)]
            if len(kept) == len(keys):
                continue
            gone = [fp for fp, _data in keys if _matches(fp, key_id)]
            changes.append(f"remove key {', '.join(gone)} from {path}")
            if not kept:
                steps.append(Step(f"rm -f -- {quote(path)}"))
                continue
            data = b"".join(d for _fp, d in kept)
            script = atomic_write_script(
                path, data, owner="root", group="root", mode=None, backup=True
            )
            steps.append(Step(script, data))
        if not changes:
            return noop(f"key {key_id} is absent", id=key_id)
        return Plan(True, changes=changes, steps=steps)
