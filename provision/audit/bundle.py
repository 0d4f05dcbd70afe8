"""The probe as one self-contained zip application, plus the commands that cache and run it.

Hosts have no ``pynvml``: the zipapp carries the probe and the controller's own pure-Python
``pynvml`` module. Its bytes are deterministic (fixed timestamps and order) so its sha256 names the
cached copy on the host (``~/.cache/provision/probe-<sha>.pyz``): a warm run is one round trip
(:func:`run_command`); only a cold host needs the second, which uploads and runs it
(:func:`install_command`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provision.shell import join, quote, verify_received

NEED_MARKER = "PROVISION-PROBE-NEED-8c1f"
NO_PYTHON_MARKER = "PROVISION-PROBE-NO-PYTHON-8c1f"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)
DEFAULT_CACHE_DIR = None  # None: "$HOME/.cache/provision" on the host


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


# Every host's audit thread asks for the bundle at once, and lru_cache does not stop them all
# building it before the first one is cached (5 builds of ~6.5 ms each were seen in one
# 20-host audit): the lock makes it one.
_BUILDING = threading.Lock()


def build() -> tuple[bytes, str]:
    """(zipapp bytes, sha256 hex); same bytes for the same probe and pynvml versions."""
    with _BUILDING:
        return _build()


@functools.lru_cache(maxsize=1)
def _build() -> tuple[bytes, str]:
    probe = (Path(__file__).with_name("probe.py")).read_bytes()
    spec = importlib.util.find_spec("pynvml")
    if spec is None or spec.origin is None:
        raise RuntimeError("pynvml (package nvidia-ml-py) is not installed on the controller")
    pynvml_src = Path(spec.origin).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _add(zf, "__main__.py", probe)
        _add(zf, "pynvml.py", pynvml_src)
    data = b"#!/usr/bin/env python3\n" + buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def config_words(
    paths: list[str], images: list[str], timeout: float, packages: Sequence[str] = ()
) -> list[str]:
    """The probe's settings as ``NAME=VALUE`` words (``probe.parse_config``), each quoted as
    one shell word when the command is built. ``packages``: name prefixes of the driver and
    toolkit packages whose holds it reads."""
    return [
        f"timeout={float(timeout)!r}",  # repr: the exact float, as JSON carried it
        *(f"path={p}" for p in paths),
        *(f"image={i}" for i in images),
        *(f"package={p}" for p in packages),
    ]


def _dir_expr(cache_dir: str | None) -> str:
    return '"${HOME:-/tmp}/.cache/provision"' if cache_dir is None else quote(cache_dir)


# The probe runs with ``python3 -I -S``: it needs only the standard library and the pynvml it
# carries, and skipping ``site`` (site-packages, .pth files, Ubuntu's apport hook) saves a
# third of the interpreter's start-up on every audited host; ``-I`` keeps the host's PYTHON*
# variables (a PYTHONPATH of the user's) out of it.
PYTHON_FLAGS = "-I -S"
# A warm host runs the probe from the folder its zipapp extracted beside itself
# (probe.use_cached_modules), where its bytecode is cached: no runpy, no zipimport, no compiling
# the probe on every audit (~40 ms of each host's CPU). argv[1] is the verified zipapp.
CACHED_ENTRY = (
    'import sys; sys.path.insert(0, sys.argv[1] + ".d"); import probe; probe.run(sys.argv[1:])'
)


def _python_check(fallback_script: str = "") -> str:
    """Find python3; without one, say so and run the degraded script in the same round trip.
    (``command -v`` as a test, not ``$(...)``: a command substitution forks the shell.)"""
    return (
        "if ! command -v python3 >/dev/null 2>&1; "
        f"then echo {NO_PYTHON_MARKER}\n{fallback_script}\nexit 0; fi\n"
    )


def run_command(
    sha: str, args: list[str], cache_dir: str | None = None, fallback_script: str = ""
) -> str:
    """Run the cached probe, or print :data:`NEED_MARKER` when this host lacks that version or
    its cached copy does not hash to ``sha`` (a cut upload, a damaged disk): never trusted, the
    install then replaces it. One sha256sum of the ~0.3 MB file per audit."""
    d = _dir_expr(cache_dir)
    f = f"{d}/probe-{sha}.pyz"
    return (
        _python_check(fallback_script)
        + f"if [ -f {f} ] && printf '%s  %s\\n' {sha} {f} | sha256sum -c --status 2>/dev/null; "
        + f"then if [ -f {f}.d/probe.py ]; "
        + f"then exec python3 {PYTHON_FLAGS} -c {quote(CACHED_ENTRY)} {f} {join(args)}; fi; "
        + f"exec python3 {PYTHON_FLAGS} {f} {join(args)}; fi; echo {NEED_MARKER}"
    )


def install_command(sha: str, size: int, args: list[str], cache_dir: str | None = None) -> str:
    """Write the probe from stdin to a temp file, rename it into the cache only once it has
    ``size`` bytes and hashes to ``sha`` (a dropped connection leaves no cached copy and no
    temp file), then run it."""
    d = _dir_expr(cache_dir)
    return (
        _python_check()
        + f'd={d}; f="$d/probe-{sha}.pyz"; tmp="$d/.probe-{sha}.$$.tmp"; '
        + """trap 'rm -f "$tmp"' EXIT; trap 'exit 1' HUP INT TERM PIPE; umask 077; """
        + 'mkdir -p "$d" && cat > "$tmp" || exit 1; '
        + verify_received('"$tmp"', size, sha, '"$f"')
        + "; "
        + 'mv -f "$tmp" "$f" || exit 1; trap - EXIT; '
        + f'exec python3 {PYTHON_FLAGS} "$f" {join(args)}'
    )


def describe() -> dict[str, Any]:
    """Bundle identity for reports and debugging."""
    data, sha = build()
    return {"sha256": sha, "size": len(data)}
