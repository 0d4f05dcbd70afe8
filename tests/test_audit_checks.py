"""Checks on hand-made facts (pure, table-driven): thresholds, N/A handling, drift, settings."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from provision.audit.checks import (
    GIB,
    Status,
    cuda_from_driver,
    drift_checks,
    min_driver_for_cuda,
    run_checks,
    worst,
)
from provision.audit.settings import AuditSettings, settings_for
from provision.errors import ConfigError

GPU = {
    "index": 0,
    "lost": False,
    "name": "NVIDIA RTX A6000",
    "uuid": "GPU-0",
    "memory_total": 48 * GIB,
    "memory_used": GIB,
    "ecc_uncorrected_volatile": 0,
    "remap_pending": False,
    "remap_failure": False,
    "retired_pages_pending": False,
    "pcie_width_current": 16,
    "pcie_width_max": 16,
    "clock_event_reasons": 0,
    "persistence_mode": True,
    "processes": [],
}
FACTS: dict[str, Any] = {  # what gather returns: parsed JSON
    "host": {"nouveau_loaded": False, "secure_boot": False, "ntp_synced": True},
    "nvidia": {
        "pci_gpus": [{"address": "0000:01:00.0"}],
        "nvml": "ok",
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "kernel_module_version": "550.54.15",
        "mismatch": False,
        "gpu_count": 1,
        "gpus": [GPU],
    },
    "docker": {
        "installed": True,
        "daemon_running": True,
        "server_version": "27.1",
        "runtimes": ["nvidia", "runc"],
        "images": [],
    },
    "disk": [{"path": "/", "role": "root", "total": 1000 * GIB, "free": 500 * GIB}],
}


def facts_with(path: str, value) -> dict:
    f = copy.deepcopy(FACTS)
    *parents, last = path.split(".")
    node = f
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[last] = value
    return f


def status_of(facts, cid, settings=None, gpu=None):
    results = [c for c in run_checks(facts, settings or AuditSettings()) if c.id == cid]
    if gpu is not None:
        results = [c for c in results if c.gpu_index == gpu]
    assert results, f"no check {cid}"
    return results[0].status if len(results) == 1 else worst(c.status for c in results)


def test_baseline_is_all_ok() -> None:
    assert worst(c.status for c in run_checks(FACTS, AuditSettings())) is Status.OK


@pytest.mark.parametrize(
    ("free_gib", "total_gib", "expected"),
    [
        (500, 1000, Status.OK),
        (160, 1000, Status.OK),
        (140, 1000, Status.WARN),  # < 15 %
        (40, 1000, Status.FAIL),  # < 5 %
        (9, 100, Status.FAIL),  # < 10 GiB
        (12, 100, Status.WARN),  # 12 % < 15 %
        (0.5, 4, Status.WARN),  # small partition: % rule only (12.5 %)
    ],
)
def test_disk_thresholds(free_gib, total_gib, expected) -> None:
    f = facts_with(
        "disk",
        [{"path": "/", "role": "root", "total": total_gib * GIB, "free": int(free_gib * GIB)}],
    )
    assert status_of(f, "disk:/") is expected


def test_disk_warn_below_twice_largest_image() -> None:
    f = facts_with("docker.images", [{"ref": "big", "present": True, "size": 300 * GIB}])
    assert status_of(f, "disk:/") is Status.WARN


def test_disk_thresholds_from_variables() -> None:
    s = settings_for({"audit_min_free_disk_pct": "60", "audit_fail_free_disk_pct": 1})
    assert status_of(FACTS, "disk:/", s) is Status.WARN


def test_disk_timeout_is_unknown() -> None:
    f = facts_with("disk", [{"path": "/data", "role": "extra", "error": "timed out after 5s"}])
    assert status_of(f, "disk:/data") is Status.UNKNOWN


@pytest.mark.parametrize(
    ("free", "expected"), [(900, Status.OK), (100, Status.WARN), (40, Status.FAIL)]
)
def test_inode_thresholds(free, expected) -> None:
    f = facts_with(
        "disk",
        [
            {
                "path": "/",
                "role": "root",
                "total": 100 * GIB,
                "free": 50 * GIB,
                "inodes_total": 1000,
                "inodes_free": free,
            }
        ],
    )
    assert status_of(f, "inodes:/") is expected


@pytest.mark.parametrize(
    ("path", "value", "cid", "expected"),
    [
        ("nvidia.gpus.0.ecc_uncorrected_volatile", 1, "gpu.memory_errors", Status.FAIL),
        ("nvidia.gpus.0.remap_failure", True, "gpu.memory_errors", Status.FAIL),
        ("nvidia.gpus.0.remap_pending", True, "gpu.memory_errors", Status.WARN),
        ("nvidia.gpus.0.retired_pages_pending", True, "gpu.memory_errors", Status.WARN),
        ("nvidia.gpus.0.clock_event_reasons", 0x40, "gpu.throttle", Status.WARN),
        ("nvidia.gpus.0.clock_event_reasons", 0x80, "gpu.throttle", Status.WARN),
        ("nvidia.gpus.0.clock_event_reasons", 0x8, "gpu.throttle", Status.WARN),
        ("nvidia.gpus.0.clock_event_reasons", 0x1 | 0x4, "gpu.throttle", Status.OK),
        ("nvidia.gpus.0.clock_event_reasons", None, "gpu.throttle", Status.SKIP),
        ("nvidia.gpus.0.pcie_width_current", 8, "gpu.pcie", Status.WARN),
        ("nvidia.gpus.0.pcie_width_current", None, "gpu.pcie", Status.SKIP),
        ("nvidia.gpus.0.persistence_mode", False, "gpu.persistence", Status.WARN),
        ("nvidia.gpus.0.persistence_mode", None, "gpu.persistence", Status.SKIP),
        ("host.nouveau_loaded", True, "nouveau", Status.FAIL),
        ("host.ntp_synced", False, "clock.ntp", Status.WARN),
        ("host.ntp_synced", None, "clock.ntp", Status.SKIP),
        ("host.reboot_required", True, "reboot.required", Status.WARN),
        ("nvidia.mismatch", True, "driver.mismatch", Status.FAIL),
        ("nvidia.nvml", "no driver", "driver.loaded", Status.FAIL),
        ("docker.runtimes", ["runc"], "docker.gpu_runtime", Status.FAIL),
        ("docker.daemon_running", False, "docker.daemon", Status.FAIL),
        ("docker.installed", False, "docker.daemon", Status.FAIL),
    ],
)
def test_catalogue(path, value, cid, expected) -> None:
    assert status_of(facts_with(path, value), cid) is expected


@pytest.mark.parametrize(
    ("xids", "expected"),
    [
        ({}, Status.OK),
        ({"13": 5, "43": 1}, Status.OK),  # application errors are ignored
        ({"63": 1}, Status.WARN),
        ({"94": 2}, Status.WARN),
        ({"79": 1}, Status.FAIL),
        ({"48": 1, "13": 1}, Status.FAIL),
        (None, Status.SKIP),
    ],
)
def test_xids(xids, expected) -> None:
    assert status_of(facts_with("nvidia.xids", xids), "gpu.xid") is expected


def test_secure_boot_with_module_missing_fails_with_steps() -> None:
    f = facts_with("host.secure_boot", True)
    f["nvidia"]["nvml"] = "no driver"
    results = [c for c in run_checks(f, AuditSettings()) if c.id == "secure_boot"]
    assert results[0].status is Status.FAIL
    assert "MOK" in results[0].remediation
    assert status_of(facts_with("host.secure_boot", True), "secure_boot") is Status.OK


def test_no_gpu_host_skips_gpu_and_docker_runtime() -> None:
    f = copy.deepcopy(FACTS)
    f["nvidia"] = {"pci_gpus": [], "nvml": "no driver", "gpus": [], "gpu_count": None}
    f["docker"] = {"installed": False}
    results = {c.id: c.status for c in run_checks(f, AuditSettings())}
    assert results["gpu.present"] is Status.SKIP
    assert results["docker.daemon"] is Status.SKIP
    assert "docker.gpu_runtime" not in results


@pytest.mark.parametrize(
    ("setting", "value", "cid", "expected"),
    [
        ("audit_expected_gpus", 1, "gpu.present", Status.OK),
        ("audit_expected_gpus", 2, "gpu.present", Status.FAIL),
        ("audit_min_driver", "550.54.14", "driver.min", Status.OK),
        ("audit_min_driver", "550.54.15", "driver.min", Status.OK),
        ("audit_min_driver", "555", "driver.min", Status.FAIL),
        ("audit_required_cuda", "12.4", "cuda.required", Status.OK),
        ("audit_required_cuda", "12.10", "cuda.required", Status.FAIL),  # 12.10 > 12.4
        ("audit_required_cuda", "11.8", "cuda.required", Status.OK),
    ],
)
def test_expectations(setting, value, cid, expected) -> None:
    assert status_of(FACTS, cid, settings_for({setting: value})) is expected


def test_required_images() -> None:
    f = facts_with(
        "docker.images",
        [
            {"ref": "cuda:12.4", "present": True, "digests": ["cuda@sha256:aa"], "size": GIB},
            {"ref": "gone:1", "present": False},
            {
                "ref": "pin@sha256:bb",
                "present": True,
                "digests": ["pin@sha256:cc"],
                "digest_match": False,
            },
            {"ref": "new:1", "present": True, "require_cuda": "cuda>=12.8 brand=tesla"},
        ],
    )
    s = settings_for(
        {"audit_required_images": ["cuda:12.4", "gone:1", "pin@sha256:bb", "new:1", "absent"]}
    )
    results = [c for c in run_checks(f, s) if c.id.startswith("docker.image")]
    by = {
        (c.id, c.evidence if isinstance(c.evidence, str) else c.message.split(":")[0]): c.status
        for c in results
    }
    assert by[("docker.image", "gone:1")] is Status.FAIL
    assert by[("docker.image", "absent")] is Status.FAIL
    assert [c.status for c in results if c.message.startswith("pin@")] == [Status.FAIL]
    cuda = [c for c in results if c.id == "docker.image_cuda"]
    assert len(cuda) == 1 and cuda[0].status is Status.FAIL and "12.8" in cuda[0].message


# NVIDIA's CUDA Toolkit release notes, Table 3 (Linux x86_64 GA drivers), as docs/audit.md cites
TABLE_3 = {
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
    "13.1": "590.44.01",
    "13.2": "595.45.04",
    "13.3": "610.43.02",
}


@pytest.mark.parametrize("cuda", sorted(TABLE_3))
def test_cuda_driver_table(cuda: str) -> None:
    assert min_driver_for_cuda(cuda) == TABLE_3[cuda]
    assert cuda_from_driver(TABLE_3[cuda]) == cuda


def test_cuda_table_gaps_and_minor_compatibility() -> None:
    assert min_driver_for_cuda("12.4") == "550.54.14"  # was 530.30.02 (the 12.1 row)
    assert cuda_from_driver("550.54.15") == "12.4"  # was 12.1
    assert min_driver_for_cuda("12.7") == "560.28.03"  # no 12.7 release: the 12.6 row
    assert min_driver_for_cuda("11.8") == "450.80.02"  # Table 2: any 11.x from 450.80.02
    assert cuda_from_driver("470.1") is None


def test_cuda_hint_names_the_real_minimum() -> None:
    f = facts_with("nvidia.cuda_version", "12.2")
    (c,) = [
        c
        for c in run_checks(f, settings_for({"audit_required_cuda": "12.4"}))
        if c.id == "cuda.required"
    ]
    assert c.status is Status.FAIL and "550.54.14" in c.remediation


@pytest.mark.parametrize(
    ("variables", "flags", "where"),
    [
        ({"audit_min_driver": 550.1}, {}, "hosts.ini:3"),  # INI read 550.100 as a float
        ({"audit_min_driver": "abc"}, {}, "hosts.ini:3"),
        ({"audit_required_cuda": "12.x"}, {}, "hosts.ini:3"),
        ({}, {"audit_min_driver": "abc"}, "--min-driver"),
        ({}, {"audit_required_cuda": "twelve"}, "--require-cuda"),
    ],
)
def test_version_thresholds_refuse_junk(variables, flags, where) -> None:
    with pytest.raises(ConfigError) as err:
        settings_for(variables, flags, lambda name: "hosts.ini:3")
    text = str(err.value)
    assert text.startswith(where + ": ") and "\n" not in text
    assert "quote the version" in text or "expected numbers and dots" in text


def test_version_thresholds_stay_versions() -> None:
    s = settings_for({"audit_min_driver": "550.100", "audit_required_cuda": "12.10"})
    assert (s.min_driver, s.required_cuda) == ("550.100", "12.10")
    # 550.100 > 550.54: a 550.54.15 host is below it (the float 550.1 graded it OK)
    assert status_of(FACTS, "driver.min", s) is Status.FAIL
    assert settings_for({"audit_min_driver": 555}).min_driver == "555"


def test_xid_64_is_a_remap_recording_failure() -> None:
    f = facts_with("nvidia.xids", {"64": 1})
    (c,) = [c for c in run_checks(f, AuditSettings()) if c.id == "gpu.xid"]
    assert c.status is Status.FAIL
    assert "Xid 64 (row-remap recording failure)" in c.message
    f = facts_with("nvidia.xids", {"63": 2})
    (c,) = [c for c in run_checks(f, AuditSettings()) if c.id == "gpu.xid"]
    assert c.status is Status.WARN


def test_drift_against_majority() -> None:
    def with_driver(v):
        return facts_with("nvidia.driver_version", v)

    drift = drift_checks(
        {
            "a": with_driver("550.54.15"),
            "b": with_driver("550.54.15"),
            "c": with_driver("535.161.08"),
            "d": None,
        }
    )
    assert drift["c"].status is Status.WARN and "550.54.15" in drift["c"].message
    assert drift["a"].status is Status.OK
    assert "d" not in drift
    assert drift_checks({"a": with_driver("1"), "b": with_driver("1")}) == {}


def test_settings_unknown_variable_warns_and_bad_value_raises() -> None:
    s = settings_for({"audit_min_free_disk_pc": 10, "ansible_host": "x"})
    assert len(s.warnings) == 1 and "audit_min_free_disk_pct" in s.warnings[0]
    assert status_of(FACTS, "audit.settings", s) is Status.WARN
    assert settings_for({"audit_required_images": "a, b@sha256:1"}).required_images == (
        "a",
        "b@sha256:1",
    )
    assert settings_for({}, {"audit_expected_gpus": 4}).expected_gpus == 4
    with pytest.raises(ConfigError, match="audit_expected_gpus"):
        settings_for({"audit_expected_gpus": "many"})


def test_next_boot_parsers() -> None:
    from provision.audit import probe

    status = (
        "Package: nvidia-open-580\nStatus: hold ok installed\nVersion: 580.95.05-1\n\n"
        "Package: libnvidia-compute-580\nStatus: install ok installed\nVersion: 580.95.05-1\n\n"
        "Package: nvidia-old\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n"
    )
    assert probe.parse_dpkg_status(status, ["nvidia-", "libnvidia-"]) == {
        "nvidia-open-580": {"version": "580.95.05-1", "held": True},
        "libnvidia-compute-580": {"version": "580.95.05-1", "held": False},
    }
    dump = (
        'APT::Periodic::Unattended-Upgrade "1";\n'
        'Unattended-Upgrade::Package-Blacklist "";\n'
        'Unattended-Upgrade::Package-Blacklist:: "nvidia-";\n'
        'Unattended-Upgrade::Package-Blacklist:: "libnvidia-";\n'
    )
    assert probe.parse_apt_config(dump) == {
        "enabled": True,
        "blacklist": ["nvidia-", "libnvidia-"],
    }
    assert probe.parse_apt_config('APT::Periodic::Unattended-Upgrade "0";\n')["enabled"] is False
    dkms = (
        "nvidia/580.95.05, 6.1.0-18-amd64, x86_64: installed\n"
        "nvidia, 535.54.03, 5.15.0-76-generic, x86_64: installed (WARNING! Diff between built "
        "and installed module!)\n"
        "nvidia/580.95.05, 6.1.0-20-amd64, x86_64: built\n"
    )
    assert probe.parse_dkms_status(dkms) == {
        "6.1.0-18-amd64": ["nvidia/580.95.05"],
        "5.15.0-76-generic": ["nvidia/535.54.03"],
    }
    assert probe.kernel_flavour("6.1.0-18-cloud-amd64") == "cloud-amd64"
    assert probe.kernel_flavour("5.15.0-105-generic") == "generic"
    assert probe.kernel_flavour("6.18.44-fc-v1045") is None  # a custom kernel
    assert probe.version_key("6.1.0-9-amd64") < probe.version_key("6.1.0-18-amd64")


def test_next_boot_checks_only_on_hosts_with_a_driver() -> None:
    f = copy.deepcopy(FACTS)
    f["boot"] = {"packages": {}, "next_kernel": "6.1.0-18-amd64", "next_kernel_modules": []}
    f["host"]["nvidia_module_loaded"] = False
    assert not [c for c in run_checks(f, AuditSettings()) if c.id.startswith("boot.")]
    f["host"]["nvidia_module_loaded"] = True
    (nxt,) = [c for c in run_checks(f, AuditSettings()) if c.id == "boot.next_kernel"]
    assert nxt.status is Status.WARN and "6.1.0-18-amd64" in nxt.message
    f["boot"]["dkms"] = {"6.1.0-18-amd64": ["nvidia/580.95.05"]}
    (nxt,) = [c for c in run_checks(f, AuditSettings()) if c.id == "boot.next_kernel"]
    assert nxt.status is Status.OK
