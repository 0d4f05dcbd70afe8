"""`provision inventory --list -l PATTERN` byte for byte against the real
`ansible-inventory --list --limit PATTERN` (ansible-core in the venv), for every pattern the
pattern tests use; non-ASCII names and values; a chain of 340 nested groups."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import venv_tool
from tests.test_inventory import ANSIBLE_ENV
from tests.test_patterns import CASES, HERE

REPO = Path(__file__).resolve().parent.parent


def _ours(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANG": "C", "LC_ALL": "C"}
    command = [sys.executable, "-m", "provision", "inventory", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE)


def _theirs(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    env = {**ANSIBLE_ENV, "ANSIBLE_LOCAL_TEMP": str(cwd / ".ansible-tmp")}
    command = [venv_tool("ansible-inventory"), *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE)


def _outputs(procs: list[subprocess.Popen[bytes]]) -> list[bytes]:
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, proc.args
        out.append(stdout)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_list_limit_is_ansible_inventorys(name: str, tmp_path: Path) -> None:
    (tmp_path / "retry.txt").write_text("p1\nb1\n\nny1\n", encoding="utf-8")
    path = str(HERE / name / "hosts.ini")
    ours = _outputs([_ours([path, "--list", "-l", p], tmp_path) for p in CASES[name]])
    theirs = []
    patterns = CASES[name]
    for start in range(0, len(patterns), 4):  # four ansible-inventory at a time (2 cores)
        batch = patterns[start : start + 4]
        procs = [_theirs(["-i", path, "--list", "--limit", p], tmp_path) for p in batch]
        theirs += _outputs(procs)
    for pattern, mine, real in zip(patterns, ours, theirs, strict=True):
        assert mine == real, pattern


def test_non_ascii_is_written_as_utf8_like_ansible_inventory(tmp_path: Path) -> None:
    path = str(HERE / "unicode" / "hosts.ini")
    for args in (["--list"], ["--graph"]):
        mine, real = _outputs(
            [_ours([path, *args], tmp_path), _theirs(["-i", path, *args], tmp_path)]
        )
        assert mine == real, args
        assert b"\\u" not in mine and any(b >= 0x80 for b in mine)


def test_340_nested_groups_list_and_graph_like_ansible(tmp_path: Path) -> None:
    lines = ["[g0]", "h0 note=tief"]
    for i in range(1, 340):
        lines += [f"[g{i}:children]", f"g{i - 1}"]
    inv = tmp_path / "deep.ini"
    inv.write_text("\n".join(lines) + "\n")
    for args in (["--list"], ["--graph"], ["--list", "-l", "g200"]):
        limit = ["--limit", args[2]] if len(args) > 1 else []
        mine, real = _outputs(
            [
                _ours([str(inv), *args], tmp_path),
                _theirs(["-i", str(inv), args[0], *limit], tmp_path),
            ]
        )
        assert mine == real, args
