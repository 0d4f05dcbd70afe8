"""Spec tests of the shipped baseline playbooks: exact repositories, keys, packages and files for
recorded facts of Ubuntu 20.04/22.04/24.04 and Debian 12, and each preflight stop (pure)."""

from __future__ import annotations

import pytest

from provision.playbook import load_playbook
from tests.baseline_plan import (
    PLAYBOOKS,
    by_module,
    dk_state,
    facts,
    failures,
    nv_state,
    plan,
)

TOOLKIT = [
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
]
DEBIAN_PROPRIETARY = [
    "nvidia-kernel-dkms",
    "nvidia-driver",
    "firmware-misc-nonfree",
    "libcuda1",
    "nvidia-smi",
    "nvidia-persistenced",
    "libnvidia-cfg1",
]
DOCKER_FPR = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
CUDA_FPR = "EB693B3035CD5710E231E123A4B469963BF863CC"
TOOLKIT_FPR = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"
PASCAL = {
    "slot": "0000:3b:00.0",
    "device_id": "0x15f8",
    "generation": "Pascal",
    "open_required": False,
}


def repos(planned):
    return {r["name"]: r for r in by_module(planned, "apt_repository")}


def packages(planned):
    """Package lists of the apt tasks that install (not the hold-only ones)."""
    return [a["name"] for a in by_module(planned, "apt") if not a.get("hold")]


@pytest.mark.parametrize("name", sorted(p.name for p in PLAYBOOKS.glob("*.yml")))
def test_every_shipped_playbook_loads(name):
    if name == "defaults.yml":
        return
    book = load_playbook(str(PLAYBOOKS / name))
    assert book.plays
    for play in book.plays:
        assert play.defaults["nvidia_driver_branch"] == "580"


def test_site_runs_preflight_first_then_the_parts_in_order():
    names = [p.name for p in load_playbook(str(PLAYBOOKS / "site.yml")).plays]
    assert names[0].startswith("Lab baseline: preflight")
    order = ["NVIDIA driver", "Docker", "NVIDIA container toolkit", "Shared images"]
    firsts = [next(i for i, n in enumerate(names) if n.startswith(o)) for o in order]
    assert firsts == sorted(firsts)


def test_ubuntu_2204_ampere_defaults():
    planned = plan("site.yml", facts("ubuntu-22.04"))
    assert failures(planned) == []
    r = repos(planned)
    assert "nvidia-cuda" not in r  # Ubuntu's own driver packages by default
    assert r["docker"]["uris"] == ["https://download.docker.com/linux/ubuntu"]
    assert r["docker"]["suites"] == ["jammy"]
    assert r["docker"]["components"] == ["stable"]
    assert r["docker"]["architectures"] == ["amd64"]
    assert r["docker"]["key_url"] == "https://download.docker.com/linux/ubuntu/gpg"
    assert r["docker"]["key_fingerprint"] == DOCKER_FPR
    toolkit = r["nvidia-container-toolkit"]
    assert toolkit["uris"] == ["https://nvidia.github.io/libnvidia-container/stable/deb/amd64/"]
    assert toolkit["suites"] == ["/"]
    assert toolkit["key_url"] == "https://nvidia.github.io/libnvidia-container/gpgkey"
    assert toolkit["key_fingerprint"] == TOOLKIT_FPR
    pkgs = packages(planned)
    assert ["linux-headers-5.15.0-125-generic", "linux-headers-generic"] in pkgs
    assert ["nvidia-headless-580-server-open", "nvidia-utils-580-server"] in pkgs
    assert [
        "docker-ce",
        "docker-ce-cli",
        "containerd.io",
        "docker-buildx-plugin",
        "docker-compose-plugin",
    ] in pkgs
    assert TOOLKIT in pkgs
    blacklist = by_module(planned, "kernel_module_blacklist")
    assert blacklist == [{"module": "nouveau", "options": "modeset=0"}]
    unattended = [c for c in by_module(planned, "copy") if "apt.conf.d" in c["dest"]]
    assert unattended[0]["dest"] == "/etc/apt/apt.conf.d/51provision-nvidia-driver"
    for pattern in ('"nvidia-";', '"libnvidia-";', '"cuda-drivers";'):
        assert pattern in unattended[0]["content"]
    merges = by_module(planned, "json_merge")
    assert merges == [
        {
            "path": "/etc/docker/daemon.json",
            "data": {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}},
        }
    ]


def test_ubuntu_2404_pascal_from_the_cuda_repository_gets_proprietary_modules():
    nv = nv_state(
        gpus=[{**PASCAL, "open_supported": False}],
        open_supported=False,
        recommended_flavour="proprietary",
        headers_present=True,
        secure_boot="enabled",
        mok_key="/var/lib/dkms/mok.pub",
        mok_enrolled=True,
    )
    planned = plan(
        "nvidia-driver.yml",
        facts("ubuntu-24.04"),
        hostvars={"nvidia_driver_source": "cuda"},
        nv=nv,
    )
    assert failures(planned) == []  # Secure Boot on, but an enrolled MOK signs the module
    cuda = repos(planned)["nvidia-cuda"]
    base = "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/"
    assert cuda["uris"] == [base]
    assert cuda["suites"] == ["/"]
    assert cuda["key_url"] == base + "3bf863cc.pub"
    assert cuda["key_fingerprint"] == CUDA_FPR
    # the pin alone first; the running kernel's headers are there, the flavour's metapackage not
    assert packages(planned) == [
        ["nvidia-driver-pinning-580"],
        ["linux-headers-generic"],
        ["cuda-drivers-580"],
    ]


def test_ubuntu_2404_arm64_uses_sbsa_and_arm64_repositories():
    planned = plan(
        "site.yml",
        facts("ubuntu-24.04-arm64"),
        hostvars={"nvidia_driver_source": "cuda"},
        nv=nv_state(secure_boot="disabled"),
    )
    r = repos(planned)
    assert r["nvidia-cuda"]["uris"] == [
        "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/sbsa/"
    ]
    assert r["docker"]["architectures"] == ["arm64"]
    assert r["docker"]["suites"] == ["noble"]
    assert r["nvidia-container-toolkit"]["uris"] == [
        "https://nvidia.github.io/libnvidia-container/stable/deb/arm64/"
    ]
    assert ["nvidia-open-580"] in packages(planned)


def test_ubuntu_2004_stops_with_the_vendors_reason():
    """Item 8: Docker CE dropped 20.04 and CUDA 13 / R580 support only 22.04 and 24.04."""
    [msg] = set(failures(plan("site.yml", facts("ubuntu-20.04"))))
    assert msg.startswith("Ubuntu 20.04 is no longer supported by the lab baseline")
    assert "Docker CE no longer ships for Ubuntu 20.04" in msg
    assert "CUDA 13 / R580 support only Ubuntu 22.04 and 24.04" in msg
    assert "nothing was changed" in msg


def test_debian_12_defaults_to_nvidias_cuda_repository_and_open_modules():
    planned = plan("site.yml", facts("debian-12"))
    assert failures(planned) == []
    r = repos(planned)
    assert r["nvidia-cuda"]["uris"] == [
        "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"
    ]
    assert r["docker"]["uris"] == ["https://download.docker.com/linux/debian"]
    assert r["docker"]["suites"] == ["bookworm"]
    assert ["nvidia-open-580"] in packages(planned)


def test_debian_12_distribution_sources():
    planned = plan(
        "site.yml",
        facts("debian-12"),
        hostvars={
            "nvidia_driver_source": "distribution",
            "nvidia_driver_flavour": "proprietary",
            "docker_source": "distribution",
        },
    )
    assert set(repos(planned)) == {"nvidia-container-toolkit"}
    pkgs = packages(planned)
    # item 4: nvidia-driver's Recommends named (apt installs without them), item 13: headers
    assert DEBIAN_PROPRIETARY in pkgs
    assert ["linux-headers-6.1.0-27-amd64", "linux-headers-amd64"] in pkgs
    assert ["docker.io"] in pkgs


def test_branch_590_locks_with_nvidias_pinning_package():
    planned = plan(
        "nvidia-driver.yml",
        facts("debian-12"),
        hostvars={"nvidia_driver_branch": 590},
        nv=nv_state(headers_present=True),
    )
    assert packages(planned) == [
        ["nvidia-driver-pinning-590"],
        ["linux-headers-amd64"],
        ["nvidia-open"],
    ]


def test_installed_driver_packages_are_held():
    held = ["libnvidia-compute-580", "nvidia-open-580"]
    planned = plan("nvidia-driver.yml", facts("debian-12"), nv=nv_state(driver_packages=held))
    holds = [a for a in by_module(planned, "apt") if a.get("hold")]
    assert holds == [{"name": held, "hold": True}]


def test_daemon_json_settings_are_merged_only_when_set():
    planned = plan(
        "docker.yml",
        facts("ubuntu-22.04"),
        hostvars={
            "docker_data_root": "/scratch/docker",
            "docker_registry_mirrors": ["https://mirror.lab.internal"],
            "docker_daemon_options": {"log-driver": "json-file"},
            "docker_users": ["alice", "bob"],
        },
    )
    assert by_module(planned, "json_merge") == [
        {
            "path": "/etc/docker/daemon.json",
            "data": {
                "log-driver": "json-file",
                "data-root": "/scratch/docker",
                "registry-mirrors": ["https://mirror.lab.internal"],
            },
        }
    ]
    assert by_module(planned, "user_groups") == [{"users": ["alice", "bob"], "groups": ["docker"]}]
    assert by_module(plan("docker.yml", facts("ubuntu-22.04")), "json_merge") == []


def test_no_gpu_skips_driver_and_toolkit_but_not_docker():
    nv = nv_state(gpus=[], gpu_present=False, open_supported=False, recommended_flavour="")
    planned = plan("site.yml", facts("ubuntu-22.04"), nv=nv)
    assert failures(planned) == []
    assert set(repos(planned)) == {"docker"}
    assert by_module(planned, "kernel_module_blacklist") == []
    assert by_module(planned, "json_merge") == []


def test_images_are_pulled_with_the_configured_bounds():
    planned = plan(
        "images.yml",
        facts("ubuntu-22.04"),
        hostvars={"shared_images": ["registry.lab.internal/lab/pytorch:24.10"]},
        dk=dk_state(docker_installed=True, daemon_running=True),
    )
    assert by_module(planned, "docker_image") == [
        {
            "name": "registry.lab.internal/lab/pytorch:24.10",
            "timeout": 1800,
            "retries": 3,
            "retry_delay": 10,
            "disk_factor": 2.5,
            "username": "",
            "password": "",
            "fanout": False,  # off unless images_fanout is set: every host pulls, as before
            "fanout_rate": 0,
            "fanout_transport": "ssh",  # through the controller unless asked otherwise
            "fanout_address": "",
            "fanout_port": 0,
            "fanout_receivers": 0,
        }
    ]


# -- preflight stops ---------------------------------------------------------------------------


def test_unsupported_os_stops_with_the_supported_list():
    [msg] = failures(plan("preflight.yml", facts("ubuntu-18.04")))
    assert msg.startswith("Ubuntu 18.04 (x86_64) is not supported by the lab baseline")
    assert "Ubuntu 22.04" in msg and "Debian 12" in msg and "nothing was changed" in msg


def test_secure_boot_without_a_signing_key_stops_with_the_steps():
    nv = nv_state(secure_boot="enabled")
    cuda = {"nvidia_driver_source": "cuda"}
    [msg] = failures(plan("preflight.yml", facts("ubuntu-24.04"), nv=nv, hostvars=cuda))
    assert msg.startswith("Secure Boot is enabled and no enrolled Machine Owner Key")
    # item 5: Ubuntu's key is shim-signed's MOK.der (what DKMS signs with), not dkms's mok.pub
    assert "sudo update-secureboot-policy --new-key" in msg
    assert "sudo mokutil --import /var/lib/shim-signed/mok/MOK.der" in msg
    assert "/var/lib/dkms" not in msg
    assert "nvidia_driver_source=ubuntu" in msg  # Canonical's signed modules
    assert "nvidia_secure_boot_signed=true" in msg
    # the admin vouches for signed modules; or the driver already runs: no stop
    assert (
        failures(
            plan(
                "preflight.yml",
                facts("ubuntu-24.04"),
                nv=nv,
                hostvars={**cuda, "nvidia_secure_boot_signed": True},
            )
        )
        == []
    )
    running = nv_state(
        secure_boot="enabled", loaded_version="580.95.05", installed_version="580.95.05"
    )
    assert failures(plan("preflight.yml", facts("ubuntu-24.04"), nv=running, hostvars=cuda)) == []


@pytest.mark.parametrize(
    ("dkms", "generate", "openssl"),
    [("", False, True), ("3.0.10", False, True), ("3.1.1", True, False)],
)
def test_secure_boot_steps_on_debian_fit_the_dkms_the_host_has(dkms, generate, openssl):
    """Item 5: dkms generate_mok arrived in dkms 3.1; Debian 12 has 3.0.10, whose key is made at
    the first signed build (which the stop prevents), so the steps make it where dkms looks."""
    nv = nv_state(secure_boot="enabled", dkms_version=dkms)
    [msg] = failures(plan("preflight.yml", facts("debian-12"), nv=nv))
    assert ("sudo dkms generate_mok" in msg) is generate
    assert (
        "-keyout /var/lib/dkms/mok.key -outform DER -out /var/lib/dkms/mok.pub" in msg
    ) is openssl
    assert "sudo mokutil --import /var/lib/dkms/mok.pub" in msg
    assert "update-secureboot-policy" not in msg and "\n" not in msg


def test_snap_docker_stops():
    [msg] = failures(plan("preflight.yml", facts("ubuntu-22.04"), dk=dk_state(snap_docker=True)))
    assert msg.startswith("Docker is installed as a snap")
    # item 9: the snap does GPUs (CDI); the stop is about its own daemon.json and toolkit
    assert "could not select device driver" not in msg
    assert "its own daemon.json" in msg and "own NVIDIA container toolkit" in msg
    assert "sudo snap remove --purge docker" in msg


def test_open_modules_on_pascal_stop():
    nv = nv_state(
        gpus=[{**PASCAL, "open_supported": False}],
        open_supported=False,
        recommended_flavour="proprietary",
    )
    [msg] = failures(
        plan(
            "preflight.yml",
            facts("ubuntu-22.04"),
            nv=nv,
            hostvars={"nvidia_driver_flavour": "open"},
        )
    )
    assert "older than Turing (Pascal)" in msg


@pytest.mark.parametrize(
    ("hostvars", "needle"),
    [
        ({"nvidia_driver_source": "nvidia"}, "invalid driver settings"),
        ({"nvidia_driver_flavour": "closed"}, "invalid driver settings"),
        ({"nvidia_driver_branch": "latest"}, "invalid driver settings"),
        ({"nvidia_driver_source": "ubuntu"}, "does not exist on Debian 12"),
        ({"docker_source": "snap"}, "invalid docker_source=snap"),
    ],
)
def test_invalid_variables_stop_with_one_line_naming_them(hostvars, needle):
    [msg] = failures(plan("preflight.yml", facts("debian-12"), hostvars=hostvars))
    assert needle in msg and "\n" not in msg


def test_reboot_rules():
    needed = nv_state(
        installed_version="580.95.05",
        reboot_needed=True,
        reboot_reasons=["no nvidia module loaded; installed 580.95.05"],
        headers_present=True,
    )
    # not allowed: an ignored failure that says what to do; no reboot
    planned = plan("nvidia-driver.yml", facts("debian-12"), nv=needed)
    assert by_module(planned, "reboot") == [{"reboot_timeout": 900}]  # skipped by the module
    assert any("run again with --allow-reboot" in m for m in failures(planned))
    # allowed, but GPU jobs run: refused, naming them
    job = {"pid": 4242, "user": "alice", "command": "python train.py"}
    busy = {**needed, "gpu_processes": [job], "gpu_process_count": 1}
    planned = plan("nvidia-driver.yml", facts("debian-12"), nv=busy, extra={"allow_reboot": True})
    assert any("4242 alice python train.py" in m and "--force" in m for m in failures(planned))
    # allowed and forced: no refusal
    forced = {"allow_reboot": True, "force": True}
    planned = plan("nvidia-driver.yml", facts("debian-12"), nv=busy, extra=forced)
    assert not any("GPU processes" in m for m in failures(planned))


# -- issue 11: vendor facts ----------------------------------------------------------------------

BLACKWELL = {
    "slot": "0000:41:00.0",
    "device_id": "0x2b85",
    "generation": "Blackwell",
    "open_supported": True,
    "open_required": True,
}


def test_cuda_source_installs_the_pin_alone_first_then_checks_the_candidate():
    """Items 1, 2: every branch gets NVIDIA's pinning package, in its own apt run before the
    driver's (apt reads preferences when it starts), and apt's candidate is checked after it."""
    planned = plan("nvidia-driver.yml", facts("debian-12"), nv=nv_state(headers_present=True))
    steps = [(p.module, p.args.get("name")) for p in planned if p.module in ("apt", "apt_policy")]
    assert steps[:3] == [
        ("apt", ["nvidia-driver-pinning-580"]),
        ("apt_policy", ["nvidia-driver"]),  # Debian's CUDA repo floats through nvidia-driver
        ("apt", ["linux-headers-amd64"]),
    ]
    assert steps[3] == ("apt", ["nvidia-open-580"])
    assert failures(planned) == []  # no candidate known: nothing to compare


def test_a_candidate_of_another_branch_stops_before_the_driver_is_installed():
    """Item 1: cuda-drivers-580 Depends nvidia-driver (>= 580.65.06), which 590 satisfies."""
    planned = plan(
        "nvidia-driver.yml",
        facts("debian-12"),
        nv=nv_state(headers_present=True),
        policy={"nvidia-driver": "590.44.01-1"},
    )
    [msg] = failures(planned)
    assert "nvidia_driver_branch=580, but apt would install nvidia-driver 590.44.01-1" in msg
    assert "nvidia-driver-pinning-580 does not hold the branch" in msg
    held = plan(
        "nvidia-driver.yml",
        facts("debian-12"),
        nv=nv_state(headers_present=True),
        policy={"nvidia-driver": "580.95.05-1"},
    )
    assert failures(held) == []


def test_ubuntus_retired_branch_is_a_transitional_package_and_stops():
    """Item 7: nvidia_driver_branch=570 on Ubuntu installs the transitional package to 580."""
    planned = plan(
        "nvidia-driver.yml",
        facts("ubuntu-24.04"),
        hostvars={"nvidia_driver_branch": "570"},
        policy={"nvidia-headless-570-server-open": "580.95.05-0ubuntu0.24.04.2"},
    )
    [msg] = failures(planned)
    assert "apt would install nvidia-headless-570-server-open 580.95.05-0ubuntu0.24.04.2" in msg
    assert "(branch 580)" in msg and "transitional packages" in msg
    # the stop comes before the driver's packages: no apt task after it in a real run
    names = [p.task for p in planned]
    assert names.index("stop when apt would install another driver branch") < names.index(
        "driver packages"
    )


def test_blackwell_refuses_the_proprietary_modules_and_a_mix_with_pascal_has_no_flavour():
    """Item 10: Blackwell (and Grace Hopper) require the open modules."""
    nv = nv_state(gpus=[BLACKWELL], open_required=True)
    hv = {"nvidia_driver_flavour": "proprietary"}
    [msg] = failures(plan("preflight.yml", facts("ubuntu-24.04"), nv=nv, hostvars=hv))
    assert msg.startswith("Blackwell GPUs require NVIDIA's open kernel modules")
    assert failures(plan("preflight.yml", facts("ubuntu-24.04"), nv=nv)) == []  # auto: open
    mixed = nv_state(
        gpus=[BLACKWELL, {**PASCAL, "open_supported": False}],
        open_supported=False,
        open_required=True,
        recommended_flavour="proprietary",
    )
    [msg] = failures(plan("preflight.yml", facts("ubuntu-24.04"), nv=mixed))
    assert msg.startswith("this host mixes GPUs that only the proprietary kernel modules drive")
    assert "(Pascal)" in msg and "(Blackwell)" in msg
    hopper = {**BLACKWELL, "device_id": "0x2342", "generation": "Hopper", "open_required": False}
    grace = nv_state(gpus=[hopper])
    [msg] = failures(plan("preflight.yml", facts("ubuntu-24.04-arm64"), nv=grace, hostvars=hv))
    assert msg.startswith("Grace Hopper GPUs require NVIDIA's open kernel modules")


def test_debian_distribution_open_is_refused_and_auto_never_picks_it():
    """Item 3: Debian 12's nvidia-open-kernel-dkms cannot be installed with its nvidia-driver."""
    dist = {"nvidia_driver_source": "distribution"}
    [msg] = failures(
        plan(
            "preflight.yml", facts("debian-12"), hostvars={**dist, "nvidia_driver_flavour": "open"}
        )
    )
    assert "firmware-nvidia-gsp (= 535.261.03)" in msg and "nothing was changed" in msg
    auto = plan("nvidia-driver.yml", facts("debian-12"), hostvars=dist)  # an Ampere GPU
    assert failures(auto) == []
    assert DEBIAN_PROPRIETARY in packages(auto)
    nv = nv_state(gpus=[BLACKWELL], open_required=True)
    msgs = failures(plan("preflight.yml", facts("debian-12"), nv=nv, hostvars=dist))
    assert any("cannot drive Blackwell" in m for m in msgs)


def test_ubuntu_under_secure_boot_gets_canonicals_signed_prebuilt_modules():
    """Item 6: nvidia-headless-* always builds with DKMS (unsigned); Canonical's signed
    linux-modules-nvidia-* are what ubuntu-drivers installs."""
    nv = nv_state(secure_boot="enabled")
    planned = plan("nvidia-driver.yml", facts("ubuntu-24.04"), nv=nv)
    assert failures(planned) == []  # no MOK needed: Canonical signed the modules
    assert packages(planned) == [
        [
            "linux-modules-nvidia-580-server-open-generic",
            "nvidia-headless-no-dkms-580-server-open",
            "nvidia-utils-580-server",
        ]
    ]  # no headers: nothing is built
    chosen = plan(
        "nvidia-driver.yml",
        facts("ubuntu-22.04"),
        hostvars={"nvidia_driver_ubuntu_prebuilt": True, "nvidia_driver_flavour": "proprietary"},
    )
    assert [
        "linux-modules-nvidia-580-server-generic",
        "nvidia-headless-no-dkms-580-server",
        "nvidia-utils-580-server",
    ] in packages(chosen)
    off = plan(
        "nvidia-driver.yml",
        facts("ubuntu-24.04"),
        nv=nv,
        hostvars={"nvidia_driver_ubuntu_prebuilt": False},
    )
    assert any(m.startswith("Secure Boot is enabled") for m in failures(off))


def test_toolkit_installs_and_holds_all_four_packages_at_one_version():
    """Item 12: NVIDIA's install guide installs the four packages together, at one version."""
    planned = plan(
        "nvidia-container-toolkit.yml",
        facts("ubuntu-22.04"),
        hostvars={"nvidia_toolkit_version": "1.17.8-1"},
        dk=dk_state(docker_installed=True),
    )
    installs = [a for a in by_module(planned, "apt") if not a.get("hold")]
    assert installs == [
        {"name": [f"{p}=1.17.8-1" for p in TOOLKIT], "update_cache": True, "cache_valid_time": 3600}
    ]
    holds = [a for a in by_module(planned, "apt") if a.get("hold")]
    assert holds == [{"name": TOOLKIT, "hold": True}]


def test_ubuntu_cuda_source_gets_nvidias_repository_pin_before_the_repository():
    """Item 14: cuda-<distro>.pin as /etc/apt/preferences.d/cuda-repository-pin-600."""
    planned = plan(
        "nvidia-driver.yml", facts("ubuntu-22.04"), hostvars={"nvidia_driver_source": "cuda"}
    )
    [pin] = [c for c in by_module(planned, "copy") if "preferences.d" in c["dest"]]
    assert pin["dest"] == "/etc/apt/preferences.d/cuda-repository-pin-600"
    assert "Package: *\nPin: release l=NVIDIA CUDA\nPin-Priority: 600\n" in pin["content"]
    order = [p.module for p in planned]
    assert order.index("copy") < order.index("apt_repository")
    debian = plan("nvidia-driver.yml", facts("debian-12"))
    assert not [c for c in by_module(debian, "copy") if "preferences.d" in c["dest"]]
