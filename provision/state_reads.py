"""The batched state read and its cache, for one host.

Before a task needs the host's state, the state reads of the tasks ahead of it that can be
prepared now are sent with its own as ONE command whose output is framed by markers
(:func:`frame_reads`, :func:`split_reads`); the snapshot is used until something changes on the
host, so a converged run costs one round trip per host for all its reads. A change drops only
the cached reads it can affect (:meth:`StateReads.forget`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from provision.results import HIDDEN_SCRIPT
from provision.ssh import Session


class ReadFailed(Exception):
    """The batched read could not be used; the message says why (the caller adds where)."""


def frame_reads(scripts: list[str], token: str) -> str:
    """One command that runs every state snippet in its own subshell between markers."""
    parts = []
    for k, script in enumerate(scripts):
        parts.append(f"echo '@@{token} {k}'\n(\n{script}\n) </dev/null 2>/dev/null")
    parts.append(f"echo '@@{token} end'")
    return "\n".join(parts)


def split_reads(stdout: str, token: str, count: int) -> list[str | None]:
    """The output of :func:`frame_reads` -> each snippet's output (None where missing)."""
    out: list[str | None] = [None] * count
    current: int | None = None
    buf: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(f"@@{token} "):
            if current is not None:
                out[current] = "\n".join(buf)
            tail = line.split(" ", 1)[1]
            current = int(tail) if tail.isdigit() and int(tail) < count else None
            buf = []
        elif current is not None:
            buf.append(line)
    return out


def overlap(a: str, b: str) -> bool:
    """Whether two host paths are the same or one contains the other."""
    a, b = a.rstrip("/") or "/", b.rstrip("/") or "/"
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def affects(written: str, read: str, below: bool) -> bool:
    """Whether a change to host path ``written`` can change what was read at ``read``: the
    same path or one above it always; one under it only when the change may reach below
    (creating a directory or changing its mode leaves what is inside as it was)."""
    if not overlap(written, read):
        return False
    inside = read.rstrip("/").startswith(written.rstrip("/") + "/") and read != written
    return below or not inside


TRUNCATED_READ = (
    "reading the host's state printed more than the run's output limit "
    "(provision.ssh.RUN_OUTPUT, MAX_OUTPUT); refusing to act on a partial read"
)


@dataclass(frozen=True)
class Read:
    """One state snippet to read: the host paths it depends on (None: anything) and whether
    its task is no_log (the snippet then never appears in logs or messages)."""

    script: str
    paths: tuple[str, ...] | None = None
    hidden: bool = False


@dataclass(frozen=True)
class FramedReads:
    """Reads framed as one command (:func:`frame_reads`): the same snippet once, hidden
    everywhere when any task that reads it is no_log; ``shown`` is the command as logged."""

    reads: dict[str, Read]
    token: str
    command: str
    shown: str

    @property
    def scripts(self) -> list[str]:
        return list(self.reads)

    @classmethod
    def of(cls, items: list[Read]) -> FramedReads:
        reads: dict[str, Read] = {}
        for item in items:
            if item.script not in reads:
                reads[item.script] = item
            elif item.hidden:  # the same snippet for a no_log task: hide it everywhere
                reads[item.script] = Read(item.script, reads[item.script].paths, True)
        token = secrets.token_hex(8)
        shown = frame_reads([HIDDEN_SCRIPT if r.hidden else s for s, r in reads.items()], token)
        return cls(reads, token, frame_reads(list(reads), token), shown)


@dataclass
class StateReads:
    """One host's batched reads and their cache, keyed by (snippet, become)."""

    session: Session | None = None
    cache: dict[tuple[str, bool | None], str] = field(default_factory=dict)
    cache_paths: dict[tuple[str, bool | None], tuple[str, ...] | None] = field(default_factory=dict)

    def cached(self, script: str, become: bool | None) -> str | None:
        return self.cache.get((script, become))

    def read(self, first: list[Read], ahead: list[Read], become: bool | None) -> list[str | None]:
        """Run ``first`` and ``ahead`` (the reads of tasks still to come) as ONE command and
        cache every output with its paths; the outputs of ``first``. Raises ReadFailed."""
        framed = FramedReads.of([*first, *ahead])
        assert self.session is not None, "a state read before the host's session was opened"
        done = self.session.run(framed.command, become=become, shown=framed.shown)
        if done.truncated:  # a cut read (a file's content) must never be planned from
            raise ReadFailed(TRUNCATED_READ)
        outputs = self.keep(framed, done.stdout, become)
        if outputs[0] is None:
            raise ReadFailed(
                f"reading the host's state failed (exit {done.exit_code}): "
                f"{done.stderr.strip()[-300:]}"
            )
        by_script = dict(zip(framed.scripts, outputs, strict=True))
        return [by_script[item.script] for item in first]

    def keep(self, framed: FramedReads, stdout: str, become: bool | None) -> list[str | None]:
        """Cache the outputs of ``framed`` found in ``stdout``; each script's output, in
        order (None where it is missing)."""
        outputs = split_reads(stdout, framed.token, len(framed.scripts))
        for script, out in zip(framed.scripts, outputs, strict=True):
            if out is not None:
                self.cache[(script, become)] = out
                self.cache_paths[(script, become)] = framed.reads[script].paths
        return outputs

    def forget(self, written: tuple[str, ...] | None, *, below: bool = True) -> None:
        """Drop the cached reads a change can affect: every read when ``written`` is None (a
        package, a service, a command: anything may move), else the reads of paths equal to,
        above or (``below``: the change may alter what lies under a written path) under a
        written path, and every read that did not name its paths. A converged run never gets
        here; a first run then re-reads only what its changes touched."""
        if written is None:
            self.cache.clear()
            self.cache_paths.clear()
            return
        for key in list(self.cache):
            read = self.cache_paths.get(key)
            if read is None or any(affects(w, r, below) for r in read for w in written):
                self.cache.pop(key, None)
                self.cache_paths.pop(key, None)
