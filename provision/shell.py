"""The one quoting helper, sudo wrapping and secret masking (pure).

Every value that ends up inside a remote shell command goes through :func:`quote` or :func:`join`,
so a host name, path or user value holding ``;``, ``$()``, backticks, quotes or newlines stays one
literal word (field notes G4). Secrets never go into a command string at all: sudo reads its
password on stdin (``-S``), so masking here is a second line of defence for messages and logs.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

MASK = "********"


def quote(value: object) -> str:
    """Quote one value as a single POSIX shell word (``shlex.quote(str(value))``)."""
    return shlex.quote(str(value))


def join(argv: Sequence[object]) -> str:
    """Quote every element and join them with spaces: a safe command line from parts."""
    return " ".join(quote(a) for a in argv)


def sudo_wrap(command: str, user: str = "root", password: bool = False) -> str:
    """Run ``command`` (a shell string) as ``user`` through sudo.

    With ``password`` sudo reads it from stdin (``-S``) with an empty prompt so nothing but the
    command's own output appears; ``-k`` ignores cached credentials so sudo always consumes the
    password line and never hands it to the command. Without a password ``-n`` makes sudo fail
    at once instead of waiting for a prompt nobody answers.
    """
    inner = join(["sh", "-c", command])
    if password:
        return f"sudo -H -k -S -p '' -u {quote(user)} -- {inner}"
    return f"sudo -H -n -u {quote(user)} -- {inner}"


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with a fixed mask."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
