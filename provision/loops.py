"""A task's loop as Ansible has it: the items of ``loop``/``with_<lookup>``, and the variables
each item sees (``loop_control``). Pure: the engine renders the value and runs the items.

Sources: docs.ansible.com/ansible/latest/playbook_guide/playbooks_loops.html ("Migrating from
with_X to loop", "Adding controls to loops") and the ``items``, ``list``, ``dict`` and
``fileglob`` lookups (docs.ansible.com/ansible/latest/collections/ansible/builtin/).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2

from provision.ansible_filters import LOOKUPS, run_lookup
from provision.errors import ProvisionError


class LoopError(ProvisionError):
    """A loop's value is not what its form takes; the message starts with the task."""


def loop_items(
    kind: str, value: Any, base_dir: str, where: str, role_path: str | None = None
) -> list[Any]:
    """The items of a rendered loop value: ``loop`` as given (a list), ``with_<lookup>`` the
    lookup's answer for the value, as Ansible runs it (``query(lookup, value)``): with_items
    flattened one level, with_dict ``{key, value}`` pairs, with_fileglob the controller's
    files (under ``files/`` beside the play, then beside it; a role task's role first)..."""
    if kind == "loop":
        if not isinstance(value, list):
            raise LoopError(f"{where}: loop must render to a list, got {value!r}")
        return value
    if kind == "dict" and not isinstance(value, Mapping):
        raise LoopError(f"{where}: with_dict expects a mapping, got {type(value).__name__}")
    terms = value if isinstance(value, list) else [value]
    places = {"playbook_dir": base_dir, "role_path": role_path}
    try:
        return run_lookup(kind, terms, places)
    except jinja2.TemplateError as exc:
        raise LoopError(f"{where}: with_{kind}: {exc}") from None


def item_scope(
    items: list[Any],
    index: int,
    *,
    loop_var: str,
    index_var: str | None,
    extended: bool,
) -> dict[str, Any]:
    """The variables item ``index`` runs with: ``loop_var`` (``item``), ``index_var``,
    ``ansible_loop_var`` and, with ``extended``, ``ansible_loop``."""
    scope: dict[str, Any] = {loop_var: items[index], "ansible_loop_var": loop_var}
    if index_var:
        scope[index_var] = index
        scope["ansible_index_var"] = index_var
    if extended:
        length = len(items)
        scope["ansible_loop"] = {
            "allitems": items,
            "index": index + 1,
            "index0": index,
            "revindex": length - index,
            "revindex0": length - index - 1,
            "first": index == 0,
            "last": index == length - 1,
            "length": length,
            **({"previtem": items[index - 1]} if index > 0 else {}),
            **({"nextitem": items[index + 1]} if index < length - 1 else {}),
        }
    return scope


# Ansible's with_<lookup> forms (each is ``query(lookup, value)``: docs.ansible.com/ansible/
# latest/playbook_guide/playbooks_loops.html, "Migrating from with_X to loop") -> the lookup.
WITH_LOOPS = {f"with_{name}": name for name in LOOKUPS}
