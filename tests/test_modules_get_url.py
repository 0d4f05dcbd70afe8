"""get_url (issue 14 item 2): a download made on the host with curl, wget or python3, checked
against its checksum in a temp file, then renamed into place; idempotent as Ansible's.

A real HTTP server on loopback (python's http.server in a thread: the real protocol) serves the
files, asks for basic authentication and a header; the module's download scripts run for real
with each of the three tools, and the same playbook is run by the real ansible-playbook and by
provision, compared.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.modules import MODULES
from provision.modules.base import ArgError, Context, ModuleError, Plan
from provision.modules.get_url import UNCHANGED, mask_url
from tests.ansible_local import (
    run_ansible_playbook_locally,
    run_provision_locally,
    write_local_inventory,
)
from tests.conftest import need_binary, need_root
from tests.lab.booted import (
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
    write_inventory,
    write_known_hosts,
)
from tests.test_ansible_names import recap

CTX = Context()
BODY = b"the payload\n" * 100
SHA = hashlib.sha256(BODY).hexdigest()
USER, PASSWORD, TOKEN = "lab", "s3cret-pw", "tok-123"


def plan(args: dict, state: str | None) -> Plan:
    m = MODULES["get_url"]
    return m.plan(m.prepare(m.finalize(args), CTX), state, CTX)


def probe(kind: str = "absent", sha: str = "", mode: str = "644", tool: str = "curl") -> str:
    """What the state read prints for ``dest`` (and nothing inside it)."""
    lines = ["@@get_url", f"downloader={tool}", "@@dest", f"type={kind}"]
    if kind == "file":
        lines += ["owner=root", "uid=0", "group=root", "gid=0", f"mode={mode}", f"sha256={sha}  -"]
    return "\n".join([*lines, "@@indir", "type=absent"])


ARGS = {"url": "http://127.0.0.1:1/f.bin", "dest": "/srv/f.bin"}


def test_absent_dest_is_downloaded_and_an_existing_one_is_not() -> None:
    p = plan(ARGS, probe())
    assert p.changed and p.changes == [
        "download http://127.0.0.1:1/f.bin to /srv/f.bin (absent, with curl)"
    ]
    assert p.changed_if is None
    assert b'url = "http://127.0.0.1:1/f.bin"' in (p.steps[0].stdin or b"")
    kept = plan(ARGS, probe("file", "0" * 64))
    assert (
        not kept.changed
        and kept.reason == "/srv/f.bin exists (not downloaded again: force is false)"
    )
    # only the attributes asked for are fixed, without a download
    p = plan({**ARGS, "mode": "0600"}, probe("file", "0" * 64))
    assert p.changes == ["/srv/f.bin: mode 644 -> 600"] and "curl" not in p.steps[0].script


def test_checksum_decides_and_force_downloads_every_time() -> None:
    args = {**ARGS, "checksum": f"sha256:{SHA.upper()}"}
    assert not plan(args, probe("file", SHA)).changed
    p = plan(args, probe("file", "0" * 64))
    assert p.changes == [
        "download http://127.0.0.1:1/f.bin to /srv/f.bin (checksum differs, with curl)"
    ]
    assert f"!= {SHA}" in p.steps[0].script  # verified in the temp file, before the rename
    forced = plan({**ARGS, "force": True}, probe("file", SHA))
    assert forced.changed_if is not None
    assert not forced.changed_if(UNCHANGED) and forced.changed_if("")
    assert forced.changed_if(f"attributes=changed\n{UNCHANGED}")
    # into a directory: named after the URL's path, as Ansible does
    into = probe("directory")
    p = plan({**ARGS, "dest": "/srv"}, into)
    assert p.result["dest"] == "/srv/f.bin" and p.changes[0].endswith("(absent, with curl)")
    there = into.replace("@@indir\ntype=absent", f"@@indir\ntype=file\nmode=644\nsha256={SHA}")
    p = plan({**ARGS, "dest": "/srv"}, there)
    assert p.changed_if is not None and "(force, with curl)" in p.changes[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"checksum": "sha256"}, "must be ALGORITHM:DIGEST"),
        ({"checksum": "crc32:abcd"}, "must be ALGORITHM:DIGEST"),
        ({"checksum": "sha256:https://x/SHA256SUMS"}, "a checksum URL"),
        ({"checksum": "sha256:xyz!"}, "is not hexadecimal"),
        ({"url": "file:///etc/passwd"}, "must be http(s) or ftp"),
        ({"dest": "f.bin"}, "must be an absolute path"),
        ({"headers": {"X": "a\nb"}}, "header 'X' must be one line"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: dict, message: str) -> None:
    with pytest.raises(ArgError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MODULES["get_url"].check_static({**ARGS, **args})


def test_no_downloader_and_secrets_stay_off_the_command_line() -> None:
    with pytest.raises(ModuleError, match="needs curl, wget or python3 on the host"):
        plan(ARGS, probe(tool=""))
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:1/f.bin"
    secret: dict[str, object] = {"url": url, "dest": "/srv/f.bin", "url_username": USER}
    secret |= {"url_password": PASSWORD, "headers": {"Authorization": f"Bearer {TOKEN}"}}
    for tool in ("curl", "wget", "python3"):
        p = plan(secret, probe(tool=tool))
        script = p.steps[0].script
        assert PASSWORD not in script and TOKEN not in script
        assert PASSWORD.encode() in (p.steps[0].stdin or b"")
        assert PASSWORD not in " ".join(p.changes) and PASSWORD not in str(p.result)
    assert mask_url(url) == "http://lab:********@127.0.0.1:1/f.bin"


# -- the real protocol ---------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the directory; /private/ needs basic auth USER:PASSWORD and X-Token: TOKEN."""

    def do_GET(self) -> None:
        if self.path.startswith("/private/"):
            pair = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {pair}":
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="lab"')
                self.end_headers()
                return
            if self.headers.get("X-Token") != TOKEN:
                self.send_error(403)
                return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("www")
    (root / "private").mkdir()
    (root / "f.bin").write_bytes(BODY)
    (root / "private" / "p.bin").write_bytes(BODY)
    handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def run_plan(p: Plan) -> subprocess.CompletedProcess[bytes]:
    (step,) = p.steps
    return subprocess.run(
        ["sh", "-c", step.script], input=step.stdin, capture_output=True, check=False, timeout=60
    )


@pytest.mark.parametrize("tool", ["curl", "wget", "python3"])
def test_each_downloader_fetches_with_auth_and_headers_verifies_and_renames(
    tool: str, server: tuple[Path, str], tmp_path: Path
) -> None:
    need_binary(tool, {"curl": "curl", "wget": "wget", "python3": "python3"}[tool])
    _root, base = server
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    args = {
        "url": f"{base}/private/p.bin",
        "dest": str(dest),
        "checksum": f"sha256:{SHA}",
        "url_username": USER,
        "url_password": PASSWORD,
        "headers": {"X-Token": TOKEN},
        "mode": "0640",
    }
    done = run_plan(plan(args, probe(tool=tool)))
    assert done.returncode == 0, done.stderr
    assert dest.read_bytes() == BODY and oct(dest.stat().st_mode & 0o777) == "0o640"
    # a wrong checksum: the old file stays, no temp file is left, one line says why
    dest.write_bytes(b"old\n")
    wrong = {**args, "checksum": "sha256:" + "0" * 64}
    failed = run_plan(plan(wrong, probe("file", hashlib.sha256(b"old\n").hexdigest(), tool=tool)))
    assert failed.returncode == 1
    assert f"the sha256 checksum of the download is {SHA}, expected" in failed.stderr.decode()
    assert dest.read_bytes() == b"old\n" and os.listdir(dest.parent) == ["f.bin"]
    # no credentials: the server refuses, the tool fails, nothing is written
    anonymous = {"url": f"{base}/private/p.bin", "dest": str(tmp_path / "out" / "g.bin")}
    refused = run_plan(plan(anonymous, probe(tool=tool)))
    assert refused.returncode != 0 and os.listdir(dest.parent) == ["f.bin"]
    # force: downloaded again, identical, so reported unchanged
    dest.write_bytes(BODY)
    forced = plan({**args, "force": True, "checksum": ""}, probe("file", SHA, "640", tool=tool))
    again = run_plan(forced)
    assert again.returncode == 0 and forced.changed_if is not None
    assert not forced.changed_if(again.stdout.decode()), again.stdout


GET_URL_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: a file, checked
      ansible.builtin.get_url:
        url: "{{ base }}/f.bin"
        dest: "{{ out }}/f.bin"
        checksum: "sha256:{{ sha }}"
        mode: "0600"
        owner: nobody
    - name: into a directory, with credentials and a header
      get_url:
        url: "{{ base }}/private/p.bin"
        dest: "{{ out }}/"
        url_username: lab
        url_password: "{{ pw }}"
        headers:
          X-Token: "{{ token }}"
        mode: "0644"
    - name: already there, not forced
      get_url:
        url: "{{ base }}/f.bin"
        dest: "{{ out }}/f.bin"
    - name: forced, identical
      get_url:
        url: "{{ base }}/f.bin"
        dest: "{{ out }}/again.bin"
        force: true
        timeout: 5
"""


def test_same_playbook_same_files_as_ansible_playbook(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    need_root()  # owner: nobody
    _root, base = server
    (tmp_path / "get.yml").write_text(GET_URL_PLAY)
    write_local_inventory(tmp_path)
    outs = {tool: tmp_path / tool for tool in ("ansible", "provision")}
    for out in outs.values():
        out.mkdir()
        (out / "again.bin").write_bytes(BODY)
    extra = [
        "-e",
        f"base={base}",
        "-e",
        f"sha={SHA}",
        "-e",
        f"pw={PASSWORD}",
        "-e",
        f"token={TOKEN}",
    ]
    done = run_ansible_playbook_locally(tmp_path, "get.yml", *extra, "-e", f"out={outs['ansible']}")
    args = ("get.yml", *extra, "-e", f"out={outs['provision']}")
    first = run_provision_locally(tmp_path, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] == recap(done.stdout)["changed"] == 2
    assert PASSWORD not in first.stdout + first.stderr and TOKEN not in first.stdout

    def files(out: Path) -> dict[str, tuple[str, str, bytes]]:
        return {
            p.name: (oct(p.stat().st_mode & 0o777), p.owner(), p.read_bytes())
            for p in sorted(out.iterdir())
        }

    assert files(outs["provision"]) == files(outs["ansible"])
    assert files(outs["provision"])["f.bin"] == ("0o600", "nobody", BODY)
    again = run_provision_locally(tmp_path, *args)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout


BOOTED_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: over SSH, with whichever tool the host has
      get_url:
        url: "{{ base }}/private/p.bin"
        dest: /opt/p.bin
        checksum: "sha256:{{ sha }}"
        url_username: lab
        url_password: "{{ pw }}"
        headers: {X-Token: "{{ token }}"}
        owner: nobody
        mode: "0600"
"""


def test_get_url_on_a_booted_host_over_ssh(
    booted_hosts,  # noqa: F811
    server: tuple[Path, str],
    tmp_path: Path,
) -> None:
    from provision.engine import ApplyOptions, run_playbook
    from provision.inventory import load_inventory

    _root, base = server
    (host,) = booted_hosts(1, prefix="geturl")
    tools = host.exec("for x in curl wget python3; do command -v $x; done", check=False).stdout
    (tmp_path / "get.yml").write_text(BOOTED_PLAY)
    inventory = write_inventory([host], tmp_path / "hosts.ini")
    opts = ApplyOptions(
        known_hosts=(str(write_known_hosts([host], tmp_path / "known_hosts")),),
        extra_vars={"base": base, "sha": SHA, "pw": PASSWORD, "token": TOKEN},
        connect_timeout=5.0,
    )
    first = run_playbook(load_inventory(str(inventory)), str(tmp_path / "get.yml"), opts)
    assert first.exit_code == 0, [r.msg for r in first.results]
    (task,) = first.results
    used = tools.split()[0].rsplit("/", 1)[1]  # the first of curl, wget, python3 it has
    assert task.status == "changed" and task.changes[0].endswith(f"(absent, with {used})")
    assert PASSWORD not in str(task.data) and PASSWORD not in task.msg
    assert host.exec("stat -c %U:%a /opt/p.bin; sha256sum < /opt/p.bin").stdout == (
        f"nobody:600\n{SHA}  -\n"
    )
    assert host.exec("ls -a /opt").stdout.split() == [".", "..", "p.bin"]
    again = run_playbook(load_inventory(str(inventory)), str(tmp_path / "get.yml"), opts)
    assert again.exit_code == 0 and again.stats[host.name].changed == 0
