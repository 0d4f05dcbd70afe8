"""`provision audit` as a user runs it: the real CLI, real sshd hosts, an NVML stand-in per host."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from tests.conftest import need
from tests.lab.sshd import SshdLab
from tests.standins import nvml
from tests.test_cli import FAST, cli


@pytest.fixture(scope="module")
def gpu_lab(tmp_path_factory) -> SshdLab:
    """lab01: two healthy GPUs; lab02: driver/library mismatch; plus a closed port."""
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc)")
    from tests.lab.fixtures import _need_lab

    _need_lab()
    tmp = tmp_path_factory.mktemp("gpu-lab")
    lib = nvml.build()
    scen = {
        "lab01": nvml.write_scenario(str(tmp / "healthy"), nvml.scenario("healthy")),
        "lab02": nvml.write_scenario(str(tmp / "mismatch"), nvml.scenario("mismatch")),
    }
    extra = {
        name: [f"SetEnv LD_LIBRARY_PATH={lib} NVML_STANDIN_SCENARIO={path}"]
        for name, path in scen.items()
    }
    with SshdLab(n=2, faults=["closed"], extra_config=extra) as lab:
        lab.cache = str(tmp / "probe-cache")  # type: ignore[attr-defined]
        yield lab


def _inventory(lab: SshdLab, tmp_path, **extra: str) -> str:
    return lab.write_inventory(
        str(tmp_path / "hosts.ini"), extra_vars={"audit_cache_dir": lab.cache, **extra}
    )


def test_local_audit_json_matches_exit_code() -> None:
    r = cli("audit", "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1
    assert [h["host"] for h in doc["hosts"]] == ["localhost"]
    assert r.returncode == doc["summary"]["exit_code"]
    assert doc["hosts"][0]["facts"]["host"]["kernel"]


def test_table_json_csv_and_exit_codes(gpu_lab: SshdLab, tmp_path) -> None:
    inv = _inventory(gpu_lab, tmp_path)
    env = gpu_lab.env()

    table = cli("audit", inv, *FAST, env=env)
    assert table.returncode == 3, table.stderr  # an unreachable host
    lines = {ln.split()[0]: ln for ln in table.stdout.splitlines() if ln.strip()}
    assert "2x RTX A6000" in lines["lab01"]
    assert "FAIL" in lines["lab02"] and "mismatch" in lines["lab02"]
    assert "UNREACH" in lines["fault-closed"], table.stdout
    assert max(len(ln) for ln in table.stdout.splitlines()) <= 100

    js = cli("audit", inv, *FAST, "--format", "json", env=env)
    doc = json.loads(js.stdout)
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert hosts["lab01"]["facts"]["nvidia"]["gpu_count"] == 2
    assert hosts["lab01"]["facts"]["nvidia"]["cuda_version"] == "12.4"
    mismatch = [c for c in hosts["lab02"]["checks"] if c["id"] == "driver.mismatch"]
    assert mismatch and mismatch[0]["status"] == "FAIL"
    assert hosts["fault-closed"]["status"] == "UNREACHABLE"
    assert doc["summary"]["exit_code"] == js.returncode == 3
    assert {hosts[h]["round_trips"] for h in ("lab01", "lab02")} == {1}  # warm: probe cached

    rows = list(
        csv.DictReader(io.StringIO(cli("audit", inv, *FAST, "--format", "csv", env=env).stdout))
    )
    assert {r["host"] for r in rows} == {"fault-closed", "lab01", "lab02"}  # a row per check

    # --fail-on moves the bar; --output writes the report atomically, stdout stays empty
    out = tmp_path / "report.md"
    quiet = cli(
        "audit",
        inv,
        *FAST,
        "-l",
        "lab02",
        "--fail-on",
        "never",
        "--format",
        "markdown",
        "-o",
        str(out),
        env=env,
    )
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert "| lab02 |" in out.read_text().replace("  ", " ")
    failing = cli("audit", inv, *FAST, "-l", "lab02", env=env)
    assert failing.returncode == 2


def test_thresholds_from_inventory_and_flags(gpu_lab: SshdLab, tmp_path) -> None:
    inv = _inventory(gpu_lab, tmp_path, audit_expected_gpus="4", audit_min_drivr="550")
    r = cli("audit", inv, *FAST, "-l", "lab01", "--format", "json", env=gpu_lab.env())
    assert "unknown audit variable 'audit_min_drivr'" in r.stderr
    assert "audit_min_driver" in r.stderr  # the suggestion
    checks = {c["id"]: c for c in json.loads(r.stdout)["hosts"][0]["checks"]}
    assert checks["gpu.present"]["status"] == "FAIL"  # 2 GPUs, 4 expected
    assert "4" in checks["gpu.present"]["message"]
    # a flag overrides the inventory
    r = cli(
        "audit",
        inv,
        *FAST,
        "-l",
        "lab01",
        "--expect-gpus",
        "2",
        "--require-cuda",
        "12.8",
        "--format",
        "json",
        env=gpu_lab.env(),
    )
    checks = {c["id"]: c for c in json.loads(r.stdout)["hosts"][0]["checks"]}
    assert checks["gpu.present"]["status"] == "OK"
    assert (
        checks["cuda.required"]["status"] == "FAIL" and "12.8" in checks["cuda.required"]["message"]
    )


def test_bad_audit_variable_is_one_line(gpu_lab: SshdLab, tmp_path) -> None:
    inv = _inventory(gpu_lab, tmp_path, audit_expected_gpus="lots")
    r = cli("audit", inv, *FAST, env=gpu_lab.env())
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "audit_expected_gpus" in r.stderr and r.stderr.count("\n") == 1
