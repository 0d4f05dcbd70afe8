"""The lab's stand-ins for the NVIDIA side, end to end on a booted Debian host.

One booted host with a STAND-IN H100 on its PCI bus installs the stand-in driver packages from the
local signed flat repository with real apt (deb822 source, ``Suites: /``), reboots through the
lab, and then shows what a machine with a freshly loaded driver shows: the module version in
/sys/module/nvidia/version, ``nvidia-smi`` answering through NVML, and ``provision audit`` (the
real CLI over real SSH) reporting driver 580.95.05. Also: the "driver not loaded" and "version
mismatch" states, nouveau holding the GPU until blacklisted, the nvidia-ctk stand-in keeping
daemon.json keys, and the mokutil / snap stand-ins. Assertions are made inside the host (nsenter).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need_binary
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.lab.standin_debs import (
    DRIVER_DEB_VERSION,
    DRIVER_PACKAGES,
    DRIVER_VERSION,
    GPU_NAME,
    LIBRARY_PACKAGE,
    MODULE_UNIT,
    NEW_DRIVER,
    OLD_DRIVER,
    PINNING_PACKAGE,
    STANDIN_GPU,
    TOOLKIT_DEB_VERSION,
    TOOLKIT_PACKAGES,
    TOOLKIT_VERSION,
    StandinRepo,
    build_standin_debs,
    headers_package,
    install_standin_mokutil,
    install_standin_snap_docker,
    standin_apt_repo,  # noqa: F401  (pytest fixture, imported explicitly)
    write_standin_source,
)
from tests.test_cli import cli

SLOT, DEVICE = STANDIN_GPU
APT_INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
QUERY = "nvidia-smi --query-gpu=driver_version --format=csv,noheader"


def nvml_libraries(host: BootedHost) -> list[str]:
    """The libnvidia-ml files in the host's multiarch library folder, sorted."""
    out = host.exec("ls /usr/lib/*-linux-gnu/ | grep '^libnvidia-ml' | sort").stdout
    return out.split()


def _fields(deb: Path) -> dict[str, str]:
    out = subprocess.run(
        ["dpkg-deb", "--field", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    fields = {}
    for line in out.splitlines():
        if ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def test_standin_packages_are_named_versioned_and_marked_like_nvidias(tmp_path: Path) -> None:
    need_binary("dpkg-deb", "dpkg")
    headers = headers_package()
    built = build_standin_debs(tmp_path)
    debs = {(_fields(d)["Package"], _fields(d)["Version"]): (d, _fields(d)) for d in built}
    drivers = {*DRIVER_PACKAGES, LIBRARY_PACKAGE, *OLD_DRIVER.packages, OLD_DRIVER.library_package}
    names = {*drivers, NEW_DRIVER.library_package, "nvidia-driver", PINNING_PACKAGE}
    assert {n for n, _ in debs} == {*names, headers, *TOOLKIT_PACKAGES}
    # NVIDIA's Debian repository: both 580 and 590 builds of nvidia-driver, the 580 metapackages
    # depending on the floating nvidia-driver (>= 580.65.06) that 590 satisfies.
    assert {v for n, v in debs if n == "nvidia-driver"} == {
        DRIVER_DEB_VERSION,
        NEW_DRIVER.deb_version,
        OLD_DRIVER.deb_version,
    }
    by_name = {n: d for (n, v), d in debs.items() if n != "nvidia-driver"}
    for key, (_, fields) in debs.items():
        assert fields["Description"].startswith("STAND-IN "), key
    for name in DRIVER_PACKAGES:
        assert by_name[name][1]["Version"] == DRIVER_DEB_VERSION
        assert by_name[name][1]["Depends"] == "nvidia-driver (>= 580.65.06)"
    for name in (LIBRARY_PACKAGE, OLD_DRIVER.library_package):  # one branch at a time
        assert by_name[name][1]["Conflicts"] == by_name[name][1]["Provides"] == "libnvidia-compute"
    toolkit = by_name["nvidia-container-toolkit"][1]
    assert toolkit["Version"] == TOOLKIT_DEB_VERSION
    assert toolkit["Depends"].startswith(f"nvidia-container-toolkit-base (= {TOOLKIT_DEB_VERSION})")
    assert {by_name[n][1]["Version"] for n in TOOLKIT_PACKAGES} == {TOOLKIT_DEB_VERSION}
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(by_name[LIBRARY_PACKAGE][0])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"libnvidia-ml.so.{DRIVER_VERSION}" in listing
    assert f"libnvidia-ml.so.1 -> libnvidia-ml.so.{DRIVER_VERSION}" in listing
    assert "./usr/bin/nvidia-smi" in listing and MODULE_UNIT in listing


@pytest.fixture(scope="module")
def gpu_host(booted_hosts, standin_apt_repo: StandinRepo) -> BootedHost:  # noqa: F811
    (host,) = booted_hosts(1, prefix="gpu", gpus=[STANDIN_GPU])
    write_standin_source(host, standin_apt_repo)
    host.exec("apt-get update -q", timeout=180)
    return host


def test_fresh_boot_shows_the_gpu_on_the_pci_bus_and_no_module(gpu_host: BootedHost) -> None:
    dev = f"/sys/bus/pci/devices/{SLOT}"
    assert gpu_host.exec(f"cat {dev}/vendor {dev}/device {dev}/class").stdout.split() == [
        "0x10de",
        DEVICE,
        "0x030200",
    ]
    assert gpu_host.exec("ls -A /sys/module/nvidia").stdout == ""
    assert gpu_host.exec("test -w /sys/module/nvidia && echo writable").stdout == "writable\n"
    assert gpu_host.exec("ls /sys/module").stdout.split() == ["nvidia"]  # no nouveau here


def test_driver_from_the_flat_repo_loads_after_reboot(
    gpu_host: BootedHost,
    standin_apt_repo: StandinRepo,  # noqa: F811
) -> None:
    """The older branch first (the upgrade test below starts from it): install, reboot, loaded."""
    h = gpu_host
    old = OLD_DRIVER
    h.exec(APT_INSTALL + f"{old.packages[0]} {headers_package()}", timeout=300)
    policy = h.exec(f"apt-cache policy {old.packages[0]}").stdout
    assert f"Installed: {old.deb_version}" in policy
    # From the flat repository with suite "/" (apt prints the URI without a suite).
    assert f"500 {standin_apt_repo.url.rstrip('/')}  Packages" in policy
    assert h.exec(f"systemctl is-enabled {MODULE_UNIT}").stdout.strip() == "enabled"
    assert h.exec("test -f /lib/modules/$(uname -r)/build/Makefile && echo ok").stdout == "ok\n"
    assert nvml_libraries(h) == ["libnvidia-ml.so.1", f"libnvidia-ml.so.{old.version}"]

    # Installed but not loaded: NVML (and so nvidia-smi) says the driver is not loaded.
    before = h.exec("nvidia-smi -L", check=False)
    assert before.returncode == 9
    assert "couldn't communicate with the NVIDIA driver" in before.stdout

    h.reboot()
    assert h.exec("cat /sys/module/nvidia/version").stdout.strip() == old.version
    assert h.standin_sys.loaded_nvidia_version() == old.version
    assert h.exec(QUERY).stdout.splitlines()[0] == old.version
    assert h.exec("nvidia-smi -L").stdout.startswith(f"GPU 0: {GPU_NAME} (UUID: GPU-")


def test_upgrade_is_a_version_mismatch_until_the_reboot(gpu_host: BootedHost) -> None:
    h = gpu_host
    # NVIDIA's way: the branch's pinning package first, alone; then the driver stays on 580.
    h.exec(APT_INSTALL + PINNING_PACKAGE, timeout=300)
    h.exec(APT_INSTALL + DRIVER_PACKAGES[0], timeout=300)
    installed = h.exec("dpkg-query -W -f '${Package} ${Status}\\n' 'libnvidia-compute-*'").stdout
    assert installed.splitlines() == [f"{LIBRARY_PACKAGE} install ok installed"]
    assert nvml_libraries(h) == ["libnvidia-ml.so.1", f"libnvidia-ml.so.{DRIVER_VERSION}"]
    assert h.exec(f"systemctl is-enabled {MODULE_UNIT}").stdout.strip() == "enabled"

    # The old module stays loaded until the reboot: the new library refuses it, as the real one.
    assert h.exec("cat /sys/module/nvidia/version").stdout.strip() == OLD_DRIVER.version
    mismatch = h.exec(QUERY, check=False)
    assert mismatch.returncode == 18
    assert "Failed to initialize NVML: Driver/library version mismatch" in mismatch.stdout

    h.reboot()
    assert h.exec("cat /sys/module/nvidia/version").stdout.strip() == DRIVER_VERSION
    assert h.exec(QUERY).stdout.splitlines()[0] == DRIVER_VERSION
    assert "CUDA Version: 13.0" in h.exec("nvidia-smi").stdout


def test_provision_audit_reports_the_standin_driver(gpu_host: BootedHost, tmp_path: Path) -> None:
    inventory = write_inventory([gpu_host], tmp_path / "hosts.ini")
    known = write_known_hosts([gpu_host], tmp_path / "known_hosts")
    env = {**os.environ, "HOME": str(tmp_path)}
    r = cli(
        "audit", str(inventory), "--known-hosts", str(known), "--format", "json", "-T", "10",
        env=env,
    )  # fmt: skip
    assert r.stdout.strip(), r.stderr
    (doc,) = json.loads(r.stdout)["hosts"]
    nv = doc["facts"]["nvidia"]
    assert nv["nvml"] == "ok", nv
    assert nv["driver_version"] == DRIVER_VERSION
    assert nv["kernel_module_version"] == DRIVER_VERSION
    assert nv["library_versions"] == [DRIVER_VERSION]
    assert nv["cuda_version"] == "13.0" and nv["mismatch"] is False
    assert [g["address"] for g in nv["pci_gpus"]] == [SLOT]
    assert [g["name"] for g in nv["gpus"]] == [GPU_NAME]


def test_nvidia_ctk_from_the_repo_keeps_other_daemon_json_keys(gpu_host: BootedHost) -> None:
    h = gpu_host
    h.exec(APT_INSTALL + TOOLKIT_PACKAGES[0], timeout=300)
    assert f"version {TOOLKIT_VERSION}" in h.exec("nvidia-ctk --version").stdout
    site = {"data-root": "/srv/docker", "log-opts": {"max-size": "10m"}, "runtimes": {"x": {}}}
    h.exec("mkdir -p /etc/docker && cat > /etc/docker/daemon.json", input=json.dumps(site))
    dry = h.exec("nvidia-ctk runtime configure --runtime=docker --dry-run")
    assert json.loads(dry.stdout) == {
        **site,
        "runtimes": {"x": {}, "nvidia": {"args": [], "path": "nvidia-container-runtime"}},
    }
    assert json.loads(h.exec("cat /etc/docker/daemon.json").stdout) == site  # nothing written

    h.exec("echo '{}' > /tmp/empty.json")
    default = h.exec(
        "nvidia-ctk runtime configure --runtime=docker --config=/tmp/empty.json --set-as-default"
    )
    assert "Wrote updated config to /tmp/empty.json" in default.stderr
    assert json.loads(h.exec("cat /tmp/empty.json").stdout) == {
        "default-runtime": "nvidia",
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
    }
    refused = h.exec("nvidia-ctk runtime configure --runtime=containerd --dry-run", check=False)
    assert refused.returncode == 1


def test_mokutil_and_snap_standins(gpu_host: BootedHost) -> None:
    h = gpu_host
    for state, expected in (("enabled", "SecureBoot enabled"), ("disabled", "SecureBoot disabled")):
        install_standin_mokutil(h, state)
        assert h.exec("mokutil --sb-state").stdout.strip() == expected
    install_standin_mokutil(h, "unsupported")
    bios = h.exec("mokutil --sb-state", check=False)
    assert bios.returncode != 0 and "doesn't support Secure Boot" in bios.stderr
    h.exec("mkdir -p /var/lib/dkms && echo key > /var/lib/dkms/mok.pub")
    assert "is not enrolled" in h.exec("mokutil --test-key /var/lib/dkms/mok.pub").stdout
    install_standin_mokutil(h, "enabled", enrolled=("/var/lib/dkms/mok.pub",))
    assert "is already enrolled" in h.exec("mokutil --test-key /var/lib/dkms/mok.pub").stdout

    assert h.exec("snap list docker", check=False).returncode == 127
    install_standin_snap_docker(h)
    listed = h.exec("snap list docker")
    assert listed.stdout.splitlines()[1].split()[0] == "docker"
    assert h.exec("snap list lxd", check=False).returncode == 1
    assert h.exec("test -x /snap/bin/docker && echo yes").stdout == "yes\n"


def test_nouveau_holds_the_gpu_until_blacklisted(gpu_host: BootedHost) -> None:
    """Last: reboots the shared host twice (nouveau loaded, then blacklisted)."""
    h = gpu_host
    h.standin_nouveau = True
    try:
        h.reboot()
        assert h.exec("test -d /sys/module/nouveau && echo loaded").stdout == "loaded\n"
        assert h.exec("ls -A /sys/module/nvidia").stdout == ""  # emptied at boot, not reloaded
        assert h.exec("nvidia-smi -L", check=False).returncode == 9
        h.exec(
            "printf 'blacklist nouveau\\noptions nouveau modeset=0\\n' "
            "> /etc/modprobe.d/blacklist-nouveau.conf"
        )
        h.reboot()
        assert h.exec("ls /sys/module").stdout.split() == ["nvidia"]
        assert h.exec("cat /sys/module/nvidia/version").stdout.strip() == DRIVER_VERSION
    finally:
        h.standin_nouveau = False
