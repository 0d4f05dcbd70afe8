"""The package as `pip install .` ships it (README's first command), not as the checkout has it.

An editable install reads the checkout, so a package missing from pyproject's explicit list
(``provision.audit.checks`` once was) passes every other test and breaks `provision audit` for a
user. Here the wheel is built, installed into a folder of its own and run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _build_wheel(out: Path) -> Path:
    # From a copy of what the sdist holds: an in-tree build reuses a stale build/ folder, which
    # can still hold a package that pyproject no longer lists.
    source = out / "source"
    for folder in ("provision", "playbooks"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("provision-*.whl")
    return wheel


def test_the_wheel_holds_every_module_and_playbook(tmp_path: Path) -> None:
    names = set(zipfile.ZipFile(_build_wheel(tmp_path)).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "provision").rglob("*.py")}
    missing = sorted(s for s in sources if s not in names)
    assert missing == [], f"left out of the wheel: {missing} (pyproject [tool.setuptools] packages)"
    playbooks = {f"provision/playbooks/{p.name}" for p in (ROOT / "playbooks").glob("*.yml")}
    assert playbooks and playbooks <= names


def test_an_installed_copy_audits_this_machine(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "wheel")
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import provision; print(provision.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(target)), (
        where.stdout
    )  # the installed copy, not the checkout
    audit = subprocess.run(
        [sys.executable, "-m", "provision", "audit", "--local", "--format", "json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert audit.returncode in (0, 1, 2, 3), audit.stderr  # a grade, not a crash or bad input
    report = json.loads(audit.stdout)
    assert [h["host"] for h in report["hosts"]] == ["localhost"], report
    assert "Traceback" not in audit.stderr
