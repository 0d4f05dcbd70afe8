"""reboot: restart a host, only when allowed, never the control machine, waiting with a bound.

A reboot is allowed by the variable ``allow_reboot: true`` (play vars, inventory or ``-e``; the
CLI's ``--allow-reboot`` sets it). The plan is pure like every module's; carrying it out needs
the controller (wait, reconnect), so the engine hands this module its session through
:meth:`RebootModule.execute`. The boot id tells a real reboot apart: "did not go down" (same boot
id after ``down_timeout``) and "never came back" (it went away and never answered again) are
different failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from provision.booleans import TRUE_WORDS
from provision.errors import ProvisionError
from provision.hostkeys import HostKeyError
from provision.modules.base import Arg, Context, Module, ModuleError, Plan, Step
from provision.ssh import Session

TRIGGER = "nohup sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 &"
READ_IDS = "cat /proc/sys/kernel/random/boot_id; cat /etc/machine-id 2>/dev/null || echo none"


class TaskSkipped(ProvisionError):
    """The task does not apply to this host (reboot not allowed, the control machine)."""


def controller_machine_id(path: str = "/etc/machine-id") -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def parse_ids(text: str | None) -> tuple[str, str]:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return (lines[0] if lines else "", lines[1] if len(lines) > 1 else "")


class RebootModule(Module):
    name = "reboot"
    acts_on_controller = True  # waits for the host to go down and come back, reconnects
    spec = (
        Arg("reboot_timeout", "int", default=600),
        Arg("down_timeout", "int", default=120),
        Arg("msg", default="reboot by provision"),
        # Ansible's reboot: seconds to wait after the reboot command before checking, and a
        # command that must succeed on the new boot before the play goes on (default: none)
        Arg("post_reboot_delay", "int", default=0),
        Arg("test_command"),
    )

    def prepare(self, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Controller side: is a reboot allowed here, and which machine is the controller."""
        allowed = ""
        if ctx.render is not None:
            allowed = ctx.render("{{ allow_reboot | default(false) }}").strip().lower()
        # Ansible's true spellings; anything else (a typo too) leaves reboots refused
        return {**args, "_allowed": allowed in TRUE_WORDS, "_controller": controller_machine_id()}

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return READ_IDS

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        if not args.get("_allowed"):
            raise TaskSkipped(
                "reboot not allowed: set allow_reboot=true (-e allow_reboot=true or "
                "--allow-reboot) to let provision reboot hosts"
            )
        boot_id, machine_id = parse_ids(state)
        if not boot_id:
            raise ModuleError("cannot read the host's boot id (/proc/sys/kernel/random/boot_id)")
        if machine_id and machine_id == args.get("_controller"):
            raise TaskSkipped("this host is the control machine: provision never reboots it")
        return Plan(
            True,
            changes=[f"reboot (boot id {boot_id})"],
            steps=[Step(TRIGGER)],
            result={"boot_id_before": boot_id},
        )

    def execute(
        self,
        args: dict[str, Any],
        plan: Plan,
        session: Session,
        reconnect: Callable[[], None],
        become: bool | None,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """Trigger the reboot, then wait until the host answers with a new boot id."""
        if getattr(getattr(session, "spec", None), "connection", "ssh") == "local":
            raise TaskSkipped("the connection is local (the control machine): never rebooted")
        old = plan.result["boot_id_before"]
        started = time.monotonic()
        done = session.run(TRIGGER, become=become, timeout=30)
        if done.exit_code != 0:
            raise ModuleError(
                f"could not start the reboot (exit {done.exit_code}): {done.stderr.strip()[-300:]}"
            )
        time.sleep(1.0 + max(0, args.get("post_reboot_delay") or 0))
        went_down = False
        not_ready = False  # back on a new boot, but test_command does not succeed yet
        last_error = ""
        deadline = started + args["reboot_timeout"]
        down_by = started + args["down_timeout"]
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            try:
                reconnect()
                out = session.run(READ_IDS, timeout=10)
                boot_id, _ = parse_ids(out.stdout)
                if out.exit_code == 0 and boot_id and boot_id != old:
                    if not self._test_passes(args, session, become):
                        not_ready = True
                        time.sleep(1.0)
                        continue
                    return {
                        "boot_id_before": old,
                        "boot_id": boot_id,
                        "elapsed": round(time.monotonic() - started, 1),
                        "rebooted": True,
                    }
                if not went_down and time.monotonic() >= down_by:
                    raise ModuleError(
                        f"the host did not go down: same boot id {old} after "
                        f"{args['down_timeout']} s"
                    )
            except ModuleError:
                raise
            except HostKeyError as exc:  # answering with another key is no reason to wait
                raise ModuleError(f"after the reboot: {exc}") from None
            except Exception as exc:  # connection refused, reset, timed out: it is down
                went_down = True
                last_error = str(exc)[:200]
            time.sleep(1.0)
        if not_ready:
            raise ModuleError(
                f"the host came back, but test_command `{args['test_command']}` did not "
                f"succeed within {args['reboot_timeout']} s"
            )
        if went_down:
            raise ModuleError(
                f"the host went down and never came back within {args['reboot_timeout']} s "
                f"(last error: {last_error})"
            )
        raise ModuleError(
            f"the host did not go down: same boot id {old} after {args['reboot_timeout']} s"
        )

    @staticmethod
    def _test_passes(args: dict[str, Any], session: Session, become: bool | None) -> bool:
        """The new boot is ready when ``test_command`` (if any) exits 0."""
        if not args.get("test_command"):
            return True
        return session.run(args["test_command"], become=become, timeout=30).exit_code == 0


__all__ = ["RebootModule", "TaskSkipped"]
