"""Modules the playbook engine knows, by name (see :mod:`provision.modules.base`)."""

from __future__ import annotations

from provision.modules.accounts import GroupModule, UserModule
from provision.modules.apt import AptModule
from provision.modules.apt_key import AptKeyModule
from provision.modules.apt_policy import AptPolicyModule
from provision.modules.apt_repository import AptRepositoryModule
from provision.modules.authorized_key import AuthorizedKeyModule
from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step
from provision.modules.commands import CommandModule, RawModule, ShellModule
from provision.modules.control import (
    AssertModule,
    DebugModule,
    FailModule,
    IncludeTasksModule,
    IncludeVarsModule,
    MetaModule,
    SetFactModule,
)
from provision.modules.deb822_repository import Deb822RepositoryModule
from provision.modules.docker_image import DockerImageModule
from provision.modules.docker_state import DockerStateModule
from provision.modules.fetch import FetchModule
from provision.modules.files import CopyModule, FileModule, JsonMergeModule, TemplateModule
from provision.modules.find import FindModule
from provision.modules.get_url import GetUrlModule
from provision.modules.hostfacts import PackageFactsModule, ServiceFactsModule, SetupModule
from provision.modules.include_role import IncludeRoleModule
from provision.modules.kmod import (
    KernelBlacklistModule,
    KernelModuleBlacklistModule,
    ModprobeModule,
)
from provision.modules.lineinfile import LineInFileModule
from provision.modules.nvidia_state import NvidiaStateModule
from provision.modules.other_family import OTHER_FAMILY_MODULES, OTHER_FAMILY_NAMES
from provision.modules.pause import PauseModule
from provision.modules.reboot import RebootModule, TaskSkipped
from provision.modules.service import ServiceModule
from provision.modules.stat import StatModule
from provision.modules.tempfiles import TempfileModule
from provision.modules.textedit import BlockInFileModule, ReplaceModule
from provision.modules.unarchive import UnarchiveModule
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
        IncludeRoleModule(),
        GetUrlModule(),
        AptKeyModule(),
        Deb822RepositoryModule(),
        BlockInFileModule(),
        ReplaceModule(),
        ModprobeModule(),
        KernelBlacklistModule(),
        ServiceFactsModule(),
        PackageFactsModule(),
        SetupModule(),
        UnarchiveModule(),
        TempfileModule(),
        FindModule(),
        RawModule(),
        PauseModule(),
        AuthorizedKeyModule(),
        FetchModule(),
        *OTHER_FAMILY_MODULES,
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
            "include_role",
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
    # the apt family of issue 14 item 2
    **{
        f"ansible.builtin.{name}": name
        for name in ("apt_key", "apt_repository", "deb822_repository", "get_url")
    },
    # the small modules of issue 14 item 3, under the collections Ansible puts them in
    **{
        f"ansible.builtin.{name}": name
        for name in (
            "blockinfile",
            "replace",
            "service_facts",
            "package_facts",
            "setup",
            "unarchive",
            "tempfile",
            "find",
        )
    },
    **{f"community.general.{name}": name for name in ("modprobe", "kernel_blacklist")},
    **OTHER_FAMILY_NAMES,
    "ansible.builtin.raw": "raw",
    "ansible.builtin.pause": "pause",
    "ansible.posix.authorized_key": "authorized_key",
    "ansible.builtin.fetch": "fetch",
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
