"""Issue 11's vendor facts proved against Debian 12's REAL archive on a booted Debian 12 host.

Only this lab host's sources get contrib, non-free and non-free-firmware (never the machine's):
the package sets the playbooks compute for ``nvidia_driver_source=distribution`` are simulated
with ``apt-get -s install`` against the real archive, Debian's real ``libnvidia-ml1`` and
``nvidia-smi`` are installed (userland only: no kernel module loads here) and read by
``nvidia_state``, and the Secure Boot steps the preflight prints are checked against the host's
real dkms and mokutil. STAND-INS: the NVIDIA GPU on the PCI bus, and ``mokutil --sb-state`` (no
firmware in a container) from tests/standins/host_tools/mokutil, placed in /usr/local/bin so
that the real /usr/bin/mokutil stays there to be checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.engine import ApplyOptions, run_playbook
from provision.inventory import load_inventory
from provision.shell import join
from tests.baseline_plan import by_module, facts, failures, nv_state, plan
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture)
    machine_mirror,
    write_inventory,
    write_known_hosts,
)
from tests.lab.standin_debs import STANDIN_GPU
from tests.standins import host_tools

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = "main contrib non-free non-free-firmware"
SIMULATE = "LANG=C apt-get -s -q install --no-install-recommends "
APT_INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
DIST = {"nvidia_driver_source": "distribution"}


def nonfree_sources() -> str:
    """A deb822 source with every component, on the machine's own mirrors."""
    stanza = "Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: " + COMPONENTS + "\n"
    stanza += "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    text = stanza.format(uri=machine_mirror(), suites="bookworm bookworm-updates")
    try:
        security = machine_mirror(suite="bookworm-security")
    except Exception:  # a machine without the security suite: the main archive only
        return text
    return text + "\n" + stanza.format(uri=security, suites="bookworm-security")


@dataclass
class Archive:
    host: BootedHost
    workdir: Path

    def apply_cli(self, playbook: str, extra: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """The real CLI, as a user runs it."""
        varfile = self.workdir / "vars.yml"
        varfile.write_text(yaml.safe_dump(extra))
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(self.workdir)}
        return subprocess.run(
            [sys.executable, "-m", "provision", "apply", str(self.workdir / "hosts.ini"),
             "--known-hosts", str(self.workdir / "known_hosts"), "-e", f"@{varfile}",
             "-p", str(REPO / "playbooks" / playbook)],
            capture_output=True, text=True, env=env, cwd=self.workdir, timeout=600,
        )  # fmt: skip

    def nvidia_state(self) -> dict[str, Any]:
        book = self.workdir / "read.yml"
        task = {"name": "read", "nvidia_state": {}, "register": "r"}
        book.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [task]}]))
        opts = ApplyOptions(known_hosts=(str(self.workdir / "known_hosts"),), become=True)
        result = run_playbook(load_inventory(str(self.workdir / "hosts.ini")), str(book), opts)
        (r,) = result.results
        assert r.status == "ok", r.msg
        return {**r.data, "msg": r.msg}


@pytest.fixture(scope="module")
def archive(booted_hosts, tmp_path_factory) -> Archive:  # noqa: F811
    (host,) = booted_hosts(1, prefix="archive", gpus=[STANDIN_GPU])
    host.exec("cat > /etc/apt/sources.list.d/debian-all.sources", input=nonfree_sources())
    host.exec("rm -f /etc/apt/sources.list")
    update = host.exec("apt-get update -q", check=False, timeout=600)
    assert update.returncode == 0, update.stdout[-2000:] + update.stderr[-2000:]
    workdir = tmp_path_factory.mktemp("archive")
    write_inventory([host], workdir / "hosts.ini")
    write_known_hosts([host], workdir / "known_hosts")
    return Archive(host, workdir)


def installs(planned: list) -> list[list[str]]:
    return [a["name"] for a in by_module(planned, "apt") if not a.get("hold")]


def simulated(host: BootedHost, names: list[str]) -> tuple[int, str, list[str]]:
    """apt-get -s install: exit status, output, and the packages it would install."""
    done = host.exec(SIMULATE + join(names) + " 2>&1", check=False, timeout=300)
    inst = re.findall(r"^Inst (\S+)", done.stdout, re.MULTILINE)
    return done.returncode, done.stdout, inst


def test_debians_proprietary_set_resolves_with_what_nvidia_driver_only_recommends(
    archive: Archive,
) -> None:
    """Items 4 and 13: the named set (with the headers metapackage) resolves against the real
    archive, and without naming them apt would not install libcuda1 or nvidia-smi."""
    planned = plan("nvidia-driver.yml", facts("debian-12"), hostvars=DIST, nv=nv_state())
    assert failures(planned) == []
    headers, driver = installs(planned)
    assert headers[-1] == "linux-headers-amd64"
    rc, out, inst = simulated(archive.host, [headers[-1], *driver])
    assert rc == 0, out[-3000:]
    for name in (*driver, "linux-headers-amd64"):
        assert name in inst, name
    # Without naming them, apt (no Recommends) installs none of what a compute host needs:
    # libcuda1 is no dependency of nvidia-driver at all, and the rest are only Recommends.
    bare_rc, bare_out, bare = simulated(archive.host, ["nvidia-driver", "nvidia-kernel-dkms"])
    assert bare_rc == 0, bare_out[-3000:]
    for name in ("libcuda1", "nvidia-smi", "nvidia-persistenced", "libnvidia-cfg1"):
        assert name not in bare, name
    recommends = {
        pkg: archive.host.exec(f"apt-cache show --no-all-versions {pkg} | grep ^Recommends:").stdout
        for pkg in ("nvidia-driver", "libcuda1")
    }
    for pkg, name in (
        ("nvidia-driver", "libnvidia-cfg1"),
        ("nvidia-driver", "nvidia-persistenced"),
        ("libcuda1", "nvidia-smi"),
    ):
        assert re.search(rf"\b{name}\b", recommends[pkg]), (pkg, name)


def test_debians_open_set_cannot_be_installed_and_preflight_refuses_it_first(
    archive: Archive,
) -> None:
    """Item 3: nvidia-open-kernel-dkms (contrib) needs a firmware-nvidia-gsp that nvidia-driver's
    version does not have; the preflight refuses the combination before any change."""
    hv = {**DIST, "nvidia_driver_flavour": "open"}
    planned = plan("nvidia-driver.yml", facts("debian-12"), hostvars=hv, nv=nv_state())
    assert any("firmware-nvidia-gsp" in m for m in failures(planned))
    open_set = installs(planned)[-1]
    assert "nvidia-open-kernel-dkms" in open_set
    rc, out, _ = simulated(archive.host, open_set)
    assert rc != 0 and "firmware-nvidia-gsp" in out, out[-3000:]
    policy = archive.host.exec("LANG=C apt-cache policy nvidia-open-kernel-dkms").stdout
    assert "/contrib " in policy or " bookworm/contrib" in policy, policy

    h = archive.host
    before = h.exec(
        "{ find /etc -xdev -type f -exec sha256sum {} + | sort; dpkg-query -W; } | sha256sum"
    )
    run = archive.apply_cli("site.yml", hv)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-2000:]
    assert "cannot be installed on Debian 12" in run.stdout + run.stderr
    assert "firmware-nvidia-gsp (= 535.261.03)" in run.stdout + run.stderr
    after = h.exec(
        "{ find /etc -xdev -type f -exec sha256sum {} + | sort; dpkg-query -W; } | sha256sum"
    )
    assert after.stdout == before.stdout


def test_nvidia_state_reads_debians_real_libnvidia_ml_and_says_a_reboot_is_needed(
    archive: Archive,
) -> None:
    """Item 4: Debian puts libnvidia-ml.so.<ver> under /usr/lib/<triplet>/nvidia/current/."""
    h = archive.host
    done = h.exec(APT_INSTALL + "libnvidia-ml1 nvidia-smi", check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    version = h.exec("dpkg-query -W -f '${Version}' libnvidia-ml1").stdout.split("-")[0]
    listed = h.exec("dpkg -L libnvidia-ml1").stdout.split()
    assert any(
        re.fullmatch(
            rf"/usr/lib/[a-z0-9_]+-linux-gnu/nvidia/current/libnvidia-ml\.so\.{re.escape(version)}",
            p,
        )
        for p in listed
    ), listed
    r = archive.nvidia_state()
    assert r["installed_version"] == version
    assert r["loaded_version"] == ""
    assert r["reboot_reasons"] == [f"no nvidia module loaded; installed {version}"]
    assert {"libnvidia-ml1", "nvidia-smi"} <= set(r["driver_packages"])
    assert "no driver loaded" in r["msg"] and "reboot needed" in r["msg"]


def test_secure_boot_steps_name_commands_the_hosts_real_dkms_and_mokutil_have(
    archive: Archive,
) -> None:
    """Item 5: Debian 12's dkms (3.0.10) has no generate_mok; the steps make the key where that
    dkms looks for it and import it with a mokutil option that exists."""
    h = archive.host
    done = h.exec(APT_INSTALL + "dkms mokutil openssl", check=False, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    standin = h.merged / "usr/local/bin/mokutil"
    shutil.copyfile(host_tools.MOKUTIL, standin)
    standin.chmod(0o755)
    h.exec("mkdir -p /etc/mokutil-standin && echo enabled > /etc/mokutil-standin/sb-state")
    try:
        run = archive.apply_cli("preflight.yml", {})
    finally:
        standin.unlink()
    text = run.stdout + run.stderr
    assert run.returncode == 2 and "Secure Boot is enabled" in text, text[-3000:]
    message = " ".join(text.split())

    dkms_version = h.exec("dkms --version").stdout.strip()
    assert "`sudo dkms generate_mok`" not in message  # the old step: absent from this dkms
    assert f"dkms {dkms_version.removeprefix('dkms-')} has no generate_mok" in message
    unknown = h.exec("LANG=C dkms generate_mok 2>&1", check=False).stdout
    assert "Unknown action" in unknown, unknown  # dkms 3.0.10 knows no such action
    # dkms 3.0's own default key paths are the ones the steps write and import
    script = h.exec("cat /usr/sbin/dkms").stdout
    assert "/var/lib/dkms/mok.key" in script
    assert "/var/lib/dkms/mok.pub" in script
    # mokutil answers nothing without EFI variables (a container): its own usage text, compiled
    # into the real binary, lists the option
    usage = h.exec("grep -a -o -e '--import[^\\n]*' /usr/bin/mokutil | head -n 1").stdout
    assert usage.startswith("--import"), usage
    assert "sudo mokutil --import /var/lib/dkms/mok.pub" in message
    # the key command given works on this host and makes the DER certificate mokutil imports
    [keygen] = re.findall(r"`sudo (openssl req [^`]+)`", message)
    h.exec("mkdir -p /var/lib/dkms && " + keygen)
    cert = h.exec("openssl x509 -inform DER -in /var/lib/dkms/mok.pub -noout -subject")
    assert "DKMS module signing key" in cert.stdout
    assert h.exec("test -s /var/lib/dkms/mok.key && echo key").stdout == "key\n"
