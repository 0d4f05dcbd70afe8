"""The shipped lab baseline (playbooks/site.yml) end to end on booted Debian 12 hosts.

Real: OpenSSH, apt/dpkg with deb822 sources and signed repositories, systemd, reboots (boot id),
dockerd (Debian's docker.io), a registry, and the `provision` CLI as a user runs it. STAND-INS
(named so in tests/lab/standin_debs.py): the NVIDIA GPU on the PCI bus, NVIDIA's driver and
toolkit packages in a local signed flat repository (the driver package carries the NVML stand-in
library and an NVML-based nvidia-smi, and "loads the module" at boot), the kernel headers
package, mokutil and snap.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.lab.booted import (
    LAB_DOCKER_DAEMON_JSON,
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture)
    write_inventory,
    write_known_hosts,
)
from tests.lab.docker import import_busybox, install_docker, push, start_registry
from tests.lab.standin_debs import (
    DRIVER_DEB_VERSION,
    DRIVER_VERSION,
    NEW_DRIVER,
    PINNING_PACKAGE,
    STANDIN_GPU,
    TOOLKIT_DEB_VERSION,
    TOOLKIT_PACKAGES,
    StandinRepo,
    install_standin_mokutil,
    install_standin_snap_docker,
    standin_apt_repo,  # noqa: F401  (pytest fixture)
)

REPO = Path(__file__).resolve().parent.parent
# A site's own daemon.json keys, which every baseline run must keep.
SITE_KEYS = {"log-driver": "json-file", "log-opts": {"max-size": "10m"}}
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@dataclass
class Run:
    rc: int
    out: str
    err: str

    def recap(self) -> dict[str, dict[str, int]]:
        """``PLAY RECAP`` lines -> {host: {ok, changed, unreachable, failed}}."""
        stats = {}
        for line in self.out.splitlines():
            m = RECAP.match(line.strip())
            if m:
                keys = ("ok", "changed", "unreachable", "failed")
                stats[m.group(1)] = dict(zip(keys, map(int, m.groups()[1:]), strict=True))
        return stats


class Baseline:
    """Three booted hosts with a stand-in GPU, an inventory and the variables for the
    stand-in repositories."""

    def __init__(self, hosts: list[BootedHost], repo: StandinRepo, workdir: Path) -> None:
        self.hosts = hosts
        self.workdir = workdir
        self.inventory = write_inventory(hosts, workdir / "hosts.ini", group="gpu")
        self.known = write_known_hosts(hosts, workdir / "known_hosts")
        self.vars = {
            "nvidia_cuda_repo_url": repo.url,
            "nvidia_cuda_repo_key_url": repo.key_url,
            "nvidia_cuda_repo_key_fingerprint": repo.fingerprint,
            "nvidia_toolkit_repo_url": repo.toolkit_url,
            "nvidia_toolkit_repo_key_url": repo.key_url,
            "nvidia_toolkit_repo_key_fingerprint": repo.fingerprint,
            "docker_source": "distribution",
            "docker_users": ["alice"],
            "docker_daemon_options": {"log-level": "warn"},
        }

    def apply(self, *args: str, extra: dict | None = None, timeout: int = 900) -> Run:
        varfile = self.workdir / "vars.yml"
        varfile.write_text(yaml.safe_dump({**self.vars, **(extra or {})}))
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(self.workdir)}
        proc = subprocess.run(
            [sys.executable, "-m", "provision", "apply", str(self.inventory), "--known-hosts",
             str(self.known), "-e", f"@{varfile}", *args],
            capture_output=True, text=True, env=env, cwd=self.workdir, timeout=timeout,
        )  # fmt: skip
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def audit(self, *args: str) -> dict:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(self.workdir)}
        proc = subprocess.run(
            [sys.executable, "-m", "provision", "audit", str(self.inventory), "--known-hosts",
             str(self.known), "--format", "json", *args],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
        )  # fmt: skip
        assert proc.stdout.strip(), proc.stderr
        return {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}


def apt_history_installs(host: BootedHost) -> list[list[str]]:
    """The packages each apt run installed, in order (/var/log/apt/history.log)."""
    runs: list[list[str]] = []
    for line in host.exec("cat /var/log/apt/history.log").stdout.splitlines():
        if line.startswith("Install: "):
            # "Install: a:amd64 (1.0-1), b:amd64 (2.0-1, automatic)"
            body = re.sub(r"\([^)]*\)", "", line[len("Install: ") :])
            runs.append([p.strip().split(":")[0] for p in body.split(",") if p.strip()])
    return runs


def daemon_json(host: BootedHost) -> dict:
    return json.loads(host.exec("cat /etc/docker/daemon.json").stdout)


@pytest.fixture(scope="module")
def baseline(booted_hosts, standin_apt_repo, tmp_path_factory) -> Baseline:  # noqa: F811
    hosts = booted_hosts(3, prefix="base", gpus=[STANDIN_GPU])
    for host in hosts:
        # The lab's daemon.json (dockerd inside nspawn) plus a site's own keys, before Docker.
        doc = {**LAB_DOCKER_DAEMON_JSON, **SITE_KEYS}
        host.exec("mkdir -p /etc/docker && cat > /etc/docker/daemon.json", input=json.dumps(doc))
        host.exec("useradd --create-home alice")
    return Baseline(hosts, standin_apt_repo, tmp_path_factory.mktemp("baseline"))


def test_site_brings_fresh_hosts_to_the_baseline_and_a_second_run_changes_nothing(
    baseline: Baseline,
) -> None:
    hosts = baseline.hosts
    boots = {h.name: h.boot_id() for h in hosts}

    check = baseline.apply("--check")
    assert check.rc == 0, check.out[-3000:] + check.err[-2000:]
    assert all(s["changed"] > 0 and s["failed"] == 0 for s in check.recap().values())
    for host in hosts:  # --check changed nothing
        assert host.exec("ls /etc/apt/sources.list.d/").stdout.strip() == ""
        assert host.exec("command -v dockerd || echo none").stdout.strip() == "none"

    first = baseline.apply("--allow-reboot")
    assert first.rc == 0, first.out[-4000:] + first.err[-2000:]
    assert set(first.recap()) == {h.name for h in hosts}
    for host in hosts:
        # driver: installed, held, kept from unattended-upgrades, loaded after ONE reboot
        assert host.boot_id() != boots[host.name]
        assert host.exec("cat /sys/module/nvidia/version").stdout.strip() == DRIVER_VERSION
        assert "nvidia-open-580" in host.exec("apt-mark showhold").stdout.split()
        assert "libnvidia-compute-580" in host.exec("apt-mark showhold").stdout.split()
        blacklist = host.exec("cat /etc/apt/apt.conf.d/51provision-nvidia-driver").stdout
        assert '"nvidia-";' in blacklist and "Package-Blacklist" in blacklist
        assert "blacklist nouveau" in host.exec("cat /etc/modprobe.d/blacklist-nouveau.conf").stdout
        # docker: running, alice in the group, the site's keys kept, the nvidia runtime merged
        assert host.exec("systemctl is-active docker").stdout.strip() == "active"
        assert "docker" in host.exec("id -nG alice").stdout.split()
        doc = daemon_json(host)
        for key, value in {**LAB_DOCKER_DAEMON_JSON, **SITE_KEYS}.items():
            assert doc[key] == value, key
        assert doc["log-level"] == "warn"
        assert doc["runtimes"]["nvidia"] == {"args": [], "path": "nvidia-container-runtime"}
        runtimes = host.exec("docker info --format '{{json .Runtimes}}'").stdout
        assert "nvidia" in json.loads(runtimes)
        assert "nvidia-container-toolkit" in host.exec("apt-mark showhold").stdout.split()
        # issue 11 items 1, 2: the driver stayed on 580 although nvidia-driver 590 is there
        # (cuda-drivers-580/nvidia-open-580 Depend nvidia-driver (>= 580.65.06)), because the
        # pinning package was installed in an apt run of its own, before the driver's
        got = host.exec("dpkg-query -W -f '${Version}' nvidia-driver").stdout
        assert got == DRIVER_DEB_VERSION, got
        assert NEW_DRIVER.deb_version in host.exec("apt-cache policy nvidia-driver").stdout
        runs = apt_history_installs(host)
        pin_run = next(i for i, run in enumerate(runs) if PINNING_PACKAGE in run)
        driver_run = next(i for i, run in enumerate(runs) if "nvidia-driver" in run)
        assert pin_run < driver_run and runs[pin_run] == [PINNING_PACKAGE], runs
        # item 12: all four toolkit packages at one version, held
        versions = host.exec(
            "dpkg-query -W -f '${Package} ${Version}\\n' " + " ".join(TOOLKIT_PACKAGES)
        ).stdout.split("\n")
        assert sorted(filter(None, versions)) == sorted(
            f"{p} {TOOLKIT_DEB_VERSION}" for p in TOOLKIT_PACKAGES
        )
        assert set(TOOLKIT_PACKAGES) <= set(host.exec("apt-mark showhold").stdout.split())

    boots = {h.name: h.boot_id() for h in hosts}
    mtimes = {h.name: h.exec("stat -c %Y /etc/docker/daemon.json").stdout for h in hosts}
    again = baseline.apply("--allow-reboot")
    assert again.rc == 0, again.out[-3000:]
    stats = again.recap()
    assert all(s["changed"] == 0 and s["failed"] == 0 for s in stats.values()), stats
    for host in hosts:
        assert host.boot_id() == boots[host.name]  # no reboot when nothing needs one
        assert host.exec("stat -c %Y /etc/docker/daemon.json").stdout == mtimes[host.name]


def test_shared_images_are_pulled_everywhere_then_left_alone_and_the_audit_sees_it_all(
    baseline: Baseline,
) -> None:
    hosts = baseline.hosts
    source = hosts[0]
    install_docker(source, registry=True)  # docker.io is there: adds the registry + busybox
    registry = start_registry(source)
    import_busybox(source, "lab/busybox:1")
    image = f"{registry}/lab/busybox:1"
    push(source, "lab/busybox:1", image)
    source.exec(f"docker image rm {image}")

    pulled = baseline.apply(extra={"shared_images": [image]})
    assert pulled.rc == 0, pulled.out[-3000:] + pulled.err[-2000:]
    stats = pulled.recap()
    assert all(stats[h.name]["changed"] == 1 for h in hosts), stats
    assert "pulled" in pulled.out  # per-host bytes and seconds in the recap table
    for host in hosts:
        assert host.exec(f"docker image inspect {image} >/dev/null && echo yes").stdout == "yes\n"

    again = baseline.apply(extra={"shared_images": [image]})
    assert all(s["changed"] == 0 for s in again.recap().values()), again.out[-2000:]

    report = baseline.audit("--require-image", image)
    for host in hosts:
        doc = report[host.name]
        nv = doc["facts"]["nvidia"]
        assert nv["driver_version"] == DRIVER_VERSION and nv["mismatch"] is False
        docker = doc["facts"]["docker"]
        assert "nvidia" in docker["runtimes"]
        assert [i for i in docker["images"] if i["ref"] == image and i["present"]], docker


@pytest.fixture(scope="module")
def refused(booted_hosts, standin_apt_repo, tmp_path_factory) -> Baseline:  # noqa: F811
    secure, snap, old = booted_hosts(3, prefix="stop", gpus=[STANDIN_GPU])
    install_standin_mokutil(secure, state="enabled")
    install_standin_snap_docker(snap)
    old.exec(  # a Debian 11's release files (Ansible reads its version from debian_version)
        "sed -i -e 's/^VERSION_ID=.*/VERSION_ID=\"11\"/' -e 's/bookworm/bullseye/g' "
        "/usr/lib/os-release && echo 11.11 > /etc/debian_version"
    )
    return Baseline([secure, snap, old], standin_apt_repo, tmp_path_factory.mktemp("refused"))


def _etc_fingerprint(host: BootedHost) -> str:
    """A digest of everything under /etc and of the installed packages: any change shows."""
    return host.exec(
        "{ find /etc -xdev -type f -exec sha256sum {} + | sort; dpkg-query -W; } | sha256sum"
    ).stdout


def test_secure_boot_snap_docker_and_an_unsupported_os_stop_with_their_message(
    refused: Baseline,
) -> None:
    before = {h.name: _etc_fingerprint(h) for h in refused.hosts}
    run = refused.apply("--allow-reboot")
    assert run.rc == 2, run.out[-3000:]
    stats = run.recap()
    for host in refused.hosts:
        assert stats[host.name]["failed"] == 1 and stats[host.name]["changed"] == 0, stats
    text = run.out + run.err
    assert "Secure Boot is enabled and no enrolled Machine Owner Key" in text
    assert "sudo mokutil --import /var/lib/dkms/mok.pub" in text
    assert "Docker is installed as a snap" in text
    assert "Debian 11 (x86_64) is not supported by the lab baseline" in text
    for host in refused.hosts:
        assert _etc_fingerprint(host) == before[host.name], host.name
