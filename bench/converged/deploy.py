"""The converged 20-task playbook, pyinfra's version: the same tasks as playbook.yml."""

from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files

TEMPLATES = Path(__file__).parent / "templates"
base = f"{host.data.bench_root}/pyinfra/{host.name}"
tvars = {"inventory_hostname": host.name, "base": base}


def put(dest: str, content: str, mode: str, name: str) -> None:
    files.put(name=name, src=StringIO(content), dest=f"{base}/{dest}", mode=mode)


files.directory(name="base folder", path=base, mode="755")
files.directory(name="etc folder", path=f"{base}/etc", mode="755")
files.directory(name="conf.d folder", path=f"{base}/etc/conf.d", mode="755")
files.directory(name="data folder", path=f"{base}/data", mode="750")
put("etc/motd", "GPU workstation, managed centrally\n", "644", "motd")
put("etc/app.conf", "[app]\nlog_level = info\nworkers = 8\n", "640", "app.conf")
put("etc/conf.d/10-gpu.conf", "gpus = all\n", "644", "gpu drop-in")
put("etc/conf.d/20-net.conf", "mtu = 9000\n", "644", "net drop-in")
put("etc/settings.json", '{"telemetry": false, "runtime": "nvidia"}\n', "644", "settings json")
files.template(
    name="site.conf from a template",
    src=str(TEMPLATES / "site.conf.j2"),
    dest=f"{base}/etc/site.conf",
    mode="644",
    **tvars,
)
files.template(
    name="limits.conf from a template",
    src=str(TEMPLATES / "limits.conf.j2"),
    dest=f"{base}/etc/limits.conf",
    mode="644",
    **tvars,
)
files.line(name="hosts line", path=f"{base}/etc/hosts.local", line="10.0.0.1 gpu-head")
files.line(
    name="sysctl line by regexp",
    path=f"{base}/etc/sysctl.local",
    line="^vm.swappiness",
    replace="vm.swappiness = 10",
)
files.line(name="no debug line", path=f"{base}/etc/hosts.local", line="^#debug", present=False)
files.file(name="keep file", path=f"{base}/data/.keep", touch=False, mode="644")
files.file(name="old config gone", path=f"{base}/etc/old.conf", present=False)
files.file(name="motd attributes", path=f"{base}/etc/motd", mode="644")
apt.packages(name="ssh server installed", packages=["openssh-server"])
apt.packages(name="base tools installed", packages=["coreutils", "bash"])
# Read-only check that sshd runs (see playbook.yml); a failing command fails the host.
host.get_fact(Command, "pgrep -x sshd")
