"""Modules the playbook engine knows, by name (see :mod:`provision.modules.base`)."""

from __future__ import annotations

from provision.modules.accounts import GroupModule, UserModule
from provision.modules.apt import AptModule
from provision.modules.apt_policy import AptPolicyModule
from provision.modules.apt_repository import AptRepositoryModule
from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step
from provision.modules.commands import CommandModule, ShellModule
from provision.modules.control import (
    AssertModule,
    DebugModule,
    FailModule,
    IncludeTasksModule,
    IncludeVarsModule,
    MetaModule,
    SetFactModule,
)
from provision.modules.docker_image import DockerImageModule
from provision.modules.docker_state import DockerStateModule
from provision.modules.files import CopyModule, FileModule, JsonMergeModule, TemplateModule
from provision.modules.kmod import KernelModuleBlacklistModule
from provision.modules.lineinfile import LineInFileModule
from provision.modules.nvidia_state import NvidiaStateModule
from provision.modules.reboot import RebootModule, TaskSkipped
from provision.modules.service import ServiceModule
from provision.modules.stat import StatModule
from provision.modules.users import UserGroupsModule

MODULES: dict[str, Module] = {
    m.name: m
    for m in (
        FileModule(),
        CopyModule(),
        TemplateModule(),
        JsonMergeModule(),
        CommandModule(),
        ShellModule(),
        ServiceModule(),
        AptModule(),
        AptPolicyModule(),
        AptRepositoryModule(),
        RebootModule(),
        UserGroupsModule(),
        KernelModuleBlacklistModule(),
        LineInFileModule(),
        DockerImageModule(),
        NvidiaStateModule(),
        DockerStateModule(),
        FailModule(),
        AssertModule(),
        StatModule(),
        UserModule(),
        GroupModule(),
        SetFactModule(),
        DebugModule(),
        MetaModule(),
        IncludeTasksModule(),
        IncludeVarsModule(),
    )
}

# Ansible's names for modules provision has, mapped to ours: the fully qualified names, and
# the names Ansible gives the same job (docs.ansible.com/ansible/latest/collections/ansible/
# builtin/: systemd and systemd_service are one module; package picks apt on Debian/Ubuntu).
ANSIBLE_NAMES: dict[str, str] = {
    **{
        f"ansible.builtin.{name}": name
        for name in (
            "apt",
            "assert",
            "command",
            "copy",
            "debug",
            "fail",
            "file",
            "group",
            "include_tasks",
            "include_vars",
            "lineinfile",
            "meta",
            "reboot",
            "service",
            "set_fact",
            "shell",
            "stat",
            "template",
            "user",
        )
    },
    **{
        alias: "service"
        for alias in (
            "systemd",
            "systemd_service",
            "ansible.builtin.systemd",
            "ansible.builtin.systemd_service",
        )
    },
    "package": "apt",
    "ansible.builtin.package": "apt",
}


def module_named(name: str) -> str | None:
    """Our module for a task key: its own name or one of Ansible's names; None if unknown."""
    if name in MODULES:
        return name
    return ANSIBLE_NAMES.get(name)


__all__ = [
    "ANSIBLE_NAMES",
    "MODULES",
    "Arg",
    "ArgError",
    "Context",
    "Module",
    "ModuleError",
    "Plan",
    "Step",
    "TaskSkipped",
    "module_named",
]
