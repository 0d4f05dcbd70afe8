"""Report formats and exit codes (pure) and the audit over real sshd lab hosts."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from typing import Any

import pytest

from provision import __version__
from provision.audit import assemble, audit_task, render
from provision.audit.checks import GIB, Status
from provision.audit.report import AuditRun, exit_code, host_report
from provision.audit.settings import AuditSettings, settings_for
from provision.audit.table import ANSI, visible_len
from provision.executor import HostOutcome, HostState, RunOptions, run_hosts
from tests.audit_mixed import HOSTS, mixed_reports
from tests.conftest import need
from tests.lab.fixtures import *  # noqa: F403
from tests.lab.sshd import JUNK_MARK
from tests.standins import nvml

BASE: dict[str, Any] = {
    "host": {"nouveau_loaded": False, "ntp_synced": True},
    "nvidia": {"pci_gpus": [], "nvml": "no driver", "gpus": []},
    "docker": {"installed": False},
    "disk": [{"path": "/", "role": "root", "total": 100 * GIB, "free": 50 * GIB}],
}


def report_with(status_facts: dict | None, name: str = "h", state: str = "ok", reason: str = ""):
    return host_report(name, state, status_facts, reason, AuditSettings())


def warn_facts() -> dict:
    return {**BASE, "host": {**BASE["host"], "reboot_required": True}}


def fail_facts() -> dict:
    return {**BASE, "host": {**BASE["host"], "nouveau_loaded": True}}


@pytest.mark.parametrize(
    ("kinds", "fail_on", "code"),
    [
        (["ok"], "warn", 0),
        (["ok", "warn"], "warn", 1),
        (["warn", "fail"], "warn", 2),
        (["fail", "unreachable"], "warn", 4),
        (["unknown", "unreachable"], "warn", 4),
        (["ok", "unknown"], "warn", 3),
        (["warn"], "fail", 0),
        (["warn", "fail"], "fail", 2),
        (["fail"], "unknown", 0),
        (["unreachable"], "unknown", 4),
        (["unreachable"], "never", 0),
    ],
)
def test_exit_codes(kinds, fail_on, code) -> None:
    make = {
        "ok": lambda: report_with(BASE),
        "warn": lambda: report_with(warn_facts()),
        "fail": lambda: report_with(fail_facts()),
        "unreachable": lambda: report_with(None, state="unreachable", reason="refused"),
        "unknown": lambda: report_with(None, state="failed", reason="garbage"),
    }
    reports = [make[k]() for k in kinds]
    assert exit_code(reports, fail_on) == code


def test_states_map_to_statuses() -> None:
    assert report_with(None, state="timed out").status is Status.UNREACHABLE
    assert report_with(None, state="host key refused").status is Status.UNREACHABLE
    assert report_with(None, state="failed", reason="no probe answer").status is Status.UNKNOWN


def reports_for_formats():
    return [
        report_with(BASE, "ok-host"),
        report_with(fail_facts(), "bad|host"),
        report_with(None, "down", "unreachable", "connection refused"),
    ]


def test_json_document() -> None:
    doc = json.loads(render(reports_for_formats(), "json"))
    assert doc["schema_version"] == 1
    assert doc["summary"]["hosts"] == 3
    assert doc["summary"]["by_status"]["UNREACHABLE"] == 1
    assert doc["summary"]["exit_code"] == 4
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert hosts["down"]["facts"] is None and hosts["down"]["reason"] == "connection refused"
    assert {c["id"] for c in hosts["bad|host"]["checks"]} >= {"nouveau", "disk:/"}
    nouveau = next(c for c in hosts["bad|host"]["checks"] if c["id"] == "nouveau")
    assert nouveau["status"] == "FAIL" and nouveau["remediation"]


def test_csv_and_markdown() -> None:
    reports = reports_for_formats()
    rows = list(csv.DictReader(io.StringIO(render(reports, "csv"))))
    assert {r["host"] for r in rows} == {"ok-host", "bad|host", "down"}
    assert any(r["check"] == "nouveau" and r["status"] == "FAIL" for r in rows)
    md = render(reports, "markdown", details=True)
    assert "bad\\|host" in md  # pipes escaped
    assert "### down: UNREACHABLE" in md


def test_table_fits_and_colour_only_when_asked() -> None:
    reports = reports_for_formats()
    plain = render(reports)
    assert "\033[" not in plain
    assert all(len(line) <= 100 for line in plain.splitlines())
    assert "UNREACH" in plain and "connection refused" in plain
    coloured = render(reports, colour=True)
    assert "\033[31mFAIL\033[0m" in coloured
    detailed = render(reports, details=True)
    assert "bad|host: FAIL" in detailed and "FAIL nouveau:" in detailed
    with pytest.raises(ValueError):
        render(reports, "yaml")


def _flat(text: str) -> str:
    return " ".join(ANSI.sub("", text).split())


@pytest.mark.parametrize("width", [80, 120, 200])
def test_table_fits_the_terminal_and_cuts_no_problem(width) -> None:
    """At 80, 120 and 200 columns, with and without colour: no line is wider than the terminal,
    colour moves nothing, and every problem's message and remediation is there in full."""
    reports = mixed_reports()
    plain = render(reports, width=width)
    coloured = render(reports, width=width, colour=True)
    assert "\033[" in coloured and "\033[" not in plain
    assert ANSI.sub("", coloured) == plain  # colour never changes the layout
    for text in (plain, coloured):
        too_wide = [ln for ln in text.splitlines() if visible_len(ln) > width]
        assert not too_wide, too_wide
    flat = _flat(plain)
    for r in reports:
        assert r.host in plain.split()  # never cut: a whole word of the output
        for c in r.checks:
            if c.status in (Status.OK, Status.SKIP):
                continue
            assert _flat(c.message) in flat, c.message
            assert _flat(c.remediation) in flat, c.remediation
    assert "gpu.memory_errors[0]" in plain and "gpu.lost[1]" in plain
    assert "(127.0.1.9:22)" in plain  # the unreachable host's reason, in full


def test_table_lays_out_the_host_rows() -> None:
    plain = render(mixed_reports(), width=200)
    table = plain.split("\n\n")[0]  # the problems follow after a blank line
    rows = {ln.split()[0]: ln for ln in table.splitlines() if ln.startswith("gpu-ws")}
    assert rows[HOSTS[0]].split()[1:3] == ["OK", "550.54.15"]
    assert "0:alice,bob" in rows[HOSTS[0]]  # BUSY: who holds which GPU
    assert rows[HOSTS[4]].split()[1] == "UNREACH"
    assert "left out" not in plain  # 200 columns hold every column
    narrow = render(mixed_reports(), width=80)
    assert "left out at 80 columns: BUSY" in narrow


def test_details_lists_only_problems_and_all_every_check() -> None:
    reports = mixed_reports()
    details = render(reports, details=True, width=100)
    assert not details.startswith("HOST")  # no table
    assert "FAIL gpu.memory_errors[0]" in details
    assert "OK nouveau" not in details and HOSTS[0] not in details  # a healthy host is quiet
    every = render(reports, all_checks=True, width=100)
    assert "OK nouveau:" in every and f"{HOSTS[0]} (127.0.2.1): OK" in every


def test_gpus_view_lists_each_gpu_and_its_users() -> None:
    text = render(mixed_reports(), gpus=True, width=100)
    lines = text.splitlines()
    assert lines[0].split() == ["HOST", "GPU", "MODEL", "TEMP", "UTIL", "MEM", "USERS"]
    busy = next(ln for ln in lines if ln.startswith(HOSTS[0]) and ln.split()[1] == "0")
    assert busy.split()[2:] == ["RTX", "A6000", "78C", "97%", "20/48G", "alice(18G)", "bob(2G)"]
    lost = next(ln for ln in lines if ln.startswith(HOSTS[2]) and ln.split()[1] == "1")
    assert "lost" in lost.split()
    assert any(ln.startswith(HOSTS[4]) and "connection" in ln for ln in lines)
    for width in (80, 120):
        out = render(mixed_reports(), gpus=True, width=width, colour=True)
        assert all(visible_len(ln) <= width for ln in out.splitlines())


def test_json_names_the_run_and_each_host() -> None:
    run = AuditRun(generated_at=1764633600.9, duration=3.14159, previous_at=1764547200)
    doc = json.loads(render(mixed_reports(), "json", run=run))
    assert doc["generated_at"] == "2025-12-02T00:00:00Z"
    assert doc["previous_at"] == "2025-12-01T00:00:00Z"
    assert doc["duration_s"] == 3.142
    assert doc["provision_version"] == __version__
    first = doc["hosts"][0]
    assert first["address"] == "127.0.2.1" and first["groups"] == ["all", "vision"]
    assert first["duration_s"] == 0.412  # rounded, not 0.41234


def test_assemble_from_outcomes_adds_drift() -> None:
    def gpu_facts(driver):
        return {**BASE, "nvidia": {**BASE["nvidia"], "nvml": "ok", "driver_version": driver}}

    outcomes = {
        "a": HostOutcome("a", HostState.OK, gpu_facts("550.54.15")),
        "b": HostOutcome("b", HostState.OK, gpu_facts("550.54.15")),
        "c": HostOutcome("c", HostState.OK, gpu_facts("535.161.08")),
        "d": HostOutcome("d", HostState.TIMED_OUT, reason="timed out after 5s"),
    }
    reports = assemble(outcomes, AuditSettings())
    by = {r.host: r for r in reports}
    assert any(c.id == "driver.drift" and c.status is Status.WARN for c in by["c"].checks)
    assert by["d"].status is Status.UNREACHABLE


@pytest.mark.lab
def test_audit_over_sshd_lab(sshd_lab_factory, tmp_path) -> None:
    """Real sshd hosts, each with its own NVML stand-in scenario; a junk host and a closed one."""
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc)")
    lib = nvml.build()
    scen = {
        "lab01": nvml.write_scenario(str(tmp_path / "healthy"), nvml.scenario("healthy")),
        "lab02": nvml.write_scenario(str(tmp_path / "mismatch"), nvml.scenario("mismatch")),
        "fault-junk": nvml.write_scenario(str(tmp_path / "ecc"), nvml.scenario("ecc")),
    }
    extra = {
        name: [f"SetEnv LD_LIBRARY_PATH={lib} NVML_STANDIN_SCENARIO={path}"]
        for name, path in scen.items()
    }
    extra["lab03"] = ["ForceCommand printf 'garbage \\377\\376 not a probe'"]
    lab = sshd_lab_factory(n=3, faults=["junk", "closed", "hang"], extra_config=extra)
    hang = lab.host("hang")
    cache = str(tmp_path / "cache")
    settings = {h.name: settings_for({"audit_cache_dir": cache}) for h in lab.hosts}
    opts = RunOptions(known_hosts=(lab.known_hosts,), connect_timeout=5, command_timeout=60)
    others = [h for h in lab.hosts if h is not hang]
    outcomes = run_hosts(lab.specs(others), audit_task(settings), opts)
    quick = RunOptions(known_hosts=(lab.known_hosts,), connect_timeout=2, command_timeout=2)
    outcomes.update(run_hosts(lab.specs([hang]), audit_task(settings), quick))
    reports = {r.host: r for r in assemble(outcomes, settings)}
    assert reports["fault-hang"].status is Status.UNREACHABLE
    assert reports["fault-hang"].state == "timed out"
    garbage = reports["lab03"]
    assert garbage.status is Status.UNKNOWN
    assert "no probe answer" in garbage.reason
    lab01, lab02 = reports["lab01"].facts, reports["lab02"].facts
    assert lab01 is not None and lab02 is not None
    assert lab01["nvidia"]["gpu_count"] == 2
    assert lab02["nvidia"]["nvml"] == "mismatch"
    assert any(
        c.id == "driver.mismatch" and c.status is Status.FAIL for c in reports["lab02"].checks
    )
    # MOTD junk before the probe's answer does not matter
    junk = reports["fault-junk"]
    assert junk.facts is not None
    assert any(c.id == "gpu.memory_errors" and c.status is Status.FAIL for c in junk.checks)
    assert reports["fault-closed"].status is Status.UNREACHABLE
    assert exit_code(list(reports.values())) == 4  # unreachable: the code of ping/run/apply
    # warm run: the cached probe answers in one round trip per host
    again = run_hosts(lab.specs(lab.ok_hosts[:2]), audit_task(settings), opts)
    assert {o.round_trips for o in again.values()} == {1}
    assert os.path.isdir(cache)
    table = render(list(reports.values()))
    assert JUNK_MARK not in table
    assert "2x RTX A6000" in table
