"""The text format of ``ping``, ``run`` and ``apply`` (pure: report model in, lines out).

The audit's text (its table) is provision/audit/table.py, picked by provision/audit/output.py;
apply's grouping of results as they arrive is provision/applylog.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from provision.executor import HostOutcome, HostState
from provision.output.reports import AdhocReport, ApplyReport
from provision.ssh import CommandResult

if TYPE_CHECKING:
    from provision.applylog import Group
    from provision.engine import HostStats


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


_PIECE = 1 << 20  # characters per write of a host's output: each write copies only this much


def _output_pieces(text: str) -> Iterator[str]:
    """``text`` without its trailing newlines, in slices of :data:`_PIECE` characters: a host's
    output is the run's output budget (tens of MB), and slicing it keeps one copy of it alive,
    where ``rstrip`` and joining the whole report made four (issue 13, item 8)."""
    end = len(text)
    while end and text[end - 1] == "\n":
        end -= 1
    for start in range(0, end, _PIECE):
        yield text[start : min(end, start + _PIECE)]


def _shown_streams(o: HostOutcome) -> list[str]:
    """The host's output under its head: stdout, then stderr unless it is only whitespace."""
    result = o.value if isinstance(o.value, CommandResult) else None
    if result is None:
        tail = o.stderr_tail if o.state is HostState.FAILED else ""
        return [tail] if tail.rstrip("\n") else []
    # counted, not stripped: a strip would copy the whole output only to test it
    streams = [result.stdout] if result.stdout.count("\n") < len(result.stdout) else []
    if result.stderr and not result.stderr.isspace():
        streams.append(result.stderr)
    return streams


def run_pieces(outcomes: Mapping[str, HostOutcome]) -> Iterator[str]:
    """Output grouped per host, each block headed the way ``ansible -m shell`` heads it, in
    pieces to be written one after the other (never joined: see :func:`_output_pieces`)."""
    for i, o in enumerate(outcomes.values()):
        if i:
            yield "\n"
        yield _header(o, "OK")
        streams = _shown_streams(o)
        if streams:
            yield " >>\n"
        for j, stream in enumerate(streams):
            if j:
                yield "\n"
            yield from _output_pieces(stream)


def adhoc_pieces(report: AdhocReport) -> Iterator[str]:
    """What ``ping`` / ``run`` print on stdout, in pieces."""
    if report.command == "ping":
        yield render_ping(report.outcomes)
    else:
        yield from run_pieces(report.outcomes)
    yield "\n"


def summary(outcomes: Mapping[str, HostOutcome], elapsed: float) -> str:
    """The closing line (stderr, in every format): counts per state and the wall time."""
    counts = Counter(o.state for o in outcomes.values())
    parts = [f"{counts[s]} {s.value}" for s in HostState if counts[s]]
    n = len(outcomes)
    return f"{n} host{'s' if n != 1 else ''}: {', '.join(parts) or 'none'} in {elapsed:.2f} s"


def recap_lines(stats: Mapping[str, HostStats]) -> list[str]:
    """``PLAY RECAP`` and one line per host, spaced like ansible-playbook's; a host that
    pulled images adds ``pulled=1.2GB pull_s=3.4`` (the one recap: no second table)."""
    from provision.engine import human_bytes

    lines = ["PLAY RECAP " + "*" * 69]
    for host, s in stats.items():
        pulled = ""
        if s.pulls:
            size = human_bytes(s.pulled_bytes).replace(" ", "")
            pulled = f" pulled={size} pull_s={s.pull_seconds:.1f}"
        lines.append(
            f"{host:<26} : ok={s.ok:<4} changed={s.changed:<4} unreachable={s.unreachable:<4} "
            f"failed={s.failed:<4} skipped={s.skipped:<4} rescued={s.rescued:<4} "
            f"ignored={s.ignored:<4}{pulled}".rstrip()
        )
    return lines


def recap_total(stats: Mapping[str, HostStats], elapsed: float) -> str:
    """One line under the recap: hosts by their worst outcome, and the time the run took."""
    counts = {"unreachable": 0, "failed": 0, "changed": 0, "ok": 0}
    for s in stats.values():
        worst = next((k for k in ("unreachable", "failed", "changed") if getattr(s, k)), "ok")
        counts[worst] += 1
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    hosts = f"{len(stats)} host{'s' if len(stats) != 1 else ''}"
    return f"{hosts}: {', '.join(parts) or 'nothing run'} in {elapsed:.1f} s"


def apply_text(report: ApplyReport) -> str:
    """What ``apply`` prints on stdout at the end: a blank line, the recap, the total."""
    stats = report.result.stats
    return "\n" + "\n".join([*recap_lines(stats), recap_total(stats, report.elapsed)]) + "\n"


def event_lines(ev: Any, show_diff: bool, bases: Sequence[str]) -> list[str]:
    """What apply prints the moment it happens: failures, unreachable hosts, retries, and
    (-v) transfer reports; ``bases`` shorten a task's file name."""
    from provision import applylog

    result = ev.result
    if ev.status == "retrying":  # the message says "retrying (N left): why"
        return [f"[{ev.host}] {ev.play} / {ev.task}: {result.msg}"]
    if ev.status in applylog.UNREACHED:
        return [f"{ev.status}: [{ev.host}] {ev.play}: {result.msg}"]
    if ev.status == "failed":
        ignored = " (ignored)" if result.ignored else " (rescued)" if result.rescued else ""
        msg = applylog.message_first(result.msg, bases)
        lines = [f"failed: [{ev.host}] {ev.play} / {ev.task}{ignored}: {msg}"]
        if show_diff and result.diff:
            lines.append(result.diff.rstrip("\n"))
        return lines
    if ev.status == "progress":
        return [f"progress: [{ev.host}] {ev.play} / {ev.task} {result.msg}"]
    return []


def group_lines(group: Group, show_diff: bool) -> list[str]:
    """One result on many hosts: its line, and its diff once."""
    return [group.line(), *([group.diff.rstrip("\n")] if show_diff and group.diff else [])]
