"""The degraded nvidia-smi path: parsers on the outputs in tests/data, then end to end on a host
without python3 (a PATH holding only shell tools and a stand-in nvidia-smi that replays them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.audit import fallback, gather
from provision.audit.checks import GIB, Status
from provision.audit.report import host_report, render
from provision.audit.settings import settings_for
from tests.standins.nvidia_smi_replay import host_without_python

DATA = Path(__file__).parent / "data" / "nvidia-smi"
REAL = Path(__file__).parent / "data" / "nvidia-smi-real"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_h100_eight_gpus() -> None:
    gpus = fallback.parse_gpu_csv(read("h100x8.query.csv"))
    assert len(gpus) == 8
    assert gpus[3]["clock_event_reasons"] == 0x48
    assert gpus[5]["ecc_uncorrected_volatile"] == 2
    assert fallback.parse_header(read("h100x8.header.txt"))["cuda"] == "12.2"
    assert len(fallback.parse_apps_csv(read("h100x8.apps.csv"))) == 4


@pytest.mark.parametrize(
    ("name", "rc", "expected"),
    [
        ("gputil55_mismatch_535.161.rc18.txt", 18, "mismatch"),
        ("az-hop269_mismatch_465.19.01.txt", 0, "mismatch"),
        ("nvidia-gpu-exporter65_nodriver.rc9.txt", 9, "no driver"),
        ("nvidia-docker1163_no-libnvidia-ml.txt", 12, "no driver"),
        ("dra-driver-nvidia-gpu1008_no-supported-gpus.rc255.txt", 255, "no devices"),
        ("open-gpu-kernel-modules862_no-devices.txt", 6, "no devices"),
    ],
)
def test_smi_error_classification(name, rc, expected) -> None:
    assert fallback.smi_error((REAL / "errors" / name).read_text(), rc) == expected
    assert fallback.smi_error("", 124) == "timed out"
    assert fallback.smi_error("index, name\n0, x\n", 0) is None


def sections_for(prefix: str) -> dict:
    return {
        "hostname": (0, "gpu-ws"),
        "os-release": (0, 'ID=ubuntu\nVERSION_ID="22.04"'),
        "kernel": (0, "5.15.0-105-generic"),
        "modules": (0, "nvidia_uvm\nnvidia"),
        "nvidia_version": (
            0,
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  "
            "Sat Aug 19 01:15:15 UTC 2023",
        ),
        "smi_query": (0, read(f"{prefix}.query.csv")),
        "smi_table": (0, read(f"{prefix}.header.txt")),
        "smi_apps": (0, read(f"{prefix}.apps.csv")),
        "docker_info": (1, "Cannot connect to the Docker daemon"),
        "df": (
            0,
            "Filesystem 1-blocks Used Available Capacity Mounted on\n"
            "/dev/sda1 1000000000000 900000000000 100000000000 90% /",
        ),
    }


def test_facts_from_sections_grade_like_the_probe() -> None:
    facts = fallback.facts_from_sections(sections_for("h100x8"), [])
    assert facts["probe"] == "nvidia-smi"
    nv = facts["nvidia"]
    assert nv["driver_version"] == "535.161.08" and nv["cuda_version"] == "12.2"
    # the loaded module (535.104.05) is older than the user-space tools: mismatch
    assert nv["mismatch"] is True
    assert [len(g["processes"]) for g in nv["gpus"]] == [1, 1, 1, 1, 0, 0, 0, 0]
    report = host_report("h100", "ok", facts, "", settings_for({"audit_expected_gpus": 8}))
    statuses = {(c.id, c.gpu_index): c.status for c in report.checks}
    assert statuses[("audit.degraded", None)] is Status.WARN
    assert statuses[("driver.mismatch", None)] is Status.FAIL
    assert statuses[("gpu.memory_errors", 5)] is Status.FAIL
    assert statuses[("gpu.throttle", 3)] is Status.WARN
    assert statuses[("disk:/", None)] is Status.WARN
    assert "8x H100 " in render([report])


def test_mismatch_output_gives_mismatch_state() -> None:
    sections = sections_for("h100x8")
    sections["smi_query"] = (
        18,
        (REAL / "errors" / "gputil55_mismatch_535.161.rc18.txt").read_text(),
    )
    facts = fallback.facts_from_sections(sections, [])
    assert facts["nvidia"]["nvml"] == "mismatch"
    report = host_report("ws", "ok", facts, "", settings_for({}))
    assert report.status is Status.FAIL


def test_host_without_python_end_to_end(tmp_path, monkeypatch) -> None:
    """One round trip: the first command notices no python3 and runs the degraded script
    (nvidia-smi is the stand-in replaying a real H100 capture under load)."""
    prefix = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.load"
    session = host_without_python(tmp_path, monkeypatch, prefix)
    facts = gather.gather(session, settings_for({"audit_cache_dir": str(tmp_path / "c")}))
    assert session.round_trips == 1
    assert facts["probe"] == "nvidia-smi"
    assert facts["notes"] == [fallback.DEGRADED_NOTE]
    nv = facts["nvidia"]
    assert nv["driver_version"] == "590.48.01" and nv["gpu_count"] == 1
    assert nv["gpus"][0]["memory_used"] == 19818 * 1024 * 1024
    assert facts["disk"][0]["path"] == "/" and facts["disk"][0]["total"] > GIB
    report = host_report("localhost", "ok", facts, "", settings_for({}))
    (degraded,) = [c for c in report.checks if c.id == "audit.degraded"]
    assert degraded.message == "python3 missing: degraded audit via nvidia-smi"
    assert "audit.degraded" in render([report], details=True)
    table = render([report])
    assert "1x H100" in table
    assert "0:11327" in table  # busy GPU 0 by pid: nvidia-smi does not say who
