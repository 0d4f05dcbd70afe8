"""Audit history in SQLite (stdlib ``sqlite3``): what changed since the previous audit, disk
trends ("full in about N days") and a per-host status timeline.

Each recorded audit keeps, per host, a small *snapshot* (status, driver, CUDA, GPUs, Xids,
images, problems; not the whole facts document) and the free bytes of each checked path, so the
file stays small; audits older than the retention are deleted when a new one is recorded.
Comparing is pure (:func:`changes`, :func:`disk_trend`); only :class:`History` touches the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from provision import __version__
from provision.audit.checks import SEVERITY, Status
from provision.audit.report import AuditRun, HostReport, iso_time
from provision.errors import ConfigError

DAY = 86400.0
DEFAULT_RETENTION_DAYS = 90
TREND_MIN_POINTS = 3  # a line through two points is a guess, not a trend
TREND_HORIZON_DAYS = 365  # "full in about 900 days" is no warning: leave it out
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, provision_version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hosts (
    audit_id INTEGER NOT NULL REFERENCES audits(id) ON DELETE CASCADE,
    host TEXT NOT NULL, status TEXT NOT NULL, snapshot TEXT NOT NULL,
    PRIMARY KEY (audit_id, host));
CREATE TABLE IF NOT EXISTS disks (
    audit_id INTEGER NOT NULL REFERENCES audits(id) ON DELETE CASCADE,
    host TEXT NOT NULL, path TEXT NOT NULL, free INTEGER NOT NULL, total INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS audits_at ON audits(at);
CREATE INDEX IF NOT EXISTS disks_host_path ON disks(host, path);
CREATE INDEX IF NOT EXISTS hosts_host ON hosts(host);
"""


def default_path() -> str:
    """``$XDG_STATE_HOME/provision/audit-history.sqlite``, ``~/.local/state/...`` without it
    (XDG Base Directory Specification: the state directory's default)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(state, "provision", "audit-history.sqlite")


# -- what is compared -------------------------------------------------------------------------


def _check_name(c: Any) -> str:
    return c.id + (f"[{c.gpu_index}]" if c.gpu_index is not None else "")


def snapshot(report: HostReport) -> dict[str, Any]:
    """What a later audit compares against: small, JSON, no evidence."""
    f = report.facts or {}
    nv = f.get("nvidia") or {}
    images = {
        str(i.get("ref")): bool(i.get("present"))
        for i in (f.get("docker") or {}).get("images") or []
    }
    return {
        "status": report.status.value,
        "audited": report.facts is not None,
        "reason": report.reason,
        "driver": nv.get("driver_version"),
        "cuda": nv.get("cuda_version"),
        "gpus": {
            str(g.get("index")): {
                "name": g.get("name"),
                "uuid": g.get("uuid"),
                "lost": bool(g.get("lost")),
            }
            for g in nv.get("gpus") or []
        },
        "xids": nv.get("xids"),
        "images": images,
        "problems": {
            _check_name(c): c.status.value for c in report.checks if SEVERITY[c.status] > 0
        },
    }


@dataclass(frozen=True)
class Change:
    host: str
    kind: str  # status, driver, cuda, gpu, xid, image, problem, unreachable, new host
    text: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _pair(before: object, after: object) -> str:
    return f"{before or 'none'} -> {after or 'none'}"


def _gpu_changes(host: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    out = []
    for index, gpu in new.items():
        was = old.get(index)
        if gpu["lost"] and not (was or {}).get("lost"):
            out.append(Change(host, "gpu", f"GPU {index} lost"))
        elif was is None:
            out.append(Change(host, "gpu", f"GPU {index} new: {gpu.get('name')}"))
        elif was.get("lost") and not gpu["lost"]:
            out.append(Change(host, "gpu", f"GPU {index} back"))
    for index in old.keys() - new.keys():
        out.append(Change(host, "gpu", f"GPU {index} gone ({old[index].get('name')})"))
    return out


def _xid_changes(
    host: str, old: Mapping[str, int] | None, new: Mapping[str, int] | None
) -> list[Change]:
    if new is None:  # not read this time: nothing is known to be new
        return []
    old = old or {}
    return [
        Change(host, "xid", f"new Xid {xid} (x{n - old.get(xid, 0)})")
        for xid, n in sorted(new.items())
        if n > old.get(xid, 0)
    ]


def changes(host: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Change]:
    """What differs between a host's previous snapshot and this one (pure)."""
    if old is None:
        return [Change(host, "new host", "first recorded audit")]
    out = []
    if old["status"] != new["status"]:
        out.append(Change(host, "status", _pair(old["status"], new["status"])))
    if not (old["audited"] and new["audited"]):
        return out  # nothing else to compare with a host not audited on either side
    for key in ("driver", "cuda"):
        if old[key] != new[key]:
            out.append(Change(host, key, f"{key} {_pair(old[key], new[key])}"))
    out += _gpu_changes(host, old["gpus"], new["gpus"])
    out += _xid_changes(host, old["xids"], new["xids"])
    for ref, present in new["images"].items():
        if old["images"].get(ref) and not present:
            out.append(Change(host, "image", f"image {ref} now missing"))
    for name, status in new["problems"].items():
        if name not in old["problems"]:
            out.append(Change(host, "problem", f"new {status} {name}"))
    for name in old["problems"].keys() - new["problems"].keys():
        out.append(Change(host, "problem", f"resolved {name}"))
    return out


@dataclass(frozen=True)
class Trend:
    host: str
    path: str
    free: int  # bytes free now
    bytes_per_day: float  # negative: filling
    days_to_full: float | None  # None: not filling, or beyond the horizon
    points: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes_per_day"] = round(self.bytes_per_day)
        d["days_to_full"] = None if self.days_to_full is None else round(self.days_to_full, 1)
        return d


def disk_trend(host: str, path: str, points: Sequence[tuple[float, int]]) -> Trend | None:
    """Least-squares line through (time, free bytes); "full in N days" where it reaches 0."""
    if len(points) < TREND_MIN_POINTS:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_f = sum(f for _, f in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    slope = sum((t - mean_t) * (f - mean_f) for t, f in points) / var  # bytes per second
    t_now, free_now = max(points)
    days = None
    if slope < 0:
        # where the fitted line, not the last noisy point, reaches zero
        fitted_now = mean_f + slope * (t_now - mean_t)
        days = max(0.0, fitted_now / -slope / DAY)
        days = days if days <= TREND_HORIZON_DAYS else None
    return Trend(host, path, free_now, slope * DAY, days, n)


@dataclass
class Delta:
    """What the history says about this audit: for the table, the JSON and the page."""

    previous_at: float | None
    changes: list[Change] = field(default_factory=list)
    trends: list[Trend] = field(default_factory=list)
    timeline: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    unreachable_since: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "previous_at": iso_time(self.previous_at),
            "changes": [c.to_dict() for c in self.changes],
            "disk_trends": [t.to_dict() for t in self.trends],
            "unreachable_since": {h: iso_time(t) for h, t in self.unreachable_since.items()},
        }


def _disk_points(report: HostReport) -> Iterable[tuple[str, int, int]]:
    for d in (report.facts or {}).get("disk") or []:
        if d.get("free") is not None and d.get("total"):
            yield str(d["path"]), int(d["free"]), int(d["total"])


# -- the file -----------------------------------------------------------------------------------


class History:
    """One SQLite history file; ``with History(path) as h: delta = h.record(reports, run)``."""

    def __init__(self, path: str, retention_days: float = DEFAULT_RETENTION_DAYS) -> None:
        self.path, self.retention_days = path, retention_days
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigError(f"--history {path}: folder {folder} does not exist")
        try:
            self.db = sqlite3.connect(path, timeout=30)
            self.db.execute("PRAGMA foreign_keys = ON")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(
                    f"{path}: audit history schema {version} is newer than this provision"
                )
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"{path}: not an audit history ({exc}); move it away or give another --history"
            ) from None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()

    def _previous(self) -> tuple[int, float] | None:
        row = self.db.execute(
            "SELECT id, at FROM audits ORDER BY at DESC, id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    def _snapshots(self, audit_id: int) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT host, snapshot FROM hosts WHERE audit_id = ?", (audit_id,))
        return {host: json.loads(snap) for host, snap in rows}

    def _series(self, host: str, path: str) -> list[tuple[float, int]]:
        rows = self.db.execute(
            "SELECT a.at, d.free FROM disks d JOIN audits a ON a.id = d.audit_id "
            "WHERE d.host = ? AND d.path = ? ORDER BY a.at",
            (host, path),
        )
        return [(float(at), int(free)) for at, free in rows]

    def _timeline(self, host: str) -> list[tuple[float, str]]:
        rows = self.db.execute(
            "SELECT a.at, h.status FROM hosts h JOIN audits a ON a.id = h.audit_id "
            "WHERE h.host = ? ORDER BY a.at",
            (host,),
        )
        return [(float(at), str(status)) for at, status in rows]

    def record(self, reports: Sequence[HostReport], run: AuditRun) -> Delta:
        """Compare this audit with the history, then record it and drop expired audits."""
        previous = self._previous()
        old = self._snapshots(previous[0]) if previous else {}
        with self.db:  # one transaction: a crash leaves the history as it was
            cur = self.db.execute(
                "INSERT INTO audits (at, provision_version) VALUES (?, ?)",
                (run.generated_at, __version__),
            )
            audit_id = cur.lastrowid
            delta = Delta(previous[1] if previous else None)
            for r in reports:
                snap = snapshot(r)
                delta.changes += changes(r.host, old.get(r.host), snap) if previous else []
                self.db.execute(
                    "INSERT INTO hosts VALUES (?, ?, ?, ?)",
                    (audit_id, r.host, r.status.value, json.dumps(snap, sort_keys=True)),
                )
                for path, free, total in _disk_points(r):
                    self.db.execute(
                        "INSERT INTO disks VALUES (?, ?, ?, ?, ?)",
                        (audit_id, r.host, path, free, total),
                    )
            self.prune(run.generated_at)
        for r in reports:
            self._describe(r, delta)
        return delta

    def _describe(self, report: HostReport, delta: Delta) -> None:
        delta.timeline[report.host] = self._timeline(report.host)
        for path, _, _ in _disk_points(report):
            trend = disk_trend(report.host, path, self._series(report.host, path))
            if trend is not None:
                delta.trends.append(trend)
        if report.status is Status.UNREACHABLE:
            since = report_since(delta.timeline[report.host], Status.UNREACHABLE.value)
            delta.unreachable_since[report.host] = since
            text = f"unreachable since {iso_time(since)}"
            delta.changes.append(Change(report.host, "unreachable", text))

    def prune(self, now: float) -> int:
        """Delete audits older than the retention; returns how many went."""
        cutoff = now - self.retention_days * DAY
        cur = self.db.execute("DELETE FROM audits WHERE at < ?", (cutoff,))
        return cur.rowcount

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM audits").fetchone()[0])


def report_since(timeline: Sequence[tuple[float, str]], status: str) -> float:
    """When the latest unbroken run of ``status`` at the end of the timeline began."""
    since = timeline[-1][0]
    for at, s in reversed(timeline):
        if s != status:
            break
        since = at
    return since
