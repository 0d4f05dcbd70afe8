"""A registry pull on a host that tells its progress: dockerd's own pull, asked for through the
Engine API (``POST /images/create``, the call ``docker pull`` itself makes) on dockerd's unix
socket, answers with a JSON progress stream that gives, per layer, the bytes downloaded so far
(``docker pull`` draws them only on a terminal). The command and a pure tally of its lines.

The API is reached with curl when the host has it, else with python3 (which the audit's probe
needs anyway), else the pull runs as ``docker pull --quiet`` and reports nothing until it ends.
Registry credentials travel on stdin as the ``X-Registry-Auth`` header, never on a command line.
Closing the connection cancels the pull (Docker Engine API reference, ImageCreate), so a pull
that is cut or runs past its bound stops on the host too.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from urllib.parse import quote as url_quote

from provision.shell import quote

# python3's http.client on a unix socket; the headers (X-Registry-Auth) come on stdin.
_PY = """\
import http.client, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sys.argv[1])
h = dict(
    (k.strip(), v.strip())
    for k, _, v in (ln.partition(":") for ln in sys.stdin.read().splitlines())
    if v.strip()
)
c = C("localhost")
c.request("POST", sys.argv[2], headers=h)
r = c.getresponse()
for line in iter(r.readline, b""):
    sys.stdout.write(line.decode("utf-8", "replace"))
    sys.stdout.flush()
"""

# The daemon's socket as the docker CLI finds it (its context), else the default path.
_SOCKET = (
    "s=$(docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null); "
    's=${s#unix://}; [ -S "$s" ] || s=/var/run/docker.sock'
)


def api_path(ref: str) -> str:
    """The ImageCreate request for ``ref``: ``fromImage`` the repository, ``tag`` its tag or
    digest (a digest wins over a tag, as the docker CLI sends it)."""
    name, _, digest = ref.partition("@")
    repo, tag = name, "latest"
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        repo, tag = name[:colon], name[colon + 1 :]
    if digest:
        tag = digest
    return f"/images/create?fromImage={url_quote(repo, safe='')}&tag={url_quote(tag, safe='')}"


def command(ref: str) -> str:
    """The pull of ``ref`` through the API, printing dockerd's JSON lines (curl, else
    python3); ``docker pull --quiet`` where neither is there or the socket is not found."""
    path = api_path(ref)
    url = quote(f"http://localhost{path}")
    plain = f"exec docker pull --quiet {quote(ref)}"
    return (
        f"{_SOCKET}\n"
        f'if [ ! -S "$s" ]; then {plain}\n'
        "elif command -v curl >/dev/null 2>&1; then "
        f'exec curl -sS -N --unix-socket "$s" -X POST -H @- {url}\n'
        "elif command -v python3 >/dev/null 2>&1; then "
        f'exec python3 -c {quote(_PY)} "$s" {quote(path)}\n'
        f"else {plain}; fi"
    )


def auth_header(username: str, password: str, registry: str | None) -> bytes:
    """The stdin of :func:`command`: the ``X-Registry-Auth`` header (base64url of the auth
    JSON) for a registry login, nothing without one."""
    if not username:
        return b""
    doc = {"username": username, "password": password}
    doc["serveraddress"] = registry or "https://index.docker.io/v1/"
    token = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    return f"X-Registry-Auth: {token}\n".encode()


@dataclass
class PullTally:
    """What dockerd's JSON progress lines said so far: bytes downloaded per layer, the layers'
    sizes it told, and the error that ended the pull (pure: lines in, numbers out)."""

    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (done, size)
    error: str | None = None

    def feed(self, line: str) -> None:
        line = line.strip()
        if not line.startswith("{"):
            return  # docker pull --quiet's answer, or nothing
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if msg.get("error") or (msg.get("message") and "status" not in msg):
            detail = msg.get("errorDetail") or {}
            self.error = str(detail.get("message") or msg.get("error") or msg.get("message"))
            return
        layer, status = str(msg.get("id") or ""), str(msg.get("status") or "")
        done, size = self.layers.get(layer, (0, 0))
        if status == "Downloading":
            detail = msg.get("progressDetail") or {}
            current, total = detail.get("current"), detail.get("total")
            if isinstance(current, int):
                done = current
            if isinstance(total, int) and total > 0:
                size = total
            self.layers[layer] = (done, size)
        elif status in ("Verifying Checksum", "Download complete") and layer in self.layers:
            self.layers[layer] = (max(done, size), size)

    @property
    def done(self) -> int:
        """Bytes downloaded so far, all layers together."""
        return sum(done for done, _ in self.layers.values())

    @property
    def told(self) -> int:
        """The sizes of the layers dockerd has started to download."""
        return sum(size for _, size in self.layers.values())


__all__ = ["PullTally", "api_path", "auth_header", "command"]
