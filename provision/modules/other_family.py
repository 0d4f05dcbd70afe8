"""Package modules of other OS families (yum, dnf, zypper...): accepted in a playbook, refused
on a host.

Why: real roles support several distributions in one task file, with each family's tasks
behind a guard (``when: ansible_os_family == 'RedHat'``). provision manages Debian and Ubuntu
only; refusing such a role at load for a task that never runs here would refuse most public
roles. So these tasks load (their arguments are not checked: provision does not implement
them) and, if a guard ever lets one run on a host, it fails there with one line saying what to
guard. It fails in ``--check`` too (a TaskFailure, not a "would be possible later" refusal).
"""

from __future__ import annotations

from typing import Any

from provision.modules.base import UNDEFINED, Context, Module, Plan
from provision.modules.control import TaskFailure

# module -> the OS family it is written for (Ansible's ansible_os_family values:
# docs.ansible.com/ansible/latest/collections/ansible/builtin/{yum,dnf,yum_repository,rpm_key}
# _module.html; community.general.zypper, apk, pacman).
FAMILIES = {
    "yum": "RedHat",
    "dnf": "RedHat",
    "dnf5": "RedHat",
    "yum_repository": "RedHat",
    "rpm_key": "RedHat",
    "zypper": "Suse",
    "zypper_repository": "Suse",
    "apk": "Alpine",
    "pacman": "Archlinux",
}
BUILTIN = ("yum", "dnf", "dnf5", "yum_repository", "rpm_key")


class OtherFamilyModule(Module):
    """A package module of another OS family: loads with any arguments, fails when run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.family = FAMILIES[name]

    def check_static(self, args: dict[str, Any]) -> None:
        return None  # not implemented here, so there is nothing to check them against

    def finalize(self, args: dict[str, Any]) -> dict[str, Any]:
        return dict(args)

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        here = "provision manages Debian and Ubuntu hosts"
        family = ctx.value_of("ansible_os_family") if ctx.value_of is not None else UNDEFINED
        if isinstance(family, str):
            here = f"this host's ansible_os_family is {family}"
        raise TaskFailure(
            f"module '{self.name}' is for {self.family}-family hosts and {here}; guard the "
            f"task with `when: ansible_os_family == '{self.family}'`, or use apt"
        )


OTHER_FAMILY_MODULES = tuple(OtherFamilyModule(name) for name in FAMILIES)
OTHER_FAMILY_NAMES = {
    **{f"ansible.builtin.{name}": name for name in BUILTIN},
    **{f"community.general.{name}": name for name in FAMILIES if name not in BUILTIN},
}
