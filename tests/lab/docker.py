"""Real Docker inside a booted lab host: Debian's docker.io, a busybox image, a local registry.

Shared by the tests that need a real dockerd (audit, the docker_image module). Nothing here is a
stand-in: dockerd, the CLI and the registry (Debian's docker-registry) are the real packages.
"""

from __future__ import annotations

import json
import re
import socket
import time

from tests.lab.booted import LAB_DOCKER_DAEMON_JSON, BootedHost


def install_docker(host: BootedHost, *, registry: bool = True) -> None:
    """Install docker.io and busybox-static (and docker-registry) without starting services:
    dockerd needs the lab daemon.json first, and the registry must not open its default port
    on the network namespace shared with the machine."""
    host.exec(
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d"
    )
    packages = "docker.io busybox-static" + (" docker-registry" if registry else "")
    install = (
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " + packages
    )
    # The cached base's package lists may be older than the mirror: refresh only when needed.
    host.exec(f"{install} || {{ apt-get update -q && {install}; }}", timeout=300)
    host.exec("rm -f /usr/sbin/policy-rc.d")


def start_docker(host: BootedHost, extra: dict[str, object] | None = None) -> None:
    """Write the lab daemon.json (plus ``extra``) and (re)start dockerd."""
    doc = {**LAB_DOCKER_DAEMON_JSON, **(extra or {})}
    host.exec(
        "mkdir -p /etc/docker && cat > /etc/docker/daemon.json",
        input=json.dumps(doc, indent=2) + "\n",
    )
    # The package's first start (before daemon.json existed) may have failed: clear that.
    host.exec("systemctl reset-failed docker docker.socket; systemctl restart docker")
    host.exec("docker info >/dev/null")


def import_busybox(host: BootedHost, ref: str, extra_file: str | None = None) -> str:
    """``docker import`` a one-layer busybox image as ``ref``; returns its image ID.

    ``extra_file`` adds a file with that content, which makes a different image."""
    add = ""
    if extra_file is not None:
        add = f'printf %s {json.dumps(extra_file)} > "$d/extra"; '
    host.exec(
        'set -e; d=$(mktemp -d); mkdir "$d/bin"; cp /bin/busybox "$d/bin/"; '
        f'{add}tar -C "$d" -c . | docker import - {ref} >/dev/null; rm -rf "$d"'
    )
    image_id = host.exec(f"docker image inspect --format '{{{{.Id}}}}' {ref}").stdout.strip()
    assert image_id.startswith("sha256:")
    return image_id


def wait_port(address: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start_registry(host: BootedHost, port: int = 5000) -> str:
    """Start Debian's docker-registry on the host's own address; returns ``address:port``.

    127.0.0.0/8 registries need no TLS for dockerd."""
    registry = f"{host.address}:{port}"
    host.exec(
        "cat > /etc/docker/registry/config.yml",
        input=(
            "version: 0.1\n"
            "storage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\n"
            f"http:\n  addr: {registry}\n"
        ),
    )
    host.exec("systemctl start docker-registry")
    wait_port(host.address, port)
    return registry


def push(host: BootedHost, source: str, target: str) -> str:
    """Tag ``source`` as ``target``, push it, and return the registry's manifest digest."""
    out = host.exec(f"docker tag {source} {target} && docker push {target}").stdout
    m = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
    assert m, out
    return m.group(1)
