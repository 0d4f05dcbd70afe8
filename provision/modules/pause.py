"""pause: wait a number of seconds or minutes, as ansible.builtin.pause does.

Ansible pauses the play once for all hosts; here each host's walk waits the same time in its
own thread, so the play's wall time is the same. A ``prompt`` waits for a person at the
keyboard, which an unattended run (provision's normal case: many hosts, no terminal per
host) cannot offer: it is refused at load, saying to use ``seconds``/``minutes``.
"""

from __future__ import annotations

import time
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, Plan, noop


class PauseModule(Module):
    name = "pause"
    spec = (
        Arg("seconds"),
        Arg("minutes"),
        Arg("prompt"),
        Arg("echo", "bool", default=True),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        if args.get("seconds") is not None and args.get("minutes") is not None:
            raise ArgError("module 'pause': give 'seconds' or 'minutes', not both")
        if args.get("prompt") is not None and _duration(args) is None:
            raise ArgError(
                "module 'pause': a prompt waits for a person; provision runs unattended, so "
                "give 'seconds' or 'minutes' (a prompt beside them is shown as a message)"
            )

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        seconds = _duration(args) or 0.0
        # The wait itself: a controller-side sleep when the task runs (in --check too, as
        # Ansible's pause does); the plan has nothing to change on the host.
        started = time.monotonic()
        time.sleep(seconds)
        delta = round(time.monotonic() - started, 1)
        return noop(
            f"paused for {seconds:g} seconds",
            delta=delta,
            echo=args["echo"],
            rc=0,
            stdout=f"Paused for {seconds / 60 if args.get('minutes') else seconds:g} "
            f"{'minutes' if args.get('minutes') else 'seconds'}",
            stderr="",
            user_input="",
        )


def _duration(args: dict[str, Any]) -> float | None:
    """The wait in seconds (None: none given); a template stays unknown until it runs."""
    for key, scale in (("seconds", 1.0), ("minutes", 60.0)):
        value = args.get(key)
        if value is None:
            continue
        if isinstance(value, str) and "{{" in value:
            return 0.0  # rendered when the task runs; finalize checks it then
        try:
            return float(str(value)) * scale
        except ValueError:
            raise ArgError(f"module 'pause': '{key}' must be a number, got {value!r}") from None
    return None
