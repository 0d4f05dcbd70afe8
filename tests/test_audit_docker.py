"""`provision audit`'s Docker facts and checks against a REAL dockerd in a booted Debian host.

One booted host (systemd-nspawn) installs Debian's docker.io, imports a tiny busybox image and
registers the `nvidia` runtime in daemon.json; the real CLI audits it over real SSH. Only the
hardware side is stood in for: NVML (the tests' stand-in library, enabled for SSH sessions by
sshd's SetEnv) and NVIDIA's container toolkit binaries (stand-in scripts: dockerd only checks a
runtime's path when a container starts). Every expected value is read from the host itself
(`docker version`, `docker info`, `docker image inspect`), never typed in. A real registry
(Debian's docker-registry, on the host's own address) gives a pulled image a real RepoDigest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.lab.booted import (
    LAB_DOCKER_DAEMON_JSON,
    LAB_USER,
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.lab.docker import install_docker, start_registry
from tests.standins import nvidia_toolkit, nvml
from tests.test_cli import cli

DATA_ROOT = "/srv/docker-data"  # not Docker's default: the audit must report what dockerd uses
IMAGE = "lab/tiny:1"
STANDIN_DIR = "/opt/nvml-standin"  # inside the host
RUNTIME_PATH = "/usr/local/bin/nvidia-container-runtime"
FAST = ["-T", "10", "--command-timeout", "60"]


@dataclass
class DockerHost:
    host: BootedHost
    workdir: Path
    known_hosts: Path
    image_id: str

    def daemon_json(self, with_runtime: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {**LAB_DOCKER_DAEMON_JSON, "data-root": DATA_ROOT}
        if with_runtime:
            doc["runtimes"] = {"nvidia": {"path": RUNTIME_PATH, "args": []}}
        return doc

    def restart_docker(self, with_runtime: bool) -> None:
        self.host.exec(
            "mkdir -p /etc/docker && cat > /etc/docker/daemon.json",
            input=json.dumps(self.daemon_json(with_runtime), indent=2) + "\n",
        )
        # The package's first start (before daemon.json existed) may have failed: clear that.
        self.host.exec("systemctl reset-failed docker docker.socket; systemctl restart docker")
        self.host.exec("docker info >/dev/null")

    def scenario(self, kind: str) -> None:
        """Switch the NVML stand-in's GPU state (read anew by every probe run)."""
        path = self.host.merged / STANDIN_DIR.lstrip("/") / "scenario"
        nvml.write_scenario(str(path), nvml.scenario(kind))

    def inventory(self, name: str, images: list[str]) -> Path:
        path = write_inventory([self.host], self.workdir / f"{name}.ini")
        with path.open("a") as fh:
            fh.write(f"\n[lab:vars]\naudit_required_images={json.dumps(images)}\n")
        return path

    def audit(self, inventory: Path, *args: str) -> Any:
        env = {**os.environ, "HOME": str(self.workdir)}
        return cli(
            "audit", str(inventory), "--known-hosts", str(self.known_hosts), *FAST, *args, env=env
        )

    def audit_json(self, inventory: Path) -> tuple[int, dict[str, Any]]:
        r = self.audit(inventory, "--format", "json")
        assert r.stdout.strip(), r.stderr
        doc = json.loads(r.stdout)
        assert doc["summary"]["exit_code"] == r.returncode
        assert len(doc["hosts"]) == 1
        return r.returncode, doc["hosts"][0]


def checks(host_doc: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [c for c in host_doc["checks"] if c["id"].startswith(prefix)]


@pytest.fixture(scope="module")
def docker_host(booted_hosts, tmp_path_factory) -> Iterator[DockerHost]:  # noqa: F811
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc) for the NVML stand-in")
    host = booted_hosts(1, prefix="dock")[0]
    install_docker(host)  # docker.io, busybox-static, docker-registry; nothing started
    root = host.merged
    for src in (nvidia_toolkit.NVIDIA_CTK, nvidia_toolkit.NVIDIA_CONTAINER_RUNTIME):
        dest = root / "usr/local/bin" / Path(src).name
        shutil.copyfile(src, dest)
        dest.chmod(0o755)
    standin = root / STANDIN_DIR.lstrip("/")
    standin.mkdir(parents=True)
    shutil.copyfile(Path(nvml.build()) / "libnvidia-ml.so.1", standin / "libnvidia-ml.so.1")
    with (root / "etc/ssh/sshd_config.d/lab.conf").open("a") as fh:
        fh.write(
            f"SetEnv LD_LIBRARY_PATH={STANDIN_DIR} NVML_STANDIN_SCENARIO={STANDIN_DIR}/scenario\n"
        )
    host.exec("systemctl reload ssh")
    workdir = tmp_path_factory.mktemp("audit-docker")
    dh = DockerHost(host, workdir, write_known_hosts([host], workdir / "known_hosts"), "")
    dh.scenario("healthy")
    dh.restart_docker(with_runtime=True)
    host.exec(
        'set -e; d=$(mktemp -d); mkdir "$d/bin"; cp /bin/busybox "$d/bin/"; '
        f'tar -C "$d" -c . | docker import - {IMAGE} >/dev/null; rm -rf "$d"'
    )
    dh.image_id = host.exec(f"docker image inspect --format '{{{{.Id}}}}' {IMAGE}").stdout.strip()
    assert dh.image_id.startswith("sha256:")
    yield dh


def test_healthy_gpu_host_reports_docker_facts(docker_host: DockerHost) -> None:
    """Installed, versions, daemon, data-root, nvidia runtime, nvidia-ctk, images by name/digest."""
    dh, host = docker_host, docker_host.host
    pinned = f"{IMAGE}@{dh.image_id}"
    inv = dh.inventory("healthy", [IMAGE, pinned])
    code, doc = dh.audit_json(inv)

    dk = doc["facts"]["docker"]
    client = host.exec("docker version --format '{{.Client.Version}}'").stdout.strip()
    info = json.loads(host.exec("docker info --format '{{json .}}'").stdout)
    assert dk["installed"] is True
    assert dk["client_version"] == client and client
    assert dk["daemon_running"] is True and dk["daemon_error"] is None
    assert dk["server_version"] == info["ServerVersion"]
    assert dk["data_root"] == info["DockerRootDir"] == DATA_ROOT
    assert "nvidia" in dk["runtimes"] and set(dk["runtimes"]) == set(info["Runtimes"])
    assert dk["nvidia_ctk"] == nvidia_toolkit.CTK_VERSION
    images = {i["ref"]: i for i in dk["images"]}
    size = int(host.exec(f"docker image inspect --format '{{{{.Size}}}}' {IMAGE}").stdout)
    for ref in (IMAGE, pinned):
        assert images[ref]["present"] is True
        assert images[ref]["id"] == dh.image_id
        assert images[ref]["size"] == size
    assert images[pinned]["digest_match"] is True
    # Docker's data-root is a disk the audit watches too.
    assert DATA_ROOT in {d["path"] for d in doc["facts"]["disk"]}

    status = {c["id"]: c["status"] for c in checks(doc, "docker.")}
    assert status == {"docker.daemon": "OK", "docker.gpu_runtime": "OK", "docker.image": "OK"}
    daemon = checks(doc, "docker.daemon")[0]["message"]
    assert info["ServerVersion"] in daemon and DATA_ROOT in daemon
    assert nvidia_toolkit.CTK_VERSION in checks(doc, "docker.gpu_runtime")[0]["message"]
    assert [c["status"] for c in checks(doc, "docker.image")] == ["OK", "OK"]
    assert doc["status"] == "OK" and code == 0, doc["checks"]

    table = dh.audit(inv)
    assert table.returncode == 0, table.stderr
    row = next(ln for ln in table.stdout.splitlines() if ln.startswith(host.name))
    assert "OK" in row and "nvidia" in row and "2/2" in row, table.stdout


def test_missing_or_wrong_digest_image_fails(docker_host: DockerHost) -> None:
    dh, host = docker_host, docker_host.host
    wrong = f"{IMAGE}@sha256:{'0' * 64}"
    assert wrong.split("@")[1] != dh.image_id
    inv = dh.inventory("missing", [IMAGE, "lab/missing:2", wrong])
    code, doc = dh.audit_json(inv)
    assert code == 2 and doc["status"] == "FAIL"
    by_ref = {i["ref"]: i for i in doc["facts"]["docker"]["images"]}
    assert by_ref["lab/missing:2"]["present"] is False
    assert by_ref[wrong]["present"] is True and by_ref[wrong]["digest_match"] is False
    results = sorted((c["message"], c["status"]) for c in checks(doc, "docker.image"))
    assert results == sorted(
        [
            (f"{IMAGE}: present", "OK"),
            ("lab/missing:2: missing", "FAIL"),
            (f"{wrong}: present but digest differs", "FAIL"),
        ]
    ), doc["checks"]

    missing = [c for c in checks(doc, "docker.image") if "lab/missing:2" in c["message"]]
    assert missing[0]["remediation"] == "docker pull lab/missing:2"

    table = dh.audit(inv)
    assert table.returncode == 2
    row = next(ln for ln in table.stdout.splitlines() if ln.startswith(host.name))
    assert "FAIL" in row and "docker.image" in row and "1/3" in row, table.stdout
    details = dh.audit(inv, "--details")
    assert details.returncode == 2
    assert "lab/missing:2: missing" in details.stdout


def test_runtime_not_registered_fails_only_on_a_gpu_host(docker_host: DockerHost) -> None:
    dh = docker_host
    inv = dh.inventory("noruntime", [IMAGE])
    dh.restart_docker(with_runtime=False)
    try:
        code, doc = dh.audit_json(inv)
        assert "nvidia" not in doc["facts"]["docker"]["runtimes"]
        assert doc["facts"]["nvidia"]["gpu_count"] == 2
        runtime = checks(doc, "docker.gpu_runtime")
        assert [c["status"] for c in runtime] == ["FAIL"], doc["checks"]
        assert "nvidia runtime missing" in runtime[0]["message"]
        assert "nvidia-ctk runtime configure" in runtime[0]["remediation"]
        assert code == 2 and doc["status"] == "FAIL"
        table = dh.audit(inv)
        row = next(ln for ln in table.stdout.splitlines() if ln.startswith(dh.host.name))
        assert "FAIL" in row and "no-rt" in row, table.stdout
        # the ISSUES cell may wrap at 80 columns (a longer host name): the check's own line
        assert "FAIL docker.gpu_runtime: nvidia runtime missing" in table.stdout, table.stdout

        # The same Docker on a machine without GPUs: no runtime needed, nothing fails. Without
        # a GPU the nvidia module does not load, so NVML says "driver not loaded" (NVML that
        # initialises but counts 0 GPUs is a GPU host whose GPUs vanished: a FAIL, issue 12).
        dh.scenario("no_driver")
        code, doc = dh.audit_json(inv)
        assert doc["facts"]["nvidia"]["nvml"] == "no driver"
        assert checks(doc, "docker.gpu_runtime") == []
        assert {c["status"] for c in checks(doc, "docker.")} == {"OK"}
        assert code == 0, doc["checks"]
    finally:
        dh.scenario("healthy")
        dh.restart_docker(with_runtime=True)


def test_stopped_daemon_fails_and_keeps_client_facts(docker_host: DockerHost) -> None:
    dh, host = docker_host, docker_host.host
    inv = dh.inventory("stopped", [IMAGE])
    host.exec("systemctl stop docker.socket docker")  # the socket would start it again
    try:
        code, doc = dh.audit_json(inv)
        dk = doc["facts"]["docker"]
        assert dk["installed"] is True and dk["daemon_running"] is False
        assert dk["client_version"]  # the client answers without a daemon
        assert "daemon not running" in dk["daemon_error"]
        status = {c["id"]: c["status"] for c in checks(doc, "docker.")}
        assert status["docker.daemon"] == "FAIL"
        assert status["docker.image"] != "OK"  # cannot be confirmed without the daemon
        assert status.get("docker.gpu_runtime") in ("SKIP", "UNKNOWN")
        assert code == 2
        assert host.exec("systemctl is-active docker", check=False).stdout.strip() != "active"
    finally:
        host.exec("systemctl start docker.socket docker")


def test_audit_user_outside_docker_group_is_unknown_not_down(docker_host: DockerHost) -> None:
    """A running daemon the audit user may not reach is UNKNOWN (exit 3), never "not running"."""
    dh, host = docker_host, docker_host.host
    host.exec(
        f"install -d -m 700 -o {LAB_USER} -g {LAB_USER} /home/{LAB_USER}/.ssh && "
        f"install -m 600 -o {LAB_USER} -g {LAB_USER} /root/.ssh/authorized_keys "
        f"/home/{LAB_USER}/.ssh/authorized_keys"
    )
    assert host.exec("id -nG " + LAB_USER).stdout.split().count("docker") == 0
    inv = dh.inventory("user", [IMAGE])
    inv.write_text(inv.read_text().replace("ansible_user=root", f"ansible_user={LAB_USER}"))
    code, doc = dh.audit_json(inv)
    dk = doc["facts"]["docker"]
    assert dk["daemon_access_denied"] is True and dk["daemon_running"] is False
    assert "permission denied" in dk["daemon_error"]
    assert dk["client_version"]
    status = {c["id"]: c["status"] for c in checks(doc, "docker.")}
    assert status == {
        "docker.daemon": "UNKNOWN",
        "docker.gpu_runtime": "UNKNOWN",
        "docker.image": "UNKNOWN",
    }, doc["checks"]
    assert "docker group" in checks(doc, "docker.daemon")[0]["remediation"]
    assert code == 3 and doc["status"] == "UNKNOWN"
    assert host.exec("systemctl is-active docker").stdout.strip() == "active"
    table = dh.audit(inv)
    row = next(ln for ln in table.stdout.splitlines() if ln.startswith(host.name))
    assert "denied" in row and table.returncode == 3, table.stdout


def test_image_pulled_by_digest_without_tag_is_present(docker_host: DockerHost) -> None:
    """`docker pull repo@sha256:...` (the usual pin) leaves no tag: still present, digest right.

    A real registry (Debian's docker-registry, on the host's own address) gives the image a real
    RepoDigest; 127.0.0.0/8 registries need no TLS for dockerd.
    """
    dh, host = docker_host, docker_host.host
    try:
        registry = start_registry(host)
        repo = f"{registry}/lab/tiny"
        pushed = host.exec(f"docker tag {IMAGE} {repo}:1 && docker push {repo}:1").stdout
        m = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
        assert m, pushed
        digest = m.group(1)
        host.exec(f"docker rmi {repo}:1 && docker pull {repo}@{digest}")
        # The precondition of the case: the repository has no tag at all on the host.
        assert host.exec(f"docker image inspect {repo}", check=False).returncode != 0
        tags = host.exec(f"docker image inspect --format '{{{{json .RepoTags}}}}' {repo}@{digest}")
        assert repo not in tags.stdout

        pinned, other = f"{repo}@{digest}", f"{repo}@sha256:{'1' * 64}"
        code, doc = dh.audit_json(dh.inventory("bydigest", [pinned, other]))
        images = {i["ref"]: i for i in doc["facts"]["docker"]["images"]}
        assert images[pinned]["present"] is True and images[pinned]["digest_match"] is True
        assert images[pinned]["id"] == dh.image_id
        assert f"{repo}@{digest}" in images[pinned]["digests"]
        assert images[other]["present"] is False  # no such digest, and no tag to compare
        results = sorted((c["message"], c["status"]) for c in checks(doc, "docker.image"))
        # sorted both sides: which ref sorts first depends on the pushed image's digest
        assert results == sorted([(f"{other}: missing", "FAIL"), (f"{pinned}: present", "OK")])
        assert code == 2
    finally:
        host.exec("systemctl stop docker-registry", check=False)
