"""Modules the playbook engine knows, by name (see :mod:`provision.modules.base`)."""

from __future__ import annotations

from provision.modules.apt import AptModule
from provision.modules.apt_repository import AptRepositoryModule
from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step
from provision.modules.commands import CommandModule, ShellModule
from provision.modules.control import AssertModule, FailModule
from provision.modules.docker_image import DockerImageModule
from provision.modules.docker_state import DockerStateModule
from provision.modules.files import CopyModule, FileModule, JsonMergeModule, TemplateModule
from provision.modules.kmod import KernelModuleBlacklistModule
from provision.modules.lineinfile import LineInFileModule
from provision.modules.nvidia_state import NvidiaStateModule
from provision.modules.reboot import RebootModule, TaskSkipped
from provision.modules.service import ServiceModule
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
    )
}

__all__ = [
    "MODULES",
    "Arg",
    "ArgError",
    "Context",
    "Module",
    "ModuleError",
    "Plan",
    "Step",
    "TaskSkipped",
]
