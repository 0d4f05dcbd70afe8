"""The real probe zipapp + real pynvml against the NVML stand-in, graded and rendered.

Each scenario runs ``python3 probe.pyz`` in a subprocess with ``LD_LIBRARY_PATH`` pointing at
the stand-in library (nothing in Python is patched), then checks, table, JSON and exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision.audit import bundle, gather, probe
from provision.audit.checks import Status
from provision.audit.report import exit_code, gpus_cell, host_report, render
from provision.audit.settings import AuditSettings, settings_for
from provision.ssh import LocalSession
from provision.target import conn_spec
from tests.conftest import need
from tests.standins import nvml


@pytest.fixture(scope="module")
def lib_dir() -> str:
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc) for the NVML stand-in")
    return nvml.build()


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> str:
    data, _ = bundle.build()
    path = tmp_path_factory.mktemp("probe") / "probe.pyz"
    path.write_bytes(data)
    return str(path)


def run_probe(pyz: str, env: dict[str, str], settings: AuditSettings | None = None) -> dict:
    settings = settings or AuditSettings()
    start, end, _ = gather.markers()
    config = bundle.config_words(list(settings.disk_paths), list(settings.required_images), 5)
    proc = subprocess.run(
        [sys.executable, pyz, start, end, *config],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return gather.extract(proc.stdout, start, end)


def scenario_facts(pyz: str, lib_dir: str, tmp_path, kind: str, pids=()) -> dict:
    path = nvml.write_scenario(str(tmp_path / f"{kind}.scenario"), nvml.scenario(kind, pids))
    return run_probe(pyz, nvml.env_for(lib_dir, path))


def by_id(report, cid: str) -> list:
    return [c for c in report.checks if c.id == cid]


def test_bundle_is_deterministic() -> None:
    first = bundle._build.__wrapped__()
    second = bundle._build.__wrapped__()
    assert first == second
    assert len(first[1]) == 64


def test_healthy_two_gpus(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "healthy")
    nv = facts["nvidia"]
    assert nv["nvml"] == "ok"
    assert nv["driver_version"] == "550.54.15"
    assert nv["cuda_version"] == "12.4"
    assert [g["name"] for g in nv["gpus"]] == ["NVIDIA RTX A6000"] * 2
    assert nv["gpus"][0]["memory_total"] == 48 * nvml.GIB
    assert nv["gpus"][0]["power_w"] == 21.5
    s = settings_for({"audit_expected_gpus": 2, "audit_required_cuda": "12.2"})
    report = host_report("ws1", "ok", facts, "", s)
    statuses = {c.id: c.status for c in report.checks}
    assert statuses["gpu.present"] is Status.OK
    assert statuses["driver.loaded"] is Status.OK
    assert statuses["cuda.required"] is Status.OK
    assert statuses["gpu.memory_errors"] is Status.OK
    # Docker on this machine is a client without a daemon: a GPU host then FAILs on Docker.
    assert statuses["docker.daemon"] is Status.FAIL
    table = render([report])
    assert "2x RTX A6000" in table
    assert "550.54.15" in table and "12.4" in table
    assert all(len(line) <= 100 for line in table.splitlines())


def test_required_cuda_above_driver_fails(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "healthy")
    report = host_report("ws1", "ok", facts, "", settings_for({"audit_required_cuda": "12.6"}))
    (check,) = by_id(report, "cuda.required")
    assert check.status is Status.FAIL
    assert "560.28.03" in check.remediation


def test_no_driver(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "no_driver")
    assert facts["nvidia"]["nvml"] == "no driver"
    report = host_report("ws1", "ok", facts, "", settings_for({"audit_expected_gpus": 2}))
    assert report.status is Status.FAIL
    assert by_id(report, "driver.loaded")[0].status is Status.FAIL
    # Without an expected count and nothing on the PCI bus, it is simply not a GPU host.
    plain = host_report("ws1", "ok", facts, "", AuditSettings())
    assert by_id(plain, "gpu.present")[0].status is Status.SKIP


def test_library_absent_is_no_driver(pyz) -> None:
    env = nvml.env_for(None, None)
    facts = run_probe(pyz, env)
    assert facts["nvidia"]["nvml"] == "no driver"
    # no device, module or library anywhere: NVML is not even loaded, and the report says why
    assert facts["nvidia"]["nvml_error"] == (
        "no NVIDIA device, kernel module or libnvidia-ml on this host"
    )


def test_no_gpu(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "no_gpu")
    assert facts["nvidia"]["gpu_count"] == 0
    report = host_report("ws1", "ok", facts, "", settings_for({"audit_expected_gpus": 1}))
    (check,) = by_id(report, "gpu.present")
    assert check.status is Status.FAIL
    assert "0 of 1" in check.message


def test_mismatch(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "mismatch")
    assert facts["nvidia"]["nvml"] == "mismatch"
    report = host_report("ws1", "ok", facts, "", AuditSettings())
    (check,) = by_id(report, "driver.mismatch")
    assert check.status is Status.FAIL
    assert "reboot" in check.message
    assert report.status is Status.FAIL
    assert exit_code([report]) == 2
    doc = json.loads(render([report], "json"))
    assert doc["hosts"][0]["facts"]["nvidia"]["mismatch"] is True


def test_lost_gpu_is_a_placeholder(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "lost_gpu")
    gpus = facts["nvidia"]["gpus"]
    assert gpus[0]["lost"] is False and gpus[0]["name"] == "NVIDIA RTX A6000"
    assert gpus[1]["lost"] is True
    report = host_report("ws1", "ok", facts, "", AuditSettings())
    lost = by_id(report, "gpu.lost")
    assert [c.gpu_index for c in lost] == [1]
    assert lost[0].status is Status.FAIL
    assert gpus_cell(facts) == "1x RTX A6000, 1x lost"
    assert "gpu.lost[1]" in render([report])


def test_ecc_errors(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "ecc")
    report = host_report("ws1", "ok", facts, "", AuditSettings())
    mem = {c.gpu_index: c for c in by_id(report, "gpu.memory_errors")}
    assert mem[0].status is Status.FAIL and "3 uncorrected" in mem[0].message
    assert mem[1].status is Status.WARN  # pending remap


def test_unsupported_fields_are_na_not_failures(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "unsupported")
    gpu = facts["nvidia"]["gpus"][0]
    assert gpu["ecc_uncorrected_volatile"] is None
    assert gpu["power_w"] is None
    assert "ecc" in gpu["na"]
    report = host_report("ws1", "ok", facts, "", AuditSettings())
    gpu_checks = [c for c in report.checks if c.gpu_index == 0]
    assert gpu_checks
    assert all(c.status in (Status.OK, Status.SKIP) for c in gpu_checks)
    assert by_id(report, "gpu.memory_errors")[0].status is Status.SKIP


def test_busy_gpus_name_real_users(pyz, lib_dir, tmp_path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        facts = scenario_facts(pyz, lib_dir, tmp_path, "busy", (sleeper.pid, os.getpid()))
    finally:
        sleeper.kill()
        sleeper.wait()
    procs = facts["nvidia"]["gpus"][0]["processes"]
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    assert {p["pid"] for p in procs} == {sleeper.pid, os.getpid()}
    assert {p["user"] for p in procs} == {me}
    assert any(p["name"] == "sleep" for p in procs)
    report = host_report("ws1", "ok", facts, "", AuditSettings())
    table = render([report])
    assert f"0:{me}" in table
    (busy,) = by_id(report, "gpu.busy")
    assert "4.0 GiB" in busy.message


def test_the_probes_json_is_what_json_dumps_writes_in_ascii() -> None:
    """probe.to_json against the json module itself: the same text as json.dumps(ensure_ascii,
    compact, default=str) for every kind of value a probe meets, ASCII whatever the hostname
    (every host locale can write it), and a float that is not finite as null."""
    doc = {
        "host": {"hostname": "wörkstation-ü \U0001f600", "uptime_s": 13884.57, "tiny": 1e-05},
        "quote": 'say "hi"\\ \t\x01 \u2028',
        "big": 2**70,
        "flags": [True, False, None],
        "pair": (1, 2),
        "raw": b"x",
        "xids": {"79": 1},
        "nvidia": {"gpus": [{"name": "NVIDIA H200", "power_w": 71.5, "na": []}]},
    }
    text = probe.to_json(doc)
    assert text == json.dumps(doc, separators=(",", ":"), default=str)
    assert text.isascii() and "\n" not in text
    bad = probe.to_json({"load": float("inf"), "ratio": float("nan")})
    assert json.loads(bad) == {"load": None, "ratio": None}
    start, end, _ = gather.markers()
    assert gather.extract(f"motd\n{start}\n{text}\n{end}\n", start, end)["host"]["hostname"] == (
        "wörkstation-ü \U0001f600"
    )


def test_probe_settings_are_words_and_a_wrong_one_is_one_line(pyz: str) -> None:
    words = bundle.config_words(["/data=x", "/mnt/a b"], ["cuda@sha256:ab"], 2.5, ["nvidia-"])
    assert probe.parse_config(words) == {
        "timeout": 2.5,
        "paths": ["/data=x", "/mnt/a b"],
        "images": ["cuda@sha256:ab"],
        "packages": ["nvidia-"],
    }
    start, end, _ = gather.markers()
    proc = subprocess.run(
        [sys.executable, pyz, start, end, "timeout=1", "colour=blue"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and start not in proc.stdout
    assert proc.stderr.strip().splitlines() == ["probe: unknown probe setting 'colour=blue'"]


def test_junk_around_markers_and_garbage() -> None:
    start, end, _ = gather.markers()
    doc = {"host": {"hostname": "x"}, "nvidia": {}}
    noisy = f"Welcome!\n\x1b[1m MOTD {end}\n{start}\n{probe.to_json(doc)}\n{end}\ntrailing junk\n"
    # an early end marker before the start (MOTD trick) must not confuse the parser
    assert gather.extract(noisy, start, end)["host"]["hostname"] == "x"
    with pytest.raises(gather.AuditError, match="no probe answer"):
        gather.extract("\xff\xfe binary junk", start, end)
    with pytest.raises(gather.AuditError, match="not valid JSON"):
        gather.extract(f"{start}\n{{broken\n{end}", start, end)
    # nested past the parser's depth: one reason for that host, not a traceback
    with pytest.raises(gather.AuditError, match="not valid JSON"):
        gather.extract(f"{start}\n{'[' * 100_000}\n{end}", start, end)
    with pytest.raises(gather.AuditError, match="too large"):
        gather.extract("x" * (gather.MAX_OUTPUT + 1), start, end)


def test_gather_local_session_caches_probe(lib_dir, tmp_path, monkeypatch) -> None:
    """Cold run: 2 round trips (NEED, then upload+run); warm run: 1 round trip."""
    scen = nvml.write_scenario(str(tmp_path / "s"), nvml.scenario("healthy"))
    monkeypatch.setenv("LD_LIBRARY_PATH", lib_dir)
    monkeypatch.setenv("NVML_STANDIN_SCENARIO", scen)
    settings = settings_for({"audit_cache_dir": str(tmp_path / "cache")})
    spec = conn_spec("localhost", {"ansible_connection": "local"}, ssh_config_path="")
    session = LocalSession(spec)
    facts = gather.gather(session, settings)
    assert session.round_trips == 2
    assert facts["nvidia"]["gpu_count"] == 2
    _, sha = bundle.build()
    assert (tmp_path / "cache" / f"probe-{sha}.pyz").exists()
    # pynvml is extracted beside the cached probe so its bytecode can be cached too
    assert (tmp_path / "cache" / f"probe-{sha}.pyz.d" / "pynvml.py").exists()
    warm = LocalSession(spec)
    facts2 = gather.gather(warm, settings)
    assert warm.round_trips == 1
    assert facts2["host"]["boot_id"] == facts["host"]["boot_id"]


def test_a_warm_audit_runs_the_probe_from_its_cached_bytecode(tmp_path) -> None:
    """The cold run extracts the probe beside the cached zipapp; the warm run imports it from
    there, so its bytecode is cached (the zipapp's __main__ was compiled on every audit, ~40 ms
    of each host's CPU with runpy and zipimport), and answers as the zipapp does."""
    settings = settings_for({"audit_cache_dir": str(tmp_path / "cache")})
    spec = conn_spec("localhost", {"ansible_connection": "local"}, ssh_config_path="")
    cold = gather.gather(LocalSession(spec), settings)
    _, sha = bundle.build()
    folder = tmp_path / "cache" / f"probe-{sha}.pyz.d"
    source = (Path(bundle.__file__).with_name("probe.py")).read_bytes()
    assert (folder / "probe.py").read_bytes() == source
    warm_session = LocalSession(spec)
    warm = gather.gather(warm_session, settings)
    assert warm_session.round_trips == 1
    assert list((folder / "__pycache__").glob("probe.*.pyc")), "the probe's bytecode is cached"
    assert sorted(warm) == sorted(cold)
    assert warm["host"]["boot_id"] == cold["host"]["boot_id"]
    assert warm["nvidia"]["nvml"] == cold["nvidia"]["nvml"]


def test_the_hosts_python_variables_do_not_reach_the_probe(tmp_path, monkeypatch) -> None:
    """A PYTHONPATH in the audited account's environment holding a module of a name the probe
    imports (json) is not imported into the probe (python3 -I): the audit still answers, cold
    and warm, instead of failing the host."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "json.py").write_text("raise ImportError('a json module of the user')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    settings = settings_for({"audit_cache_dir": str(tmp_path / "cache")})
    spec = conn_spec("localhost", {"ansible_connection": "local"}, ssh_config_path="")
    for _ in ("cold", "warm"):
        facts = gather.gather(LocalSession(spec), settings)
        assert facts["host"]["hostname"] == os.uname().nodename
        assert facts["errors"] == []


def test_audit_local_in_process(tmp_path) -> None:
    settings = settings_for({"audit_disk_paths": [str(tmp_path)]})
    facts = gather.audit_local(settings)
    paths = [d["path"] for d in facts["disk"]]
    assert paths[0] == "/" and str(tmp_path) in paths
    dk = facts["docker"]
    if shutil.which("docker"):
        assert dk["installed"] is True
        if not dk["daemon_running"]:
            assert "daemon not running" in dk["daemon_error"]


def test_probe_pure_helpers() -> None:
    assert probe.decode_cuda(12040) == "12.4"
    assert probe.decode_cuda(13000) == "13.0"
    assert probe.decode_cuda(None) is None
    prop = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024"
    assert probe.module_version(prop) == ("550.54.15", "proprietary")
    open_text = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.82.07  Release Build"
    assert probe.module_version(open_text) == ("580.82.07", "open")
    assert probe.module_version(None) == (None, None)
    log = (
        "[   12.1] NVRM: Xid (PCI:0000:01:00): 79, pid='<unknown>', name=<unknown>, "
        "GPU has fallen off the bus.\n"
        "[   40.2] NVRM: Xid (PCI:0000:41:00): 13, pid=2211, Graphics Exception\n"
        "[   41.0] NVRM: Xid (PCI:0000:41:00): 13, pid=2211, Graphics Exception\n"
    )
    assert probe.parse_xids(log) == {"79": 1, "13": 2}
    osr = probe.parse_os_release('ID=ubuntu\nVERSION_ID="22.04"\n# c\n')
    assert osr == {"ID": "ubuntu", "VERSION_ID": "22.04"}


def test_hanging_step_costs_one_field() -> None:
    """A hanging command (hung nvidia tool, dead mount) ends in a reason within its timeout."""
    start = time.monotonic()
    result = probe.run_cmd(["sh", "-c", "sleep 30 & sleep 30"], 0.5)
    assert time.monotonic() - start < 5  # the whole process group was killed
    assert result["rc"] is None and result["error"] == "timed out after 0.5s"
    missing = probe.run_cmd(["/nonexistent/tool"], 1)
    assert missing["error"].startswith("cannot run")
    value, error = probe.with_timeout(lambda: time.sleep(5), 0.2)
    assert value is None and error == "timed out after 0.2s"
    value, error = probe.with_timeout(lambda: 1 / 0, 1)
    assert value is None and error is not None and error.startswith("ZeroDivisionError")


def test_cache_dir_with_shell_metacharacters(lib_dir, tmp_path, monkeypatch) -> None:
    """The cache path is quoted: no command runs from it, the probe still lands there."""
    scen = nvml.write_scenario(str(tmp_path / "s"), nvml.scenario("no_gpu"))
    monkeypatch.setenv("LD_LIBRARY_PATH", lib_dir)
    monkeypatch.setenv("NVML_STANDIN_SCENARIO", scen)
    marker = tmp_path / "pwned"
    weird = tmp_path / f"c a;$(touch {marker})`touch {marker}`'\"x"
    settings = settings_for({"audit_cache_dir": str(weird)})
    spec = conn_spec("localhost", {"ansible_connection": "local"}, ssh_config_path="")
    facts = gather.gather(LocalSession(spec), settings)
    assert facts["nvidia"]["gpu_count"] == 0
    assert not marker.exists()
    _, sha = bundle.build()
    assert (weird / f"probe-{sha}.pyz").exists()


# -- the states of issue 12 section 1 on the NVML path (the fallback's are in
#    test_audit_real_captures.py, on the real nvidia-smi texts) ----------------------------


def test_nvml_no_devices_with_the_driver_loaded_fails(pyz, lib_dir, tmp_path) -> None:
    """NVML initialised (so the module is loaded) but sees no GPU: FAIL, not a CPU box."""
    facts = scenario_facts(pyz, lib_dir, tmp_path, "no_gpu")
    report = host_report("ws1", "ok", facts, "", AuditSettings())
    (check,) = by_id(report, "gpu.present")
    assert check.status is Status.FAIL and "no GPU visible" in check.message


def test_nvml_mismatch_names_the_library_version(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "mismatch")
    assert nvml.LIB_VERSION in facts["nvidia"]["library_versions"]
    (check,) = by_id(host_report("ws1", "ok", facts, "", AuditSettings()), "driver.mismatch")
    assert f"library {nvml.LIB_VERSION}" in check.message  # not "library ?"


def test_nvml_corrupted_inforom_warns(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "inforom")
    gpus = facts["nvidia"]["gpus"]
    assert [g["inforom_corrupted"] for g in gpus] == [True, False]
    report = host_report("ws1", "ok", facts, "", AuditSettings())
    assert [(c.gpu_index, c.status) for c in by_id(report, "gpu.inforom")] == [(0, Status.WARN)]


def test_nvml_mig_mode_is_reported(pyz, lib_dir, tmp_path) -> None:
    facts = scenario_facts(pyz, lib_dir, tmp_path, "mig")
    assert [g["mig_mode"] for g in facts["nvidia"]["gpus"]] == [True, False]
    report = host_report("ws1", "ok", facts, "", AuditSettings())
    assert [c.message for c in by_id(report, "gpu.mig")] == [
        "GPU0: MIG mode on",
        "GPU1: MIG mode off",
    ]
    assert gpus_cell(facts) == "1x RTX A6000 MIG, 1x RTX A6000"


def test_hung_driver_costs_one_step_not_the_host(pyz, lib_dir, tmp_path) -> None:
    """nvmlInit blocks (a hung driver): the probe's steps run concurrently, so the host, Docker
    and disk facts still come back within the step cap, and the report names the hung step."""
    path = nvml.write_scenario(str(tmp_path / "hung"), nvml.scenario("hung_driver"))
    start, end, _ = gather.markers()
    config = bundle.config_words([], [], 1)
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, pyz, start, end, *config],
        env=nvml.env_for(lib_dir, path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    took = time.monotonic() - began
    facts = gather.extract(proc.stdout, start, end)
    assert took < 1 * probe.STEP_CAP + 2, took  # not 60 s
    assert facts["errors"] == [f"nvidia: timed out after {probe.STEP_CAP:g}s"]
    assert facts["host"]["kernel"] and facts["disk"][0]["total"] > 0
    report = host_report("ws1", "ok", facts, "", AuditSettings())
    (step,) = by_id(report, "audit.probe")
    assert step.status is Status.UNKNOWN and "nvidia: timed out" in step.message
