"""STAND-IN for ``nvidia-smi`` that replays a real capture (tests/data/nvidia-smi-real/).

No GPU here, so the fallback's nvidia-smi calls are answered from what nvidia-smi printed on a
real machine: ``--query-gpu=``/``--query-compute-apps=`` select the requested columns from the
capture's CSV (which holds every field that driver lists), the plain call prints its table.
A field the capture does not have, or one named in ``$SMI_REFUSE`` (comma-separated), is refused
with the real text and exit code (``Field "X" is not a valid field to query.``, exit 2, from
CoHDI/composable-resource-operator#37). ``$SMI_PREFIX`` is the capture's path prefix;
``$SMI_BEFORE`` is text printed first and ``$SMI_RC`` the exit status (for the composite cases:
a real lost-GPU or infoROM line in front of real rows). Run as a script, by absolute path to the
interpreter, so the host under test needs no python3 on its PATH.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

CAPTURES = Path(__file__).parent.parent / "data" / "nvidia-smi-real" / "utkuozdemir"


def _clean(cell: str) -> str:
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", cell.strip())


def select(path: str, wanted: list[str], refused: set[str]) -> tuple[str, int]:
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.reader(fh, skipinitialspace=True))
    header = [_clean(c) for c in rows[0]]
    for name in wanted:
        if name in refused or name not in header:
            return f'Field "{name}" is not a valid field to query.\n\n', 2
    cols = [header.index(n) for n in wanted]
    buf = io.StringIO()
    for row in rows:
        buf.write(", ".join(row[c].strip() for c in cols) + "\n")
    return buf.getvalue(), 0


def main(argv: list[str]) -> int:
    prefix = os.environ["SMI_PREFIX"]
    refused = {f for f in os.environ.get("SMI_REFUSE", "").split(",") if f}
    sys.stdout.write(os.environ.get("SMI_BEFORE", ""))
    rc = int(os.environ.get("SMI_RC", "0"))
    query = next((a for a in argv if a.startswith("--query-")), None)
    if query is None:
        with open(prefix + ".table.txt", encoding="utf-8") as fh:
            sys.stdout.write(fh.read())
        return rc
    kind, _, fields = query[len("--query-") :].partition("=")
    suffix = ".query-gpu.csv" if kind == "gpu" else ".apps.csv"
    text, code = select(prefix + suffix, fields.split(","), refused)
    sys.stdout.write(text)
    return code or rc


def host_without_python(tmp_path: Path, monkeypatch: Any, prefix: str, **env: str) -> Any:
    """PATH with only shell tools and the replaying stand-in nvidia-smi (no python3 on it)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tools = ("sh", "cat", "cut", "uname", "df", "timeout", "head", "test", "printf", "mkdir")
    for tool in (*tools, "sed", "tr", "readlink"):
        real = shutil.which(tool)
        if real:
            os.symlink(real, bindir / tool)
    smi = bindir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\nexec {sys.executable} {__file__} "$@"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("SMI_PREFIX", str(CAPTURES / prefix))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from provision.ssh import LocalSession
    from provision.target import conn_spec

    return LocalSession(conn_spec("localhost", {"ansible_connection": "local"}, ssh_config_path=""))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
