"""docker_state: read (never change) what the Docker and toolkit playbooks decide on: snap Docker,
packages, the daemon, running containers, runtimes, the data root, and the ``nvidia`` runtime
entry that ``nvidia-ctk`` would write.

The snippet rides in the batched state read; ``plan`` is pure and always a no-op. Docker is asked
only while ``docker.service`` is active (or, without systemd, when its socket exists): talking to
a socket-activated ``docker.socket`` would start the daemon, and a read must not change the host.
The ``nvidia`` runtime entry comes from ``nvidia-ctk runtime configure --dry-run`` run against an
empty scratch config, so the playbook writes exactly what NVIDIA's tool would, and merges it into
the site's daemon.json itself.
"""

from __future__ import annotations

import json
from typing import Any

from provision.modules.base import Context, Module, Plan, noop
from provision.shell import join, quote

PACKAGES = (
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
    "podman-docker",
)
DEFAULT_NVIDIA_RUNTIME: dict[str, Any] = {"path": "nvidia-container-runtime", "args": []}
DOCKER_TIMEOUT = 20  # seconds for each docker CLI call: a wedged daemon must not hang the read
_INFO_FORMAT = "{{json .Runtimes}}|{{.DefaultRuntime}}|{{.DockerRootDir}}"


def state_script() -> str:
    """A POSIX sh snippet printing ``key=value`` lines; JSON travels on one line."""
    t = DOCKER_TIMEOUT
    return "\n".join(
        [
            "s=0",
            "if command -v snap >/dev/null 2>&1 &&",
            f"  timeout {t} snap list docker >/dev/null 2>&1; then s=1;",
            "elif [ -e /snap/bin/docker ]; then s=1; fi",
            'echo "snap=$s"',
            "if command -v dockerd >/dev/null 2>&1; then echo dockerd=1; else echo dockerd=0; fi",
            "dpkg-query -W -f 'pkg=${Package}\\t${Status}\\n' " + join(PACKAGES) + " 2>/dev/null",
            "if command -v systemctl >/dev/null 2>&1; then",
            '  a=$(systemctl is-active docker 2>/dev/null); echo "active=$a"',
            "else a=nosystemd; echo systemd=0; fi",
            "case $a in active|nosystemd) q=1 ;; *) q=0 ;; esac",
            'if [ -S /var/run/docker.sock ] && [ "$q" = 1 ]; then',
            f'  echo "info=$(timeout {t} docker info --format {quote(_INFO_FORMAT)} 2>/dev/null'
            " | tr '\\n' ' ')\"",
            f'  echo "containers=$(timeout {t} docker ps -q 2>/dev/null | wc -l)"',
            "fi",
            "if c=$(command -v nvidia-ctk 2>/dev/null); then",
            '  echo "ctk=$c"',
            "  if f=$(mktemp) && e=$(mktemp); then",
            '    echo "{}" > "$f"',
            f"  o=$(timeout {t} nvidia-ctk runtime configure --runtime=docker --dry-run"
            ' --config="$f" 2>"$e")',
            '  echo "ctk_rc=$?"',
            "  echo \"ctk_out=$(printf '%s' \"$o\" | tr '\\n' ' ')\"",
            '  echo "ctk_err=$(sed -n \'/[^[:space:]]/p\' "$e" | tail -n 1)"',
            '  rm -f "$f" "$e"',
            '  else rm -f "$f"; echo ctk_rc=mktemp; fi',
            "fi",
        ]
    )


def _nvidia_runtime(raw: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The ``runtimes.nvidia`` entry nvidia-ctk printed, or the default and why."""
    if not raw.get("ctk"):
        return dict(DEFAULT_NVIDIA_RUNTIME), ""
    rc, out, err = raw.get("ctk_rc", ""), raw.get("ctk_out", ""), raw.get("ctk_err", "")
    if rc == "mktemp":
        return dict(DEFAULT_NVIDIA_RUNTIME), "mktemp failed on the host: nvidia-ctk not asked"
    if rc != "0":
        detail = err or out[:300] or "no output"
        return dict(DEFAULT_NVIDIA_RUNTIME), f"nvidia-ctk exited {rc or '?'}: {detail}"
    try:
        doc = json.loads(out)
    except ValueError:
        return dict(DEFAULT_NVIDIA_RUNTIME), f"nvidia-ctk printed no JSON: {out[:300]!r}"
    entry = (doc.get("runtimes") or {}).get("nvidia") if isinstance(doc, dict) else None
    if not isinstance(entry, dict):
        return dict(DEFAULT_NVIDIA_RUNTIME), "nvidia-ctk printed no runtimes.nvidia entry"
    return entry, ""


def parse_state(text: str | None) -> dict[str, Any]:
    """The snippet's output -> the module's result keys."""
    raw: dict[str, str] = {}
    packages: set[str] = set()
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "pkg":
            name, _, status = value.partition("\t")
            if status.strip().endswith(" ok installed") and name.strip() in PACKAGES:
                packages.add(name.strip())
        else:
            raw.setdefault(key, value.strip())
    runtimes: list[str] = []
    default_runtime = data_root = ""
    answered = False
    info = raw.get("info", "")
    if info:
        # The data root comes last and the JSON first: split from the right.
        rest, _, data_root = info.rpartition("|")
        runtimes_json, _, default_runtime = rest.rpartition("|")
        try:
            doc = json.loads(runtimes_json)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            runtimes = sorted(doc)
            answered = True
    running = raw.get("active") == "active" or (raw.get("systemd") == "0" and answered)
    containers = raw.get("containers", "")
    nvidia_runtime, ctk_error = _nvidia_runtime(raw)
    return {
        "snap_docker": raw.get("snap") == "1",
        "docker_installed": raw.get("dockerd") == "1",
        "docker_packages": [p for p in PACKAGES if p in packages],
        "daemon_running": running,
        "running_containers": int(containers) if running and containers.isdigit() else 0,
        "runtimes": runtimes,
        "default_runtime": default_runtime.strip() if answered else "",
        "data_root": data_root.strip() if answered else "",
        "nvidia_ctk": raw.get("ctk", ""),
        "nvidia_runtime": nvidia_runtime,
        "nvidia_ctk_error": ctk_error,
    }


def summary(state: dict[str, Any]) -> str:
    """One line: "docker running (2 containers), runtimes: nvidia, runc"."""
    if state["snap_docker"]:
        head = "snap Docker installed"
    elif not state["docker_installed"]:
        return "docker not installed"
    else:
        head = "docker installed"
    if not state["daemon_running"]:
        return head + ", daemon not running"
    n = state["running_containers"]
    head += f", running ({n} container{'s' if n != 1 else ''})"
    if state["runtimes"]:
        head += f", runtimes: {', '.join(state['runtimes'])}"
    return head


class DockerStateModule(Module):
    name = "docker_state"
    spec = ()

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        return state_script()

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        result = parse_state(state)
        return noop(summary(result), **result)


__all__ = ["DockerStateModule", "parse_state", "state_script"]
