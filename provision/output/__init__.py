"""The output layer of the commands: where output goes (:class:`Environment`), each command's
report model (:mod:`.reports`), and one renderer per format: text (:mod:`.text`) and JSON
(:mod:`.documents`) for ``ping``, ``run`` and ``apply``. The audit's formats (table, JSON, CSV,
Markdown, HTML, Prometheus) stay in ``provision/audit/`` behind ``provision/audit/output.py``:
they are the audit's own and moving them would only move files.

:meth:`Environment.of_process` is the one place that looks at the process (streams, terminal,
``COLUMNS``, ``NO_COLOR``); ``cli.main`` builds it once and hands it to every command, which
never reads ``sys.stdout`` to decide.
"""

from __future__ import annotations

from collections.abc import Iterator

from provision.output.documents import apply_document, outcomes_document, render_json
from provision.output.environment import DEFAULT_WIDTH, Environment
from provision.output.reports import AdhocReport, ApplyReport


def render_adhoc(report: AdhocReport, fmt: str) -> Iterator[str]:
    """``ping`` / ``run`` on stdout in ``fmt``, in pieces to write one after the other (the
    text holds every host's output: joined, it would be copied whole)."""
    if fmt == "json":
        yield render_json(outcomes_document(report))
        return
    from provision.output import text  # the text renderer imports the executor: only now

    yield from text.adhoc_pieces(report)


def render_apply(report: ApplyReport, fmt: str) -> str:
    """``apply``'s closing output on stdout in ``fmt``."""
    if fmt == "json":
        return render_json(apply_document(report))
    from provision.output import text

    return text.apply_text(report)


__all__ = [
    "DEFAULT_WIDTH",
    "AdhocReport",
    "ApplyReport",
    "Environment",
    "apply_document",
    "outcomes_document",
    "render_adhoc",
    "render_apply",
    "render_json",
]
