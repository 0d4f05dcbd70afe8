"""What every benchmark here shares: timing a tool's process tree, tool inventories, the table.

Each workload alternates the tools inside every repetition so that machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from tabulate import tabulate

from bench import floor
from tests.lab.sshd import SshdLab

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


@dataclass
class Sample:
    tool: str
    wall: float
    cpu: float
    maxrss_mb: float
    rc: int
    ok: bool  # the exit code was one the tool gives on success (audit grades exit 0-3)
    # From the daemons' logs during this run, median over the hosts (-1: not counted).
    conns_per_host: float = -1
    sessions_per_host: float = -1
    output: str = ""  # the tool's stdout+stderr (dropped from the JSON)
    capped: bool = False  # stopped at the time cap: wall and CPU are lower bounds
    host_cpu: float = -1  # seconds of CPU the lab's hosts used during the run (-1: not measured)


class SshdLogs:
    """Counts what each lab daemon logged since the last mark, at LogLevel VERBOSE.

    ``Accepted publickey`` is one SSH connection; ``Starting session:`` is one exec (or
    subsystem) channel, i.e. one remote command: a round trip as the daemon sees it.
    """

    def __init__(self, lab: SshdLab) -> None:
        self.paths = {h.name: os.path.join(h.dir, "sshd.log") for h in lab.ok_hosts}
        self.offsets: dict[str, int] = {}
        self.mark()

    def mark(self) -> None:
        self.offsets = {name: _size(path) for name, path in self.paths.items()}

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per host: (connections, sessions) logged since :meth:`mark`."""
        out = {}
        for name, path in self.paths.items():
            try:
                with open(path, "rb") as fh:
                    fh.seek(self.offsets.get(name, 0))
                    text = fh.read().decode(errors="replace")
            except OSError:
                text = ""
            out[name] = (text.count("Accepted publickey"), text.count("Starting session:"))
        return out


class HostCpu:
    """CPU time the lab's hosts spend: every host's sshd, and so every session, shell and
    command it forks, in one cgroup of its own, read at microsecond precision.

    The lab's hosts share this machine's cores with the tool measured, so a tool's wall time
    carries its hosts' CPU as well as its own; this says how much of it each tool made the
    hosts spend (on a real host, its own CPU: latency rather than contention). Unmeasured
    (``read`` gives None) where no cgroup can be made: cgroup v2 (``cpu.stat``'s
    ``usage_usec``) first, then v1's cpuacct (``cpuacct.usage``, nanoseconds).
    """

    CANDIDATES = (
        ("/sys/fs/cgroup", "cpu.stat"),  # cgroup v2 alone
        ("/sys/fs/cgroup/unified", "cpu.stat"),  # systemd's hybrid layout
        ("/sys/fs/cgroup/cpuacct", "cpuacct.usage"),  # cgroup v1
    )
    PREFIX = "provision-bench-"  # then the lab's id: one cgroup per lab

    def __init__(self, lab: SshdLab) -> None:
        self.daemons = [_read_pid(os.path.join(h.dir, "sshd.pid")) for h in lab.ok_hosts]
        self.folder, self.counter = self._make(f"{self.PREFIX}{lab.id}")

    def _make(self, name: str) -> tuple[str | None, str]:
        for root, counter in self.CANDIDATES:
            if not os.path.exists(os.path.join(root, "cgroup.procs")):
                continue  # not a cgroup hierarchy here (the hybrid layout's tmpfs, say)
            for old in os.listdir(root):
                if old.startswith(self.PREFIX):  # an earlier lab's, left when a session outlived
                    with contextlib.suppress(OSError):  # its daemon; gone once it is empty
                        os.rmdir(os.path.join(root, old))
            folder = os.path.join(root, name)
            try:
                os.mkdir(folder)
                for pid in self.daemons:
                    with open(os.path.join(folder, "cgroup.procs"), "w") as fh:
                        fh.write(str(pid))
                if self._usage(folder, counter) is not None:
                    return folder, counter
            except OSError:
                pass
            self._remove(folder)
        return None, ""

    @staticmethod
    def _usage(folder: str, counter: str) -> float | None:
        try:
            with open(os.path.join(folder, counter)) as fh:
                text = fh.read()
        except OSError:
            return None
        if counter == "cpuacct.usage":
            return int(text) / 1e9
        fields = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
        return int(fields["usage_usec"]) / 1e6 if "usage_usec" in fields else None

    def read(self) -> float | None:
        """Seconds of CPU the hosts have used since the cgroup was made; first waits (up to
        2 s) for the sessions of a run that just ended to exit, so that none is cut short."""
        if self.folder is None:
            return None
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and len(self._members()) > len(self.daemons):
            time.sleep(0.01)
        return self._usage(self.folder, self.counter)

    def _members(self) -> list[str]:
        try:
            with open(os.path.join(str(self.folder), "cgroup.procs")) as fh:
                return fh.read().split()
        except OSError:
            return []

    def close(self) -> None:
        """Remove the cgroup (its daemons have been stopped by then)."""
        if self.folder is not None:
            self._remove(self.folder)
            self.folder = None

    @staticmethod
    def _remove(folder: str) -> None:
        deadline = time.monotonic() + 5.0
        while os.path.isdir(folder):
            try:
                os.rmdir(folder)
            except OSError:
                if time.monotonic() > deadline:
                    return  # a straggler still inside: an empty cgroup left behind, harmless
                time.sleep(0.05)


def _read_pid(path: str) -> int:
    with open(path) as fh:
        return int(fh.read().strip())


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def measure(
    tool: str,
    argv: list[str],
    env: dict[str, str],
    ok_codes: tuple[int, ...] = (0,),
    logs: SshdLogs | None = None,
    cap: float | None = None,
    host_cpu: HostCpu | None = None,
) -> Sample:
    """Run one command; wall time, and CPU of it and every descendant it waited for (wait4).
    ``cap``: seconds after which the whole process group is killed (the sample says so);
    ``host_cpu``: also the CPU the lab's hosts spent meanwhile."""
    if logs is not None:
        logs.mark()
    hosts_before = host_cpu.read() if host_cpu is not None else None
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(cap, stop) if cap is not None else None
    if timer is not None:
        timer.start()
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if timer is not None:
        timer.cancel()
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    if fired.is_set():
        print(f"warning: {tool} stopped at the {cap:g} s cap", file=sys.stderr)
    elif rc not in ok_codes:
        bad = [ln for ln in out.splitlines() if any(w in ln for w in ("FAIL", "UNREACH", "rror"))]
        print(
            f"warning: {tool} exited {rc}: " + "\n  ".join(bad[:6] or [out[-300:]]), file=sys.stderr
        )
    cpu = usage.ru_utime + usage.ru_stime
    ok = rc in ok_codes and not fired.is_set()
    sample = Sample(tool, wall, cpu, usage.ru_maxrss / 1024, rc, ok, output=out)
    sample.capped = fired.is_set()
    hosts_after = host_cpu.read() if host_cpu is not None else None
    if hosts_before is not None and hosts_after is not None:
        sample.host_cpu = hosts_after - hosts_before
    if logs is not None:
        counts = list(logs.counts().values())
        if counts:
            sample.conns_per_host = statistics.median(c for c, _ in counts)
            sample.sessions_per_host = statistics.median(s for _, s in counts)
    return sample


def compile_package(folder: str) -> None:
    """Write the bytecode of the ``provision`` package under ``folder``, as ``pip install``
    does for every tool measured here. An editable checkout run with PYTHONDONTWRITEBYTECODE
    set (this machine's environment sets it) compiles every module on every run instead:
    ~0.1 s of each provision run's controller CPU that no installed copy pays."""
    compileall.compile_dir(os.path.join(folder, "provision"), quiet=1)


def tool_env(lab: SshdLab, tmp: str) -> dict[str, str]:
    """One environment for all tools: the lab's known_hosts, Ansible tuned (pipelining on)."""
    return {
        **lab.env(),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_LOCAL_TEMP": os.path.join(tmp, "ansible-tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(tmp, "cp"),
        "ANSIBLE_NOCOLOR": "1",
        "PYINFRA_PROGRESS": "off",
        "PYTHONPATH": REPO,
    }


def pyinfra_inventory(lab: SshdLab, path: str, extra: dict[str, str] | None = None) -> str:
    """The lab as a pyinfra inventory, with the same keys and strict host key checking, and
    ``extra`` (the INI inventory's ``[all:vars]``) as host data."""
    lines = ["hosts = ["]
    for host in lab.hosts:
        v = host.hostvars()
        data = {
            "ssh_hostname": v["ansible_host"],
            "ssh_port": v["ansible_port"],
            "ssh_user": v["ansible_user"],
            "ssh_key": v["ansible_ssh_private_key_file"],
            "ssh_known_hosts_file": lab.known_hosts,
            "ssh_strict_host_key_checking": "yes",
            **(extra or {}),
        }
        lines.append(f"    ({host.name!r}, {data!r}),")
    lines.append("]")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def which(name: str) -> str | None:
    """A tool beside this Python first (a venv), then on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    return local if os.path.exists(local) else shutil.which(name)


def _median_or_none(values: list[float]) -> float | None:
    values = [v for v in values if v >= 0]
    return statistics.median(values) if values else None


def _per_host_ms(seconds: list[float], hosts: int) -> float | None:
    """The median of measured seconds (-1: not measured) as ms per host; None if none was."""
    median = _median_or_none(seconds)
    return None if median is None else median * 1000 / hosts


def _ms_or_dash(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.1f}"


def pick(cmds: dict[str, Any], only: tuple[str, ...]) -> dict[str, Any]:
    """The tools whose names start with one of ``only`` (all when empty); provision and the
    floors always."""
    if not only:
        return cmds
    return {k: v for k, v in cmds.items() if k.startswith(("provision", "floor", *only))}


FLOOR = "floor: paramiko, 1 command"  # bench/floor.py: the row every table reads as its limit


def floor_tool(p: Prepared, name: str = FLOOR, command: str | None = None) -> dict[str, list[str]]:
    """The floor's command line on the prepared lab (one connection and command per host);
    ``command`` in place of the floor's own (bench.floor.COMMAND), as the row ``name``."""
    argv = [sys.executable, "-m", "bench.floor", p.floor_hosts, p.lab.known_hosts]
    return {name: argv + ([command] if command is not None else [])}


def result_rows(tools: dict[str, dict[str, Any]], last: str = "ok") -> list[list[str]]:
    """Table rows from per-tool medians (as saved in the JSON), ratios against the first tool
    (provision) and the wall time against the floor (:data:`FLOOR`, "-" in results saved before
    it was measured); the last column is ``ok`` (every run reported no change / succeeded) or
    ``runs`` (how many runs the medians are of). A tool stopped at the time cap shows its
    figures as lower bounds ("> ")."""
    base = next(iter(tools.values()))
    floor = tools.get(FLOOR)
    rows = []
    for tool, t in tools.items():
        conns, sessions = t.get("ssh_connections_per_host"), t.get("sessions_per_host")
        tail = ("yes" if t["all_ok"] else "NO") if last == "ok" else str(len(t["samples"]))
        at_least = "> " if t.get("capped") else ""
        rows.append(
            [
                f"{tool} (capped)" if at_least else tool,
                f"{at_least}{t['wall_s']:.2f}",
                "-" if floor is None else f"{at_least}{t['wall_s'] / floor['wall_s']:.2f}x",
                f"{at_least}{t['wall_s'] / base['wall_s']:.1f}x",
                f"{at_least}{t['cpu_s']:.2f}",
                f"{at_least}{t['cpu_s'] / base['cpu_s']:.1f}x",
                f"{at_least}{t['cpu_ms_per_host']:.1f}",
                f"{at_least}{t['cpu_ms_per_host_task']:.2f}"
                if "cpu_ms_per_host_task" in t
                else "-",
                _ms_or_dash(t.get("host_cpu_ms_per_host")),
                f"{t['peak_rss_mb']:.0f}",
                "-" if conns is None else f"{conns:g}",
                "-" if sessions is None else f"{sessions:g}",
                tail,
            ]
        )
    return rows


ROW_HEADERS = ["tool", "wall s", "vs floor", "vs provision", "CPU s", "vs provision"]
ROW_HEADERS += ["CPU ms/host", "CPU ms/host-task"]
ROW_HEADERS += ["hosts' CPU ms/host", "peak RSS MB", "SSH conns/host", "sessions/host"]


def report(
    samples: list[Sample], hosts: int, extra: dict[str, Any], tablefmt: str = "simple"
) -> tuple[str, dict[str, Any]]:
    """Median per tool, ratios against the first tool (provision), as a table and as JSON."""
    result: dict[str, Any] = {"hosts": hosts, **extra, "tools": {}}
    for tool in dict.fromkeys(s.tool for s in samples):
        mine = [s for s in samples if s.tool == tool]
        cpu = statistics.median(s.cpu for s in mine)
        result["tools"][tool] = {
            "wall_s": statistics.median(s.wall for s in mine),
            "cpu_s": cpu,
            "cpu_ms_per_host": cpu * 1000 / hosts,
            "peak_rss_mb": max(s.maxrss_mb for s in mine),
            "host_cpu_ms_per_host": _per_host_ms([s.host_cpu for s in mine], hosts),
            "ssh_connections_per_host": _median_or_none([s.conns_per_host for s in mine]),
            "sessions_per_host": _median_or_none([s.sessions_per_host for s in mine]),
            "all_ok": all(s.ok for s in mine),
            "capped": any(s.capped for s in mine),
            "samples": [{k: v for k, v in asdict(s).items() if k != "output"} for s in mine],
        }
        if "tasks_per_host" in extra:  # the CPU budget is 20 ms/host + 2 ms/host-task
            ms = cpu * 1000 / hosts / extra["tasks_per_host"]
            result["tools"][tool]["cpu_ms_per_host_task"] = ms
    table = tabulate(
        result_rows(result["tools"], "ok"),
        headers=[*ROW_HEADERS, "all ok"],
        disable_numparse=True,
        tablefmt=tablefmt,
    )
    return table, result


def parse_args(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The options every benchmark takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    return ap.parse_args(argv)


@dataclass
class Prepared:
    lab: SshdLab
    inventory: str  # INI, for provision and Ansible
    py_inventory: str  # the same hosts for pyinfra
    env: dict[str, str]
    tmp: str
    logs: SshdLogs
    floor_hosts: str  # the host list of bench/floor.py
    host_cpu: HostCpu | None = None  # the CPU the hosts spend, where a cgroup could be made
    ansible_cap: float | None = None  # seconds: Ansible's runs are stopped there (slowest tool)
    capped: set[str] = field(default_factory=set)  # tools stopped at the cap: not run again

    def cap_for(self, tool: str) -> float | None:
        return self.ansible_cap if tool.startswith("ansible") else None

    def timed(
        self, tool: str, argv: list[str], env: dict[str, str], ok_codes: tuple[int, ...] = (0,)
    ) -> Sample | None:
        """One measured run (connections and sessions counted), None for a tool that hit the
        cap before: a second run would only hit it again."""
        if tool in self.capped:
            return None
        sample = measure(tool, argv, env, ok_codes, self.logs, self.cap_for(tool), self.host_cpu)
        if sample.capped:
            self.capped.add(tool)
        return sample

    def ansible_defaults_env(self) -> dict[str, str]:
        """The environment with Ansible left at its defaults (no pipelining)."""
        return {k: v for k, v in self.env.items() if k != "ANSIBLE_PIPELINING"}


def workstation_apt(tmp: str) -> str:
    """An APT_CONFIG file that turns apt's binary package cache back on; returns its path.

    This machine's Docker-style apt config (``docker-clean``: ``Dir::Cache::pkgcache ""``) makes
    every apt query rebuild the cache from the lists, about a second each, which a workstation
    never pays. The lab sessions get this file for every tool alike: the same parts minus
    docker-clean, the caches under ``tmp``. Built once here so that no run pays for it.
    """
    root = os.path.join(tmp, "apt")
    parts = os.path.join(root, "apt.conf.d")
    os.makedirs(parts)
    src = "/etc/apt/apt.conf.d"
    for name in sorted(os.listdir(src)) if os.path.isdir(src) else []:
        if name != "docker-clean" and os.path.isfile(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), parts)
    conf = os.path.join(root, "apt.conf")
    with open(conf, "w") as fh:
        fh.write(
            f'Dir::Etc::parts "{parts}";\n'
            f'Dir::Cache::pkgcache "{root}/pkgcache.bin";\n'
            f'Dir::Cache::srcpkgcache "{root}/srcpkgcache.bin";\n'
        )
    if shutil.which("apt-cache"):
        subprocess.run(
            ["apt-cache", "policy", "bash"],
            env={**os.environ, "APT_CONFIG": conf},
            capture_output=True,
            check=False,
        )
    return conf


@contextmanager
def prepared_lab(hosts: int, extra_vars: dict[str, str] | None = None) -> Iterator[Prepared]:
    """N sshd hosts (logging at VERBOSE, so connections and sessions can be counted; apt as on
    a workstation, see :func:`workstation_apt`) with an inventory for each tool, carrying the
    same ``extra_vars``, and one environment for all."""
    compile_package(REPO)
    with tempfile.TemporaryDirectory() as tmp:
        config = ["LogLevel VERBOSE", f"SetEnv APT_CONFIG={workstation_apt(tmp)}"]
        # 100 daemons starting on two cores shared with other work need more than the lab's
        # default 20 s to all write their pid files
        wait = 20.0 + 0.5 * hosts
        host_cpu = None
        try:
            with SshdLab(
                n=hosts, prefix="ws", extra_config={"*": config}, start_timeout=wait
            ) as lab:
                vars_ = {k: v.format(tmp=tmp) for k, v in (extra_vars or {}).items()}
                host_cpu = HostCpu(lab)
                yield Prepared(
                    lab,
                    lab.write_inventory(os.path.join(tmp, "hosts.ini"), extra_vars=vars_),
                    pyinfra_inventory(lab, os.path.join(tmp, "pyinfra_inventory.py"), vars_),
                    tool_env(lab, tmp),
                    tmp,
                    SshdLogs(lab),
                    floor.write_hosts(lab, os.path.join(tmp, "floor_hosts.json")),
                    host_cpu,
                )
        finally:
            if host_cpu is not None:
                host_cpu.close()  # after the lab's exit: its daemons are gone by then


def save(result: dict[str, Any], out: str, name: str) -> str:
    """The JSON of one benchmark run under ``out``; returns its path."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)
    return path
