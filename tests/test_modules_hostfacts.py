"""service_facts, package_facts and setup (issue 14, item 3): their facts are compared with the
real Ansible's (ansible-core, a test dependency: ``ansible -m service_facts`` and
``-m package_facts``) read on the same booted Debian host, and used as host variables
(``ansible_facts.services[...]``, ``packages``, ``ansible_distribution``) by later tasks.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from provision.engine import ApplyOptions, PlaybookResult, run_playbook
from provision.inventory import load_inventory
from provision.modules import MODULES, module_named
from provision.modules.base import ArgError
from provision.modules.hostfacts import parse_packages, parse_services
from tests.conftest import venv_tool
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.test_ansible_names import ANSIBLE_ENV

# -- parsers, on output captured from a Debian 12 host (systemd 252, sysvinit-utils) ------------

UNITS = """\
UNIT LOAD ACTIVE SUB DESCRIPTION
apt-daily.service masked inactive dead apt-daily.service
dbus.service loaded active running D-Bus System Message Bus
e2scrub_reap.service loaded inactive dead Remove Stale Online ext4 Metadata Check Snapshots
ssh.service loaded active running OpenBSD Secure Shell server
"""


def test_parse_services_follows_ansibles_rules() -> None:
    text = "@sysv\n [ + ]  ssh\n [ - ]  procps\n [ ? ]  hwclock.sh\n@units\n" + UNITS
    text += "@files\napt-daily.service\tmasked\t@loaded\nssh.service\tenabled\t@loaded\n"
    text += "getty@.service\tenabled\t\nsudo.service\tmasked\tActiveState=inactive\n"
    services = parse_services(text)
    assert services["ssh"] == {"name": "ssh", "state": "running", "source": "sysv"}
    assert services["procps"]["state"] == "stopped" and "hwclock.sh" not in services
    assert services["ssh.service"] == {
        "name": "ssh.service",
        "state": "running",
        "status": "enabled",
        "source": "systemd",
    }
    assert services["apt-daily.service"]["status"] == "masked"  # a bad state is kept
    assert services["e2scrub_reap.service"]["status"] == "inactive"  # list-units' ACTIVE
    assert services["getty@.service"]["state"] == "unknown"  # systemctl show failed
    assert services["sudo.service"]["state"] == "inactive"


def test_parse_packages_keeps_installed_ones() -> None:
    text = (
        "@arch amd64\n"
        "ii \tjq\t1.6-2.1\tamd64\n"
        "rc \tgone\t1.0\tamd64\n"
        "iU \thalf\t2.0\tall\n"
        "ii \tlibc6\t2.36-9\ti386\n"
    )
    packages = parse_packages(text)
    assert packages["jq"] == [
        {"name": "jq", "version": "1.6-2.1", "arch": "amd64", "source": "apt"}
    ]
    assert "gone" not in packages and "half" in packages
    assert packages["libc6:i386"][0]["name"] == "libc6:i386"  # python-apt's name for it


@pytest.mark.parametrize("name", ["service_facts", "package_facts", "setup"])
def test_fully_qualified_names(name: str) -> None:
    assert module_named(f"ansible.builtin.{name}") == name


def test_package_facts_refuses_other_managers() -> None:
    with pytest.raises(ArgError, match="manager 'rpm' is not supported"):
        MODULES["package_facts"].check_static({"manager": "rpm"})
    MODULES["package_facts"].check_static({"manager": ["auto"], "strategy": "all"})
    MODULES["setup"].check_static({"gather_subset": ["!all", "min"], "filter": "ansible_dist*"})


# -- against the real Ansible on one booted host -------------------------------------------------


def ansible_facts_of(host: BootedHost, tmp_path: Path, module: str) -> dict[str, Any]:
    """``ansible HOST -m MODULE`` (the real ansible-core), its ansible_facts (json callback)."""
    inventory = write_inventory([host], tmp_path / "ansible.ini")
    known = write_known_hosts([host], tmp_path / "known_hosts")
    done = subprocess.run(
        [venv_tool("ansible"), "-i", str(inventory), host.name, "-m", module],
        cwd=tmp_path,
        env={**ANSIBLE_ENV, "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={known}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # ad-hoc's minimal output: "HOST | SUCCESS => {the module's result as JSON}"
    head, _, document = done.stdout.partition(" => ")
    assert head == f"{host.name} | SUCCESS", done.stdout[:200]
    return json.loads(document)["ansible_facts"]


PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.service_facts:
    - {package_facts: {manager: auto}, register: pkgs}
    - setup: {filter: ["ansible_distribution*", "ansible_os_family"]}
    - name: what the facts say, as later tasks read them
      copy:
        dest: /root/facts.txt
        content: |
          ssh {{ ansible_facts.services[ssh].state }} {{ services[ssh].status }}
          sshd {{ ansible_facts.packages[sshd][0].version == packages[sshd][0].version }}
          registered {{ 'jq' in pkgs.ansible_facts.packages }}
          os {{ ansible_distribution }} {{ ansible_facts.distribution_release }}
          family {{ ansible_os_family }}
      vars: {ssh: ssh.service, sshd: openssh-server}
"""


def _apply(host: BootedHost, workdir: Path, **opts: object) -> PlaybookResult:
    (workdir / "facts.yml").write_text(PLAY)
    inventory = write_inventory([host], workdir / "inventory.ini")
    known = write_known_hosts([host], workdir / "known_hosts")
    options = ApplyOptions(known_hosts=(str(known),), connect_timeout=5.0, **opts)  # type: ignore[arg-type]
    return run_playbook(load_inventory(str(inventory)), str(workdir / "facts.yml"), options)


def test_facts_match_ansible_and_become_host_variables(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    (host,) = booted_hosts(1, prefix="facts")
    # Ansible's apt manager reads packages through python3-apt; jq: a package to look for
    host.exec(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        "python3-apt jq >/dev/null",
        timeout=600,
    )
    theirs_services = ansible_facts_of(host, tmp_path, "service_facts")["services"]
    theirs_packages = ansible_facts_of(host, tmp_path, "package_facts")["packages"]

    check = _apply(host, tmp_path, check=True)
    assert check.exit_code == 0, [r.msg for r in check.results if r.status == "failed"]
    assert host.exec("test -e /root/facts.txt", check=False).returncode == 1
    first = _apply(host, tmp_path)
    assert first.exit_code == 0, [r.msg for r in first.results if r.status == "failed"]
    services, packages, setup, _ = (r.data.get("ansible_facts") for r in first.results)
    assert services is not None and packages is not None and setup is not None
    mine_services = services["services"]
    assert mine_services == theirs_services
    for unit in ("ssh.service", "dbus.service", "apt-daily.service", "getty@.service", "ssh"):
        assert mine_services[unit] == theirs_services[unit], unit
    # python-apt's origin and category are the archive's (its Release file, its section
    # overrides: lsb-base is "misc" there, "oldlibs" in its own control file): left out
    archive_only = ("origin", "category")
    theirs_local = {
        name: [{k: v for k, v in item.items() if k not in archive_only} for item in items]
        for name, items in theirs_packages.items()
    }
    assert packages["packages"] == theirs_local
    # filter: only the facts its patterns match, every gathered one that does
    assert all(k.startswith("ansible_distribution") or k == "ansible_os_family" for k in setup)
    assert {"ansible_distribution", "ansible_distribution_release", "ansible_os_family"} <= set(
        setup
    )
    release = host.exec(". /etc/os-release; echo $VERSION_CODENAME").stdout.strip()
    sshd = host.exec("dpkg-query -W -f '${Version}' openssh-server").stdout
    assert sshd and theirs_packages["openssh-server"][0]["version"] == sshd
    assert host.exec("cat /root/facts.txt").stdout == (
        f"ssh running enabled\nsshd True\nregistered True\nos Debian {release}\nfamily Debian\n"
    )
    again = _apply(host, tmp_path)
    assert again.exit_code == 0 and again.stats[host.name].changed == 0
