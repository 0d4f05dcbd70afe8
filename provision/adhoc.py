"""Ad-hoc work on many hosts (`provision ping`, `provision run`): the tasks and their report.

Kept apart from the CLI so the shaping of results is pure and testable; the CLI only prints.
"""

from __future__ import annotations

from collections import Counter
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


def _reason(o: HostOutcome) -> str:
    """The reason without the host-name prefix of lower layers: the line starts with it."""
    return o.reason.removeprefix(f"{o.host}: ")


def _header(o: HostOutcome, ok_word: str) -> str:
    if o.state is HostState.OK:
        return f"{o.host} | {ok_word} | {o.duration * 1000:.0f} ms"
    if o.state is HostState.FAILED:
        rc = "" if o.exit_code is None else f" | rc={o.exit_code}"
        # A command that ran and exited non-zero speaks through its output, shown below the head.
        reason = "" if isinstance(o.value, CommandResult) else _reason(o)
        return f"{o.host} | FAILED{rc} | {reason}" if reason else f"{o.host} | FAILED{rc}"
    return f"{o.host} | {o.state.value.upper()} | {_reason(o)}"


def render_ping(outcomes: Mapping[str, HostOutcome]) -> str:
    """One line per host in inventory order, like ``ansible -m ping`` but shorter."""
    return "\n".join(_header(o, "SUCCESS") for o in outcomes.values())


def render_run(outcomes: Mapping[str, HostOutcome]) -> str:
    """Output grouped per host, each block headed the way ``ansible -m shell`` heads it."""
    blocks = []
    for o in outcomes.values():
        head = _header(o, "OK")
        result = o.value if isinstance(o.value, CommandResult) else None
        body = ""
        if result is not None:
            body = result.stdout.rstrip("\n")
            if result.stderr.strip():
                body = (body + "\n" if body else "") + result.stderr.rstrip("\n")
        elif o.state is HostState.FAILED and o.stderr_tail:
            body = o.stderr_tail.rstrip("\n")
        blocks.append(f"{head} >>\n{body}" if body else head)
    return "\n".join(blocks)


def summary(outcomes: Mapping[str, HostOutcome], elapsed: float) -> str:
    """The closing line: counts per state and the wall time."""
    counts = Counter(o.state for o in outcomes.values())
    parts = [f"{counts[s]} {s.value}" for s in HostState if counts[s]]
    n = len(outcomes)
    return f"{n} host{'s' if n != 1 else ''}: {', '.join(parts) or 'none'} in {elapsed:.2f} s"
