"""Predictive checks (issue 12 section 4) on a booted Debian 12 host, through the real CLI.

Real apt and dpkg, and real Debian packages wherever they exist: ``unattended-upgrades``, the
cloud kernel ``linux-image-cloud-amd64`` and its headers metapackage ``linux-headers-cloud-amd64``.
Stand-ins only for what cannot be reached: NVIDIA's driver packages (the local flat repository of
tests/lab/standin_debs.py), the GPU on the PCI bus, a DKMS build of NVIDIA's module (needs
NVIDIA's sources) and nvidia-fabricmanager with NVSwitches (HGX hardware).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.lab.booted import (
    NVSWITCH_DEVICE,
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.lab.standin_debs import (
    OLD_DRIVER,
    STANDIN_GPU,
    StandinRepo,
    build_standin_fabricmanager,
    standin_apt_repo,  # noqa: F401  (pytest fixture, imported explicitly)
    write_standin_source,
)
from tests.test_cli import cli

APT_INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
DRIVER = [OLD_DRIVER.library_package, OLD_DRIVER.packages[0]]  # libnvidia-compute, nvidia-open
KERNEL = "linux-image-cloud-amd64"  # Debian's cloud kernel metapackage (real, main)
HEADERS = "linux-headers-cloud-amd64"


@pytest.fixture(scope="module")
def host(booted_hosts, standin_apt_repo: StandinRepo) -> BootedHost:  # noqa: F811
    (h,) = booted_hosts(1, prefix="next", gpus=[STANDIN_GPU])
    write_standin_source(h, standin_apt_repo)
    h.exec("apt-get update -q", timeout=180)
    h.exec(APT_INSTALL + OLD_DRIVER.packages[0], timeout=300)  # the driver, not yet held
    return h


def audit(host: BootedHost, tmp_path: Path) -> dict[str, dict]:
    """The host's checks by id, from `provision audit --format json` over real SSH."""
    inventory = write_inventory([host], tmp_path / "hosts.ini")
    known = write_known_hosts([host], tmp_path / "known_hosts")
    env = {**os.environ, "HOME": str(tmp_path)}
    r = cli("audit", str(inventory), "--known-hosts", str(known), "--format", "json", env=env)
    assert r.stdout.strip(), r.stderr
    (doc,) = json.loads(r.stdout)["hosts"]
    assert doc["state"] == "ok", doc["reason"]
    return {c["id"]: c for c in doc["checks"]}


def test_driver_packages_not_held_or_left_to_unattended_upgrades(host, tmp_path) -> None:
    held = audit(host, tmp_path)["packages.held"]
    assert held["status"] == "WARN"
    assert held["message"] == "driver/toolkit packages not held: " + ", ".join(sorted(DRIVER))
    # the real unattended-upgrades, enabled the way `dpkg-reconfigure unattended-upgrades` does
    host.exec(APT_INSTALL + "unattended-upgrades", timeout=300)
    host.exec(
        'printf \'APT::Periodic::Update-Package-Lists "1";\\n'
        'APT::Periodic::Unattended-Upgrade "1";\\n\' > /etc/apt/apt.conf.d/20auto-upgrades'
    )
    held = audit(host, tmp_path)["packages.held"]
    assert "unattended-upgrades may upgrade " + ", ".join(sorted(DRIVER)) in held["message"]
    # blacklisted (as the baseline writes it): unattended-upgrades keeps off, the hold is missing
    host.exec(
        'printf \'Unattended-Upgrade::Package-Blacklist {\\n "nvidia-";\\n "libnvidia-";\\n};\\n\''
        " > /etc/apt/apt.conf.d/51provision-nvidia-driver"
    )
    held = audit(host, tmp_path)["packages.held"]
    assert held["status"] == "WARN" and "unattended-upgrades" not in held["message"]
    host.exec("apt-mark hold " + " ".join(DRIVER))
    held = audit(host, tmp_path)["packages.held"]
    assert held["status"] == "OK" and held["message"] == "2 driver packages held"


def test_next_boot_kernel_without_the_module_and_headers(host, tmp_path) -> None:
    checks = audit(host, tmp_path)
    # a container runs the machine's kernel; nothing installed in /boot boots next
    assert checks["boot.next_kernel"]["status"] == "SKIP"
    host.exec(APT_INSTALL + KERNEL, timeout=600)
    kernel = host.exec("ls /boot | sed -n 's/^vmlinuz-//p'").stdout.split()[-1]
    checks = audit(host, tmp_path)
    nxt = checks["boot.next_kernel"]
    assert nxt["status"] == "WARN"
    assert nxt["message"].startswith("the driver will be missing after the next reboot: ")
    assert f"kernel {kernel} boots next" in nxt["message"]
    assert f"dkms autoinstall -k {kernel}" in nxt["remediation"]
    headers = checks["kernel.headers"]
    assert headers["status"] == "WARN" and HEADERS in headers["message"]
    assert headers["remediation"] == f"apt install {HEADERS}"

    # STAND-IN for DKMS building NVIDIA's module for that kernel (it needs NVIDIA's sources)
    dkms = f"/lib/modules/{kernel}/updates/dkms"
    host.exec(f"mkdir -p {dkms} && : > {dkms}/nvidia.ko.xz")
    host.exec(APT_INSTALL + HEADERS, timeout=900)
    checks = audit(host, tmp_path)
    assert checks["boot.next_kernel"]["status"] == "OK"
    assert checks["kernel.headers"]["status"] == "OK"
    assert HEADERS in checks["kernel.headers"]["message"]


def test_nvswitch_system_needs_a_matching_fabric_manager(
    booted_hosts,  # noqa: F811
    standin_apt_repo: StandinRepo,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An HGX-like host (a GPU and an NVSwitch on the PCI bus): nvidia-fabricmanager missing or
    of another version than the loaded driver is a FAIL."""
    (h,) = booted_hosts(1, prefix="hgx", gpus=[STANDIN_GPU, ("0000:02:00.0", NVSWITCH_DEVICE)])
    write_standin_source(h, standin_apt_repo)
    h.exec("apt-get update -q", timeout=180)
    h.exec(APT_INSTALL + OLD_DRIVER.packages[0], timeout=300)
    h.reboot()  # the stand-in module loads at boot: NVML then reports the driver
    fabric = audit(h, tmp_path)["fabric.manager"]
    assert fabric["status"] == "FAIL"
    assert fabric["message"].startswith("1 NVSwitches but nvidia-fabricmanager is inactive")
    assert "system not yet initialized" in fabric["message"]

    def install(version: str) -> None:
        deb = build_standin_fabricmanager(tmp_path, OLD_DRIVER.branch, version)
        (h.merged / "root" / deb.name).write_bytes(deb.read_bytes())
        h.exec(f"dpkg -i /root/{deb.name}", timeout=120)

    install("535.230.02")  # an older fabric manager than the driver
    fabric = audit(h, tmp_path)["fabric.manager"]
    assert fabric["status"] == "FAIL"
    assert fabric["message"].startswith(
        f"nvidia-fabricmanager 535.230.02 differs from the driver {OLD_DRIVER.version}"
    )
    install(OLD_DRIVER.version)
    fabric = audit(h, tmp_path)["fabric.manager"]
    assert fabric["status"] == "OK", fabric
    assert fabric["message"] == f"nvidia-fabricmanager {OLD_DRIVER.version} running"
