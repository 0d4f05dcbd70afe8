"""Audit history (`--history`): changes since the previous audit, disk trends, retention."""

from __future__ import annotations

import json
import sqlite3

import pytest

from provision.audit import render
from provision.audit.checks import GIB
from provision.audit.history import Change, History, disk_trend
from provision.errors import ConfigError
from tests.audit_mixed import DAY, HOSTS, T0, audit_day, recorded_lab
from tests.test_cli import cli


def test_three_audits_report_the_driver_change_and_the_filling_disk(tmp_path) -> None:
    reports, run, delta = recorded_lab(str(tmp_path / "history.sqlite"))
    ws01, ws02, _, _, down = HOSTS
    assert delta.previous_at == T0 + DAY
    found = set(delta.changes)
    assert Change(ws01, "driver", "driver 550.54.15 -> 560.35.03") in found
    assert Change(ws01, "image", "image nvcr.io/nvidia/pytorch:24.05-py3 now missing") in found
    assert Change(ws02, "xid", "new Xid 48 (x2)") in found
    assert Change(down, "unreachable", "unreachable since 2025-12-01T00:00:00Z") in found
    assert not [c for c in delta.changes if c.host == HOSTS[2]]  # nothing new on ws03
    trend = next(t for t in delta.trends if (t.host, t.path) == (ws01, "/var/lib/docker"))
    assert trend.points == 3
    assert round(trend.bytes_per_day / GIB) == -20
    assert trend.days_to_full == pytest.approx(19.0)  # 380 GiB left at 20 GiB a day
    steady = next(t for t in delta.trends if (t.host, t.path) == (ws01, "/"))
    assert steady.days_to_full is None  # not filling: no warning
    assert [s for _, s in delta.timeline[down]] == ["UNREACHABLE"] * 3

    table = render(reports, run=run, history=delta, width=100)
    assert "Changes since the previous audit (2025-12-02T00:00:00Z):" in table
    assert f"{ws01}: driver 550.54.15 -> 560.35.03" in table
    assert f"{ws01} /var/lib/docker: 380G free, 20G/day, full in about 19 days" in table
    only = render(reports, run=run, history=delta, changes_only=True, width=100)
    assert not only.startswith("HOST") and "full in about 19 days" in only
    assert "uncorrected ECC" not in only  # a problem that did not change is not repeated

    doc = json.loads(render(reports, "json", run=run, history=delta))
    assert doc["previous_at"] == "2025-12-02T00:00:00Z"
    assert {"host": ws01, "kind": "driver", "text": "driver 550.54.15 -> 560.35.03"} in doc[
        "history"
    ]["changes"]
    docker = [t for t in doc["history"]["disk_trends"] if t["path"] == "/var/lib/docker"]
    assert docker[0]["days_to_full"] == 19.0
    assert doc["history"]["unreachable_since"][down] == "2025-12-01T00:00:00Z"

    page = render(reports, "html", run=run, history=delta)
    assert "driver 550.54.15 -&gt; 560.35.03" in page
    assert "full in about 19 days" in page
    assert page.count('class="st-UNREACHABLE" title=') == 3  # the host's timeline


def test_first_audit_has_nothing_to_compare(tmp_path) -> None:
    with History(str(tmp_path / "h.sqlite")) as history:
        reports, run = audit_day(0)
        delta = history.record(reports, run)
    assert delta.previous_at is None and delta.trends == []
    assert "No previous audit in the history" in render(reports, history=delta)


def test_a_gpu_lost_between_audits(tmp_path) -> None:
    with History(str(tmp_path / "h.sqlite")) as history:
        reports, run = audit_day(0)
        history.record(reports, run)
        again, _ = audit_day(0)
        facts = again[0].facts
        assert facts is not None
        facts["nvidia"]["gpus"][1] = {"index": 1, "lost": True}
        delta = history.record(again, type(run)(T0 + 3600))
    assert Change(HOSTS[0], "gpu", "GPU 1 lost") in delta.changes


def test_retention_drops_old_audits_and_their_rows(tmp_path) -> None:
    path = str(tmp_path / "h.sqlite")
    with History(path, retention_days=30) as history:
        for day in (0, 15, 41):
            reports, run = audit_day(0)
            history.record(reports, type(run)(T0 + day * DAY))
        assert history.count() == 2  # day 0 is more than 30 days before day 41
    db = sqlite3.connect(path)
    assert db.execute("SELECT min(at) FROM audits").fetchone()[0] == T0 + 15 * DAY
    for table in ("hosts", "disks"):
        orphans = db.execute(
            f"SELECT count(*) FROM {table} WHERE audit_id NOT IN (SELECT id FROM audits)"
        ).fetchone()[0]
        assert orphans == 0, table
    db.close()


def test_trend_needs_three_points_and_a_falling_line() -> None:
    assert disk_trend("h", "/", [(0, 100), (DAY, 90)]) is None
    rising = disk_trend("h", "/", [(0, 100), (DAY, 110), (2 * DAY, 120)])
    assert rising is not None and rising.days_to_full is None
    slow = disk_trend("h", "/", [(0, 10**12), (DAY, 10**12 - 1), (2 * DAY, 10**12 - 2)])
    assert slow is not None and slow.days_to_full is None  # beyond a year: no warning


def test_not_a_history_file_is_one_clear_line(tmp_path) -> None:
    bad = tmp_path / "h.sqlite"
    bad.write_text("this is not a database\n" * 100)
    with pytest.raises(ConfigError, match="not an audit history"):
        History(str(bad))
    r = cli("audit", "--local", "--history", str(bad))
    assert r.returncode == 5 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and str(bad) in r.stderr


def test_cli_records_and_prints_changes(tmp_path) -> None:
    path = tmp_path / "history.sqlite"
    first = cli("audit", "--local", "--history", str(path), "--changes")
    assert "No previous audit in the history" in first.stdout, first.stderr
    second = cli("audit", "--local", "--history", str(path), "--format", "json")
    doc = json.loads(second.stdout)
    assert doc["previous_at"] is not None and doc["history"]["previous_at"] == doc["previous_at"]
    third = cli("audit", "--local", "--history", str(path), "--changes")
    assert third.stdout.startswith(("No changes since", "Changes since")), third.stdout
    assert "HOST" not in third.stdout
    no_history = cli("audit", "--local", "--changes")
    assert no_history.returncode == 5 and "--history" in no_history.stderr


def test_default_history_lives_in_the_state_directory(tmp_path) -> None:
    import os

    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    r = cli("audit", "--local", "--history", "--format", "json", env=env)
    assert r.stdout.startswith("{"), r.stderr
    assert (tmp_path / "state" / "provision" / "audit-history.sqlite").is_file()
