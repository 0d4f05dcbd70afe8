"""THE boolean rule: Ansible's ``boolean()`` (ansible/module_utils/parsing/convert_bool.py,
strict): true is y/yes/on/1/true/t, false is n/no/off/0/false/f, any case, surrounding spaces
ignored; the numbers 1 and 0 count too. Anything else is refused. Playbook keywords, module
arguments, inventory connection variables and the ``bool`` filter all use it (pure)."""

from __future__ import annotations

from typing import Any

TRUE_WORDS = frozenset({"y", "yes", "on", "1", "true", "t"})
FALSE_WORDS = frozenset({"n", "no", "off", "0", "false", "f"})


class NotABoolean(ValueError):
    """The value is none of Ansible's boolean spellings; the caller adds where it was."""


def boolean(value: Any) -> bool:
    """``value`` as a bool by Ansible's strict rule; raises :class:`NotABoolean`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str | bytes):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise NotABoolean(f"{value!r} is not a boolean (use true/false, yes/no, on/off or 1/0)")
