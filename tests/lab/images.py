"""An image upstream for the fan-out tests and bench: real dockerd on every booted host, the real
registry (Debian's docker-registry) on the first, an image of incompressible data pushed to it,
and its layers' downloads counted from the registry's own access log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tests.lab.booted import BootedHost
from tests.lab.docker import install_docker, push, start_docker, start_registry


@dataclass
class Upstream:
    origin: BootedHost  # runs the registry
    registry: str  # address:port of the registry itself (the uplink proxy goes in front)
    digest: str  # manifest digest of lab/fan:1
    image_id: str  # its config digest
    layers: list[str]  # layer blob digests
    layer_bytes: int  # compressed, as they travel

    def blob_gets(self) -> dict[str, int]:
        """Successful downloads per layer blob, from the registry's access log."""
        log = self.origin.exec("journalctl -u docker-registry -o cat --no-pager").stdout
        counts: dict[str, int] = {}
        pattern = r'"GET /v2/[^"]*/blobs/(sha256:[0-9a-f]{64}) HTTP/[\d.]+" 200'
        for m in re.finditer(pattern, log):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return {d: n for d, n in counts.items() if d in self.layers}

    def drop(self, host: BootedHost) -> None:
        """Remove the image (every name of it) from ``host``."""
        host.exec(f"docker image rm -f {self.image_id} >/dev/null 2>&1; true")


def prepare_upstream(hosts: Sequence[BootedHost], megabytes: int) -> Upstream:
    """Docker on every host (in parallel), the registry on the first, and lab/fan:1 (busybox
    plus ``megabytes`` MB of random data: one layer that no compression shrinks) pushed to it
    and removed from the first host again."""

    def docker(index_host: tuple[int, BootedHost]) -> None:
        index, host = index_host
        install_docker(host, registry=index == 0)
        start_docker(host)

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(docker, enumerate(hosts)))
    origin = hosts[0]
    registry = start_registry(origin)
    origin.exec(
        'set -e; d=$(mktemp -d); mkdir "$d/bin"; cp /bin/busybox "$d/bin/"; '
        f'head -c {megabytes}M /dev/urandom > "$d/payload"; '
        'tar -C "$d" -c . | docker import - lab/fan:build >/dev/null; rm -rf "$d"',
        timeout=300,
    )
    digest = push(origin, "lab/fan:build", f"{registry}/lab/fan:1")
    manifest = json.loads(
        origin.exec(
            'python3 -c "import urllib.request as u; r = u.Request('
            f"'http://{registry}/v2/lab/fan/manifests/1', headers={{'Accept': "
            "'application/vnd.docker.distribution.manifest.v2+json'}); "
            'print(u.urlopen(r).read().decode())"'
        ).stdout
    )
    upstream = Upstream(
        origin,
        registry,
        digest,
        manifest["config"]["digest"],
        [layer["digest"] for layer in manifest["layers"]],
        sum(layer["size"] for layer in manifest["layers"]),
    )
    upstream.drop(origin)
    return upstream
