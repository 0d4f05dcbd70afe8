"""Docker on the host: the daemon, the nvidia runtime, the required images and their CUDA."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from provision.audit.checks.base import CheckResult, Context, Status, check, version_tuple
from provision.audit.checks.driver import min_driver_for_cuda

# The audit user cannot reach /var/run/docker.sock: nothing is known about images or runtimes.
DOCKER_ACCESS_FIX = "audit with --become, or add the audit user to the docker group"


def _denied(dk: Mapping[str, Any]) -> bool:
    return not dk.get("daemon_running") and bool(dk.get("daemon_access_denied"))


@check(
    "docker.daemon",
    reads=(
        "docker.installed",
        "docker.daemon_running",
        "docker.daemon_access_denied",
        "docker.daemon_error",
        "docker.server_version",
        "docker.data_root",
    ),
    settings=("audit_required_images",),
)
def daemon(ctx: Context) -> list[CheckResult]:
    dk = ctx.docker
    needed = ctx.gpu_host or bool(ctx.settings.required_images)
    if not dk.get("installed"):
        fix = "provision apply (docker role)" if needed else ""
        status = Status.FAIL if needed else Status.SKIP
        return [CheckResult("docker.daemon", status, "Docker not installed", remediation=fix)]
    if _denied(dk):
        msg = dk.get("daemon_error") or "no access to the Docker daemon"
        return [CheckResult("docker.daemon", Status.UNKNOWN, msg, remediation=DOCKER_ACCESS_FIX)]
    if not dk.get("daemon_running"):
        status = Status.FAIL if needed else Status.WARN
        msg, fix = dk.get("daemon_error") or "daemon not running", "systemctl start docker; "
        fix += "journalctl -u docker"
        return [CheckResult("docker.daemon", status, msg, remediation=fix)]
    msg = f"Docker {dk.get('server_version')} running, data-root {dk.get('data_root')}"
    return [CheckResult("docker.daemon", Status.OK, msg)]


@check("docker.gpu_runtime", reads=("docker.runtimes", "docker.nvidia_ctk"))
def gpu_runtime(ctx: Context) -> list[CheckResult]:
    dk = ctx.docker
    if not ctx.gpu_host:
        return []
    runtimes = dk.get("runtimes") or []
    if _denied(dk):
        msg = "Docker runtimes unreadable: no access to the Docker daemon"
        return [
            CheckResult("docker.gpu_runtime", Status.UNKNOWN, msg, remediation=DOCKER_ACCESS_FIX)
        ]
    if not dk.get("daemon_running"):
        return [CheckResult("docker.gpu_runtime", Status.SKIP, "Docker daemon not running")]
    if "nvidia" in runtimes:
        msg = f"nvidia runtime registered (nvidia-ctk {dk.get('nvidia_ctk') or 'not found'})"
        return [CheckResult("docker.gpu_runtime", Status.OK, msg, runtimes)]
    fix = (
        "install nvidia-container-toolkit; "
        "nvidia-ctk runtime configure --runtime=docker; restart Docker"
    )
    msg = "nvidia runtime missing from Docker on a GPU host"
    return [CheckResult("docker.gpu_runtime", Status.FAIL, msg, runtimes, fix)]


def _image(ref: str, img: Mapping[str, Any] | None, dk: Mapping[str, Any]) -> CheckResult:
    if _denied(dk):
        msg = f"{ref}: unknown (no access to the Docker daemon)"
        return CheckResult("docker.image", Status.UNKNOWN, msg, ref, DOCKER_ACCESS_FIX)
    if not dk.get("daemon_running"):
        msg = f"{ref}: cannot be present (daemon not running)"
        return CheckResult("docker.image", Status.FAIL, msg, ref)
    if img is None or not img.get("present"):
        why = (img or {}).get("error")
        status, msg = (Status.UNKNOWN, f"{ref}: {why}") if why else (Status.FAIL, f"{ref}: missing")
        return CheckResult("docker.image", status, msg, ref, f"docker pull {ref}")
    if "@" in ref and not img.get("digest_match"):
        msg = f"{ref}: present but digest differs"
        return CheckResult(
            "docker.image", Status.FAIL, msg, img.get("digests"), f"docker pull {ref}"
        )
    return CheckResult("docker.image", Status.OK, f"{ref}: present", img.get("digests"))


@check(
    "docker.image",
    reads=("docker.images", "docker.daemon_running", "docker.daemon_access_denied"),
    settings=("audit_required_images",),
)
def images(ctx: Context) -> list[CheckResult]:
    found = {i.get("ref"): i for i in ctx.docker.get("images") or []}
    return [_image(ref, found.get(ref), ctx.docker) for ref in ctx.settings.required_images]


@check(
    "docker.image_cuda",
    reads=("docker.images", "nvidia.cuda_version"),
    settings=("audit_required_images",),
)
def image_cuda(ctx: Context) -> list[CheckResult]:
    host_cuda = version_tuple(ctx.nvidia.get("cuda_version"))
    found = {i.get("ref"): i for i in ctx.docker.get("images") or []}
    out = []
    for ref in ctx.settings.required_images:
        img = found.get(ref)
        if _image(ref, img, ctx.docker).status is not Status.OK or not img:
            continue
        req = img.get("require_cuda")
        m = re.search(r"cuda>=(\d+(?:\.\d+)?)", req or "")
        need = version_tuple(m.group(1)) if m else None
        if m and host_cuda and need and host_cuda < need:
            msg = f"{ref} needs CUDA {m.group(1)}, driver supports {ctx.nvidia.get('cuda_version')}"
            fix = f"driver >= {min_driver_for_cuda(m.group(1)) or '?'}"
            out.append(CheckResult("docker.image_cuda", Status.FAIL, msg, req, fix))
    return out
