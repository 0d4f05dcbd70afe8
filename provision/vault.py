"""Ansible Vault: read files and values encrypted by ``ansible-vault`` (pure apart from reading
password files and running password scripts).

Why a reimplementation: lab inventories keep their SSH and sudo passwords in vaulted
``group_vars``; importing Ansible at run time is not an option (it is a test dependency only).

The format, as documented ("Format of files encrypted with Ansible Vault", docs.ansible.com
vault_guide/vault_using_encrypted_content) and written by ansible-core's
``parsing/vault/__init__.py``: a header ``$ANSIBLE_VAULT;1.1;AES256`` (1.2 adds ``;LABEL``, the
vault id), then the hex of ``hex(salt) \\n hex(hmac) \\n hex(ciphertext)`` in 80-column lines.
PBKDF2-HMAC-SHA256 (10,000 iterations, the 32-byte salt) derives 80 bytes: the AES-256 key,
the HMAC-SHA256 key and the 16-byte initial counter of AES-256-CTR; the plaintext is PKCS#7
padded to 128 bits; the HMAC covers the ciphertext and is checked before anything is decrypted.
"""

from __future__ import annotations

import binascii
import getpass
import hmac
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from provision.errors import ProvisionError

__all__ = [
    "HEADER",
    "Locked",
    "Secret",
    "VaultError",
    "VaultSecret",
    "VaultedText",
    "as_secrets",
    "decrypt",
    "decrypt_text",
    "is_vaulted",
    "load_secrets",
    "secrets_in",
]

HEADER = "$ANSIBLE_VAULT"
_ITERATIONS = 10000  # ansible-core's VaultAES256 (fixed by the format, not configurable)
_KEY_LEN, _IV_LEN = 32, 16
DEFAULT_ID = "default"  # the label of a password given without one (--ask-vault-pass)
NO_PASSWORD_HINT = "give --vault-password-file FILE, --ask-vault-pass or --vault-id LABEL@FILE"


class VaultError(ProvisionError):
    """A vault that cannot be read: no password, a wrong one, or a damaged file."""


@dataclass(frozen=True)
class VaultSecret:
    """One vault password with its label (vault id); the password is never in a repr."""

    vault_id: str
    password: bytes = field(repr=False)


def is_vaulted(data: str | bytes) -> bool:
    """Whether text starts with the vault header (leading whitespace allowed, as Ansible)."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    return text.lstrip().startswith(HEADER)


def _envelope(text: str) -> tuple[str, str, str | None, bytes]:
    """(version, cipher, vault id or None, the decoded body) of vault text."""
    lines = text.strip().splitlines()
    fields = lines[0].strip().split(";")
    if fields[0] != HEADER or len(fields) < 3:
        raise VaultError("not a vault header; expected $ANSIBLE_VAULT;1.1;AES256")
    version, cipher = fields[1].strip(), fields[2].strip()
    vault_id = fields[3].strip() if len(fields) > 3 and version == "1.2" else None
    if version not in ("1.1", "1.2") or cipher != "AES256":
        raise VaultError(
            f"vault format {version};{cipher} is not supported (only 1.1/1.2 AES256); "
            f"rekey it with a current ansible-vault"
        )
    try:
        body = binascii.unhexlify("".join(line.strip() for line in lines[1:]))
    except (binascii.Error, ValueError):
        raise VaultError("the vault body is not hexadecimal: the file is damaged") from None
    return version, cipher, vault_id, body


def _derive(password: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(),
        length=2 * _KEY_LEN + _IV_LEN,
        salt=salt,
        iterations=_ITERATIONS,
    )
    derived = kdf.derive(password)
    return derived[:_KEY_LEN], derived[_KEY_LEN : 2 * _KEY_LEN], derived[2 * _KEY_LEN :]


def _decrypt_with(body: bytes, password: bytes) -> bytes | None:
    """The plaintext, or None when the HMAC says this password is not the one."""
    try:
        salt_hex, mac_hex, data_hex = body.split(b"\n", 2)
        salt, mac, data = (binascii.unhexlify(x.strip()) for x in (salt_hex, mac_hex, data_hex))
    except (ValueError, binascii.Error):
        raise VaultError(
            "the vault body has no salt/hmac/ciphertext: the file is damaged"
        ) from None
    cipher_key, mac_key, counter = _derive(password, salt)
    expected = hmac.new(mac_key, data, "sha256").digest()
    if not hmac.compare_digest(expected, mac):
        return None
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CTR(counter)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise VaultError("the vault's padding is wrong: the file is damaged") from None


def decrypt(text: str, secrets: Sequence[VaultSecret]) -> bytes:
    """Decrypt vault text with the first password that fits, the header's vault id first
    (ansible-core tries the matching label first, then every other password)."""
    _version, _cipher, vault_id, body = _envelope(text)
    if not secrets:
        raise VaultError(
            f"it is vault-encrypted and no vault password was given; {NO_PASSWORD_HINT}"
        )
    ordered = sorted(secrets, key=lambda s: s.vault_id != vault_id)
    for secret in ordered:
        plain = _decrypt_with(body, secret.password)
        if plain is not None:
            return plain
    label = f" (vault id {vault_id!r})" if vault_id else ""
    raise VaultError(
        f"no vault password given decrypts it{label}; check the password file or --vault-id"
    )


def decrypt_text(text: str, secrets: Sequence[VaultSecret], what: str) -> str:
    """``decrypt`` as UTF-8 text; errors name ``what`` (a file, or file:line)."""
    try:
        return decrypt(text, secrets).decode("utf-8")
    except VaultError as exc:
        raise VaultError(f"{what}: {exc}") from None
    except UnicodeDecodeError:
        raise VaultError(f"{what}: the decrypted vault is not UTF-8 text") from None


# --------------------------------------------------------------------------- passwords


Prompt = Callable[[str], str]


def _read_source(vault_id: str, source: str, prompt: Prompt) -> bytes:
    """A password from ``prompt``, a file (stripped, as Ansible) or an executable's stdout."""
    if source in ("prompt", "prompt_ask_vault_pass"):
        label = "" if vault_id == DEFAULT_ID else f" ({vault_id})"
        return prompt(f"Vault password{label}: ").encode("utf-8")
    path = os.path.expanduser(source)
    if os.path.isfile(path) and os.access(path, os.X_OK):
        # A password script (Ansible's ScriptVaultSecret); "-client" scripts get the label.
        argv = [path]
        if os.path.splitext(os.path.basename(path))[0].endswith("-client"):
            argv += ["--vault-id", vault_id]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VaultError(f"{source}: vault password script failed: {exc}") from None
        if done.returncode != 0:
            raise VaultError(f"{source}: vault password script exited {done.returncode}")
        password = done.stdout.strip()
    else:
        try:
            with open(path, "rb") as fh:
                password = fh.read().strip()
        except OSError as exc:
            raise VaultError(
                f"{source}: cannot read the vault password file: {exc.strerror}"
            ) from None
    if not password:
        raise VaultError(f"{source}: the vault password is empty")
    return password


def load_secrets(
    password_files: Sequence[str] = (),
    vault_ids: Sequence[str] = (),
    ask: bool = False,
    prompt: Prompt = getpass.getpass,
) -> list[VaultSecret]:
    """The passwords of ``--vault-id [LABEL@]SOURCE``, ``--vault-password-file`` and
    ``--ask-vault-pass``, in that order (SOURCE: a file, a script or ``prompt``)."""
    specs: list[tuple[str, str]] = []
    for spec in vault_ids:
        label, sep, source = spec.partition("@")
        specs.append((label, source) if sep else (DEFAULT_ID, label))
    specs += [(DEFAULT_ID, path) for path in password_files]
    if ask:
        specs.append((DEFAULT_ID, "prompt"))
    return [VaultSecret(label, _read_source(label, source, prompt)) for label, source in specs]


# --------------------------------------------------------------------------- vaulted values


class Secret(str):
    """Text that came out of a vault: used as the plain string, masked in logs and diffs."""

    __slots__ = ()


class VaultedText(Secret):
    """An inline ``!vault`` value, decrypted; ``ciphertext`` is what ansible-inventory shows."""

    __slots__ = ("ciphertext",)
    ciphertext: str

    def __new__(cls, plain: str, ciphertext: str) -> VaultedText:
        made = super().__new__(cls, plain)
        made.ciphertext = ciphertext
        return made

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        # copy.deepcopy and pickle rebuild it from these (str's own gives the text only)
        return (str.__str__(self), self.ciphertext)


@dataclass(frozen=True)
class Locked:
    """An inline ``!vault`` value no given password opens. Listing shows it as Ansible does;
    using it (a template, a connection password) raises one line saying what to give, as
    Ansible, which decrypts only when a value is used."""

    ciphertext: str = field(repr=False)
    where: str  # file:line of the value
    why: str = f"it is vault-encrypted and no vault password was given; {NO_PASSWORD_HINT}"

    def refusal(self) -> VaultError:
        return VaultError(f"{self.where}: {self.why}")

    def __str__(self) -> str:
        raise self.refusal()

    def __bool__(self) -> bool:
        raise self.refusal()


def as_secrets(value: Any) -> Any:
    """Every string of a value from a vault-encrypted file marked as a Secret (masked)."""
    if isinstance(value, str):
        return Secret(value)
    if isinstance(value, dict):
        return {k: as_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_secrets(v) for v in value]
    return value


def secrets_in(value: object) -> list[str]:
    """Every vault-decrypted string inside a (nested) variable value, for masking."""
    found: list[str] = []
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, Secret):
            found.append(str.__str__(item))
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
    return found
