"""The audit's structure (issue 12 section 5): one facts schema both producers fill, one
registered check per concern, settings declared once.

The probe (NVML, through the stand-in library) and the nvidia-smi fallback (on every real
capture) are held to provision/audit/schema.py; every registered check's facts and settings
are held to the schema and the declared settings; a new check is one registration.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_origin, get_type_hints, is_typeddict

import pytest

from provision.audit import bundle, fallback, gather, schema
from provision.audit.checks import REGISTRY, CheckResult, Status, check, run_checks
from provision.audit.settings import SETTINGS, VARIABLES, AuditSettings
from tests.conftest import need
from tests.standins import nvml

REAL = Path(__file__).parent / "data" / "nvidia-smi-real"
DOCS = Path(__file__).parent.parent / "docs" / "audit.md"
# Settings read outside the checks: by gather and the probe on the host.
PROBE_SETTINGS = {"audit_disk_paths", "audit_probe_timeout", "audit_cache_dir"}


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> str:
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc) for the NVML stand-in")
    data, _ = bundle.build()
    path = tmp_path_factory.mktemp("probe") / "probe.pyz"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    "kind", ["healthy", "no_driver", "no_gpu", "mismatch", "lost_gpu", "unsupported", "inforom"]
)
def test_probe_fills_the_schema(pyz: str, tmp_path: Path, kind: str) -> None:
    lib = nvml.build()
    scenario = nvml.write_scenario(str(tmp_path / kind), nvml.scenario(kind))
    start, end, _ = gather.markers()
    proc = subprocess.run(
        [sys.executable, pyz, start, end, *bundle.config_words([str(tmp_path)], ["x:1"], 5)],
        env=nvml.env_for(lib, scenario),
        capture_output=True,
        text=True,
        timeout=60,
    )
    facts = gather.extract(proc.stdout, start, end)
    assert schema.problems(facts) == []


def test_local_audit_fills_the_schema() -> None:
    facts = gather.audit_local(AuditSettings())
    assert schema.problems(facts) == []


def _fallback_cases() -> list[tuple[str, dict]]:
    cases = []
    for query in sorted((REAL / "utkuozdemir").glob("*.query-gpu.csv")):
        prefix = str(query)[: -len(".query-gpu.csv")]
        sections = {
            "pci": (0, "0000:01:00.0 0x2684 nvidia"),
            "smi_query": (0, query.read_text()),
            "smi_table": (0, Path(prefix + ".table.txt").read_text()),
            "smi_apps": (0, Path(prefix + ".apps.csv").read_text()),
            "df": (
                0,
                "Filesystem 1-blocks Used Available Capacity Mounted on\n/dev/x 10 5 5 50% /",
            ),
        }
        cases.append((query.name, sections))
    for error in sorted((REAL / "errors").iterdir()):
        cases.append((error.name, {"smi_query": (9, error.read_text())}))
    return cases


@pytest.mark.parametrize(("name", "sections"), _fallback_cases(), ids=lambda v: str(v)[:40])
def test_fallback_fills_the_schema(name: str, sections: dict) -> None:
    facts = fallback.facts_from_sections(sections, [])
    assert schema.problems(facts) == [], name


def test_schema_names_what_is_wrong() -> None:
    facts = fallback.facts_from_sections(_fallback_cases()[0][1], [])
    facts["nvidia"]["gpus"][0]["temperature"] = 40  # a key nobody declared
    facts["nvidia"]["gpu_count"] = "1"
    del facts["host"]
    assert schema.problems(facts) == [
        "facts.host: missing",
        "facts.nvidia.gpu_count: expected int, got '1'",
        "facts.nvidia.gpus[0].temperature: not in the schema",
    ]


def _unwrap(hint: object) -> object:
    """X | None -> X, list[X] -> X, dict[str, X] -> X, down to a TypedDict or a plain type."""
    while not is_typeddict(hint) and get_origin(hint) is not None:
        hint = [a for a in get_args(hint) if a is not type(None)][-1]
    return hint


def _schema_has(path: str) -> bool:
    """Whether a dotted facts path ("nvidia.gpus[].lost") is declared in the schema."""
    hint: object = schema.Facts
    for part in path.split("."):
        hint = _unwrap(hint)
        name = part.removesuffix("[]")
        if not is_typeddict(hint) or name not in get_type_hints(hint):
            return False
        hint = get_type_hints(hint)[name]
    return True


def test_every_check_reads_declared_facts_and_settings() -> None:
    ids = [c.id for c in REGISTRY]
    assert len(ids) == len(set(ids))
    for registered in REGISTRY:
        for path in registered.reads:
            assert _schema_has(path), (registered.id, path)
        for variable in registered.settings:
            assert variable in VARIABLES, (registered.id, variable)
    read = {v for c in REGISTRY for v in c.settings} | PROBE_SETTINGS
    assert read == set(VARIABLES)  # no declared setting is read by nothing


def test_settings_are_declared_once_and_documented() -> None:
    table = DOCS.read_text()
    for f in SETTINGS:
        default = f.default
        shown = "none" if default in (None, ()) else f"{default:g}"
        row = re.search(rf"^\| `{f.metadata['variable']}` \| ([^|]+) \|", table, re.M)
        assert row, f.metadata["variable"]
        assert row.group(1).strip() in (shown, "`~/.cache/provision`"), f.metadata["variable"]


def test_a_new_check_is_one_registration() -> None:
    @check("test.example", reads=("host.kernel",))
    def example(ctx) -> list[CheckResult]:
        return [CheckResult("test.example", Status.WARN, f"kernel {ctx.host.get('kernel')}")]

    try:
        facts = fallback.facts_from_sections({"kernel": (0, "6.1.0-18-amd64")}, [])
        (found,) = [c for c in run_checks(facts, AuditSettings()) if c.id == "test.example"]
        assert found.message == "kernel 6.1.0-18-amd64"
        with pytest.raises(ValueError, match="registered twice"):
            check("test.example", reads=())(example)
    finally:
        REGISTRY.remove(next(c for c in REGISTRY if c.id == "test.example"))


def test_checks_stay_small() -> None:
    """Each check a short function: mccabe complexity at most 8 (was 20 in the old _gpus)."""
    ruff = Path(sys.executable).with_name("ruff")
    need(ruff.exists(), "needs ruff beside the interpreter (the test extra)")
    done = subprocess.run(
        [str(ruff), "check", "--no-cache", "--select", "C901",
         "--config", "lint.mccabe.max-complexity=8", "provision/audit/checks"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout


def test_the_audit_starts_without_the_playbook_modules() -> None:
    """`provision audit` imports what an audit runs: not the playbook modules' registry
    (provision.modules, ~150 ms of every audit's start-up, once pulled in for four package
    names) nor tabulate (only the Markdown format uses it)."""
    code = (
        "import sys, provision.cli, provision.audit; "
        "print(sorted(m for m in sys.modules if m.startswith('provision.modules') "
        "or m == 'tabulate'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
