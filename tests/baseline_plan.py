"""What the shipped baseline playbooks would do on a host, from recorded facts and state (pure).

The spec tests of the playbooks need the exact repositories, keys, packages and files for OSes
this machine cannot boot (Ubuntu). This walks the playbook the way the engine does (defaults <
inventory < play vars < facts and registered results < -e; ``loop``; ``when``) and renders each
task's arguments with the real templating code, without any host. The read-only state modules'
results are given (recorded), since they are what the host would report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.modules.facts import parse_facts
from provision.playbook import leaf_tasks, load_playbook
from provision.templating import condition, merge_vars, render

REPO = Path(__file__).resolve().parent.parent
PLAYBOOKS = REPO / "playbooks"
FACTS = Path(__file__).resolve().parent / "data" / "facts"
STATE_MODULES = {"nvidia_state", "docker_state"}


@dataclass
class Planned:
    play: str
    task: str
    module: str
    args: dict[str, Any]


def nv_state(**overrides: Any) -> dict[str, Any]:
    """An ``nvidia_state`` result: one Ampere GPU, no driver yet (override what differs)."""
    result: dict[str, Any] = {
        "gpus": [
            {
                "slot": "0000:01:00.0",
                "device_id": "0x20b0",
                "generation": "Ampere",
                "open_supported": True,
                "open_required": False,
            }
        ],
        "gpu_present": True,
        "open_supported": True,
        "recommended_flavour": "open",
        "loaded_version": "",
        "installed_version": "",
        "driver_packages": [],
        "nouveau_loaded": False,
        "reboot_required_file": False,
        "reboot_needed": False,
        "reboot_reasons": [],
        "gpu_processes": [],
        "gpu_process_count": 0,
        "kernel": "",
        "headers_present": False,
        "secure_boot": "disabled",
        "mok_key": "",
        "mok_enrolled": False,
        "dkms_version": "",
        "open_required": False,
        "nvml_version": "",
        "nvml_error": "",
        "changed": False,
        "failed": False,
        "skipped": False,
    }
    result.update(overrides)
    return result


def dk_state(**overrides: Any) -> dict[str, Any]:
    """A ``docker_state`` result: no Docker yet (override what differs)."""
    result: dict[str, Any] = {
        "snap_docker": False,
        "docker_installed": False,
        "docker_packages": [],
        "daemon_running": False,
        "running_containers": 0,
        "runtimes": [],
        "default_runtime": "",
        "data_root": "",
        "nvidia_ctk": "",
        "nvidia_runtime": {"path": "nvidia-container-runtime", "args": []},
        "nvidia_ctk_error": "",
        "changed": False,
        "failed": False,
        "skipped": False,
    }
    result.update(overrides)
    return result


def facts(name: str) -> dict[str, Any]:
    """Facts as the engine derives them from the facts snippet's recorded output."""
    parsed = parse_facts((FACTS / f"{name}.facts").read_text())
    short = {k.removeprefix("ansible_"): v for k, v in parsed.items()}
    return {**parsed, "ansible_facts": short}


def plan(
    playbook: str,
    host_facts: dict[str, Any],
    *,
    hostvars: dict[str, Any] | None = None,
    nv: dict[str, Any] | None = None,
    dk: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    check: bool = False,
    after: dict[str, dict[str, Any]] | None = None,
    policy: dict[str, str] | None = None,
) -> list[Planned]:
    """Every task that would run on the host (``when`` held), with rendered arguments.

    ``nv``/``dk`` are what the state modules report; ``after`` overrides that per registered
    name for the reads made after the changes (by default ``dk_runtime``, the verify play's
    read, lists the nvidia runtime, as it would once the toolkit play has run). ``policy``:
    what ``apt-cache policy`` would give as each package's candidate (``apt_policy``); a package
    not in it has no candidate."""
    book = load_playbook(str(PLAYBOOKS / playbook))
    nv = nv or nv_state()
    dk = dk or dk_state()
    state = {"nvidia_state": nv, "docker_state": dk}
    after = {"dk_runtime": dk_state(runtimes=["nvidia", "runc"]), **(after or {})}
    skipped = {"changed": False, "failed": False, "skipped": True}
    runtime: dict[str, Any] = {
        **host_facts,
        "inventory_hostname": "ws01",
        "inventory_hostname_short": "ws01",
        "group_names": ["gpu"],
        "ansible_check_mode": check,
        "ansible_diff_mode": False,
        "playbook_dir": str(PLAYBOOKS),
    }
    out: list[Planned] = []
    for play in book.plays:
        for task in leaf_tasks(play.tasks):
            variables = merge_vars(hostvars or {}, play.vars, runtime, extra or {}, play.defaults)
            if (
                task.when is not None
                and task.loop is None
                and not condition(task.when, variables.child(task.vars), task.where)
            ):
                if task.register:
                    runtime[task.register] = skipped
                continue
            if task.module == "apt_policy":
                names = render(task.args, variables.child(task.vars), task.where)["name"]
                if task.register:
                    candidates = {n: (policy or {}).get(n, "") for n in names}
                    runtime[task.register] = {
                        "candidates": candidates,
                        "installed": {n: "" for n in names},
                        "changed": False,
                        "failed": False,
                        "skipped": False,
                    }
                out.append(Planned(play.name, task.name, task.module, {"name": names}))
                continue
            if task.module in STATE_MODULES:
                if task.register:
                    runtime[task.register] = after.get(task.register, state[task.module])
                continue
            items: list[Any] = [None]
            if task.loop is not None:
                items = render(task.loop, variables, task.where)
            for item in items:
                scoped = variables.child({**task.vars, **({"item": item} if task.loop else {})})
                if (
                    task.loop is not None
                    and task.when is not None
                    and not condition(task.when, scoped, task.where)
                ):
                    continue
                args = render(task.args, scoped, task.where)
                out.append(Planned(play.name, task.name, task.module, args))
            if task.register:
                runtime[task.register] = {"changed": True, "failed": False, "skipped": False}
    return out


def by_module(planned: list[Planned], module: str) -> list[dict[str, Any]]:
    return [p.args for p in planned if p.module == module]


def failures(planned: list[Planned]) -> list[str]:
    return [p.args.get("msg", "") for p in planned if p.module == "fail"]
