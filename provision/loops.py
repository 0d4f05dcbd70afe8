"""A task's loop as Ansible has it: the items of ``loop``/``with_<lookup>``, and the variables
each item sees (``loop_control``). Pure: the engine renders the value and runs the items.

Sources: docs.ansible.com/ansible/latest/playbook_guide/playbooks_loops.html ("Migrating from
with_X to loop", "Adding controls to loops") and the ``items``, ``list``, ``dict`` and
``fileglob`` lookups (docs.ansible.com/ansible/latest/collections/ansible/builtin/).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import Any

from provision.errors import ProvisionError


class LoopError(ProvisionError):
    """A loop's value is not what its form takes; the message starts with the task."""


def loop_items(kind: str, value: Any, base_dir: str, where: str) -> list[Any]:
    """The items of a rendered loop value: ``loop``/``with_list`` as given, ``with_items``
    flattened one level, ``with_dict`` as ``{key, value}`` pairs, ``with_fileglob`` the
    controller's files matching each pattern (relative ones under ``files/`` beside the play,
    then beside it), as Ansible's lookups give them."""
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise LoopError(f"{where}: with_dict expects a mapping, got {type(value).__name__}")
        return [{"key": k, "value": v} for k, v in value.items()]
    items = value if isinstance(value, list) else [value]
    if kind == "items":
        return [x for item in items for x in (item if isinstance(item, list) else [item])]
    if kind == "fileglob":
        return [path for pattern in items for path in _files_matching(str(pattern), base_dir)]
    if kind == "loop" and not isinstance(value, list):
        raise LoopError(f"{where}: loop must render to a list, got {value!r}")
    return items


def _files_matching(pattern: str, base_dir: str) -> list[str]:
    """The fileglob lookup: files only (no directories), first in the directory that matches."""
    pattern = os.path.expanduser(pattern)
    places = (
        [pattern]
        if os.path.isabs(pattern)
        else [
            os.path.join(base_dir, "files", pattern),
            os.path.join(base_dir, pattern),
        ]
    )
    for place in places:
        found = sorted(p for p in glob.glob(place) if os.path.isfile(p))
        if found:
            return found
    return []


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
