"""Shared test policy: under CI=true a missing prerequisite fails the test instead of skipping."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, why: str) -> None:
    """Skip locally when a prerequisite is missing; fail under CI, where it must be present."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI=true: {why}")
    pytest.skip(why)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root")


def need_binary(name: str, package: str) -> str:
    sbin = f"/usr/sbin/{name}"
    path = shutil.which(name) or (sbin if os.path.exists(sbin) else None)
    need(path is not None, f"needs `{name}` (Debian package {package})")
    assert path is not None
    return path


def venv_tool(name: str) -> str:
    """A console script of the environment the tests run in (ansible-inventory, ruff, mypy).

    Found beside sys.executable, not on PATH: the README's test command runs
    `.venv/bin/python -m pytest` without activating the venv, so its scripts are not on PATH.
    """
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{path} is missing: install the test extra (pip install -e '.[test]')"
    return str(path)


# The lab fixtures (sshd_lab, sshd_lab50, sshd_lab_factory, lab_home) for every test module.
from tests.lab.fixtures import *  # noqa: E402, F403
