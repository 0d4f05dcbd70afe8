"""`provision audit` as a user runs it: the real CLI, real sshd hosts, an NVML stand-in per host."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from provision.audit.table import ANSI, visible_len
from tests.conftest import need
from tests.lab.sshd import SshdLab
from tests.standins import nvml
from tests.test_cli import FAST, REPO, cli


class CachedLab(SshdLab):
    """A lab whose audits share one probe cache folder (their audit_cache_dir)."""

    def __init__(self, cache: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.cache = cache


@pytest.fixture(scope="module")
def gpu_lab(tmp_path_factory) -> Iterator[CachedLab]:
    """lab01: two healthy GPUs; lab02: driver/library mismatch; plus a closed port."""
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc)")
    from tests.lab.fixtures import _need_lab

    _need_lab()
    tmp = tmp_path_factory.mktemp("gpu-lab")
    lib = nvml.build()
    scen = {
        "lab01": nvml.write_scenario(str(tmp / "healthy"), nvml.scenario("healthy")),
        "lab02": nvml.write_scenario(str(tmp / "mismatch"), nvml.scenario("mismatch")),
    }
    extra = {
        name: [f"SetEnv LD_LIBRARY_PATH={lib} NVML_STANDIN_SCENARIO={path}"]
        for name, path in scen.items()
    }
    lab = CachedLab(str(tmp / "probe-cache"), n=2, faults=["closed"], extra_config=extra)
    with lab:
        yield lab


def _inventory(lab: CachedLab, tmp_path, **extra: str) -> str:
    return lab.write_inventory(
        str(tmp_path / "hosts.ini"), extra_vars={"audit_cache_dir": lab.cache, **extra}
    )


def test_local_audit_json_matches_exit_code() -> None:
    r = cli("audit", "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1
    assert [h["host"] for h in doc["hosts"]] == ["localhost"]
    assert r.returncode == doc["summary"]["exit_code"]
    assert doc["hosts"][0]["facts"]["host"]["kernel"]


def test_table_json_csv_and_exit_codes(gpu_lab: CachedLab, tmp_path) -> None:
    inv = _inventory(gpu_lab, tmp_path)
    env = gpu_lab.env()

    table = cli("audit", inv, *FAST, env=env)
    assert table.returncode == 4, table.stderr  # an unreachable host: 4, as in ping/run/apply
    table_text = table.stdout.split("\n\n")[0]  # the problems follow the table after a blank line
    lines = {ln.split()[0]: ln for ln in table_text.splitlines() if ln.strip()}
    assert "2x RTX A6000" in lines["lab01"]
    assert "FAIL" in lines["lab02"] and "mismatch" in lines["lab02"]
    assert "UNREACH" in lines["fault-closed"], table.stdout
    assert max(len(ln) for ln in table.stdout.splitlines()) <= 100

    js = cli("audit", inv, *FAST, "--format", "json", env=env)
    doc = json.loads(js.stdout)
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert hosts["lab01"]["facts"]["nvidia"]["gpu_count"] == 2
    assert hosts["lab01"]["facts"]["nvidia"]["cuda_version"] == "12.4"
    mismatch = [c for c in hosts["lab02"]["checks"] if c["id"] == "driver.mismatch"]
    assert mismatch and mismatch[0]["status"] == "FAIL"
    assert hosts["fault-closed"]["status"] == "UNREACHABLE"
    assert hosts["lab01"]["address"].startswith("127.0.1.")  # where the audit connected
    assert {"all", "lab"} <= set(hosts["lab01"]["groups"])  # its inventory groups
    assert doc["generated_at"].endswith("Z") and doc["provision_version"]
    assert doc["summary"]["exit_code"] == js.returncode == 4
    assert {hosts[h]["round_trips"] for h in ("lab01", "lab02")} == {1}  # warm: probe cached

    rows = list(
        csv.DictReader(io.StringIO(cli("audit", inv, *FAST, "--format", "csv", env=env).stdout))
    )
    assert {r["host"] for r in rows} == {"fault-closed", "lab01", "lab02"}  # a row per check

    # --fail-on moves the bar; --output writes the report atomically, stdout stays empty
    out = tmp_path / "report.md"
    quiet = cli(
        "audit",
        inv,
        *FAST,
        "-l",
        "lab02",
        "--fail-on",
        "never",
        "--format",
        "markdown",
        "-o",
        str(out),
        env=env,
    )
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert "| lab02 |" in out.read_text().replace("  ", " ")
    failing = cli("audit", inv, *FAST, "-l", "lab02", env=env)
    assert failing.returncode == 2


def test_thresholds_from_inventory_and_flags(gpu_lab: CachedLab, tmp_path) -> None:
    inv = _inventory(gpu_lab, tmp_path, audit_expected_gpus="4", audit_min_drivr="550")
    r = cli("audit", inv, *FAST, "-l", "lab01", "--format", "json", env=gpu_lab.env())
    assert "unknown audit variable 'audit_min_drivr'" in r.stderr
    assert "audit_min_driver" in r.stderr  # the suggestion
    checks = {c["id"]: c for c in json.loads(r.stdout)["hosts"][0]["checks"]}
    assert checks["gpu.present"]["status"] == "FAIL"  # 2 GPUs, 4 expected
    assert "4" in checks["gpu.present"]["message"]
    # a flag overrides the inventory
    r = cli(
        "audit",
        inv,
        *FAST,
        "-l",
        "lab01",
        "--expect-gpus",
        "2",
        "--require-cuda",
        "12.8",
        "--format",
        "json",
        env=gpu_lab.env(),
    )
    checks = {c["id"]: c for c in json.loads(r.stdout)["hosts"][0]["checks"]}
    assert checks["gpu.present"]["status"] == "OK"
    assert (
        checks["cuda.required"]["status"] == "FAIL" and "12.8" in checks["cuda.required"]["message"]
    )


def test_bad_audit_variable_is_one_line(gpu_lab: CachedLab, tmp_path) -> None:
    inv = _inventory(gpu_lab, tmp_path, audit_expected_gpus="lots")
    r = cli("audit", inv, *FAST, env=gpu_lab.env())
    assert r.returncode == 5 and "Traceback" not in r.stderr  # 1 would read as "some WARN"
    assert "audit_expected_gpus" in r.stderr and r.stderr.count("\n") == 1


def test_version_thresholds_are_versions_with_file_line(tmp_path) -> None:
    """INI reads audit_min_driver=550.100 as the float 550.1: refused with file:line, as is junk
    in a flag; a quoted version is kept as written."""
    inv = tmp_path / "hosts.ini"
    inv.write_text("[gpu]\nws1 ansible_connection=local\n\n[gpu:vars]\naudit_min_driver=550.100\n")
    r = cli("audit", str(inv))
    assert r.returncode == 5 and "Traceback" not in r.stderr, r.stderr
    assert f"{inv}:5: audit_min_driver" in r.stderr and r.stderr.count("\n") == 1
    assert 'audit_min_driver="550.100"' in r.stderr
    r = cli("audit", "--min-driver", "abc")
    assert r.returncode == 5 and "--min-driver: audit_min_driver" in r.stderr
    assert "expected numbers and dots" in r.stderr and r.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def hung_lab(tmp_path_factory) -> Iterator[CachedLab]:
    """Issue 12's case: 6 good GPU hosts, a refused port and a host whose commands hang."""
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc)")
    from tests.lab.fixtures import _need_lab

    _need_lab()
    tmp = tmp_path_factory.mktemp("hung-lab")
    scen = nvml.write_scenario(str(tmp / "healthy"), nvml.scenario("healthy"))
    env = [f"SetEnv LD_LIBRARY_PATH={nvml.build()} NVML_STANDIN_SCENARIO={scen}"]
    extra = {f"lab{i:02d}": env for i in range(1, 7)}
    lab = CachedLab(str(tmp / "probe-cache"), n=6, faults=["closed", "hang"], extra_config=extra)
    with lab:
        yield lab


def test_hung_host_costs_its_budget_not_the_report(hung_lab: CachedLab, tmp_path) -> None:
    """With the default timeouts: under 30 s (it was 120 s), every good host fully reported,
    the hung one "timed out" with the step it was in."""
    import time

    inv = _inventory(hung_lab, tmp_path)
    start = time.monotonic()
    r = cli("audit", inv, "--format", "json", env=hung_lab.env())
    took = time.monotonic() - start
    assert took < 30, took
    hosts = {h["host"]: h for h in json.loads(r.stdout)["hosts"]}
    good = [h for h in hosts.values() if h["host"].startswith("lab")]
    assert len(good) == 6 and all(h["state"] == "ok" and h["facts"] for h in good)
    assert all(h["facts"]["nvidia"]["gpu_count"] == 2 for h in good)
    hung = hosts["fault-hang"]
    assert hung["state"] == "timed out" and hung["status"] == "UNREACHABLE"
    assert "audit budget of 20s spent in step: probe run" in hung["reason"]
    assert hosts["fault-closed"]["state"] == "unreachable"
    print(f"8-host audit with a hung host: {took:.1f}s")


def test_ctrl_c_prints_the_partial_report(hung_lab: CachedLab, tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.test_cli import REPO

    inv = _inventory(hung_lab, tmp_path)
    env = {**hung_lab.env(), "PYTHONPATH": REPO}
    proc = subprocess.Popen(
        [sys.executable, "-m", "provision", "audit", inv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(6)  # the good hosts answer within a few seconds; the hung one never does
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted: partial report" in err
    table = out.split("8 hosts:")[0]  # the table, before the summary line and the details
    # host rows only: not the "(left out at 80 columns: ...)" note that wide values bring
    rows = {
        line.split()[0]: line
        for line in table.splitlines()[2:]
        if line[:1].strip() and not line.startswith("(")
    }
    assert sorted(rows) == sorted(
        [f"lab{i:02d}" for i in range(1, 7)] + ["fault-closed", "fault-hang"]
    )
    assert all(rows[f"lab{i:02d}"].split()[1] in ("OK", "WARN", "FAIL") for i in range(1, 7))
    assert rows["fault-hang"].split()[1] == "UNKNOWN" and "interrupted" in out


def test_progress_line_names_the_hosts_still_running() -> None:
    from provision.cli import _Progress
    from provision.executor import HostOutcome, HostState
    from provision.output import Environment

    env = Environment(io.StringIO(), io.StringIO(), 100, False, False)
    progress = _Progress(["ws1", "ws2", "hung"], env)
    progress(HostOutcome("ws1", HostState.OK))
    assert progress.line(progress.started + 12) == "[1/3] running 12s: ws2, hung"
    progress(HostOutcome("ws2", HostState.OK))
    progress(HostOutcome("hung", HostState.TIMED_OUT))
    assert progress.line() == "[3/3]"


def _on_a_terminal(*args: str, **env: str) -> str:
    """Run the CLI with stdout on a pseudo-terminal, as a user at a shell sees it."""
    main, child = pty.openpty()
    inherited = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    full_env = {**inherited, "PYTHONPATH": REPO, **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "provision", *args],
        stdout=child,
        stderr=subprocess.DEVNULL,
        env=full_env,
        cwd=REPO,
    )
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(main)
    return out.decode().replace("\r\n", "\n")


def test_terminal_width_colour_and_no_color() -> None:
    """On a terminal: sized by COLUMNS, coloured, and NO_COLOR turns the colour off."""
    coloured = _on_a_terminal("audit", "--local", COLUMNS="80")
    assert "\033[" in coloured
    assert all(visible_len(ln) <= 80 for ln in coloured.splitlines())
    plain = _on_a_terminal("audit", "--local", COLUMNS="80", NO_COLOR="1")
    assert "\033[" not in plain
    assert ANSI.sub("", coloured).split("\n")[:2] == plain.split("\n")[:2]  # same layout
    forced = _on_a_terminal("audit", "--local", "--color", "always", NO_COLOR="1")
    assert "\033[" in forced  # an explicit flag beats the environment (no-color.org)
    wide = cli("audit", "--local", "--all", env={**os.environ, "COLUMNS": "200"})
    assert "OK " in wide.stdout and max(len(ln) for ln in wide.stdout.splitlines()) <= 200
