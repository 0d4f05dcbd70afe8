"""A mixed lab audit built from probe facts documents (test helper, not a stand-in for a host).

Five hosts, the states issue 16 names: healthy (one GPU busy), ECC errors plus Xid 79, a lost
GPU, a driver/library mismatch, and one host that could not be reached. The facts follow the
probe document of docs/audit.md; the GPU values are those the NVML stand-in's scenarios report
(tests/standins/nvml), so they are what the real probe writes for such hosts.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from provision.audit.checks import GIB
from provision.audit.history import Delta, History
from provision.audit.report import AuditRun, HostReport, add_drift, host_report
from provision.audit.settings import AuditSettings

DRIVER = "550.54.15"
# Real-length host names: the table must not cut them, nor the problems behind them.
HOSTS = (
    "gpu-ws01.vision.lab.example.org",
    "gpu-ws02.vision.lab.example.org",
    "gpu-ws03.nlp.lab.example.org",
    "gpu-ws04.nlp.lab.example.org",
    "gpu-ws05.robotics.lab.example.org",
)


def gpu(index: int, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "index": index,
        "lost": False,
        "name": "NVIDIA RTX A6000",
        "uuid": f"GPU-{index:08x}-1111-2222-3333-444455556666",
        "memory_total": 48 * GIB,
        "memory_used": 512 * 1024 * 1024,
        "utilization_gpu": 0,
        "utilization_memory": 0,
        "temperature_c": 34,
        "power_w": 21.5,
        "persistence_mode": True,
        "ecc_uncorrected_volatile": 0,
        "remap_pending": False,
        "remap_failure": False,
        "retired_pages_pending": False,
        "pcie_width_current": 16,
        "pcie_width_max": 16,
        "clock_event_reasons": 1,
        "processes": [],
        "na": [],
        "error": None,
    }
    base.update(extra)
    return base


def facts(hostname: str, gpus: list[dict[str, Any]], **nvidia: Any) -> dict[str, Any]:
    nv: dict[str, Any] = {
        "pci_gpus": [
            {"address": f"0000:{0x41 + i:02x}:00.0", "device": "0x2230", "driver": "nvidia"}
            for i in range(len(gpus) or 2)
        ],
        "nvml": "ok",
        "driver_version": DRIVER,
        "kernel_module_version": DRIVER,
        "cuda_driver_version": 12040,
        "cuda_version": "12.4",
        "gpu_count": len(gpus),
        "gpus": gpus,
        "xids": {},
    }
    nv.update(nvidia)
    return {
        "schema": 1,
        "probe": "python",
        "duration_s": 0.0812345,
        "notes": [],
        "errors": [],
        "host": {
            "hostname": hostname,
            "os_pretty": "Debian GNU/Linux 12 (bookworm)",
            "kernel": "6.1.0-27-amd64",
            "nouveau_loaded": False,
            "nvidia_module_loaded": True,
            "reboot_required": False,
            "ntp_synced": True,
        },
        "nvidia": nv,
        "docker": {
            "installed": True,
            "daemon_running": True,
            "runtimes": ["io.containerd.runc.v2", "nvidia", "runc"],
            "nvidia_ctk": "1.17.4",
            "images": [],
        },
        "disk": [
            {
                "path": "/",
                "role": "root",
                "total": 900 * GIB,
                "free": 310 * GIB,
                "inodes_total": 10**7,
                "inodes_free": 8 * 10**6,
            },
            {
                "path": "/var/lib/docker",
                "role": "docker",
                "total": 1800 * GIB,
                "free": 420 * GIB,
                "inodes_total": 10**7,
                "inodes_free": 9 * 10**6,
            },
        ],
    }


def mixed_facts() -> dict[str, dict[str, Any] | None]:
    """Host name -> facts (None: not reached)."""
    busy = gpu(
        0,
        utilization_gpu=97,
        utilization_memory=61,
        temperature_c=78,
        power_w=286.0,
        memory_used=20 * GIB,
        processes=[
            {"pid": 4242, "user": "alice", "name": "python3", "used_memory": 18 * GIB},
            {"pid": 4243, "user": "bob", "name": "jupyter", "used_memory": 2 * GIB},
        ],
    )
    ecc = gpu(0, ecc_uncorrected_volatile=3)
    lost = {"index": 1, "lost": True, "error": "GPU is lost (NVML error 15)"}
    return {
        HOSTS[0]: facts(HOSTS[0], [busy, gpu(1)]),
        HOSTS[1]: facts(HOSTS[1], [ecc, gpu(1)], xids={"79": 1}),
        HOSTS[2]: facts(HOSTS[2], [gpu(0), lost]),
        HOSTS[3]: facts(
            HOSTS[3],
            [],
            nvml="mismatch",
            nvml_error="Driver/library version mismatch",
            driver_version=None,
            cuda_version=None,
            cuda_driver_version=None,
            gpu_count=None,
            kernel_module_version="550.54.15",
            library_versions=["560.35.03"],
            mismatch=True,
        ),
        HOSTS[4]: None,
    }


UNREACHABLE_REASON = "connection refused (127.0.1.9:22)"


def mixed_reports(overrides: dict[str, dict[str, Any] | None] | None = None) -> list[HostReport]:
    """Graded reports of the mixed lab (``overrides`` replaces some hosts' facts)."""
    all_facts = {**mixed_facts(), **(overrides or {})}
    reports = []
    for n, (name, f) in enumerate(all_facts.items()):
        if f is None:
            r = host_report(name, "unreachable", None, UNREACHABLE_REASON, AuditSettings())
        else:
            r = host_report(name, "ok", copy.deepcopy(f), "", AuditSettings(), 0.41234, 1)
        r.address = f"127.0.2.{n + 1}"
        r.groups = ["all", "vision" if "vision" in name else "nlp" if "nlp" in name else "robotics"]
        reports.append(r)
    return add_drift(reports)


T0 = 1764547200.0  # 2025-12-01T00:00:00Z
DAY = 86400.0


def audit_day(day: int) -> tuple[list[HostReport], AuditRun]:
    """Day 0, 1, 2 of a lab whose docker disk on ws01 fills by 20 GiB a day; on day 2 ws01's
    driver is upgraded (a new image not yet pulled) and ws02 logs a new Xid 48."""
    all_facts = mixed_facts()
    ws01, ws02 = all_facts[HOSTS[0]], all_facts[HOSTS[1]]
    assert ws01 is not None and ws02 is not None
    ws01["disk"][1]["free"] = (420 - 20 * day) * GIB
    ws01["docker"]["images"] = [{"ref": "nvcr.io/nvidia/pytorch:24.05-py3", "present": day < 2}]
    if day == 2:
        ws01["nvidia"]["driver_version"] = "560.35.03"
        ws01["nvidia"]["kernel_module_version"] = "560.35.03"
        ws02["nvidia"]["xids"] = {"79": 1, "48": 2}
    return mixed_reports(all_facts), AuditRun(T0 + day * DAY, 12.0)


def recorded_lab(path: str) -> tuple[list[HostReport], AuditRun, Delta]:
    """Three audits recorded in the history at ``path``; the third one's reports and delta."""
    with History(path) as history:
        for day in range(3):
            reports, run = audit_day(day)
            delta = history.record(reports, run)
    return reports, dataclasses.replace(run, previous_at=delta.previous_at), delta
