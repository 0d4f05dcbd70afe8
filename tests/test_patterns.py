"""--limit patterns against ansible-core's own InventoryManager (a test dependency).

Ansible is run once per inventory in a subprocess (importing it here would drag its global
state into the test process); it evaluates every pattern as ``--limit`` and we compare the
selected host sets. Our order is the inventory's file order (Ansible's own order walks groups
through a Python set, so it is not stable to compare against).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from provision.errors import PatternError
from provision.inventory import load_inventory
from provision.patterns import select_hosts, split_pattern

HERE = Path(__file__).parent / "inventories"

_REFERENCE = r"""
import json, sys
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
path, patterns = sys.argv[1], json.loads(sys.argv[2])
im = InventoryManager(loader=DataLoader(), sources=[path])
out = {}
for p in patterns:
    im.subset(p)
    out[p] = [h.name for h in im.get_hosts("all")]
    im.subset(None)
    im.clear_pattern_cache()
print(json.dumps(out))
"""

CASES = {
    "children": [
        "all",
        "*",
        "paris",
        "europe",
        "datacenter",
        "gpu:berlin",
        "gpu,berlin",
        "europe:&gpu",
        "datacenter:!paris",
        "monitored:&europe:!b1",
        "!paris",
        "&gpu",
        "p*",
        "~p[12]",
        "~(b|n)",
        "p1:ny1",
        "gpu[0]",
        "gpu[1:2]",
        "gpu[-1]",
        "*a*",
        "lonely:p1",
        "@retry.txt",
        "@retry.txt:!p1",
    ],
    "ranges": [
        "ws0[!4-9]",
        "ws*:&ws1?",
        "~ws(0[2-4]|1[12])",
        "node-[a-c]",
        "10.1.0.2",
        "10.1.0.*:s1",
        "multi:!rack1*",
        "letters,steps,&s*",
        "ported[1:]",
    ],
    "basic": ["ungrouped", "ungrouped:&alpha", "all:!ungrouped", "*a", "web[1]:db"],
    "unicode": ["münchen", "東京:!计算机", "rechner-*"],
}


@pytest.fixture(scope="module")
def retry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("limit")
    # As written by a retry file: one host per line, trailing newline; blank lines ignored.
    (d / "retry.txt").write_text("p1\nb1\n\nny1\n", encoding="utf-8")
    return d


def _reference(path: str, patterns: list[str], cwd: Path) -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _REFERENCE, path, json.dumps(patterns)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_patterns_match_ansible(name: str, retry_dir: Path) -> None:
    path = str(HERE / name / "hosts.ini")
    inv = load_inventory(path)
    expected = _reference(path, CASES[name], retry_dir)
    for pattern in CASES[name]:
        got = select_hosts(inv, pattern, base_dir=str(retry_dir))
        assert set(got) == set(expected[pattern]), pattern
        assert expected[pattern], f"fixture pattern {pattern!r} should select something"
        assert got == [h for h in inv.hosts if h in set(got)], f"{pattern}: not in file order"
        assert len(got) == len(set(got)), pattern


def test_order_is_file_order_not_pattern_order() -> None:
    inv = load_inventory(str(HERE / "basic" / "hosts.ini"))
    assert select_hosts(inv, "db:web:alpha") == ["alpha", "web1", "web2", "db1"]
    assert select_hosts(inv, None) == list(inv.hosts)


def test_unknown_name_is_an_error_with_near_matches() -> None:
    inv = load_inventory(str(HERE / "basic" / "hosts.ini"))
    with pytest.raises(PatternError) as info:
        select_hosts(inv, "web:wbe1")
    assert "'wbe1'" in str(info.value) and "web1" in str(info.value)
    with pytest.raises(PatternError, match="'nomatch\\*'"):
        select_hosts(inv, "nomatch*")
    # an empty group is known: no error, just nothing from it
    assert select_hosts(inv, "empty:alpha") == ["alpha"]


def test_limit_file_errors(tmp_path: Path) -> None:
    inv = load_inventory(str(HERE / "basic" / "hosts.ini"))
    with pytest.raises(PatternError, match="not found"):
        select_hosts(inv, "@missing.retry", base_dir=str(tmp_path))
    with pytest.raises(PatternError, match="not a directory"):
        select_hosts(inv, f"@{tmp_path.name}", base_dir=str(tmp_path.parent))


def test_bad_regex_and_subscript() -> None:
    inv = load_inventory(str(HERE / "basic" / "hosts.ini"))
    with pytest.raises(PatternError, match="invalid host pattern"):
        select_hosts(inv, "~web(")
    with pytest.raises(PatternError, match="subscripted"):
        select_hosts(inv, "web[5]")


@pytest.mark.parametrize(
    ("pattern", "parts"),
    [
        ("a:b", ["a", "b"]),
        ("a, b ,c", ["a", "b", "c"]),
        ("a:&b:!c", ["a", "&b", "!c"]),
        ("ws[01:03]", ["ws[01:03]"]),
        ("web[0:2]:db", ["web[0:2]", "db"]),
        ("fe80::1", ["fe80::1"]),
        ("host:22", ["host:22"]),
    ],
)
def test_split_pattern(pattern: str, parts: list[str]) -> None:
    assert split_pattern(pattern) == parts
