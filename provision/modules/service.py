"""service (also Ansible's ``systemd``/``systemd_service``): systemd units masked or not,
started, stopped, restarted or reloaded, enabled or not.

``daemon-reload`` runs when systemd itself says the unit's files changed on disk
(``NeedDaemonReload=yes``), or when ``daemon_reload: true`` asks for it, before anything else;
``daemon_reload`` alone (no ``name``) only reloads, as in Ansible's systemd module. ``masked``
is applied before the rest, as Ansible's systemd module does (an unmasked unit can then start).
"""

from __future__ import annotations

from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step, noop
from provision.shell import quote

_ENABLED = {"enabled", "enabled-runtime", "static", "indirect", "generated", "alias"}
_RUNNING = {"active", "activating", "reloading", "deactivating"}


class ServiceModule(Module):
    name = "service"
    spec = (
        Arg("name", aliases=("service", "unit")),
        Arg("state", choices=("started", "stopped", "restarted", "reloaded")),
        Arg("enabled", "bool"),
        Arg("masked", "bool"),
        Arg("daemon_reload", "bool", default=False, aliases=("daemon-reload",)),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if args.get("name") is None and not args.get("daemon_reload"):
            raise ArgError(f"module '{self.name}': missing required argument 'name'")
        if args.get("name") is None and any(
            args.get(k) is not None for k in ("state", "enabled", "masked")
        ):
            raise ArgError(f"module '{self.name}': state, enabled and masked need a 'name'")

    def state_script(self, args: dict[str, Any], ctx: Context) -> str | None:
        if args.get("name") is None:
            return None
        n = quote(args["name"])
        return "\n".join(
            [
                f"echo active=$(systemctl is-active {n} 2>/dev/null)",
                f"echo enabled=$(systemctl is-enabled {n} 2>/dev/null)",
                f"systemctl show -p LoadState -p NeedDaemonReload {n} 2>/dev/null",
            ]
        )

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        if args["name"] is None:  # daemon_reload alone
            return Plan(
                True,
                changes=["systemctl daemon-reload"],
                steps=[Step("systemctl daemon-reload")],
            )
        name, want, enabled = args["name"], args["state"], args["enabled"]
        st: dict[str, str] = {}
        for line in (state or "").splitlines():
            key, _, value = line.partition("=")
            st[key.strip()] = value.strip()
        n = quote(name)
        changes: list[str] = []
        cmds: list[str] = []
        if st.get("NeedDaemonReload") == "yes" or args["daemon_reload"]:
            changes.append("systemctl daemon-reload")
            cmds.append("systemctl daemon-reload")
        load = st.get("LoadState", "")
        masked = args["masked"]
        if masked is True and load != "masked":
            changes.append(f"mask {name}")
            cmds.append(f"systemctl mask {n}")
        elif masked is False and load == "masked":
            changes.append(f"unmask {name}")
            cmds.append(f"systemctl unmask {n}")
            load = "loaded"
        if masked is True and (want in ("started", "restarted", "reloaded") or enabled):
            raise ModuleError(f"unit {name}: masked: true cannot also start or enable it")
        if load == "masked" and (want in ("started", "restarted", "reloaded") or enabled):
            raise ModuleError(f"unit {name} is masked; unmask it first")
        if load == "not-found" and not cmds:
            raise ModuleError(f"unit {name} not found (LoadState=not-found)")
        active = st.get("active", "")
        running = active in _RUNNING
        if want == "started" and not running:
            changes.append(f"start {name}")
            cmds.append(f"systemctl start {n}")
        elif want == "stopped" and running:
            changes.append(f"stop {name}")
            cmds.append(f"systemctl stop {n}")
        elif want == "restarted":
            changes.append(f"restart {name}")
            cmds.append(f"systemctl restart {n}")
        elif want == "reloaded":
            verb = "reload" if running else "start"
            changes.append(f"{verb} {name}")
            cmds.append(f"systemctl {verb} {n}")
        is_enabled = st.get("enabled", "") in _ENABLED
        if enabled is True and not is_enabled:
            changes.append(f"enable {name}")
            cmds.append(f"systemctl enable {n}")
        elif enabled is False and st.get("enabled") == "enabled":
            changes.append(f"disable {name}")
            cmds.append(f"systemctl disable {n}")
        if not changes:
            parts = [f"{name} is {active or 'unknown'}"]
            if enabled is not None:
                parts.append(f"is-enabled {st.get('enabled') or 'unknown'}")
            return noop(", ".join(parts), status={"active": active, "enabled": st.get("enabled")})
        return Plan(True, changes=changes, steps=[Step("set -e\n" + "\n".join(cmds))])
