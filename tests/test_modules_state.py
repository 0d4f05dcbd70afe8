"""nvidia_state, docker_state and the PCI id -> generation table.

Spec tests: recorded snippet output -> the exact registered result. Real runs: the modules'
snippets under sh with recording fakes on PATH, and playbooks against a booted Debian host with a
real dockerd (Debian's docker.io), real dpkg, real processes and real sysfs. What a lab container
cannot have is replaced by named stand-ins: the GPU on the PCI bus and the loaded kernel module
(tmpfs over /sys/bus/pci/devices and /sys/module inside the container), NVML and nvidia-smi
(tests/standins/nvml), mokutil, snap and nvidia-ctk (tests/standins/nvidia_toolkit). Every
expectation about the host is read from the host itself (nsenter), never through the modules.
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.gpu_generations import (
    FIRST_OPEN_ID,
    OPEN_CAPABLE,
    RANGES,
    classify,
    parse_device_id,
)
from provision.inventory import load_inventory
from provision.modules import MODULES
from provision.modules.base import ArgError, Context, Plan
from provision.modules.docker_state import parse_state as docker_parse
from provision.modules.docker_state import state_script as docker_script
from provision.modules.nvidia_state import parse_state as nvidia_parse
from provision.modules.nvidia_state import state_script as nvidia_script
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.lab.docker import install_docker, start_docker
from tests.standins import nvml as nvml_standin

CTX = Context()
STANDIN_CTK = Path(__file__).parent / "standins" / "nvidia_toolkit" / "nvidia-ctk"


def plan(module: str, args: dict[str, Any], state: str | None) -> Plan:
    m = MODULES[module]
    m.check_static(args)
    return m.plan(m.prepare(m.finalize(args), CTX), state, CTX)


# -- the generation table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_id", "product", "generation", "open_ok"),
    [
        ("0x102d", "Tesla K80", "Kepler", False),
        ("0x1180", "GeForce GTX 680", "Kepler", False),
        ("0x1080", "GeForce GTX 580", "Fermi", False),
        ("0x13c0", "GeForce GTX 980", "Maxwell", False),
        ("0x17c2", "GeForce GTX TITAN X", "Maxwell", False),
        ("0x15f8", "Tesla P100 PCIe 16GB", "Pascal", False),
        ("0x1b38", "Tesla P40", "Pascal", False),
        ("0x1d01", "GeForce GT 1030", "Pascal", False),
        ("0x1db4", "Tesla V100 PCIe 16GB", "Volta", False),
        ("0x1eb8", "Tesla T4", "Turing", True),
        ("0x1e02", "TITAN RTX", "Turing", True),
        ("0x2182", "GeForce GTX 1660 Ti (TU116, after GA100)", "Turing", True),
        ("0x20b0", "A100-SXM4-40GB", "Ampere", True),
        ("0x2236", "A10", "Ampere", True),
        ("0x25b6", "A16 / A2", "Ampere", True),
        ("0x2684", "GeForce RTX 4090", "Ada", True),
        ("0x27b8", "L4", "Ada", True),
        ("0x2330", "H100 80GB HBM3 (SXM5)", "Hopper", True),
        ("0x2335", "H200", "Hopper", True),
        ("0x2342", "GH200", "Hopper", True),
        ("0x2901", "B200", "Blackwell", True),
        ("0x2b85", "GeForce RTX 5090", "Blackwell", True),
        ("0x2f04", "GeForce RTX 5070", "Blackwell", True),
        ("0x3182", "B300 SXM6", "Blackwell", True),
    ],
)
def test_generation_of_real_device_ids(
    device_id: str, product: str, generation: str, open_ok: bool
) -> None:
    gen = classify(device_id)
    assert (gen.name, gen.open_supported) == (generation, open_ok), product
    assert gen.legacy == (generation in ("Kepler", "Fermi"))


def test_generation_edges_and_unknown_ids() -> None:
    # An id NVIDIA assigns after this table was written: at or above 0x1E00 it is Turing or newer.
    future = classify(0x3F00)
    assert (future.name, future.open_supported, future.legacy) == ("unknown", True, False)
    # A gap among the proprietary-only generations: unknown, not open, not legacy.
    gap = classify("0x1500")
    assert (gap.name, gap.open_supported, gap.legacy) == ("unknown", False, False)
    # Below the first Kepler id everything is older (Tesla-era and before): legacy.
    old = classify("0x0040")
    assert (old.name, old.legacy) == ("pre-Fermi", True)
    assert parse_device_id("2335") == parse_device_id("0X2335") == parse_device_id(0x2335)
    for bad in ("", "0x", "0x12345", "zz", "-1", True, 0x10000):
        with pytest.raises(ValueError, match="not a PCI device id"):
            parse_device_id(bad)


def test_generation_table_is_consistent() -> None:
    ordered = sorted(RANGES)
    for (first, last, chip, _), (nxt, _, nxt_chip, _) in itertools.pairwise(ordered):
        assert first <= last < nxt, f"{chip} overlaps {nxt_chip}"
    for first, _, chip, name in RANGES:
        assert (name in OPEN_CAPABLE) == (first >= FIRST_OPEN_ID), chip


# -- nvidia_state: recorded state -> result -----------------------------------------------------

H100_HOST = """\
kernel=6.1.0-40-amd64
headers=1
pci=0000:18:00.0 0x2330 0x030200
pci=0000:2a:00.0 0x2330 0x030200
module=580.95.05
proc=NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build
lib=libnvidia-ml.so.1
lib=libnvidia-ml.so.580.95.05
pkg=nvidia-open-580\thold ok installed
pkg=libnvidia-compute-580\tinstall ok installed
pkg=cuda-drivers-580\tinstall ok installed
pkg=nvidia-container-toolkit\tinstall ok installed
pkg=nvidia-container-toolkit-base\tinstall ok installed
pkg=libnvidia-container1\tinstall ok installed
pkg=nvidia-docker2\tinstall ok installed
pkg=nvidia-kernel-common-535\tdeinstall ok config-files
pkg=nvidia-settings\tunknown ok not-installed
nouveau=0
reboot_file=1
gpu_proc=4242\talice\tpython3\tpython3 train.py --epochs 3\x20
gpu_proc=777\troot\tnvidia-persiste\t/usr/bin/nvidia-persistenced --user nvidia-persistenced\x20
gpu_proc=4300\tbob\tjupyter-lab\t
gpu_proc=4400\tcarol\tnvidia\t./nvidia --bench\x20
sb=bios
"""


def test_converged_h100_host() -> None:
    p = plan("nvidia_state", {}, H100_HOST)
    assert not p.changed and p.steps == []
    assert p.reason == "2 GPUs (Hopper), driver 580.95.05 loaded"
    gpu = {
        "device_id": "0x2330",
        "generation": "Hopper",
        "open_supported": True,
        "open_required": False,
    }
    assert p.result == {
        "gpus": [{"slot": "0000:18:00.0", **gpu}, {"slot": "0000:2a:00.0", **gpu}],
        "gpu_present": True,
        "open_supported": True,
        "recommended_flavour": "open",
        "legacy_gpus": [],
        "loaded_version": "580.95.05",
        "installed_version": "580.95.05",
        # held packages count as installed, config-files leftovers and the toolkit do not
        "driver_packages": ["cuda-drivers-580", "libnvidia-compute-580", "nvidia-open-580"],
        "nouveau_loaded": False,
        "reboot_required_file": True,
        "gpu_processes": [
            {"pid": 4242, "user": "alice", "command": "python3 train.py --epochs 3"},
            {"pid": 4300, "user": "bob", "command": "jupyter-lab"},
            {"pid": 4400, "user": "carol", "command": "./nvidia --bench"},
        ],
        "gpu_process_count": 3,
        "kernel": "6.1.0-40-amd64",
        "headers_present": True,
        "secure_boot": "not supported (BIOS)",
        "mok_key": "",
        "mok_enrolled": False,
        "dkms_version": "",
        "open_required": False,
        "nvml_version": "",
        "nvml_error": "",
        "reboot_needed": False,  # the reboot-required file alone is reported, not acted on
        "reboot_reasons": [],
    }


def test_installed_but_not_loaded_and_nouveau_need_a_reboot() -> None:
    state = (
        "kernel=6.1.0-40-amd64\npci=0000:01:00.0 0x2335 0x030200\nnouveau=1\n"
        "lib=libnvidia-ml.so.580.95.05\nlib=libnvidia-ml.so.580.105.08\nlib=libnvidia-ml.so.1\n"
        "smi_rc=9\nsmi_out=NVIDIA-SMI has failed because it couldn't communicate with the "
        "NVIDIA driver.\nsmi_err=\n"
    )
    p = plan("nvidia_state", {"query_nvml": True}, state)
    r = p.result
    assert r["installed_version"] == "580.105.08"  # compared as numbers, not as text
    assert r["loaded_version"] == ""
    assert r["reboot_reasons"] == [
        "no nvidia module loaded; installed 580.105.08",
        "nouveau is loaded",
    ]
    assert r["reboot_needed"] and r["nouveau_loaded"]
    assert r["nvml_version"] == "" and r["nvml_error"].startswith("NVIDIA-SMI has failed")
    assert p.reason == "1 GPU (Hopper), no driver loaded, 580.105.08 installed; reboot needed"


def test_version_mismatch_after_an_unattended_upgrade() -> None:
    state = (
        "pci=0000:01:00.0 0x20b0 0x030200\n"
        "proc=NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.274.02  Thu Sep  4 2025\n"
        "lib=libnvidia-ml.so.580.95.05\n"
        "smi_rc=18\nsmi_out=Failed to initialize NVML: Driver/library version mismatch\n"
        "smi_err=\n"
    )
    r = plan("nvidia_state", {"query_nvml": "yes"}, state).result
    assert r["loaded_version"] == "535.274.02"  # from /proc when /sys/module has no version
    assert r["reboot_reasons"] == ["loaded module 535.274.02 differs from installed 580.95.05"]
    assert r["nvml_error"] == "Failed to initialize NVML: Driver/library version mismatch"
    # query_nvml false: nvidia-smi's lines are not even looked at
    assert plan("nvidia_state", {}, state).result["nvml_error"] == ""


@pytest.mark.parametrize(
    ("smi", "version", "error"),
    [
        ("smi_rc=0\nsmi_out=580.95.05\nsmi_err=", "580.95.05", ""),
        ("smi_rc=missing", "", "nvidia-smi is not installed"),
        ("smi_rc=124\nsmi_out=\nsmi_err=", "", "nvidia-smi timed out after 20 s"),
        ("smi_rc=6\nsmi_out=\nsmi_err=No devices were found", "", "No devices were found"),
        ("smi_rc=3\nsmi_out=\nsmi_err=", "", "nvidia-smi exited 3"),
        ("smi_rc=mktemp", "", "mktemp failed on the host: nvidia-smi not asked"),
    ],
)
def test_nvml_answers(smi: str, version: str, error: str) -> None:
    r = plan("nvidia_state", {"query_nvml": True}, smi).result
    assert (r["nvml_version"], r["nvml_error"]) == (version, error)


def test_mixed_and_legacy_gpus_choose_the_proprietary_modules() -> None:
    mixed = "pci=0000:02:00.0 0x1eb8 0x030200\npci=0000:01:00.0 0x1b38 0x030200\n"
    r = plan("nvidia_state", {}, mixed).result
    assert [(g["slot"], g["generation"]) for g in r["gpus"]] == [
        ("0000:01:00.0", "Pascal"),
        ("0000:02:00.0", "Turing"),
    ]
    assert (r["open_supported"], r["recommended_flavour"], r["legacy_gpus"]) == (
        False,
        "proprietary",
        [],
    )
    k80 = plan("nvidia_state", {}, "pci=0000:05:00.0 0x102d 0x030200\n")
    assert k80.result["recommended_flavour"] == "proprietary"
    assert k80.result["legacy_gpus"] == [
        {
            "slot": "0000:05:00.0",
            "device_id": "0x102d",
            "generation": "Kepler",
            "open_supported": False,
            "open_required": False,
        }
    ]
    assert k80.reason == "1 GPU (Kepler)"
    # Debian's layout (libnvidia-ml1: <multiarch>/nvidia/current/), Blackwell needs open modules
    debian = "pci=0000:01:00.0 0x2b85 0x030000\nlib=libnvidia-ml.so.535.261.03\n"
    r = plan("nvidia_state", {}, debian).result
    assert r["open_required"] is True and r["gpus"][0]["generation"] == "Blackwell"
    assert "/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ml.so.*" in nvidia_script(False)


@pytest.mark.parametrize(
    ("lines", "secure_boot", "key", "enrolled"),
    [
        ("sb_state=SecureBoot enabled \nsb=1", "enabled", "", False),
        (
            "sb_state=SecureBoot enabled SecureBoot validation is disabled in shim \nsb=1\n"
            "mok=/var/lib/dkms/mok.pub\t/var/lib/dkms/mok.pub is already enrolled ",
            "enabled",
            "/var/lib/dkms/mok.pub",
            True,
        ),
        (
            "sb_state=SecureBoot enabled \nmok=/var/lib/shim-signed/mok/MOK.der\t"
            "/var/lib/shim-signed/mok/MOK.der is not enrolled ",
            "enabled",
            "/var/lib/shim-signed/mok/MOK.der",
            False,
        ),
        ("sb_state=SecureBoot disabled \nsb=1", "disabled", "", False),
        (
            "sb_state=This system doesn't support Secure Boot \nsb=bios",
            "not supported (BIOS)",
            "",
            False,
        ),
        # mokutil cannot read EFI variables: the efivar reading decides (facts' mapping)
        ("sb_state=EFI variables are not supported on this system \nsb=0", "disabled", "", False),
        # no mokutil: the facts' efivar logic
        ("sb=1", "enabled", "", False),
        ("sb=unknown", "unknown", "", False),
        # Ubuntu: dkms's own key not enrolled, update-secureboot-policy's MOK.der enrolled
        (
            "sb_state=SecureBoot enabled \nmok=/var/lib/dkms/mok.pub\tnot enrolled \n"
            "mok=/var/lib/shim-signed/mok/MOK.der\tMOK.der is already enrolled ",
            "enabled",
            "/var/lib/shim-signed/mok/MOK.der",
            True,
        ),
        (
            "sb=bios\nmok=/var/lib/dkms/mok.pub\t",
            "not supported (BIOS)",
            "/var/lib/dkms/mok.pub",
            False,
        ),
    ],
)
def test_secure_boot_and_mok(lines: str, secure_boot: str, key: str, enrolled: bool) -> None:
    r = plan("nvidia_state", {}, lines).result
    assert (r["secure_boot"], r["mok_key"], r["mok_enrolled"]) == (secure_boot, key, enrolled)


def test_nothing_read_still_gives_every_key() -> None:
    p = plan("nvidia_state", {}, None)
    assert p.reason == "no NVIDIA GPU"
    assert p.result["gpus"] == [] and p.result["recommended_flavour"] == ""
    assert p.result["secure_boot"] == "unknown" and p.result["reboot_needed"] is False
    assert set(p.result) == set(plan("nvidia_state", {}, H100_HOST).result)
    with pytest.raises(ArgError, match="unknown argument 'flavour'"):
        MODULES["nvidia_state"].check_static({"flavour": "open"})
    with pytest.raises(ArgError, match="must be a boolean"):
        MODULES["nvidia_state"].finalize({"query_nvml": "maybe"})


# -- docker_state: recorded state -> result -----------------------------------------------------

RUNTIMES = {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}}
CTK_DRY_RUN = json.dumps(
    {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}, indent=4
).replace("\n", " ")


def docker_state(**over: str) -> str:
    fields = {
        "snap": "0",
        "dockerd": "1",
        "active": "active",
        "info": f"{json.dumps(RUNTIMES)}|runc|/srv/docker ",
        "containers": "3",
        **over,
    }
    lines = [f"{k}={v}" for k, v in fields.items() if v is not None]
    lines += [
        "pkg=docker-ce\tinstall ok installed",
        "pkg=containerd.io\thold ok installed",
        "pkg=docker.io\tdeinstall ok config-files",
        "pkg=docker-ce-cli\tinstall ok installed",
    ]
    return "\n".join(lines)


def test_docker_running_with_containers() -> None:
    p = plan("docker_state", {}, docker_state())
    assert not p.changed
    assert p.reason == (
        "docker installed, running (3 containers), runtimes: io.containerd.runc.v2, runc"
    )
    assert p.result == {
        "snap_docker": False,
        "docker_installed": True,
        "docker_packages": ["docker-ce", "docker-ce-cli", "containerd.io"],
        "daemon_running": True,
        "running_containers": 3,
        "runtimes": ["io.containerd.runc.v2", "runc"],
        "default_runtime": "runc",
        "data_root": "/srv/docker",
        "nvidia_ctk": "",
        "nvidia_runtime": {"path": "nvidia-container-runtime", "args": []},
        "nvidia_ctk_error": "",
    }


def test_docker_stopped_snap_and_missing() -> None:
    stopped = plan("docker_state", {}, docker_state(active="inactive", info="", containers=""))
    r = stopped.result
    assert (r["daemon_running"], r["running_containers"], r["runtimes"], r["data_root"]) == (
        False,
        0,
        [],
        "",
    )
    assert stopped.reason == "docker installed, daemon not running"
    snap = plan("docker_state", {}, "snap=1\ndockerd=0\nactive=inactive")
    assert snap.result["snap_docker"] and snap.reason == "snap Docker installed, daemon not running"
    missing = plan("docker_state", {}, None)
    assert missing.reason == "docker not installed"
    assert missing.result["docker_packages"] == [] and missing.result["daemon_running"] is False
    # Without systemd the daemon counts as running when it answered on its socket.
    nosystemd = docker_state(active=None, systemd="0")  # type: ignore[arg-type]
    assert plan("docker_state", {}, nosystemd).result["daemon_running"] is True
    assert plan("docker_state", {}, "systemd=0\ndockerd=1").result["daemon_running"] is False


def test_nvidia_ctk_entry_or_the_default_with_the_reason() -> None:
    ctk = "ctk=/usr/bin/nvidia-ctk\nctk_rc=0\nctk_out="
    custom = json.dumps({"runtimes": {"nvidia": {"args": ["--x"], "path": "/opt/ncr"}}})
    assert plan("docker_state", {}, ctk + custom).result["nvidia_runtime"] == {
        "args": ["--x"],
        "path": "/opt/ncr",
    }
    r = plan("docker_state", {}, ctk + CTK_DRY_RUN).result
    assert r["nvidia_ctk"] == "/usr/bin/nvidia-ctk" and r["nvidia_ctk_error"] == ""
    assert r["nvidia_runtime"] == {"args": [], "path": "nvidia-container-runtime"}
    default = {"path": "nvidia-container-runtime", "args": []}
    for state, error in [
        (
            "ctk=/usr/bin/nvidia-ctk\nctk_rc=1\nctk_out=\nctk_err=ERRO[0000] unable to load config",
            "nvidia-ctk exited 1: ERRO[0000] unable to load config",
        ),
        ("ctk=/usr/bin/nvidia-ctk\nctk_rc=0\nctk_out=INFO done", "nvidia-ctk printed no JSON"),
        (ctk + '{"runtimes": {}}', "nvidia-ctk printed no runtimes.nvidia entry"),
        ("ctk=/usr/bin/nvidia-ctk\nctk_rc=mktemp", "mktemp failed on the host"),
    ]:
        r = plan("docker_state", {}, state).result
        assert r["nvidia_runtime"] == default and r["nvidia_ctk_error"].startswith(error), state


# -- the snippets under a real sh, with recording fakes on PATH ---------------------------------


def _fake(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _run(script: str, path_dir: Path) -> str:
    env = {"PATH": f"{path_dir}:/usr/bin:/bin", "LOG": str(path_dir / "log")}
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_nvidia_snippet_asks_mokutil_and_nvidia_smi(tmp_path: Path) -> None:
    _fake(tmp_path, "mokutil", 'echo "mokutil $*" >> "$LOG"\necho SecureBoot enabled\n')
    _fake(
        tmp_path,
        "nvidia-smi",
        'echo "nvidia-smi $*" >> "$LOG"\n'
        'echo "Failed to initialize NVML: Driver/library version mismatch"\n'
        'echo "NVML library version: 580.95" \necho "a warning" >&2\nexit 18\n',
    )
    r = nvidia_parse(_run(nvidia_script(query_nvml=True), tmp_path), query_nvml=True)
    assert r["secure_boot"] == "enabled"
    assert r["nvml_error"] == "Failed to initialize NVML: Driver/library version mismatch"
    calls = (tmp_path / "log").read_text().splitlines()
    assert "mokutil --sb-state" in calls
    assert "nvidia-smi --query-gpu=driver_version --format=csv,noheader" in calls
    # Without query_nvml nvidia-smi is never run.
    (tmp_path / "log").write_text("")
    nvidia_parse(_run(nvidia_script(query_nvml=False), tmp_path))
    assert not any(c.startswith("nvidia-smi") for c in (tmp_path / "log").read_text().splitlines())


def test_docker_snippet_asks_snap_dpkg_and_nvidia_ctk(tmp_path: Path) -> None:
    _fake(tmp_path, "snap", 'echo "snap $*" >> "$LOG"\n[ "$*" = "list docker" ]\n')
    _fake(tmp_path, "dockerd", "exit 0\n")
    _fake(tmp_path, "systemctl", 'echo "systemctl $*" >> "$LOG"\necho inactive\nexit 3\n')
    _fake(tmp_path, "nvidia-ctk", f'exec python3 {shlex.quote(str(STANDIN_CTK))} "$@"\n')
    _fake(
        tmp_path,
        "dpkg-query",
        'printf "%s\\n" "dpkg-query $*" >> "$LOG"\n'
        'printf "pkg=docker.io\\tinstall ok installed\\n"\n',
    )
    out = _run(docker_script(), tmp_path)
    r = docker_parse(out)
    assert r["snap_docker"] and r["docker_installed"] and r["docker_packages"] == ["docker.io"]
    assert r["daemon_running"] is False and r["runtimes"] == []
    assert r["nvidia_ctk"] == str(tmp_path / "nvidia-ctk")
    assert r["nvidia_runtime"] == {"args": [], "path": "nvidia-container-runtime"}
    assert r["nvidia_ctk_error"] == ""
    calls = (tmp_path / "log").read_text().splitlines()
    assert "snap list docker" in calls and "systemctl is-active docker" in calls
    assert any(c.startswith("dpkg-query -W") and c.endswith("podman-docker") for c in calls)


# -- real runs on a booted host ------------------------------------------------------------------


@dataclass
class Lab:
    host: BootedHost
    workdir: Path

    def apply(self, tasks: list[dict[str, Any]], **kw: Any) -> PlaybookResult:
        book = self.workdir / "play.yml"
        play = [{"hosts": "all", "gather_facts": False, "tasks": tasks}]
        book.write_text(yaml.safe_dump(play))
        opts = ApplyOptions(known_hosts=(str(self.workdir / "known_hosts"),), **kw)
        return run_playbook(load_inventory(str(self.workdir / "inventory.ini")), str(book), opts)

    def read(self, module: str, **args: Any) -> dict[str, Any]:
        result = self.apply([{"name": "read", module: args, "register": "r"}])
        (r,) = result.results
        assert r.status == "ok", r.msg
        return {**r.data, "msg": r.msg}

    def sh(self, command: str, **kw: Any) -> str:
        return self.host.exec(command, **kw).stdout.strip()


@pytest.fixture(scope="module")
def lab(booted_hosts, tmp_path_factory) -> Iterator[Lab]:  # noqa: F811
    host = booted_hosts(1, prefix="state")[0]
    workdir = tmp_path_factory.mktemp("state-modules")
    write_inventory([host], workdir / "inventory.ini")
    write_known_hosts([host], workdir / "known_hosts")
    yield Lab(host, workdir)


MOKUTIL_STANDIN = """#!/bin/sh
# STAND-IN for mokutil (no EFI firmware in a lab container): Secure Boot on; a key counts as
# enrolled once /etc/mok-standin/enrolled exists.
case "$1" in
  --sb-state) echo "SecureBoot enabled" ;;
  --test-key)
    if [ -e /etc/mok-standin/enrolled ]; then echo "$2 is already enrolled"
    else echo "$2 is not enrolled"; fi ;;
  *) echo "mokutil stand-in: unsupported $*" >&2; exit 1 ;;
esac
"""

STANDIN_DEB = """set -e
d=$(mktemp -d)
for p in {names}; do
  mkdir -p "$d/$p/DEBIAN"
  printf 'Package: %s\\nVersion: 1.0-1\\nArchitecture: all\\nMaintainer: lab <lab@invalid>\\n\
Description: STAND-IN package for the nvidia_state test\\n' "$p" > "$d/$p/DEBIAN/control"
  dpkg-deb --build "$d/$p" "$d/$p.deb" >/dev/null
done
dpkg -i "$d"/*.deb >/dev/null
rm -rf "$d"
"""


def _fake_pci(lab: Lab, devices: list[tuple[str, str, str, str]]) -> None:
    """STAND-IN PCI bus: a tmpfs over /sys/bus/pci/devices inside the container."""
    lab.sh("mount -t tmpfs standin-pci /sys/bus/pci/devices")
    for slot, vendor, device, klass in devices:
        d = f"/sys/bus/pci/devices/{slot}"
        lab.sh(
            f"mkdir {d} && echo {vendor} > {d}/vendor && echo {device} > {d}/device"
            f" && echo {klass} > {d}/class"
        )


def test_nvidia_state_on_a_real_host(lab: Lab) -> None:
    host = lab.host
    # -- a host without GPU or driver: the real sysfs, dpkg, /proc of the lab container ----------
    expected_gpus = lab.sh(
        'for d in /sys/bus/pci/devices/*; do [ "$(cat $d/vendor)" = 0x10de ] && '
        'case "$(cat $d/class)" in 0x03*) echo "$d";; esac; done; true'
    )
    assert expected_gpus == "", "this test needs a machine without NVIDIA GPUs"
    efivar = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    firmware = lab.sh(
        f"if [ -r {efivar} ]; then od -An -t u1 -j4 -N1 {efivar} | tr -d ' ';"
        " elif [ -d /sys/firmware/efi ]; then echo efi; else echo bios; fi"
    )
    expected_sb = {"1": "enabled", "0": "disabled", "efi": "unknown"}
    r = lab.read("nvidia_state", query_nvml=True)
    assert r["gpus"] == [] and r["gpu_present"] is False and r["recommended_flavour"] == ""
    assert (r["loaded_version"], r["installed_version"], r["driver_packages"]) == ("", "", [])
    assert r["kernel"] == lab.sh("uname -r")
    assert r["headers_present"] is False
    assert r["secure_boot"] == expected_sb.get(firmware, "not supported (BIOS)")
    assert (r["mok_key"], r["mok_enrolled"]) == ("", False)
    assert r["nvml_error"] == "nvidia-smi is not installed" and r["reboot_needed"] is False
    assert r["gpu_processes"] == [] and r["msg"] == "no NVIDIA GPU"

    # -- stand-ins: an H200 on the bus, the NVML library and nvidia-smi, mokutil, packages ------
    try:
        _fake_pci(
            lab,
            [
                ("0000:01:00.0", "0x10de", "0x2335", "0x030200"),  # H200
                ("0000:01:00.1", "0x10de", "0x22a3", "0x040300"),  # an NVIDIA audio function
                ("0000:03:00.0", "0x1a03", "0x2000", "0x030000"),  # the BMC's VGA (ASPEED)
            ],
        )
        lab.sh("mount -t tmpfs standin-modules /sys/module && mkdir /sys/module/nouveau")
        lib_dir = nvml_standin.build()
        smi = nvml_standin.build_nvidia_smi()
        root = host.merged
        libdir = root / "usr/lib/x86_64-linux-gnu"
        (libdir / "libnvidia-ml.so.580.95.05").write_bytes(
            (Path(lib_dir) / "libnvidia-ml.so.1").read_bytes()
        )
        lab.sh(
            "cd /usr/lib/x86_64-linux-gnu && ln -sf libnvidia-ml.so.580.95.05 libnvidia-ml.so.1"
            " && ldconfig"
        )
        (root / "usr/local/bin/nvidia-smi").write_bytes(Path(smi).read_bytes())
        (root / "usr/local/bin/nvidia-smi").chmod(0o755)
        (root / "etc/nvml-standin").mkdir(exist_ok=True)
        nvml_standin.write_scenario(
            str(root / "etc/nvml-standin/scenario"),
            {
                **nvml_standin.BASE,
                "driver": "580.95.05",
                "count": 1,
                "module_version_file": "/sys/module/nvidia/version",
                **nvml_standin.healthy_gpu(0, "NVIDIA H200"),
            },
        )
        (root / "usr/local/bin/mokutil").write_text(MOKUTIL_STANDIN)
        (root / "usr/local/bin/mokutil").chmod(0o755)
        lab.sh("mkdir -p /var/lib/dkms && echo standin-key > /var/lib/dkms/mok.pub")
        names = "nvidia-standin-open libnvidia-standin-compute nvidia-container-toolkit-base"
        lab.sh(STANDIN_DEB.format(names=names))
        lab.sh("apt-mark hold nvidia-standin-open >/dev/null")

        # After the install, before the reboot: no module, nouveau still loaded.
        smi_says = host.exec(
            "nvidia-smi --query-gpu=driver_version --format=csv,noheader", check=False
        )
        r = lab.read("nvidia_state", query_nvml=True)
        assert r["gpus"] == [
            {
                "slot": "0000:01:00.0",
                "device_id": "0x2335",
                "generation": "Hopper",
                "open_supported": True,
                "open_required": False,
            }
        ]
        assert r["recommended_flavour"] == "open" and r["open_supported"] is True
        assert r["installed_version"] == "580.95.05" and r["loaded_version"] == ""
        assert r["driver_packages"] == ["libnvidia-standin-compute", "nvidia-standin-open"]
        assert r["reboot_reasons"] == [
            "no nvidia module loaded; installed 580.95.05",
            "nouveau is loaded",
        ]
        assert smi_says.returncode != 0
        assert (
            r["nvml_error"] == (smi_says.stdout.strip() or smi_says.stderr.strip()).splitlines()[0]
        )
        assert (r["secure_boot"], r["mok_key"], r["mok_enrolled"]) == (
            "enabled",
            "/var/lib/dkms/mok.pub",
            False,
        )
        # The playbook's refusal works on the registered result.
        refusal = lab.apply(
            [
                {"name": "read", "nvidia_state": {}, "register": "nv"},
                {
                    "name": "refuse",
                    "fail": {
                        "msg": "Secure Boot is on and the MOK key {{ nv.mok_key }} is not enrolled"
                    },
                    "when": "nv.secure_boot == 'enabled' and not nv.mok_enrolled",
                },
            ]
        )
        assert [x.status for x in refusal.results] == ["ok", "failed"]
        assert "MOK key /var/lib/dkms/mok.pub is not enrolled" in refusal.results[1].msg

        # The old module still loaded (an upgrade without reboot): NVML refuses, as the driver does.
        lab.sh("rmdir /sys/module/nouveau && mkdir /sys/module/nvidia")
        lab.sh("echo 535.274.02 > /sys/module/nvidia/version")
        r = lab.read("nvidia_state", query_nvml=True)
        assert r["loaded_version"] == "535.274.02"
        assert r["reboot_reasons"] == ["loaded module 535.274.02 differs from installed 580.95.05"]
        assert r["nvml_error"] == "Failed to initialize NVML: Driver/library version mismatch"

        # After the reboot: the module matches; processes hold the GPU; key enrolled; headers.
        lab.sh("echo 580.95.05 > /sys/module/nvidia/version && mkdir -p /etc/mok-standin")
        lab.sh("touch /etc/mok-standin/enrolled /var/run/reboot-required")
        lab.sh('mkdir -p "/lib/modules/$(uname -r)/build"')
        lab.sh(
            "touch /dev/nvidia0 /dev/nvidiactl && cp /bin/sleep /usr/local/bin/nvidia-persistenced"
        )
        start = "setsid {} </dev/null >/dev/null 2>&1 3<{} & echo $!"
        worker = lab.sh(
            start.format(
                "setpriv --reuid=labuser --regid=labuser --clear-groups sleep 301", "/dev/nvidia0"
            )
        )
        daemon = lab.sh(start.format("/usr/local/bin/nvidia-persistenced 302", "/dev/nvidia0"))
        ctl_only = lab.sh(start.format("sleep 303", "/dev/nvidiactl"))
        try:
            r = lab.read("nvidia_state", query_nvml=True)
            checked = lab.apply(
                [{"name": "read", "nvidia_state": {}, "register": "nv"}], check=True
            )
        finally:
            lab.sh(f"kill {worker} {daemon} {ctl_only}; true")
        assert r["nvml_version"] == "580.95.05" and r["nvml_error"] == ""
        assert r["loaded_version"] == r["installed_version"] == "580.95.05"
        assert r["reboot_needed"] is False and r["reboot_required_file"] is True
        assert r["msg"] == "1 GPU (Hopper), driver 580.95.05 loaded"
        assert r["gpu_processes"] == [
            {"pid": int(worker), "user": "labuser", "command": "sleep 301"}
        ]
        assert r["gpu_process_count"] == 1
        assert r["mok_enrolled"] is True and r["headers_present"] is True
        assert checked.results[0].status == "ok" and checked.results[0].data["gpu_present"] is True
    finally:
        host.exec("umount /sys/bus/pci/devices; umount /sys/module", check=False)


def test_state_reads_ride_in_the_batch(lab: Lab) -> None:
    """Both reads add no round trip: they travel with the other tasks' state reads."""
    file_task = {"name": "dir", "file": {"path": "/tmp/state-batch", "state": "directory"}}
    lab.apply([file_task])  # create it: the runs below are then a read each
    alone = lab.apply([file_task])
    reads = [
        file_task,
        {"name": "nv", "nvidia_state": {}, "register": "nv"},
        {"name": "dk", "docker_state": {}, "register": "dk"},
        {
            "name": "use",
            "file": {"path": "/tmp/state-batch", "state": "directory"},
            "when": "not nv.gpu_present",
        },
    ]
    together = lab.apply(reads)
    assert [r.status for r in together.results] == ["ok", "ok", "ok", "ok"]
    assert together.round_trips == alone.round_trips == {lab.host.name: 1}


def test_docker_state_on_a_real_host(lab: Lab) -> None:
    host = lab.host
    if lab.sh("command -v dockerd || true") == "":
        r = lab.read("docker_state")
        assert (r["docker_installed"], r["docker_packages"], r["daemon_running"]) == (
            False,
            [],
            False,
        )
        assert (r["runtimes"], r["nvidia_ctk"], r["nvidia_ctk_error"]) == ([], "", "")
        assert r["nvidia_runtime"] == {"path": "nvidia-container-runtime", "args": []}
        assert r["msg"] == "docker not installed"
        install_docker(host, registry=False)
    start_docker(host, {"data-root": "/srv/lab-docker"})
    standin = host.merged / "usr/local/bin/nvidia-ctk"
    standin.write_bytes(STANDIN_CTK.read_bytes())
    standin.chmod(0o755)

    r = lab.read("docker_state")
    info = json.loads(lab.sh("docker info --format '{{json .}}'"))
    assert r["docker_installed"] is True and r["snap_docker"] is False
    assert r["docker_packages"] == ["docker.io"]
    assert r["daemon_running"] is True
    assert r["running_containers"] == int(lab.sh("docker ps -q | wc -l"))
    assert r["runtimes"] == sorted(info["Runtimes"]) and "runc" in r["runtimes"]
    assert r["default_runtime"] == info["DefaultRuntime"]
    assert r["data_root"] == info["DockerRootDir"] == "/srv/lab-docker"
    assert r["nvidia_ctk"] == "/usr/local/bin/nvidia-ctk" and r["nvidia_ctk_error"] == ""
    assert r["nvidia_runtime"] == {"args": [], "path": "nvidia-container-runtime"}
    # The daemon.json is untouched by the dry run.
    assert json.loads(lab.sh("cat /etc/docker/daemon.json"))["data-root"] == "/srv/lab-docker"

    # Stopped, with docker.socket still listening: the read must not start the daemon.
    lab.sh("systemctl stop docker")
    assert lab.sh("systemctl is-active docker.socket || true") == "active"
    r = lab.read("docker_state")
    assert (r["daemon_running"], r["running_containers"], r["runtimes"]) == (False, 0, [])
    assert lab.sh("systemctl is-active docker || true") == "inactive"

    # Snap Docker (STAND-IN snap that knows a docker snap).
    snap = host.merged / "usr/local/bin/snap"
    snap.write_text(
        "#!/bin/sh\n# STAND-IN for snap: one docker snap installed\n"
        '[ "$*" = "list docker" ] || exit 1\n'
        'echo "Name    Version  Rev   Tracking       Publisher   Notes"\n'
        'echo "docker  24.0.5   2904  latest/stable  canonical**  -"\n'
    )
    snap.chmod(0o755)
    try:
        r = lab.read("docker_state")
    finally:
        snap.unlink()
    assert r["snap_docker"] is True and r["msg"].startswith("snap Docker installed")
