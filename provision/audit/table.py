"""The audit on a terminal: a table sized to the width, then every problem in full (pure).

Goss-style: the summary first, then only what is wrong. Layout is computed on plain text and
colour is added to already padded cells, so colour never moves a column. Nothing a user must
act on is ever cut: the ISSUES cell wraps inside its column, and every problem is listed in full,
wrapped, with its remediation under the table. When the width is too small for every column,
the least needed ones are left out (named in one line under the table) before ISSUES would get
narrower than :data:`ISSUES_MIN`; the host name is never cut.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from provision.audit.checks import GIB, SEVERITY, CheckResult, Status
from provision.audit.report import (
    HEADERS,
    HostReport,
    host_cells,
    iso_time,
    short_gpu,
    summary_line,
)

if TYPE_CHECKING:  # the history (and sqlite3) is imported only by an audit that keeps one
    from provision.audit.history import Delta

GAP = 1
ISSUES_MIN = 16
# Columns that give way when the width is short: cut to (narrowest) first, in this order ...
CUTTABLE = {"BUSY": 8, "GPUS": 12}
# ... then left out, least needed first (BUSY and MEM are in --gpus, IMG in the problems).
DROP_ORDER = ("BUSY", "IMG", "MEM", "CUDA", "DOCKER", "DISK", "GPUS", "DRIVER")
COLOURS = {
    Status.OK: "\033[32m",
    Status.WARN: "\033[33m",
    Status.FAIL: "\033[31m",
    Status.UNKNOWN: "\033[35m",
    Status.UNREACHABLE: "\033[1;31m",
    Status.SKIP: "",
}
RESET = "\033[0m"
ANSI = re.compile(r"\033\[[0-9;]*m")
STATUS_LABEL = {Status.UNREACHABLE: "UNREACH"}


@dataclass
class Column:
    name: str
    cells: list[str]
    width: int
    wrap: bool = False  # the last column wraps instead of being cut

    @classmethod
    def of(cls, name: str, cells: list[str], wrap: bool = False) -> Column:
        return cls(name, cells, max([len(name)] + [len(c) for c in cells]), wrap)


def visible_len(text: str) -> int:
    return len(ANSI.sub("", text))


def paint(text: str, status: Status | None, colour: bool) -> str:
    code = COLOURS.get(status, "") if (colour and status is not None) else ""
    return f"{code}{text}{RESET}" if code else text


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "~"


def _total(columns: Sequence[Column]) -> int:
    return sum(c.width for c in columns) + GAP * (len(columns) - 1)


def fit_columns(
    columns: list[Column],
    width: int,
    cuttable: dict[str, int] = CUTTABLE,
    drop_order: Sequence[str] = DROP_ORDER,
) -> tuple[list[Column], list[str]]:
    """Cut, then leave out, columns until the wrapping last column gets its minimum width;
    the last column then takes whatever is left. Returns the columns and the names left out."""
    last = columns[-1]
    natural = last.width
    need = min(natural, ISSUES_MIN)

    def room() -> int:
        return width - (_total(columns) - last.width)

    for name, narrowest in cuttable.items():
        col = next((c for c in columns if c.name == name), None)
        if col is not None and room() < need:
            col.width = max(narrowest, col.width - (need - room()))
            col.cells = [_cut(c, col.width) for c in col.cells]
    dropped = []
    for name in drop_order:
        if room() >= need:
            break
        columns = [c for c in columns if c.name != name]
        dropped.append(name)
    last.width = max(4, min(natural, room()))  # below 4 only a very long host name is left
    return columns, dropped


def layout(
    columns: list[Column], statuses: Sequence[Status | None], colour: bool, status_col: int = -1
) -> list[str]:
    """Header, rule and rows; the wrapping last column continues on indented lines."""
    lines = []
    widths = [c.width for c in columns]
    header = [c.name.ljust(w) for c, w in zip(columns, widths, strict=True)]
    lines.append(" ".join(header).rstrip())
    lines.append(" ".join("-" * w for w in widths))
    for i, status in enumerate(statuses):
        parts = [c.cells[i] or "-" for c in columns]
        wrapped = (
            textwrap.wrap(parts[-1], widths[-1], break_on_hyphens=False) or ["-"]
            if columns[-1].wrap
            else [parts[-1]]
        )
        cells = [p.ljust(w) for p, w in zip(parts[:-1], widths[:-1], strict=True)]
        if 0 <= status_col < len(cells):  # colour the text, pad outside: same layout
            text = parts[status_col]
            cells[status_col] = paint(text, status, colour) + " " * (widths[status_col] - len(text))
        lines.append(" ".join([*cells, wrapped[0]]).rstrip())
        indent = " " * (_total(columns) - widths[-1])
        lines += [(indent + more).rstrip() for more in wrapped[1:]]
    return lines


def _issue_names(report: HostReport) -> str:
    if report.facts is None:
        return report.reason or report.state
    names: list[str] = []
    for c in sorted(problems(report), key=lambda c: -SEVERITY[c.status]):
        name = c.id + (f"[{c.gpu_index}]" if c.gpu_index is not None else "")
        if name not in names:
            names.append(name)
    return ", ".join(names)


def problems(report: HostReport) -> list[CheckResult]:
    return [c for c in report.checks if SEVERITY[c.status] > 0]


def host_table(reports: Sequence[HostReport], width: int, colour: bool) -> list[str]:
    rows = [host_cells(r) for r in reports]
    for row, r in zip(rows, reports, strict=True):
        row[1] = STATUS_LABEL.get(r.status, r.status.value)
        row[-1] = _issue_names(r)
    columns = [
        Column.of(name, [row[i] for row in rows], wrap=name == "ISSUES")
        for i, name in enumerate(HEADERS)
    ]
    columns, dropped = fit_columns(columns, width)
    lines = layout(columns, [r.status for r in reports], colour, status_col=1)
    if dropped:
        note = f"(left out at {width} columns: {', '.join(dropped)}; see --gpus or widen)"
        lines += textwrap.wrap(note, width)
    return lines


def _wrap(text: str, width: int, indent: str) -> list[str]:
    return textwrap.wrap(
        text,
        max(10, width),
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_on_hyphens=False,
    )


def check_lines(check: CheckResult, width: int, colour: bool) -> list[str]:
    """One check in full: status, id and message, then its remediation, wrapped to ``width``."""
    name = check.id + (f"[{check.gpu_index}]" if check.gpu_index is not None else "")
    head = _wrap(f"{check.status.value} {name}: {check.message}", width, "  ")
    if colour:  # colour the status word only; the wrapping was done on plain text
        head[0] = head[0].replace(
            check.status.value, paint(check.status.value, check.status, True), 1
        )
    fix = _wrap(f"fix: {check.remediation}", width, "      ") if check.remediation else []
    return head + fix


def problem_blocks(
    reports: Sequence[HostReport], width: int, colour: bool, every_check: bool = False
) -> list[str]:
    """Per host, its non-OK checks (or, with ``every_check``, all of them) in full."""
    out: list[str] = []
    for r in reports:
        checks = r.checks if every_check else problems(r)
        if not checks:
            continue
        label = STATUS_LABEL.get(r.status, r.status.value)
        where = f" ({r.address})" if r.address and r.address != r.host else ""
        head = _wrap(f"{r.host}{where}: {label}", width, "")
        head[-1] = head[-1][: -len(label)] + paint(label, r.status, colour)
        out += head
        for c in checks:
            out += check_lines(c, width, colour)
    return out


def render_table(
    reports: Sequence[HostReport],
    width: int = 100,
    colour: bool = False,
    problems_only: bool = False,
    every_check: bool = False,
    delta: Delta | None = None,
) -> str:
    """The table, the summary, then every problem in full, then (with a history) what changed.
    ``problems_only`` (``--details``) leaves the table out; ``every_check`` (``--all``) lists
    every check, not only problems."""
    lines = [] if (problems_only or every_check) else host_table(reports, width, colour)
    lines += textwrap.wrap(summary_line(reports), width)
    blocks = problem_blocks(reports, width, colour, every_check)
    if blocks:
        lines += ["", *blocks]
    if delta is not None:
        lines += ["", *change_lines(delta, width)]
    return "\n".join(lines) + "\n"


# -- the per-GPU view (--gpus), like gpustat across hosts -------------------------------------

GPU_HEADERS = ("HOST", "GPU", "MODEL", "TEMP", "UTIL", "MEM", "USERS")


def _gpu_row(host: str, gpu: dict) -> list[str]:
    if gpu.get("lost"):
        return [host, str(gpu.get("index")), "lost", "", "", "", gpu.get("error") or ""]
    used, total = gpu.get("memory_used"), gpu.get("memory_total")
    mem = f"{used / GIB:.0f}/{total / GIB:.0f}G" if used is not None and total else ""
    users = " ".join(
        f"{p.get('user') or p.get('pid')}({(p.get('used_memory') or 0) / GIB:.0f}G)"
        for p in gpu.get("processes") or []
    )
    temp, util = gpu.get("temperature_c"), gpu.get("utilization_gpu")
    return [
        host,
        str(gpu.get("index")),
        short_gpu(gpu.get("name")),
        "" if temp is None else f"{temp}C",
        "" if util is None else f"{util}%",
        mem,
        users,
    ]


def gpu_rows(reports: Sequence[HostReport]) -> tuple[list[list[str]], list[Status | None]]:
    """Rows and what colours them: a lost GPU or a host without GPUs by status, others not."""
    rows: list[list[str]] = []
    statuses: list[Status | None] = []
    for r in reports:
        gpus = ((r.facts or {}).get("nvidia") or {}).get("gpus") or []
        if not gpus:
            why = r.reason or r.state if r.facts is None else _issue_names(r) or "no GPU"
            rows.append([r.host, "-", "", "", "", "", why])
            statuses.append(r.status)
        for g in gpus:
            rows.append(_gpu_row(r.host, g))
            statuses.append(Status.FAIL if g.get("lost") else None)
    return rows, statuses


def render_gpus(reports: Sequence[HostReport], width: int = 100, colour: bool = False) -> str:
    """One line per GPU: host, index, model, temperature, utilisation, memory, users."""
    rows, statuses = gpu_rows(reports)
    columns = [
        Column.of(name, [row[i] for row in rows], wrap=name == "USERS")
        for i, name in enumerate(GPU_HEADERS)
    ]
    columns, _ = fit_columns(columns, width, {"MODEL": 8}, ("TEMP", "MEM"))
    return "\n".join(layout(columns, statuses, colour, status_col=2)) + "\n"


# -- history: changes since the previous audit, disk trends ------------------------------------


def _gib_text(n: float) -> str:
    return f"{n / GIB:.0f}G"


def trend_lines(delta: Delta, width: int) -> list[str]:
    filling = [t for t in delta.trends if t.days_to_full is not None]
    if not filling:
        return []
    lines = ["Disk trends (fit over the recorded audits):"]
    for t in sorted(filling, key=lambda t: t.days_to_full or 0.0):
        text = (
            f"{t.host} {t.path}: {_gib_text(t.free)} free, {_gib_text(-t.bytes_per_day)}/day, "
            f"full in about {t.days_to_full:.0f} days ({t.points} audits)"
        )
        lines += _wrap(text, width, "  ")
    return lines


def change_lines(delta: Delta, width: int) -> list[str]:
    """Changes since the previous audit, per host, then the disk trends."""
    since = iso_time(delta.previous_at)
    if since is None:
        lines = ["No previous audit in the history: nothing to compare yet."]
    elif not delta.changes:
        lines = [f"No changes since the previous audit ({since})."]
    else:
        lines = [f"Changes since the previous audit ({since}):"]
        for c in delta.changes:
            lines += _wrap(f"{c.host}: {c.text}", width, "  ")
    trends = trend_lines(delta, width)
    return lines + (["", *trends] if trends else [])
