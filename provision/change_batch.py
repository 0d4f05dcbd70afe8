"""A change batch: the changes of consecutive independent tasks sent as ONE command.

A first run changes file after file; one round trip per change made it slower than pyinfra
(issue 18). The executor (provision/task_executor.py) picks the members: tasks whose plans it
can make now from the cached state, each writing paths no earlier member touches. This module
only frames their steps and splits the output, and is pure.

Each member runs in its own subshell between markers on both streams, its steps in order up to
the first that fails, then prints its exit status. The first member that fails ends the batch:
the members after it never run, as they would not have run one by one. Data that a step reads
on stdin travels inside the command, in a here-document of its own (text as it is, anything
else as base64), so members cannot read each other's data, and the command stays one argument
of ``sh -c``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from provision.modules.base import Step

# The framed command is one argument of `sh -c` (through sudo as well): Linux caps a single
# argument at 128 KiB (MAX_ARG_STRLEN), so a batch stays below it with room for the wrapping.
MAX_COMMAND = 96 << 10
MAX_STDIN = 16 << 10  # a step with more data on stdin (a big file) runs alone, as before


@dataclass(frozen=True)
class Ran:
    """What one member's steps did: the exit status of the last step run, and its output."""

    rc: int
    stdout: str
    stderr: str


def batchable_step(step: Step) -> bool:
    """A step the batch can carry: no timeout of its own (the long ones install or wait) and
    little data on stdin."""
    return step.timeout is None and len(step.stdin or b"") <= MAX_STDIN


def _as_heredoc(data: bytes, marker: str) -> str | None:
    """``data`` as the body of a quoted here-document (taken verbatim by the shell), when it
    can be one: UTF-8 text without NUL, ending in a newline, never holding the marker."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\0" in text or not text.endswith("\n") or marker in text:
        return None
    return text


def _with_stdin(script: str, data: bytes | None, marker: str) -> str:
    """``script`` in a subshell reading ``data`` (or nothing) on its stdin: a configuration
    file as it is, in a here-document; other data as base64 (decoded by one more process)."""
    if not data:
        return f"(\n{script}\n) </dev/null"
    text = _as_heredoc(data, marker)
    if text is not None:
        return f"(\n{script}\n) <<'{marker}'\n{text}{marker}"
    # base64's alphabet has no "@": the marker can never appear inside the data
    encoded = base64.encodebytes(data).decode()
    return f"{{ base64 -d <<'{marker}'\n{encoded}{marker}\n}} | (\n{script}\n)"


def frame_changes(members: list[list[tuple[str, bytes | None]]], token: str) -> str:
    """One command running each member's steps (script, stdin) between markers."""
    parts = []
    for k, steps in enumerate(members):
        # each step a statement of its own, its status tested on the next line: a step on the
        # left of `||` would run with its own `set -e` ignored (POSIX), so a failing command
        # inside it would not stop it and the step could end "successfully"
        body = "\n".join(
            f'{_with_stdin(script, data, f"@@{token}_{k}_{n}")}\nr=$?; [ "$r" -eq 0 ] || exit "$r"'
            for n, (script, data) in enumerate(steps)
        )
        parts.append(
            f"printf '\\n@@{token} {k}\\n'; printf '\\n@@{token} {k}\\n' >&2\n"
            f"(\n{body}\n)\n"
            f'r=$?; printf \'\\n@@{token} rc {k} %s\\n\' "$r"; [ "$r" -eq 0 ] || exit 0'
        )
    parts.append(f"printf '\\n@@{token} done\\n'")
    return "\n".join(parts)


def _sections(text: str, token: str, count: int) -> list[str | None]:
    """The text after each member's start marker, up to the next start marker."""
    starts: list[tuple[int, int] | None] = []
    for k in range(count):
        marker = f"\n@@{token} {k}\n"
        at = text.find(marker)
        starts.append(None if at < 0 else (at, at + len(marker)))
    out: list[str | None] = []
    for k, span in enumerate(starts):
        if span is None:
            out.append(None)
            continue
        later = [s[0] for s in starts[k + 1 :] if s is not None]
        end = later[0] if later else text.find(f"\n@@{token} done\n", span[1])
        out.append(text[span[1] : end if end >= 0 else len(text)])
    return out


def split_changes(stdout: str, stderr: str, token: str, count: int) -> list[Ran | None]:
    """The output of :func:`frame_changes` -> each member's result: None for a member that
    never started (one before it failed); rc -1 for one that started and printed no status
    (its shell died, or the run's output limit cut the output)."""
    outs = _sections("\n" + stdout, token, count)
    errs = _sections("\n" + stderr, token, count)
    results: list[Ran | None] = []
    for out, err in zip(outs, errs, strict=True):
        if out is None:
            results.append(None)
            continue
        text, sep, status = out.rpartition(f"\n@@{token} rc ")
        number = status.split(" ", 1)[-1].strip()
        if not sep or not number.lstrip("-").isdigit():
            results.append(Ran(-1, out, (err or "") + "\nprovision: the step printed no status"))
            continue
        results.append(Ran(int(number), text, err or ""))
    return results
