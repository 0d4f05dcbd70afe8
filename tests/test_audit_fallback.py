"""The degraded nvidia-smi path: parsers on the outputs in tests/data, then end to end on a host
without python3 (a PATH holding only shell tools and a stand-in nvidia-smi that replays them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from provision.audit import fallback, gather
from provision.audit.checks import GIB, Status
from provision.audit.report import host_report, render
from provision.audit.settings import settings_for
from provision.ssh import LocalSession
from provision.target import conn_spec

DATA = Path(__file__).parent / "data" / "nvidia-smi"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_a6000_query_and_apps() -> None:
    gpus = fallback.parse_gpu_csv(read("a6000x2.query.csv"))
    assert [g["index"] for g in gpus] == [0, 1]
    g0, g1 = gpus
    assert g0["name"] == "NVIDIA RTX A6000"
    assert g0["memory_total"] == 49140 * 1024 * 1024
    assert g0["power_w"] == 276.45
    assert g0["persistence_mode"] is True
    assert g0["ecc_uncorrected_volatile"] == 0
    assert g1["pcie_width_current"] == 8 and g1["pcie_width_max"] == 16
    assert g1["clock_event_reasons"] == 1
    apps = fallback.parse_apps_csv(read("a6000x2.apps.csv"))
    assert [a["pid"] for a in apps] == [48213, 51022]
    assert apps[0]["used_memory"] == 17920 * 1024 * 1024
    header = fallback.parse_header(read("a6000x2.header.txt"))
    assert header == {"driver": "550.54.15", "cuda": "12.4"}


def test_h100_eight_gpus() -> None:
    gpus = fallback.parse_gpu_csv(read("h100x8.query.csv"))
    assert len(gpus) == 8
    assert gpus[3]["clock_event_reasons"] == 0x48
    assert gpus[5]["ecc_uncorrected_volatile"] == 2
    assert fallback.parse_header(read("h100x8.header.txt"))["cuda"] == "12.2"
    assert len(fallback.parse_apps_csv(read("h100x8.apps.csv"))) == 4


def test_not_available_values_are_none() -> None:
    (gpu,) = fallback.parse_gpu_csv(read("geforce_na.query.csv"))
    assert gpu["power_w"] is None
    assert gpu["ecc_uncorrected_volatile"] is None
    assert gpu["clock_event_reasons"] is None
    assert gpu["persistence_mode"] is False
    assert set(gpu["na"]) >= {"power.draw", "ecc.errors.uncorrected.volatile.total"}
    (app,) = fallback.parse_apps_csv(read("geforce_na.apps.csv"))
    assert app["used_memory"] is None


@pytest.mark.parametrize(
    ("name", "rc", "expected"),
    [
        ("mismatch.txt", 18, "mismatch"),
        ("mismatch.txt", 0, "mismatch"),
        ("nodriver.txt", 9, "no driver"),
        ("a6000x2.query.csv", 0, None),
    ],
)
def test_smi_error_classification(name, rc, expected) -> None:
    assert fallback.smi_error(read(name), rc) == expected


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
        "smi_header": (0, read(f"{prefix}.header.txt")),
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
    sections = sections_for("a6000x2")
    sections["smi_query"] = (18, read("mismatch.txt"))
    facts = fallback.facts_from_sections(sections, [])
    assert facts["nvidia"]["nvml"] == "mismatch"
    report = host_report("ws", "ok", facts, "", settings_for({}))
    assert report.status is Status.FAIL


def _tool_dir(tmp_path: Path) -> Path:
    """A PATH with the shell tools the fallback uses but no python3, plus stand-in nvidia-smi."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "cat", "cut", "uname", "df", "timeout", "head", "test", "printf", "mkdir"):
        real = shutil.which(tool)
        if real:
            os.symlink(real, bindir / tool)
    smi = bindir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n# STAND-IN for nvidia-smi: replays outputs from tests/data/nvidia-smi\n"
        f'case "$1" in\n'
        f"  --query-gpu=*) cat {DATA}/a6000x2.query.csv;;\n"
        f"  --query-compute-apps=*) cat {DATA}/a6000x2.apps.csv;;\n"
        f"  *) cat {DATA}/a6000x2.header.txt;;\n"
        "esac\n"
    )
    smi.chmod(0o755)
    return bindir


def test_host_without_python_end_to_end(tmp_path, monkeypatch) -> None:
    """One round trip: the first command notices no python3 and runs the degraded script."""
    monkeypatch.setenv("PATH", str(_tool_dir(tmp_path)))
    spec = conn_spec("localhost", {"ansible_connection": "local"}, ssh_config_path="")
    session = LocalSession(spec)
    facts = gather.gather(session, settings_for({"audit_cache_dir": str(tmp_path / "c")}))
    assert session.round_trips == 1
    assert facts["probe"] == "nvidia-smi"
    assert facts["notes"] == [fallback.DEGRADED_NOTE]
    nv = facts["nvidia"]
    assert nv["driver_version"] == "550.54.15" and nv["gpu_count"] == 2
    assert nv["gpus"][0]["memory_used"] == 18432 * 1024 * 1024
    assert facts["disk"][0]["path"] == "/" and facts["disk"][0]["total"] > GIB
    report = host_report("localhost", "ok", facts, "", settings_for({}))
    (degraded,) = [c for c in report.checks if c.id == "audit.degraded"]
    assert degraded.message == "python3 missing: degraded audit via nvidia-smi"
    table = render([report], details=True)
    assert "audit.degraded" in table
    assert "2x RTX A6000" in table
    assert "0:48213" in table  # busy GPU 0 by pid: nvidia-smi does not say who
