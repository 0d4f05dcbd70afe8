"""Adding a host to an INI inventory: one line more, every other byte as it was (pure)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.errors import InventoryError
from provision.inifile import HostEntry, Plan, plan_host, write_inventory
from provision.inventory import load_inventory

ORIGINAL = """\
# Lab workstations; keep this comment
[all:vars]
ansible_user=admin

[gpu]
ws01 ansible_host=10.0.0.1   # the old one
; a semicolon comment
ws02 ansible_host=10.0.0.2

# trailing comment of the group

[gpu:vars]
audit_expected_gpus=2

[cpu]
build1
"""


def _plan(tmp_path: Path, text: str, group: str, entry: HostEntry) -> tuple[Plan, Path]:
    path = tmp_path / "hosts.ini"
    path.write_bytes(text.encode())
    inv = load_inventory(str(path))
    return plan_host(inv, text, str(path), group, entry), path


def _without(text: str, line: str) -> str:
    lines = text.splitlines(keepends=True)
    assert sum(1 for x in lines if x.rstrip("\r\n") == line) == 1
    return "".join(x for x in lines if x.rstrip("\r\n") != line)


def test_adds_exactly_one_line_after_the_groups_last_host(tmp_path: Path) -> None:
    plan, path = _plan(tmp_path, ORIGINAL, "gpu", HostEntry("ws03", "10.0.0.3", 22, "fresh"))
    assert plan.line == "ws03 ansible_host=10.0.0.3 ansible_user=fresh"
    assert plan.text is not None
    assert _without(plan.text, plan.line) == ORIGINAL
    lines = plan.text.splitlines()
    assert lines[plan.lineno - 1] == plan.line
    assert lines[plan.lineno - 2] == "ws02 ansible_host=10.0.0.2"
    path.write_text(plan.text)
    inv = load_inventory(str(path))
    assert inv.groups["gpu"].hosts == ["ws01", "ws02", "ws03"]
    assert inv.hosts["ws03"].vars["ansible_user"] == "fresh"
    assert inv.hosts["ws03"].vars["audit_expected_gpus"] == 2


def test_leaves_out_what_the_host_inherits_or_its_name_says(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, ORIGINAL, "gpu", HostEntry("ws03", "ws03", 22, "admin"))
    assert plan.line == "ws03"
    plan, _ = _plan(tmp_path, ORIGINAL, "gpu", HostEntry("ws03", "ws03", 2222, "other"))
    assert plan.line == "ws03 ansible_port=2222 ansible_user=other"


def test_new_group_goes_at_the_end_and_crlf_is_kept(tmp_path: Path) -> None:
    crlf = ORIGINAL.replace("\n", "\r\n")
    plan, path = _plan(tmp_path, crlf, "new", HostEntry("n1", "10.0.9.1", 22, "admin"))
    assert plan.text == crlf + "\r\n[new]\r\nn1 ansible_host=10.0.9.1\r\n"
    path.write_bytes(plan.text.encode())
    assert load_inventory(str(path)).groups["new"].hosts == ["n1"]


def test_file_without_final_newline(tmp_path: Path) -> None:
    text = "[gpu]\nws01"
    plan, _ = _plan(tmp_path, text, "gpu", HostEntry("ws02", "ws02", 22, "u"))
    assert plan.text == "[gpu]\nws01\nws02 ansible_user=u\n"


def test_same_host_same_values_writes_nothing(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, ORIGINAL, "gpu", HostEntry("ws02", "10.0.0.2", 22, "admin"))
    assert plan.text is None
    assert plan.lineno == 8


def test_known_host_in_another_group_gets_its_bare_name(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, ORIGINAL, "cpu", HostEntry("ws02", "10.0.0.2", 22, "admin"))
    assert plan.line == "ws02"
    assert plan.text is not None
    assert _without(plan.text, "ws02") == ORIGINAL
    assert plan.text.endswith("[cpu]\nbuild1\nws02\n")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            HostEntry("ws02", "10.0.0.99", 22, "admin"),
            "hosts.ini:8: host ws02 is already in the inventory for 10.0.0.2:22, not 10.0.0.99:22",
        ),
        (
            HostEntry("ws02", "10.0.0.2", 22, "bob"),
            "hosts.ini:8: host ws02 is already in the inventory with ansible_user=admin, not bob",
        ),
        (
            HostEntry("other", "10.0.0.1", 22, "admin"),
            "hosts.ini:6: 10.0.0.1:22 is already in the inventory as host ws01",
        ),
    ],
)
def test_conflicts_are_one_line_with_file_and_line(
    tmp_path: Path, entry: HostEntry, message: str
) -> None:
    with pytest.raises(InventoryError) as err:
        _plan(tmp_path, ORIGINAL, "gpu", entry)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(
        str(tmp_path / message.split(":", 1)[0]) + ":" + message.split(":", 1)[1]
    )


def test_write_is_atomic_with_a_backup_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text(ORIGINAL)
    os.chmod(path, 0o640)
    backup = write_inventory(str(path), ORIGINAL + "x\n")
    assert backup is not None and Path(backup).read_text() == ORIGINAL
    assert path.read_text() == ORIGINAL + "x\n"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["hosts.ini", Path(backup).name])
