"""Ansible's typing of INI inventory values (ansible-core 2.19), pure.

Why this exists: the same text means different things to different Ansible releases. Since 2.19
every value on a host line *and* in a ``[group:vars]`` section goes through Python's
``ast.literal_eval``: ``42`` is an int, ``True`` a bool, ``"[1, 2]"`` a list, ``'x'`` loses its
quotes, and anything that is not a Python literal (``true``, ``FALSE``, ``10.0.0.1``) stays the
string it was. Older releases kept ``:vars`` values as strings; playbooks written against 2.19
compare against the typed values, so we must type them the same way.
"""

from __future__ import annotations

import ast
import shlex
import warnings
from typing import Any

from provision.booleans import NotABoolean, boolean
from provision.errors import ConfigError

__all__ = ["parse_value", "split_host_line", "split_var_line"]


def parse_value(text: str) -> Any:
    """Type one INI value the way ansible-core 2.19's ini plugin does.

    A Python literal becomes its value (tuples and sets become lists, bytes become text,
    complex numbers and ``...`` become their text); anything else stays the original string.
    """
    try:
        with warnings.catch_warnings():
            # "\d" in a value is an invalid escape to Python; Ansible silences the warning too.
            warnings.simplefilter("ignore", SyntaxWarning)
            value: Any = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    except (TypeError, MemoryError, RecursionError):
        # Ansible aborts the whole parse on these ({[1]: 2}, absurd nesting); a value that
        # Python cannot evaluate safely is more useful to a user as the string they wrote.
        return text
    return _coerce(value)


def _coerce(value: Any) -> Any:
    """Map what ``literal_eval`` can return onto the types inventory variables may hold."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_coerce(v) for v in value]
    if isinstance(value, dict):
        return {k: _coerce(v) for k, v in value.items()}
    if value is Ellipsis:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return value


def split_host_line(line: str) -> list[str]:
    """Split a host line shell-style (``#`` starts a comment), as Ansible does.

    Raises ``ValueError`` (unbalanced quotes); the caller adds file and line.
    """
    return shlex.split(line, comments=True, posix=True)


def split_var_line(line: str) -> tuple[str, str] | None:
    """``key = value`` from a ``:vars`` section; None when the line has no ``=``.

    Only the first ``=`` splits: values may contain more of them (``opts=a=b``), and no
    shell-style unquoting happens here (that is ``parse_value``'s job), exactly like Ansible.
    """
    if "=" not in line:
        return None
    key, value = line.split("=", 1)
    return key.strip(), value.strip()


def to_bool(value: Any, what: str = "value") -> bool:
    """Ansible's ``boolean()`` (:mod:`provision.booleans`), raising ConfigError naming
    ``what``; and the empty string is false: an empty variable (``ansible_become=`` on a host
    line) or a condition that renders "" is false to Ansible, which tests those by truth value
    rather than through ``boolean()``."""
    if isinstance(value, str) and not value.strip():
        return False
    try:
        return boolean(value)
    except NotABoolean as exc:
        raise ConfigError(f"{what}: {exc}") from None
