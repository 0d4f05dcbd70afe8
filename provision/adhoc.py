"""Ad-hoc work on many hosts (`provision ping`, `provision run`): the tasks and the exit code.

Their report is rendered by provision/output/ (text and JSON); the CLI only writes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from provision.executor import HostOutcome, HostState, ansible_exit_code
from provision.ssh import CommandFailed, CommandResult, Session

_UNREACHABLE_STATES = (HostState.UNREACHABLE, HostState.HOSTKEY_REFUSED, HostState.TIMED_OUT)


def ping_task(session: Session) -> CommandResult:
    """Connect and run ``true``: proves login, a shell and (with become) sudo all work."""
    result = session.run("true")
    if not result.ok:
        raise CommandFailed(result)
    return result


def command_task(command: str) -> Callable[[Session], CommandResult]:
    """A task running the user's command verbatim: the user wrote it for a shell, as in Ansible."""

    def task(session: Session) -> CommandResult:
        result = session.run(command)
        if not result.ok:
            raise CommandFailed(result)
        return result

    return task


def exit_code(outcomes: Mapping[str, HostOutcome]) -> int:
    """Ansible's rule; host key refusals and timeouts count as unreachable."""
    states = {o.state for o in outcomes.values()}
    return ansible_exit_code(bool(states & set(_UNREACHABLE_STATES)), HostState.FAILED in states)
