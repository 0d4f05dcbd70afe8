"""apt_policy: read (never change) what apt would install: each package's candidate and installed
version, as ``apt-cache policy`` prints them with the preferences in force.

The driver playbook asks it after NVIDIA's pinning package is installed and before the driver's
own transaction, to stop when apt would install another branch than the one asked for (a
floating dependency, or one of Ubuntu's retired branches, which are transitional packages to the
next branch). Like ``nvidia_state`` its plan is a no-op whose result a playbook registers.
"""

from __future__ import annotations

from typing import Any

from provision.modules.apt import parse_state, split_pin
from provision.modules.base import Arg, Context, Module, Plan, noop
from provision.shell import join

NONE = "(none)"  # apt-cache policy's word for "no candidate"


def policy_script(names: list[str]) -> str:
    return "echo @@policy\nLANG=C apt-cache policy " + join(names) + " 2>/dev/null"


def parse_policy(text: str | None, names: list[str]) -> dict[str, dict[str, str]]:
    """``apt-cache policy`` output -> {"candidates": {name: ver}, "installed": {name: ver}};
    "" where apt has no candidate (or nothing is installed)."""
    st = parse_state(text)
    installed: dict[str, str] = {}
    candidates: dict[str, str] = {}
    for name in names:
        cand = st.candidates.get(name, "")
        candidates[name] = "" if cand == NONE else cand
        installed[name] = st.installed.get(name, "")
    return {"candidates": candidates, "installed": installed}


class AptPolicyModule(Module):
    name = "apt_policy"
    spec = (Arg("name", "list", required=True),)

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return policy_script([split_pin(str(n))[0] for n in args["name"]])

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        names = [split_pin(str(n))[0] for n in args["name"]]
        result = parse_policy(state, names)
        shown = ", ".join(f"{n} {result['candidates'][n] or NONE}" for n in names)
        return noop(f"candidates: {shown}", **result)


__all__ = ["AptPolicyModule", "parse_policy", "policy_script"]
