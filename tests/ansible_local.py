"""One playbook run on this machine through a local connection, by the real ansible-playbook
(ansible-core, a test dependency) and by provision, so that tests can compare what each left.

The playbook and the inventory (``hosts.ini``, :func:`write_local_inventory`) live in the
test's ``tmp_path``; both tools run there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import venv_tool
from tests.test_cli import cli

ANSIBLE_ENV = {
    **os.environ,
    "ANSIBLE_DEPRECATION_WARNINGS": "False",
    "ANSIBLE_LOCALHOST_WARNING": "False",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_HOST_KEY_CHECKING": "False",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
}
LOCAL_INVENTORY = "hosts.ini"


def provision(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, run in ``cwd`` (where the playbook and its files are)."""
    return cli(*args, cwd=str(cwd), timeout=300)


def write_local_inventory(tmp_path: Path) -> Path:
    """``tmp_path/hosts.ini``: localhost over a local connection, with this interpreter."""
    inventory = tmp_path / LOCAL_INVENTORY
    inventory.write_text(
        f"[here]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    return inventory


def run_ansible_playbook_locally(
    tmp_path: Path, playbook: str, *extra_args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook -i hosts.ini PLAYBOOK EXTRA...`` in tmp_path (env: ANSIBLE_ENV unless
    given), which must succeed: its output is the assertion's message."""
    done = subprocess.run(
        [venv_tool("ansible-playbook"), "-i", LOCAL_INVENTORY, playbook, *extra_args],
        cwd=tmp_path,
        env=dict(ANSIBLE_ENV if env is None else env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def run_provision_locally(
    tmp_path: Path, playbook: str, *extra_args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``provision apply -i hosts.ini -p PLAYBOOK EXTRA...`` in tmp_path; the caller judges
    the result (a run may be meant to fail)."""
    args = ("apply", "-i", LOCAL_INVENTORY, "-p", playbook, *extra_args)
    if env is None:
        return provision(*args, cwd=tmp_path)
    return cli(*args, env=dict(env), cwd=str(tmp_path), timeout=300)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block under ``mask`` (the modes both tools leave depend on it), then restore."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every file and directory under root: (mode, content with root's path as OUT)."""
    out: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("*")):
        mode = oct(path.stat().st_mode & 0o7777)
        text = "" if path.is_dir() else path.read_text().replace(str(root), "OUT")
        out[str(path.relative_to(root))] = (mode, text)
    return out


def recap(stdout: str) -> dict[str, int]:
    line = next(x for x in stdout.splitlines() if " : ok=" in x)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
