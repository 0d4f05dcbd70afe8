"""STAND-IN NVIDIA packages in a local signed flat apt repository, and stand-in host tools.

NVIDIA's CUDA and container toolkit repositories cannot be reached from the test machines, and
there is no GPU. So that the baseline playbooks go through the REAL path (key, deb822 source,
``apt-get update``, install, hold, reboot, verify), this module builds ``.deb`` files named and
versioned like NVIDIA's, whose contents stand in for the hardware side only, every one with a
``Description: STAND-IN ...``:

- ``nvidia-open-580`` and ``cuda-drivers-580`` (580.95.05-1) with the REAL dependency of NVIDIA's
  Debian repository, ``nvidia-driver (>= 580.65.06)``, and ``nvidia-driver`` twice: 580.95.05-1
  (depending on ``libnvidia-compute-580 (= 580.95.05-1)``) and a newer branch 590.44.01-1 (on
  ``libnvidia-compute-590``), so that without NVIDIA's pinning package apt floats to 590, as it
  does against NVIDIA's repository; ``nvidia-driver-pinning-580`` (an apt preferences file that
  holds the driver packages at 580.*, standing in for NVIDIA's). The library package installs
  - the NVML stand-in (tests/standins/nvml) as ``libnvidia-ml.so.580.95.05`` + ``.so.1`` link,
  - a stand-in ``nvidia-smi`` (C, answers through NVML; tests/standins/nvml/nvidia_smi.c),
  - ``/etc/nvml-standin/scenario``: one healthy Hopper GPU, driver 580.95.05, CUDA 13.0, and
    ``module_version_file=/sys/module/nvidia/version`` (NVML fails with "driver not loaded"
    until the module is "loaded", and with "version mismatch" when another version is),
  - ``nvidia-standin-module.service`` (enabled by postinst): at boot, writes 580.95.05 to
    /sys/module/nvidia/version when that folder is a writable stand-in (booted lab hosts with
    ``gpus=``, see tests/lab/booted.py StandinSys), an NVIDIA GPU is on the PCI bus and nouveau
    is not loaded: the stand-in for the kernel loading the module at boot.
- the same for the older branch 535 (``OLD_DRIVER``: nvidia-open-535, 535.247.01, CUDA 12.2):
  the library packages Provide/Conflict/Replace ``libnvidia-compute``, so installing 580 over
  535 replaces it and leaves the old module "loaded" (NVML: version mismatch) until a reboot.
- ``linux-headers-$(uname -r)``: creates /lib/modules/$(uname -r)/build/Makefile (the running
  kernel is the machine's, whose headers Debian's archive may not have).
- ``nvidia-container-toolkit`` (/usr/bin/nvidia-container-runtime-hook) depending on
  ``nvidia-container-toolkit-base`` (nvidia-ctk, nvidia-container-runtime) and
  ``libnvidia-container-tools`` (which depends on ``libnvidia-container1``), all four 1.17.8-1,
  with the stand-ins of tests/standins/nvidia_toolkit (as in NVIDIA's split of the packages).

Stand-in host tools (no package): ``install_standin_mokutil(host, state)`` and
``install_standin_snap_docker(host)``.

Use ``standin_repo(root)`` (a context manager) or the ``standin_apt_repo`` fixture: they serve all
of it on 127.0.0.1 as ONE flat repository; point both ``nvidia_cuda_repo_url`` and
``nvidia_toolkit_repo_url`` at ``url`` (deb822 ``URIs: url`` + ``Suites: /``), with ``key_url``
and ``fingerprint`` for the key checks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import need, need_binary
from tests.lab.aptrepo import AptRepo, start_repo
from tests.lab.booted import BootedHost
from tests.standins import host_tools, nvidia_toolkit, nvml


class StandinDriver(NamedTuple):
    """One stand-in driver branch: its packages and what its NVML stand-in reports."""

    branch: str  # "580"
    version: str  # "580.95.05"
    cuda: int  # NVML's integer: 13000 = CUDA 13.0

    @property
    def deb_version(self) -> str:
        return f"{self.version}-1"

    @property
    def library_package(self) -> str:
        return f"libnvidia-compute-{self.branch}"

    @property
    def packages(self) -> tuple[str, str]:
        """The installable names, as in NVIDIA's CUDA repository (both pull the library)."""
        return (f"nvidia-open-{self.branch}", f"cuda-drivers-{self.branch}")

    @property
    def nvml_version(self) -> str:
        return f"{self.cuda // 1000}.{self.version}"


DRIVER = StandinDriver("580", "580.95.05", 13000)  # what the baseline installs
# An older branch in the same repository, for upgrade tests (install it, reboot, then upgrade):
# the library packages conflict like the real ones, so apt replaces one with the other.
OLD_DRIVER = StandinDriver("535", "535.247.01", 12020)
# A newer branch that DRIVER's metapackages' real dependency (nvidia-driver >= 580.65.06) accepts.
NEW_DRIVER = StandinDriver("590", "590.44.01", 13010)
DRIVERS = (DRIVER, OLD_DRIVER, NEW_DRIVER)
# Branches whose metapackages depend on the floating nvidia-driver package, as NVIDIA's Debian
# repository does from R580 (the 535 stand-ins keep the older exact dependency on the library).
FLOATING = {DRIVER.branch: "580.65.06"}
PINNING_PACKAGE = f"nvidia-driver-pinning-{DRIVER.branch}"
PINNING_FILE = f"/etc/apt/preferences.d/{PINNING_PACKAGE}"

DRIVER_BRANCH = DRIVER.branch
DRIVER_VERSION = DRIVER.version
DRIVER_DEB_VERSION = DRIVER.deb_version
LIBRARY_PACKAGE = DRIVER.library_package
DRIVER_PACKAGES = DRIVER.packages
CUDA_DRIVER_VERSION = DRIVER.cuda
NVML_VERSION = DRIVER.nvml_version
TOOLKIT_VERSION = nvidia_toolkit.CTK_VERSION  # 1.17.8
TOOLKIT_DEB_VERSION = f"{TOOLKIT_VERSION}-1"
TOOLKIT_PACKAGES = (
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)
HEADERS_DEB_VERSION = "1.0-1"

SCENARIO_PATH = "/etc/nvml-standin/scenario"
MODULE_VERSION_FILE = "/sys/module/nvidia/version"
MODULE_UNIT = "nvidia-standin-module.service"
LOAD_SCRIPT = "/usr/lib/nvidia-standin/load-module"

HOPPER_DEVICE_ID = "0x2330"  # H100 SXM5 80GB (PCI id 10de:2330)
STANDIN_GPU = ("0000:01:00.0", HOPPER_DEVICE_ID)  # for booted_hosts(..., gpus=[STANDIN_GPU])
GPU_NAME = "NVIDIA H100 80GB HBM3"

_MULTIARCH = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
_PACKAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


TOOLKIT_ALIAS = "toolkit"


class StandinRepo(NamedTuple):
    """What a playbook needs: the flat repository URL, its key URL and the key's fingerprint."""

    url: str
    key_url: str
    fingerprint: str

    @property
    def toolkit_url(self) -> str:
        """The same repository under a second URL, for ``nvidia_toolkit_repo_url``: apt refuses
        two sources with one URI and different ``Signed-By`` keyrings (as the CUDA and toolkit
        sources are)."""
        return f"{self.url}{TOOLKIT_ALIAS}/"


def headers_package(kernel: str | None = None) -> str:
    """``linux-headers-<kernel>`` for the running kernel (the lab hosts share it)."""
    name = f"linux-headers-{kernel or os.uname().release}"
    if not _PACKAGE_NAME_RE.match(name):
        raise RuntimeError(f"kernel release gives no valid Debian package name: {name!r}")
    return name


def driver_scenario(driver: StandinDriver = DRIVER) -> dict[str, object]:
    """The packaged NVML scenario: one healthy Hopper GPU on the driver (580.95.05, CUDA 13.0)."""
    gpu = nvml.healthy_gpu(0, GPU_NAME)
    gpu["gpu0.mem_total"] = 80 * nvml.GIB
    return {
        "driver": driver.version,
        "nvml": driver.nvml_version,
        "cuda": driver.cuda,
        "count": 1,
        "module_version_file": MODULE_VERSION_FILE,
        **gpu,
    }


def _architecture() -> str:
    done = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _copy(src: str | Path, dest: Path, mode: int = 0o755) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def _package(
    work: Path,
    out: Path,
    name: str,
    version: str,
    arch: str,
    description: str,
    files: Mapping[str, str | Path],
    *,
    depends: str = "",
    scripts: Mapping[str, str] | None = None,
    links: Mapping[str, str] | None = None,
    control: Mapping[str, str] | None = None,
) -> Path:
    """Build one .deb with dpkg-deb. ``files``: path in the package -> text (str) or a file to
    copy (Path, made executable); ``links``: symlink path -> target; ``scripts``: DEBIAN/*."""
    root = work / name
    control_text = (
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: provision tests <tests@invalid>\n"
        + (f"Depends: {depends}\n" if depends else "")
        + "".join(f"{key}: {value}\n" for key, value in (control or {}).items())
        + f"Description: STAND-IN {description}\n"
        " Built by the provision test suite (tests/lab/standin_debs.py); not NVIDIA's package.\n"
    )
    _write(root / "DEBIAN" / "control", control_text)
    for script, text in (scripts or {}).items():
        mode = 0o644 if script == "triggers" else 0o755
        _write(root / "DEBIAN" / script, text, mode)
    _write(
        root / "usr/share/doc" / name / "README.standin",
        f"STAND-IN {name} {version}: {description}\n",
    )
    for rel, content in files.items():
        if isinstance(content, Path):
            _copy(content, root / rel.lstrip("/"))
        else:
            _write(root / rel.lstrip("/"), content)
    for rel, target in (links or {}).items():
        link = root / rel.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    deb = out / f"{name}_{version}_{arch}.deb"
    done = subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dpkg-deb {name} failed: {done.stderr.strip()[-500:]}")
    return deb


FABRIC_UNIT_TEXT = """[Unit]
Description=STAND-IN NVIDIA fabric manager (no NVSwitch hardware here)

[Service]
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""


def build_standin_fabricmanager(out: Path, branch: str, version: str) -> Path:
    """STAND-IN ``nvidia-fabricmanager-<branch>`` (NVIDIA's package for NVSwitch systems): its
    ``nvidia-fabricmanager.service`` only runs, so the unit is active as on an HGX host."""
    need_binary("dpkg-deb", "dpkg")
    work = Path(tempfile.mkdtemp(prefix="fabricmanager-", dir=out))
    unit = "/lib/systemd/system/nvidia-fabricmanager.service"
    return _package(
        work,
        out,
        f"nvidia-fabricmanager-{branch}",
        f"{version}-1",
        _architecture(),
        "NVIDIA fabric manager service (runs, manages nothing)",
        {unit: FABRIC_UNIT_TEXT},
        scripts={"postinst": "#!/bin/sh\nsystemctl enable --now nvidia-fabricmanager.service\n"},
    )


def _load_module_script(version: str) -> str:
    return f"""#!/bin/sh
# STAND-IN for the kernel loading the nvidia module at boot ({version}). Writes the
# version into /sys/module/nvidia/version, but only where that folder is a writable stand-in (the
# lab binds one over /sys/module); real sysfs is read-only in a container, so there it does
# nothing. Like the real module it stays out when nouveau holds the GPU or no NVIDIA GPU is on the
# PCI bus, and an already "loaded" module is not replaced until the next boot.
dir=/sys/module/nvidia
[ -d "$dir" ] && [ -w "$dir" ] || exit 0
[ -e "$dir/version" ] && exit 0
if [ -e /sys/module/nouveau ]; then
    echo "nvidia stand-in: nouveau is loaded and holds the GPU; nvidia not loaded" >&2
    exit 0
fi
for dev in /sys/bus/pci/devices/*; do
    if [ "$(cat "$dev/vendor" 2>/dev/null)" = 0x10de ]; then
        case "$(cat "$dev/class" 2>/dev/null)" in
        0x03*)
            echo {version} > "$dir/version"
            echo "nvidia stand-in: module {version} loaded"
            exit 0
            ;;
        esac
    fi
done
echo "nvidia stand-in: no NVIDIA GPU on the PCI bus; nvidia not loaded" >&2
"""


MODULE_UNIT_TEXT = f"""[Unit]
Description=STAND-IN: load the nvidia kernel module (writes {MODULE_VERSION_FILE})
Before=ssh.service systemd-user-sessions.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={LOAD_SCRIPT}

[Install]
WantedBy=multi-user.target
"""


def _library_package(
    work: Path, out: Path, arch: str, multiarch: str, driver: StandinDriver
) -> Path:
    """libnvidia-compute-<branch>: NVML stand-in, nvidia-smi, scenario and the module loader.

    All branches ship the same paths, so they conflict through the virtual package
    ``libnvidia-compute`` (Provides + Conflicts + Replaces): one branch at a time, like NVIDIA's."""
    lib_dir = f"/usr/lib/{multiarch}"
    scenario = "".join(f"{k}={v}\n" for k, v in driver_scenario(driver).items())
    return _package(
        work,
        out,
        driver.library_package,
        driver.deb_version,
        arch,
        f"NVIDIA NVML library {driver.version}, nvidia-smi and kernel-module loader for tests",
        {
            f"{lib_dir}/libnvidia-ml.so.{driver.version}": Path(nvml.build()) / "libnvidia-ml.so.1",
            "/usr/bin/nvidia-smi": Path(nvml.build_nvidia_smi()),
            SCENARIO_PATH: "# STAND-IN NVML scenario (tests/standins/nvml)\n" + scenario,
            f"/lib/systemd/system/{MODULE_UNIT}": MODULE_UNIT_TEXT,
            LOAD_SCRIPT: _load_module_script(driver.version),
        },
        links={f"{lib_dir}/libnvidia-ml.so.1": f"libnvidia-ml.so.{driver.version}"},
        control={
            "Provides": "libnvidia-compute",
            "Conflicts": "libnvidia-compute",
            "Replaces": "libnvidia-compute",
        },
        scripts={
            "triggers": "activate-noawait ldconfig\n",
            "postinst": (
                "#!/bin/sh\nset -e\n"
                f'if [ "$1" = configure ]; then chmod 755 {LOAD_SCRIPT}; '
                f"systemctl enable {MODULE_UNIT}; fi\n"
            ),
            "prerm": (
                "#!/bin/sh\nset -e\n"
                f'if [ "$1" = remove ]; then systemctl disable {MODULE_UNIT} || true; fi\n'
            ),
        },
    )


def _driver_packages(work: Path, out: Path, arch: str, driver: StandinDriver) -> list[Path]:
    """``nvidia-driver`` at this branch's version, and the branch-named metapackages (none for
    NEW_DRIVER: from R590 the names carry no branch)."""
    debs = [
        _package(
            work,
            out,
            "nvidia-driver",
            driver.deb_version,
            arch,
            f"NVIDIA driver {driver.version} (the package NVIDIA's metapackages float through)",
            {},
            depends=f"{driver.library_package} (= {driver.deb_version})",
        )
    ]
    if driver is NEW_DRIVER:
        return debs
    floor = FLOATING.get(driver.branch)
    depends = (
        f"nvidia-driver (>= {floor})"
        if floor
        else f"{driver.library_package} (= {driver.deb_version})"
    )
    for name in driver.packages:
        debs.append(
            _package(
                work,
                out,
                name,
                driver.deb_version,
                arch,
                f"NVIDIA driver {driver.version} metapackage (named like the CUDA repo's)",
                {},
                depends=depends,
            )
        )
    return debs


def _pinning_package(work: Path, out: Path, driver: StandinDriver) -> Path:
    """nvidia-driver-pinning-<branch>: apt preferences holding the driver at the branch."""
    prefs = (
        f"# STAND-IN for NVIDIA's {PINNING_PACKAGE}: the driver packages stay on {driver.branch}\n"
        "Package: nvidia-driver nvidia-open cuda-drivers libnvidia-compute*\n"
        f"Pin: version {driver.branch}.*\n"
        "Pin-Priority: 1000\n"
    )
    return _package(
        work,
        out,
        f"nvidia-driver-pinning-{driver.branch}",
        driver.deb_version,
        "all",
        f"NVIDIA driver branch {driver.branch} pinning (apt preferences)",
        {f"/etc/apt/preferences.d/nvidia-driver-pinning-{driver.branch}": prefs},
    )


def build_standin_debs(out: Path, kernel: str | None = None) -> list[Path]:
    """Build every stand-in package into ``out``; returns the .deb paths.

    Needs gcc (the NVML stand-in and nvidia-smi are compiled here: the lab hosts are Debian 12
    like the machine) and dpkg-deb."""
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc) for the NVML stand-in")
    need_binary("dpkg-deb", "dpkg")
    arch = _architecture()
    multiarch = _MULTIARCH.get(arch)
    if multiarch is None:
        raise RuntimeError(f"no multiarch folder known for architecture {arch}")
    kernel = kernel or os.uname().release
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pv-standin-debs-"))
    try:
        debs = [
            _package(
                work,
                out,
                headers_package(kernel),
                HEADERS_DEB_VERSION,
                arch,
                f"kernel headers for {kernel} (only the build/Makefile that DKMS looks for)",
                {
                    f"/usr/lib/modules/{kernel}/build/Makefile": (
                        "# STAND-IN kernel build tree for the provision lab\nall:\n\t@true\n"
                    )
                },
            ),
            _package(
                work,
                out,
                "nvidia-container-toolkit-base",
                TOOLKIT_DEB_VERSION,
                arch,
                "NVIDIA Container Toolkit base (nvidia-ctk, nvidia-container-runtime)",
                {
                    "/usr/bin/nvidia-ctk": Path(nvidia_toolkit.NVIDIA_CTK),
                    "/usr/bin/nvidia-container-runtime": Path(
                        nvidia_toolkit.NVIDIA_CONTAINER_RUNTIME
                    ),
                },
                depends="python3",  # the nvidia-ctk stand-in is a python3 script
            ),
            _package(
                work,
                out,
                "nvidia-container-toolkit",
                TOOLKIT_DEB_VERSION,
                arch,
                "NVIDIA Container Toolkit (nvidia-container-runtime-hook)",
                {
                    "/usr/bin/nvidia-container-runtime-hook": Path(
                        nvidia_toolkit.NVIDIA_CONTAINER_RUNTIME_HOOK
                    )
                },
                depends=(
                    f"nvidia-container-toolkit-base (= {TOOLKIT_DEB_VERSION}), "
                    f"libnvidia-container-tools (>= {TOOLKIT_DEB_VERSION}), "
                    "libnvidia-container-tools (<< 2.0.0)"
                ),
            ),
            _package(
                work,
                out,
                "libnvidia-container-tools",
                TOOLKIT_DEB_VERSION,
                arch,
                "NVIDIA container runtime library (command-line tools)",
                {},
                depends=f"libnvidia-container1 (>= {TOOLKIT_DEB_VERSION})",
            ),
            _package(
                work,
                out,
                "libnvidia-container1",
                TOOLKIT_DEB_VERSION,
                arch,
                "NVIDIA container runtime library",
                {},
            ),
            _pinning_package(work, out, DRIVER),
        ]
        for driver in DRIVERS:
            debs.append(_library_package(work, out, arch, multiarch, driver))
            debs += _driver_packages(work, out, arch, driver)
        return debs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def start_standin_repo(root: Path, kernel: str | None = None) -> AptRepo:
    """Build the stand-in packages and serve them in a signed flat repository on 127.0.0.1.

    The caller closes it (``repo.close()``); prefer ``standin_repo`` or ``standin_apt_repo``."""
    debs = build_standin_debs(root / "debs", kernel)
    repo = start_repo(root / "served", debs)
    (root / "served" / "repo" / TOOLKIT_ALIAS).symlink_to(".")
    return repo


@contextlib.contextmanager
def standin_repo(root: Path, kernel: str | None = None) -> Iterator[StandinRepo]:
    """``with standin_repo(tmp) as (url, key_url, fingerprint):`` the served stand-in repository.

    ``url`` ends with "/": use it as ``nvidia_cuda_repo_url`` and ``nvidia_toolkit_repo_url``
    (deb822 ``URIs: url``, ``Suites: /``); ``fingerprint`` is 40 hex digits, no spaces."""
    repo = start_standin_repo(root, kernel)
    try:
        yield StandinRepo(repo.url, repo.key_url, repo.fingerprint)
    finally:
        repo.close()


@pytest.fixture(scope="module")
def standin_apt_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinRepo]:
    """Module-scoped served stand-in repository (import it into the test module to use it)."""
    need_binary("apt-ftparchive", "apt-utils")
    need_binary("gpg", "gpg")
    with standin_repo(tmp_path_factory.mktemp("standin-repo")) as repo:
        yield repo


def write_standin_source(host: BootedHost, repo: StandinRepo, name: str = "nvidia-standin") -> None:
    """Configure the repository inside ``host`` by hand (keyring + deb822 source, suite "/"), for
    tests that need the packages without going through provision's apt_repository module."""
    key = f"/etc/apt/keyrings/{name}.gpg"
    host.exec(
        f"mkdir -p /etc/apt/keyrings && gpg --batch --yes --dearmor -o {key} && chmod 644 {key}",
        input=_fetch(repo.key_url),
    )
    host.exec(
        f"cat > /etc/apt/sources.list.d/{name}.sources",
        input=f"Types: deb\nURIs: {repo.url}\nSuites: /\nSigned-By: {key}\n",
    )


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


# --------------------------------------------------------------------------------------------
# Stand-in host tools


MOKUTIL_STATES = ("enabled", "disabled", "unsupported")


def install_standin_mokutil(
    host: BootedHost, state: str = "enabled", enrolled: tuple[str, ...] = ()
) -> None:
    """Install the ``mokutil`` stand-in as /usr/bin/mokutil reporting Secure Boot ``state``
    ("enabled", "disabled" or "unsupported": a BIOS machine). ``enrolled``: paths (inside the
    host) of key files that ``mokutil --test-key`` reports as already enrolled."""
    if state not in MOKUTIL_STATES:
        raise ValueError(f"state must be one of {MOKUTIL_STATES}, not {state!r}")
    _copy(host_tools.MOKUTIL, host.merged / "usr/bin/mokutil")
    _write(host.merged / "etc/mokutil-standin/sb-state", state + "\n")
    sums = ""
    for path in enrolled:
        sums += host.exec(f"sha256sum {path} | cut -d' ' -f1").stdout
    _write(host.merged / "etc/mokutil-standin/enrolled", sums)


def install_standin_snap_docker(host: BootedHost) -> None:
    """Make ``host`` look like it runs the snap Docker: /usr/bin/snap (``snap list docker``
    lists it) and /snap/bin/docker (a refusing stand-in client)."""
    _copy(host_tools.SNAP, host.merged / "usr/bin/snap")
    _copy(host_tools.SNAP_DOCKER, host.merged / "snap/bin/docker")
