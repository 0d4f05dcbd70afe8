"""The facts real roles read (issue 14, item 6), compared with what the real ``ansible -m
setup`` (ansible-core 2.19) reports for the same booted Debian host, local facts included."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from provision.modules.facts import parse_facts
from tests.conftest import venv_tool
from tests.lab.booted import (
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.test_ansible_names import ANSIBLE_ENV, provision

SAME = (
    "distribution",
    "distribution_version",
    "distribution_major_version",
    "distribution_release",
    "distribution_file_variety",
    "os_family",
    "lsb",
    "system",
    "machine",
    "architecture",
    "nodename",
    "hostname",
    "kernel",
    "kernel_version",
    "processor_count",
    "processor_cores",
    "processor_threads_per_core",
    "processor_vcpus",
    "processor_nproc",
    "memtotal_mb",
    "user_id",
    "user_uid",
    "user_gid",
    "user_dir",
    "user_shell",
    "all_ipv4_addresses",
    "pkg_mgr",
    "service_mgr",
    "local",
)
FACTS_D = """\
mkdir -p /etc/ansible/facts.d
printf '[gpu]\\nmodel=H200\\ncount=8\\n' > /etc/ansible/facts.d/lab.fact
printf '#!/bin/sh\\necho "{\\\\"rack\\\\": 4, \\\\"nodes\\\\": [\\\\"a\\\\", \\\\"b\\\\"]}"\\n' \\
  > /etc/ansible/facts.d/site.fact
chmod +x /etc/ansible/facts.d/site.fact
"""
DUMP = """\
- hosts: all
  tasks:
    - copy:
        content: "{{ ansible_facts | to_json }}"
        dest: /root/provision-facts.json
"""


def test_gathered_facts_are_the_ones_ansible_setup_reports(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    (host,) = booted_hosts(1, prefix="facts")
    host.exec(FACTS_D)
    inv = write_inventory([host], tmp_path / "hosts.ini")
    known = write_known_hosts([host], tmp_path / "known_hosts")
    done = subprocess.run(
        [venv_tool("ansible"), "-i", str(inv), "all", "-m", "setup"],
        env={**ANSIBLE_ENV, "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={known}"},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    theirs = json.loads(done.stdout.split("=>", 1)[1])["ansible_facts"]
    (tmp_path / "dump.yml").write_text(DUMP)
    ran = provision("apply", "dump.yml", "-i", str(inv), "--known-hosts", str(known), cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    mine = json.loads(host.exec("cat /root/provision-facts.json").stdout)

    differ = {k: (theirs.get(f"ansible_{k}"), mine.get(k)) for k in SAME}
    differ = {k: v for k, v in differ.items() if v[0] != v[1]}
    assert differ == {}
    assert mine["local"] == {
        "lab": {"gpu": {"model": "H200", "count": "8"}},
        "site": {"rack": 4, "nodes": ["a", "b"]},
    }
    wanted = {k: theirs["ansible_default_ipv4"].get(k) for k in mine["default_ipv4"]}
    assert mine["default_ipv4"] == wanted and "address" in wanted
    assert mine["date_time"]["tz_offset"] == theirs["ansible_date_time"]["tz_offset"]
    assert set(mine["date_time"]) <= set(theirs["ansible_date_time"])
    assert mine["env"]["HOME"] == theirs["ansible_env"]["HOME"] == "/root"


def test_ubuntus_lsb_release_file_and_a_debian_without_lsb_release() -> None:
    ubuntu = parse_facts(
        "id=ubuntu\nversion_id=22.04\ncodename=jammy\nname=Ubuntu\nlsb_ID=Ubuntu\n"
        'lsb_RELEASE=22.04\nlsb_CODENAME=jammy\nlsb_DESCRIPTION="Ubuntu 22.04.4 LTS"\n'
    )
    assert ubuntu["ansible_lsb"] == {
        "id": "Ubuntu",
        "release": "22.04",
        "codename": "jammy",
        "description": "Ubuntu 22.04.4 LTS",
        "major_release": "22",
    }
    assert ubuntu["ansible_distribution_major_version"] == "22"
    debian = parse_facts("id=debian\nversion_id=12\ndebian_version=12.11\n")
    assert debian["ansible_lsb"] == {}  # no lsb-release package: Ansible reports none either
    assert debian["ansible_distribution_version"] == "12.11"
    testing = parse_facts("id=debian\nversion_id=\ndebian_version=trixie/sid\n")
    assert testing["ansible_distribution_version"] == ""
