"""The degraded (nvidia-smi) path fed the real outputs in tests/data/nvidia-smi-real/, and the
same states on the NVML path through the stand-in library (issue 12, sections 1 and 2).

Every expectation here was read off the capture itself (its banner, its CSV row, its error text);
``REAL`` doubles as the note in docs/audit.md of what each capture now reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.audit import fallback, gather
from provision.audit.checks import Status
from provision.audit.report import gpus_cell, host_report, render
from provision.audit.settings import settings_for
from tests.standins.nvidia_smi_replay import host_without_python

REAL = Path(__file__).parent / "data" / "nvidia-smi-real"
CAPTURES = REAL / "utkuozdemir"

# capture prefix -> (driver, CUDA, GPU name, MIG mode, busy pids), as the capture prints them
FULL = {
    "linux-x86_64__nvidia-geforce-rtx-2080-super__595.71.05.idle": (
        "595.71.05", "13.2", "NVIDIA GeForce RTX 2080 SUPER", None, []),
    "linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.idle": (
        "610.57.04", "13.3", "NVIDIA GeForce RTX 2080 SUPER", None, []),
    "linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.load": (
        "610.57.04", "13.3", "NVIDIA GeForce RTX 2080 SUPER", None, [28512, 28511]),
    "linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.load": (
        "595.71.05", "13.2", "NVIDIA GeForce RTX 4080 SUPER", None, [2165, 5022, 5021]),
    "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.load": (
        "590.48.01", "13.1", "NVIDIA H100 80GB HBM3", False, [11327, 11328, 11345]),
    "linux-x86_64__nvidia-h100-mig__590.48.01.idle": (
        "590.48.01", "13.1", "NVIDIA H100 80GB HBM3", True, []),
    "linux-x86_64__nvidia-h200-mig__590.48.01.load": (
        "590.48.01", "13.1", "NVIDIA H200", True, [12249, 12250, 12267]),
    "linux-x86_64__nvidia-h200__580.173.02.idle": ("580.173.02", "13.0", "NVIDIA H200", False, []),
    "linux-x86_64__nvidia-h200__590.48.01.idle": ("590.48.01", "13.1", "NVIDIA H200", False, []),
    "linux-x86_64__nvidia-l40s__595.80.load": (
        "595.80", "13.2", "NVIDIA L40S", None, [20037, 20038]),
    "windows-x86_64__nvidia-geforce-rtx-2080-super__610.62.idle": (
        "610.62", "13.3", "NVIDIA GeForce RTX 2080 SUPER", None, None),
}  # fmt: skip

# banner file -> (driver, CUDA) as its first line says; N/A and ERR! are unknown (None)
BANNERS = {
    "gpustat16_367.57_gtx-titan-x.txt": ("367.57", None),
    "gpu-operator20_384.130_quadro-p4000.txt": ("384.130", None),  # no CUDA field before 410
    "dask-cuda859_460.32.03_v100-sxm3.txt": ("460.32.03", "11.2"),
    "dcgm-exporter250_535.129.03_v100-sxm2.txt": ("535.129.03", "12.2"),
    "linux-tegra17_540.3.0_jetson-orin_driver-na.txt": (None, "12.2"),
    "jetpack-nixos371_540.4.0_jetson-orin_cuda-na.txt": ("540.4.0", None),
    "wsl11589_545.46_wsl2_cuda-err.txt": ("546.80", None),
    "wsl11277_555.52.01_wsl2_driver-555.99.txt": ("555.99", "12.5"),
    "dstack2860_570.133.20_tesla-t4.txt": ("570.133.20", "12.8"),
    "llmops-session_610.57.04_rtx-pro-6000x4_gpu1-lost.txt": ("610.57.04", "13.3"),
}

# error text -> (exit code: from the thread, else nvidia-smi(1)'s RETURN VALUE), the state the
# fallback reports, and the NVML path's state for the same condition
ERRORS = {
    "gputil55_mismatch_535.161.rc18.txt": (18, "mismatch"),
    "mozilla-translations1167_mismatch_550.144.rc18.txt": (18, "mismatch"),
    "truenas-nvidia-drivers19_mismatch_580.178.txt": (None, "mismatch"),
    "az-hop269_mismatch_465.19.01.txt": (None, "mismatch"),
    "nvidia-gpu-exporter65_nodriver.rc9.txt": (9, "no driver"),
    "wsl9134_nodriver_shutdown.txt": (None, "no driver"),
    "nvidia-docker1163_no-libnvidia-ml.txt": (12, "no driver"),
    "dra-driver-nvidia-gpu1008_no-supported-gpus.rc255.txt": (255, "no devices"),
    "open-gpu-kernel-modules862_no-devices.txt": (6, "no devices"),
    "openmmtools693_command-not-found.rc127.txt": (127, "no driver"),
    "nvidia-docker1671_nvml-unknown-error.txt": (255, "error"),
    "nvidia-container-toolkit210_insufficient-permissions.txt": (4, "error"),
}


def read(*parts: str) -> str:
    return REAL.joinpath(*parts).read_text()


def capture_sections(prefix: str) -> dict[str, tuple[int | None, str]]:
    """The fallback's sections as a host with this capture's GPU would print them."""
    base = CAPTURES / prefix
    return {
        "modules": (0, "nvidia_uvm\nnvidia"),
        "smi_query": (0, base.with_name(prefix + ".query-gpu.csv").read_text()),
        "smi_table": (0, base.with_name(prefix + ".table.txt").read_text()),
        "smi_apps": (0, base.with_name(prefix + ".apps.csv").read_text()),
    }


def grade(sections: dict, **variables: object):
    facts = fallback.facts_from_sections(sections, [])
    return facts, host_report("ws", "ok", facts, "", settings_for(variables))


def check(report, cid: str, gpu: int | None = None):
    (found,) = [c for c in report.checks if c.id == cid and (gpu is None or c.gpu_index == gpu)]
    return found


@pytest.mark.parametrize("prefix", sorted(FULL))
def test_full_capture_reads_like_it_prints(prefix: str) -> None:
    driver, cuda, name, mig, busy = FULL[prefix]
    facts, report = grade(capture_sections(prefix), audit_required_cuda="13.0")
    nv = facts["nvidia"]
    assert (nv["driver_version"], nv["cuda_version"]) == (driver, cuda)
    (gpu,) = nv["gpus"]
    assert gpu["name"] == name and gpu["mig_mode"] is mig
    assert gpu["memory_total"] > 0 and gpu["temperature_c"] is not None
    if busy is not None:  # graphics-only (type G) processes never count
        assert [p["pid"] for p in gpu["processes"]] == busy
    assert check(report, "cuda.required").status is Status.OK  # every capture is CUDA >= 13.0
    assert check(report, "gpu.present").status is Status.OK


@pytest.mark.parametrize("name", sorted(BANNERS))
def test_banner_driver_and_cuda(name: str) -> None:
    header = fallback.parse_header(read("tables", name))
    assert (header["driver"], header["cuda"]) == BANNERS[name]


def test_r610_banner_kmd_and_cuda_umd() -> None:
    """R610 says "KMD Version" and "CUDA UMD Version": a 13.3 host passes a 13.1 requirement."""
    prefix = "linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.idle"
    sections = capture_sections(prefix)
    # the banner alone (the query refused: only the table is left to read versions from)
    sections["smi_query"] = (2, 'Field "kmd_version" is not a valid field to query.\n')
    facts, report = grade(sections, audit_required_cuda="13.1")
    assert facts["nvidia"]["cuda_version"] == "13.3"
    assert check(report, "cuda.required").status is Status.OK
    assert "13.3" in render([report])


def test_unknown_cuda_is_unknown_never_a_guessed_fail() -> None:
    """Jetson prints "CUDA Version: N/A": the requirement is UNKNOWN, not FAILed on a guess."""
    sections = {
        "modules": (0, "nvidia"),
        "smi_table": (0, read("tables", "jetpack-nixos371_540.4.0_jetson-orin_cuda-na.txt")),
        "smi_query": (0, ""),
    }
    facts, report = grade(sections, audit_required_cuda="12.2")
    assert facts["nvidia"]["driver_version"] == "540.4.0"
    result = check(report, "cuda.required")
    assert result.status is Status.UNKNOWN
    assert "unknown" in result.message


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_error_texts_give_the_nvml_state(name: str) -> None:
    rc, state = ERRORS[name]
    text = read("errors", name)
    sections = {"modules": (0, "nvidia"), "smi_query": (rc, text), "smi_table": (rc, text)}
    facts, report = grade(sections)
    assert facts["nvidia"]["nvml"] == state
    assert report.status in (Status.FAIL, Status.UNKNOWN)
    if state == "mismatch" and "NVML library version" in text:
        lib = fallback.library_version(text)
        assert lib and lib in check(report, "driver.mismatch").message  # not "library ?"
    if state == "no devices":  # the module is loaded: a GPU box whose GPUs vanished
        assert check(report, "gpu.present").status is Status.FAIL


def test_timeout_is_timed_out_and_a_failure() -> None:
    sections = {"modules": (0, "nvidia"), "smi_query": (124, ""), "smi_table": (124, "skipped")}
    facts, report = grade(sections)
    assert facts["nvidia"]["nvml"] == "timed out"
    assert check(report, "driver.loaded").status is Status.FAIL
    assert "hung" in check(report, "driver.loaded").message


@pytest.mark.parametrize(
    ("name", "bus", "index"),
    [
        ("open-gpu-kernel-modules387_handle-unknown-error.txt", "0000:0b:00.0", None),
        ("syno-nvidia-gpu-driver22_handle-unknown-error_nospace.txt", "0000:07:00.0", None),
        ("owod81_gpu-is-lost.txt", "0000:02:00.0", None),
    ],
)
def test_lost_gpu_lines_become_lost_gpus(name: str, bus: str, index: int | None) -> None:
    text = read("errors", name)
    facts, report = grade({"modules": (0, "nvidia"), "smi_query": (15, text)})
    (gpu,) = facts["nvidia"]["gpus"]
    assert gpu["lost"] is True and gpu["pci_bus_id"] == bus and gpu["index"] == index
    lost = check(report, "gpu.lost")
    assert lost.status is Status.FAIL and bus in lost.message


def test_live_lost_gpu_output_keeps_the_other_three() -> None:
    """The real `nvidia-smi 2>&1` of a 4-GPU box with GPU1 gone: 3 GPUs + 1 lost, FAIL."""
    table = read("tables", "llmops-session_610.57.04_rtx-pro-6000x4_gpu1-lost.txt")
    first = table.splitlines()[0]
    # composite: that real lost line in front of 3 rows of the real H100 CSV, indexes 0, 2, 3
    csv = CAPTURES / "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.idle.query-gpu.csv"
    head, row = csv.read_text().splitlines()[:2]
    rows = [row.replace("GPU-00000000", f"GPU-0000000{i}", 1) for i in (0, 2, 3)]
    rows = [
        r.replace(", 16, 16, 0, ", f", 16, 16, {i}, ", 1)
        for r, i in zip(rows, (0, 2, 3), strict=True)
    ]
    query = "\n".join([first, head, *rows]) + "\n"
    facts, report = grade(
        {"modules": (0, "nvidia"), "smi_query": (15, query), "smi_table": (0, table)}
    )
    gpus = facts["nvidia"]["gpus"]
    assert [(g["index"], g["lost"]) for g in gpus] == [
        (0, False),
        (1, True),
        (2, False),
        (3, False),
    ]
    assert gpus[1]["pci_bus_id"] == "0000:34:00.0"
    assert facts["nvidia"]["driver_version"] == "610.57.04"
    assert check(report, "gpu.lost", 1).status is Status.FAIL
    assert "1x lost" in gpus_cell(facts)
    # the table's own processes (this host's vLLM workers) mark GPUs 0 and 2 busy
    assert fallback.parse_table_processes(table)[0]["pid"] == 6194


def test_inforom_exit_14_keeps_every_row() -> None:
    """Exit 14 (corrupted infoROM) is a warning with full output: rows kept, WARN raised."""
    warning = read("errors", "gpu-operator20_inforom-corrupted.rc14.txt")
    prefix = "linux-x86_64__nvidia-h200__590.48.01.idle"
    sections = capture_sections(prefix)
    sections["smi_query"] = (14, warning + sections["smi_query"][1])  # composite, real parts
    facts, report = grade(sections)
    assert facts["nvidia"]["gpu_count"] == 1 and facts["nvidia"]["gpus"][0]["name"] == "NVIDIA H200"
    assert facts["nvidia"]["inforom_warnings"] == ["0000:b3:00.0"]
    assert check(report, "gpu.inforom").status is Status.WARN
    assert report.status is not Status.OK


def test_broken_driver_is_not_a_cpu_box() -> None:
    """PCI shows NVIDIA GPUs but nvidia-smi finds none: never OK with 0 GPUs."""
    pci = "0000:01:00.0 0x2684 nvidia\n0000:02:00.0 0x2684 nvidia"
    text = read("errors", "open-gpu-kernel-modules862_no-devices.txt")
    facts, report = grade({"pci": (0, pci), "modules": (0, "nvidia"), "smi_query": (6, text)})
    assert len(facts["nvidia"]["pci_gpus"]) == 2
    present = check(report, "gpu.present")
    assert present.status is Status.FAIL and "PCI bus shows 2" in present.message
    # without the module and without nvidia-smi: the PCI devices still make it a GPU host
    gone = read("errors", "openmmtools693_command-not-found.rc127.txt")
    facts, report = grade({"pci": (0, pci), "modules": (0, ""), "smi_query": (127, gone)})
    assert check(report, "driver.loaded").status is Status.FAIL
    assert gpus_cell(facts) == "2x (no driver)"


def test_deprecated_cell_is_na() -> None:
    assert fallback.na("[Requested functionality has been deprecated]") is None
    csv = (CAPTURES / "linux-x86_64__nvidia-h200__580.173.02.idle.query-gpu.csv").read_text()
    assert "[Requested functionality has been deprecated]" in csv
    (gpu,) = fallback.parse_gpu_csv(csv)
    assert gpu["pcie_width_max"] == 16 and gpu["remap_pending"] is False


def test_graphics_only_processes_do_not_make_a_gpu_busy() -> None:
    prefix = "linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.load"
    sections = capture_sections(prefix)
    sections.pop("smi_apps")  # only the table left: G rows (plasmashell, Xwayland) drop out
    facts, report = grade(sections)
    (gpu,) = facts["nvidia"]["gpus"]
    assert sorted(p["pid"] for p in gpu["processes"]) == [2165, 5021, 5022]
    idle = "linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.idle"  # gnome-shell (G) only
    facts, report = grade(capture_sections(idle))
    assert facts["nvidia"]["gpus"][0]["processes"] == []
    assert not [c for c in report.checks if c.id == "gpu.busy"]


def test_mig_mode_is_reported() -> None:
    facts, report = grade(capture_sections("linux-x86_64__nvidia-h100-mig__590.48.01.idle"))
    assert check(report, "gpu.mig").message == "GPU0: MIG mode on"
    assert gpus_cell(facts) == "1x H100 MIG"


def test_proc_version_texts() -> None:
    for name, version, flavour in (
        ("open-gpu-kernel-modules1193_open_610.43.02.txt", "610.43.02", "open"),
        ("truenas-nvidia-drivers19_proprietary_580.173.02.txt", "580.173.02", "proprietary"),
    ):
        nv = fallback.nvidia_from_sections({"nvidia_version": (0, read("proc", name))})
        assert (nv["kernel_module_version"], nv["module_flavour"]) == (version, flavour)


# -- end to end: the real degraded script on a host without python3 --------------------------


def test_refused_fields_are_dropped_not_fatal(tmp_path, monkeypatch) -> None:
    """A driver that refuses driver_version (deprecated from R595) and two more fields still
    reports every GPU, from one round trip, with the real capture's values."""
    prefix = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.load"
    session = host_without_python(
        tmp_path, monkeypatch, prefix, SMI_REFUSE="driver_version,mig.mode.current,pci.bus_id"
    )
    facts = gather.gather(session, settings_for({"audit_cache_dir": str(tmp_path / "c")}))
    assert session.round_trips == 1
    nv = facts["nvidia"]
    assert nv["gpu_count"] == 1
    gpu = nv["gpus"][0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["memory_used"] == 19818 * 1024 * 1024
    assert gpu["mig_mode"] is None  # refused, so unknown
    assert nv["driver_version"] == "590.48.01" and nv["cuda_version"] == "13.1"  # the banner
    assert [p["pid"] for p in gpu["processes"]] == [11327, 11328, 11345]


def test_r610_host_without_python_end_to_end(tmp_path, monkeypatch) -> None:
    prefix = "linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.load"
    session = host_without_python(tmp_path, monkeypatch, prefix)
    facts = gather.gather(session, settings_for({"audit_cache_dir": str(tmp_path / "c")}))
    report = host_report("ws", "ok", facts, "", settings_for({"audit_required_cuda": "13.1"}))
    assert facts["nvidia"]["driver_version"] == "610.57.04"
    assert check(report, "cuda.required").status is Status.OK
    assert gpus_cell(facts) == "1x RTX 2080 SUPER"
    assert "610.57.04 13.3" in render([report])
