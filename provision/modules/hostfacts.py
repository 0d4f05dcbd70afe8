"""service_facts, package_facts and setup: read-only modules whose facts become host facts.

Their results' ``ansible_facts`` become host variables and join ``ansible_facts``
(``gathers_facts``), as a fact module's do in Ansible: ``ansible_facts.services['ssh.service']``,
``ansible_facts.packages['jq']``. Shapes and rules are Ansible's, for Debian and Ubuntu hosts
(docs.ansible.com/ansible/latest/collections/ansible/builtin/service_facts_module.html,
package_facts_module.html, setup_module.html). Each reads in one shell snippet that rides in
the batched state read; parsing is pure.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, Plan, noop
from provision.modules.facts import FACTS_SCRIPT, parse_facts
from provision.modules.reboot import TaskSkipped

# service_facts on systemd (Ansible's ServiceScanService + SystemctlScanService): init scripts
# from `service --status-all` (where there is no chkconfig/rc-status), then the loaded units,
# then the unit files; a unit file that is not loaded gets its ActiveState from systemctl show.
SERVICES_SCRIPT = "\n".join(
    [
        "export LC_ALL=C",
        "if command -v service >/dev/null 2>&1 && ! command -v chkconfig >/dev/null 2>&1 "
        "&& ! command -v rc-status >/dev/null 2>&1; then",
        "  echo @sysv; service --status-all 2>/dev/null",
        "fi",
        "if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then",
        "  units=$(systemctl list-units --no-pager --type service --all --plain)",
        '  echo @units; printf "%s\\n" "$units"',
        "  loaded=$(printf '%s\\n' \"$units\" | awk '/\\.service/ {print $1}')",
        "  echo @files",
        "  systemctl list-unit-files --no-pager --type service --all | "
        "while read -r unit status _; do",
        '    case "$unit" in *.service*) ;; *) continue ;; esac',
        '    if printf "%s\\n" "$loaded" | grep -qxF -- "$unit"; then active=@loaded; else',
        '      active=$(systemctl show "$unit" --property=ActiveState 2>/dev/null) || active=',
        "    fi",
        '    printf \'%s\\t%s\\t%s\\n\' "$unit" "$status" "$active"',
        "  done",
        "fi",
    ]
)
_SYSV = re.compile(r"^\s*\[ (?P<state>\+|\-) \]\s+(?P<name>.+)$")
_BAD_STATES = ("not-found", "masked", "failed")


def parse_services(text: str) -> dict[str, dict[str, str]]:
    """The snippet's output -> Ansible's ``services``: name -> {name, state, status?, source}."""
    services: dict[str, dict[str, str]] = {}
    section = ""
    for line in text.splitlines():
        if line in ("@sysv", "@units", "@files"):
            section = line
        elif section == "@sysv" and (m := _SYSV.match(line)):
            name = m.group("name")
            state = "running" if m.group("state") == "+" else "stopped"
            services[name] = {"name": name, "state": state, "source": "sysv"}
        elif section == "@units" and ".service" in line and len(line.split()) >= 4:
            fields = line.split()
            status = next((s for s in _BAD_STATES if s in fields[:-1]), fields[2])
            state = "running" if fields[3] == "running" else "stopped"
            services[fields[0]] = {
                "name": fields[0],
                "state": state,
                "status": status,
                "source": "systemd",
            }
        elif section == "@files" and line.count("\t") == 2:
            _unit_files_line(services, *line.split("\t"))
    return services


def _unit_files_line(
    services: dict[str, dict[str, str]], unit: str, status: str, active: str
) -> None:
    if unit not in services:
        state = active.removeprefix("ActiveState=").rstrip() if active else "unknown"
        services[unit] = {"name": unit, "state": state, "status": status, "source": "systemd"}
    elif services[unit].get("status") not in _BAD_STATES:
        services[unit]["status"] = status


class ServiceFactsModule(Module):
    name = "service_facts"
    sets_facts = True
    gathers_facts = True
    spec = ()

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return SERVICES_SCRIPT

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        services = parse_services(state or "")
        if not services:  # Ansible's words and outcome
            raise TaskSkipped(
                "Failed to find any services. This can be due to privileges or some other "
                "configuration issue."
            )
        return noop(f"{len(services)} services", ansible_facts={"services": services})


# package_facts with Ansible's apt manager: what python-apt reports as installed (a current
# version: every dpkg state but not-installed and config-files), read here with dpkg-query.
# python-apt names a package of a foreign architecture NAME:ARCH, a native one NAME.
PACKAGES_SCRIPT = (
    'if command -v dpkg-query >/dev/null 2>&1; then echo "@arch $(dpkg --print-architecture)"; '
    "dpkg-query -W -f='${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\n'"
    "; else echo @no-dpkg; fi"
)


def parse_packages(text: str) -> dict[str, list[dict[str, str]]]:
    """dpkg-query's lines -> Ansible's ``packages``: name -> [{name, version, arch, source}]
    (a list, as Ansible has it: rpm hosts may hold several versions of one package)."""
    packages: dict[str, list[dict[str, str]]] = {}
    native = ""
    for line in text.splitlines():
        if line.startswith("@arch "):
            native = line.split()[1] if len(line.split()) > 1 else ""
        fields = line.split("\t")
        if len(fields) != 4 or len(fields[0]) < 2 or fields[0][1] in "nc":
            continue
        _, name, version, arch = fields
        if arch not in (native, "all"):
            name = f"{name}:{arch}"
        packages.setdefault(name, []).append(
            {"name": name, "version": version, "arch": arch, "source": "apt"}
        )
    return packages


class PackageFactsModule(Module):
    name = "package_facts"
    sets_facts = True
    gathers_facts = True
    spec = (
        Arg("manager", "list", default=["auto"]),
        Arg("strategy", default="first", choices=("first", "all")),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        managers = args.get("manager") or ["auto"]
        for manager in managers if isinstance(managers, list) else [managers]:
            if isinstance(manager, str) and "{{" not in manager and manager not in ("auto", "apt"):
                raise ArgError(
                    f"module 'package_facts': manager {manager!r} is not supported; on Debian "
                    "and Ubuntu hosts give auto or apt"
                )

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return PACKAGES_SCRIPT

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        if (state or "").strip() == "@no-dpkg":
            raise TaskSkipped("no dpkg on the host: package_facts reads apt's packages only")
        packages = parse_packages(state or "")
        return noop(f"{len(packages)} packages", ansible_facts={"packages": packages})


class SetupModule(Module):
    """``setup``: the facts provision gathers (:mod:`provision.modules.facts`), read again;
    ``filter`` keeps the facts matching its shell patterns (``ansible_distribution*``), as in
    Ansible. ``gather_subset``, ``gather_timeout`` and ``fact_path`` are accepted: the set of
    facts is fixed."""

    name = "setup"
    sets_facts = True
    gathers_facts = True
    spec = (
        Arg("gather_subset", "list", default=["all"]),
        Arg("filter", "list", default=[]),
        Arg("gather_timeout", "int", default=10),
        Arg("fact_path", default="/etc/ansible/facts.d"),
    )

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return FACTS_SCRIPT

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        facts = parse_facts(state or "")
        patterns = [str(p) for p in args["filter"]]
        if patterns:
            facts = {k: v for k, v in facts.items() if any(fnmatch.fnmatch(k, p) for p in patterns)}
        return noop(f"{len(facts)} facts", ansible_facts=facts)
