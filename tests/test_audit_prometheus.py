"""`--format prometheus`: the mixed audit as textfile-collector metrics, checked by promtool."""

from __future__ import annotations

import re
import subprocess
import threading

from provision.audit import render
from provision.audit.report import AuditRun
from provision.cli import _write_atomic
from tests.audit_mixed import HOSTS, mixed_reports
from tests.conftest import need_binary
from tests.test_cli import cli

RUN = AuditRun(generated_at=1764633600.25, duration=12.3456)
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The exposition text as {(name, labels): value}; duplicates would be a broken file."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        key = (m["name"], frozenset(LABEL.findall(m["labels"] or "")))
        assert key not in out, f"duplicate series {line!r}"
        out[key] = float(m["value"])
    return out


def value(found: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"no series {name}{labels}"
    return found[key]


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    promtool = need_binary("promtool", "prometheus")
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_mixed_audit() -> None:
    text = render(mixed_reports(), "prometheus", run=RUN)
    checked = promtool_check(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == checked.stderr == ""  # no lint complaint either


def test_promtool_is_a_real_check() -> None:
    """The validator fails on a convention break, so the test above can fail."""
    bad = "# HELP x_bytes_count a counter\n# TYPE x_bytes_count counter\nx_bytes_count 1\n"
    assert promtool_check(bad).returncode != 0


def test_metrics_say_what_the_audit_found() -> None:
    ok, ecc, lost, mismatch, down = HOSTS
    found = samples(render(mixed_reports(), "prometheus", run=RUN))
    assert value(found, "provision_audit_timestamp_seconds") == 1764633600.25
    assert value(found, "provision_audit_duration_seconds") == 12.346
    assert value(found, "provision_audit_hosts", status="FAIL") == 3
    assert value(found, "provision_audit_host_status", host=ok, status="OK") == 1
    assert value(found, "provision_audit_host_status", host=ok, status="FAIL") == 0
    assert value(found, "provision_audit_host_status", host=down, status="UNREACHABLE") == 1
    assert value(found, "provision_audit_host_up", host=down) == 0
    memory = dict(host=ecc, check="gpu.memory_errors", subject="0")
    assert value(found, "provision_audit_check_status", **memory, status="FAIL") == 1
    assert value(found, "provision_audit_check_status", **memory, status="OK") == 0
    lost_gpu = dict(host=lost, check="gpu.lost", subject="1")
    assert value(found, "provision_audit_check_status", **lost_gpu, status="FAIL") == 1
    assert value(found, "provision_gpu_lost", host=lost, gpu="1", uuid="") == 1
    busy = dict(
        host=ok, gpu="0", uuid="GPU-00000000-1111-2222-3333-444455556666", model="NVIDIA RTX A6000"
    )
    assert value(found, "provision_gpu_utilization_ratio", **busy) == 0.97
    assert value(found, "provision_gpu_memory_used_bytes", **busy) == 20 * 1024**3
    assert value(found, "provision_gpu_temperature_celsius", **busy) == 78
    assert value(found, "provision_gpu_power_watts", **busy) == 286
    assert value(found, "provision_gpu_processes", **busy) == 2
    assert (
        value(found, "provision_disk_free_bytes", host=ok, path="/var/lib/docker", role="docker")
        == 420 * 1024**3
    )
    driver = dict(host=ok, driver_version="550.54.15", cuda_version="12.4", nvml="ok")
    assert value(found, "provision_nvidia_driver_info", **driver) == 1
    info = dict(host=mismatch, driver_version="", cuda_version="", nvml="mismatch")
    assert value(found, "provision_nvidia_driver_info", **info) == 1
    assert not any(
        name == "provision_disk_free_bytes" and ("host", down) in labels for name, labels in found
    )  # an unreached host reports no stale numbers


def test_a_scrape_during_rewrites_never_sees_a_partial_file(tmp_path) -> None:
    """The CLI's -o writer replaces the file whole: a reader racing 300 rewrites of two
    different audits only ever reads one of the two complete texts."""
    small = render(mixed_reports()[:1], "prometheus", run=RUN)
    large = render(mixed_reports(), "prometheus", run=RUN) * 20  # ~0.5 MB: many write() calls
    path = tmp_path / "provision.prom"
    _write_atomic(str(path), small)
    done = threading.Event()
    seen: list[str] = []

    def scrape() -> None:
        while not done.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=scrape)
    reader.start()
    try:
        for i in range(300):
            _write_atomic(str(path), large if i % 2 else small)
    finally:
        done.set()
        reader.join()
    assert len(seen) > 10
    partial = [s for s in seen if s not in (small, large)]
    assert not partial, f"{len(partial)} of {len(seen)} reads saw a partial file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["provision.prom"]  # no temp left


def test_cli_writes_metrics_for_the_textfile_collector(tmp_path) -> None:
    out = tmp_path / "provision.prom"
    r = cli("audit", "--local", "--format", "prometheus", "-o", str(out))
    assert r.stdout == "" and "Traceback" not in r.stderr
    text = out.read_text()
    assert promtool_check(text).returncode == 0, text
    found = samples(text)
    assert value(found, "provision_audit_host_up", host="localhost") == 1
    assert any(name == "provision_disk_free_bytes" for name, _ in found)
