"""Pytest fixtures for the light sshd lab.

Register them in ``tests/conftest.py`` (at its end) with ``from tests.lab.fixtures import *``.

Under ``CI=true`` a missing prerequisite (root, sshd, sudo) fails instead of skipping.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.lab.sshd import FAULT_KINDS, SshdLab

__all__ = ["lab_home", "sshd_lab", "sshd_lab50", "sshd_lab_factory"]


def _need_lab() -> None:
    # imported here: tests/conftest.py may itself import this module to register the fixtures
    from tests.conftest import need_binary, need_root

    need_root()
    need_binary("sshd", "openssh-server")


@pytest.fixture(scope="session")
def sshd_lab() -> Iterator[SshdLab]:
    """Three ordinary hosts (lab01-03) and every fault host (``fault-<kind>``)."""
    _need_lab()
    faults = [k for k in FAULT_KINDS if k != "sudo" or shutil.which("sudo")]
    with SshdLab(n=3, faults=faults) as lab:
        yield lab


@pytest.fixture(scope="module")
def sshd_lab50() -> Iterator[SshdLab]:
    """Fifty ordinary hosts, for scale tests."""
    _need_lab()
    with SshdLab(n=50, prefix="ws") as lab:
        yield lab


@pytest.fixture
def sshd_lab_factory() -> Iterator[Callable[..., SshdLab]]:
    """Start labs with custom options (``extra_config`` per host...); all stopped afterwards."""
    _need_lab()
    labs: list[SshdLab] = []

    def start(**kwargs: Any) -> SshdLab:
        lab = SshdLab(**kwargs).start()
        labs.append(lab)
        return lab

    yield start
    for lab in labs:
        lab.stop()


@pytest.fixture
def lab_home(sshd_lab: SshdLab, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``HOME`` at the lab's home: ``~/.ssh/known_hosts`` then knows every lab host."""
    monkeypatch.setenv("HOME", sshd_lab.home)
    return sshd_lab.home
