"""Nothing lost (issue 13, items 1 and 2): interrupted writes leave the old file and no temp file.

Real sshd lab hosts; the link is cut by :class:`tests.lab.cutproxy.CutProxy` (a stand-in for a
dropped network) or by killing the controller (``provision apply``) with SIGKILL and SIGINT while
a large copy streams over an existing file.
"""

from __future__ import annotations

import glob
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from provision.audit import bundle, gather
from provision.audit.settings import AuditSettings
from provision.hostkeys import KnownHosts
from provision.modules import MODULES
from provision.modules.base import Context
from provision.ssh import ConnectError, SSHSession
from tests.lab.cutproxy import CutProxy
from tests.lab.sshd import LabHost, SshdLab


def _session(host: LabHost, tmp_path: Path, proxy: CutProxy | None = None) -> SSHSession:
    """An open session to ``host``, through ``proxy`` when given (its own known_hosts line)."""
    if proxy is None:
        spec, name = host.spec(), host.key_name
    else:
        spec, name = host.spec(**proxy.hostvars()), proxy.key_name
    known = tmp_path / "known_hosts"
    with open(known, "a") as fh:
        fh.write(f"{name} {host.host_key}\n")
    store = KnownHosts([str(known)], include_user=False)
    return SSHSession(spec, known_hosts=store, connect_timeout=5, command_timeout=60).open()


def _wait_gone(pattern: str, timeout: float = 15.0) -> list[str]:
    """Wait for the remote shell to finish with what it received; return leftovers."""
    deadline = time.monotonic() + timeout
    while glob.glob(pattern) and time.monotonic() < deadline:
        time.sleep(0.05)
    return glob.glob(pattern)


def _plan(module: str, args: dict, session: SSHSession):
    m = MODULES[module]
    ctx = Context()
    final = m.prepare(m.finalize(args), ctx)
    script = m.state_script(final, ctx)
    assert script is not None  # every module these tests cut reads the target's state first
    state = session.run(script).stdout
    return m.plan(final, state, ctx)


# -- item 1: writes --------------------------------------------------------------------------


def test_copy_cut_mid_transfer_leaves_the_old_file_and_no_temp(
    sshd_lab: SshdLab, tmp_path: Path
) -> None:
    host = sshd_lab.ok_hosts[0]
    dest = tmp_path / "data" / "big.bin"
    dest.parent.mkdir()
    old = b"old content\n" * 1000
    dest.write_bytes(old)
    new = os.urandom(8 << 20)
    with CutProxy((host.address, host.port)) as proxy:
        session = _session(host, tmp_path, proxy)
        try:
            plan = _plan("copy", {"dest": str(dest), "content": new.hex()}, session)
            (step,) = plan.steps
            proxy.cut_after = proxy.sent + (4 << 20)  # half of the 16 MB of hex text
            with pytest.raises(ConnectError):
                session.run(step.script, stdin=step.stdin)
        finally:
            session.close()
        assert proxy.cut.is_set()
    assert _wait_gone(str(dest.parent / ".provision.*")) == []
    assert dest.read_bytes() == old
    assert sorted(p.name for p in dest.parent.iterdir()) == ["big.bin"]


@pytest.mark.parametrize(
    ("module", "args", "old"),
    [
        (
            "json_merge",
            {"data": {"default-runtime": "nvidia", "log-driver": "json-file"}},
            b'{\n  "data-root": "/srv/docker"\n}\n',
        ),
        (
            "lineinfile",
            {"line": "PasswordAuthentication no", "regexp": "^#?PasswordAuthentication"},
            b"# site\n#PasswordAuthentication yes\nPort 22\n",
        ),
        ("copy", {"content": '{"log-opts": {"max-size": "10m"}}\n'}, b"{}\n"),
    ],
)
def test_small_write_cut_mid_line_leaves_the_old_file(
    sshd_lab: SshdLab, tmp_path: Path, module: str, args: dict, old: bytes
) -> None:
    """The connection ends stdin half-way through a small file (daemon.json cut mid-line): the
    script sees an early end of data, says so in one line and changes nothing."""
    host = sshd_lab.ok_hosts[0]
    dest = tmp_path / "etc" / "daemon.json"
    dest.parent.mkdir()
    dest.write_bytes(old)
    key = "path" if module in ("json_merge", "lineinfile") else "dest"
    with _session(host, tmp_path) as session:
        plan = _plan(module, {key: str(dest), **args}, session)
        (step,) = plan.steps
        assert step.stdin
        done = session.run(step.script, stdin=step.stdin[: len(step.stdin) // 2])
        assert done.exit_code == 1
        half = len(step.stdin) // 2
        assert done.stderr.strip() == (
            f"provision: {dest}: received {half} of {len(step.stdin)} bytes (connection cut?); "
            "left unchanged"
        )
        assert dest.read_bytes() == old
        assert sorted(p.name for p in dest.parent.iterdir()) == ["daemon.json"]
        full = session.run(step.script, stdin=step.stdin)  # the whole data: written
        assert full.exit_code == 0, full.stderr
        assert dest.read_bytes() == step.stdin


def test_put_cut_short_keeps_the_old_file(sshd_lab: SshdLab, tmp_path: Path) -> None:
    host = sshd_lab.ok_hosts[0]
    dest = tmp_path / "f"
    dest.write_bytes(b"before\n")
    with CutProxy((host.address, host.port)) as proxy:
        session = _session(host, tmp_path, proxy)
        try:
            proxy.cut_after = proxy.sent + (1 << 20)
            with pytest.raises(ConnectError):
                session.put(os.urandom(4 << 20), str(dest))
        finally:
            session.close()
    assert _wait_gone(str(tmp_path / ".f.provision-*")) == []
    assert dest.read_bytes() == b"before\n"


def _apply_cmd(inventory: str, playbook: str) -> list[str]:
    return [sys.executable, "-m", "provision", "apply", "-i", inventory, "-p", playbook]


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["SIGKILL", "SIGINT", "SIGTERM"]
)
def test_killing_apply_mid_copy_leaves_the_old_file(
    sshd_lab: SshdLab, tmp_path: Path, sig: signal.Signals
) -> None:
    host = sshd_lab.ok_hosts[1]
    target = tmp_path / "target"
    target.mkdir()
    dest = target / "big.bin"
    old = b"the old, complete file\n" * 4096
    dest.write_bytes(old)
    src = tmp_path / "files" / "big.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(96 << 20))
    playbook = tmp_path / "copy.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: big copy
              hosts: all
              gather_facts: false
              tasks:
                - name: copy a large file over an existing one
                  copy:
                    src: {src}
                    dest: {dest}
            """
        )
    )
    inventory = sshd_lab.write_inventory(str(tmp_path / "inv.ini"), [host])
    proc = subprocess.Popen(
        _apply_cmd(inventory, str(playbook)),
        env=sshd_lab.env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        partial: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            partial = [p for p in glob.glob(str(target / ".provision.*")) if _size(p) > 1 << 20]
            if partial:
                break
            time.sleep(0.01)
        assert partial and proc.poll() is None, "the copy never got under way"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        if sig == signal.SIGINT:  # Ctrl-C: one line and 130, as docs/cli.md says
            assert proc.returncode == 130
            assert err.decode().strip().splitlines()[-1] == "provision: interrupted"
            assert b"Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert _wait_gone(str(target / ".provision.*")) == []
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(old).digest()
    assert sorted(p.name for p in target.iterdir()) == ["big.bin"]


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# -- item 2: the audit's probe cache ---------------------------------------------------------


def test_probe_upload_cut_leaves_no_cached_probe(sshd_lab: SshdLab, tmp_path: Path) -> None:
    host = sshd_lab.ok_hosts[0]
    cache = tmp_path / "cache"
    data, sha = bundle.build()
    with CutProxy((host.address, host.port)) as proxy:
        session = _session(host, tmp_path, proxy)
        try:
            proxy.cut_after = proxy.sent + len(data) // 3
            with pytest.raises(ConnectError):
                session.run(
                    bundle.install_command(sha, len(data), ["x"], str(cache)),
                    stdin=data + os.urandom(1 << 20),  # keeps the link busy until the cut
                )
        finally:
            session.close()
    deadline = time.monotonic() + 5
    while not cache.exists() and time.monotonic() < deadline:  # the shell may not be there yet
        time.sleep(0.05)
    assert _wait_gone(str(cache / ".probe-*")) == []
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_poisoned_probe_cache_is_replaced_not_trusted(sshd_lab: SshdLab, tmp_path: Path) -> None:
    """A cached probe whose bytes do not hash to its name (an upload cut before this fix) is
    uploaded again and the audit works, instead of UNKNOWN forever."""
    host = sshd_lab.ok_hosts[0]
    cache = tmp_path / "cache"
    cache.mkdir()
    data, sha = bundle.build()
    cached = cache / f"probe-{sha}.pyz"
    cached.write_bytes(data[: len(data) // 2] + b"\0" * 100)
    settings = AuditSettings(cache_dir=str(cache))
    with _session(host, tmp_path) as session:
        first = session.run(bundle.run_command(sha, ["x"], str(cache)))
        assert first.stdout.strip() == bundle.NEED_MARKER
        facts = gather.gather(session, settings)
        assert isinstance(facts, dict) and facts
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha
        trips = session.round_trips
        gather.gather(session, settings)  # warm: the verified copy runs in one round trip
        assert session.round_trips == trips + 1
    assert glob.glob(str(cache / ".probe-*")) == []
