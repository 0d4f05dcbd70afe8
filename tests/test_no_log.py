"""Nothing leaked (issue 13, item 6): a canary secret in every no_log form never reaches stdout,
stderr or the ``-vv`` debug log of ``provision apply``, in a normal run and under --check/--diff.
Real sshd lab host; the CLI runs as a subprocess, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from provision.engine import NO_LOG_MSG
from tests.lab.sshd import SshdLab

CANARY = "canary-nolog-5e1f0b"


def _playbook(tmp_path: Path) -> Path:
    target = tmp_path / "target"
    target.mkdir()
    book = tmp_path / "secrets.yml"
    book.write_text(
        textwrap.dedent(
            f"""\
            - name: secrets
              hosts: all
              gather_facts: false
              vars:
                secret: {CANARY}
              tasks:
                - name: a plain write first (its state read batches the later guards)
                  copy: {{dest: "{target}/plain", content: "plain\\n"}}
                - name: command guarded by an unless holding the secret
                  command: {{cmd: "true", unless: "test {{{{ secret }}}} = never"}}
                  no_log: true
                - name: shell printing the secret
                  shell: "echo {{{{ secret }}}}; echo {{{{ secret }}}} >&2"
                  no_log: true
                - name: failing shell
                  shell: "echo {{{{ secret }}}} >&2; exit 3"
                  no_log: true
                  ignore_errors: true
                - name: copy secret content
                  copy: {{dest: "{target}/secret", content: "{{{{ secret }}}}\\n"}}
                  no_log: true
                - name: fail with the secret
                  fail: {{msg: "bad {{{{ secret }}}}"}}
                  no_log: true
                  ignore_errors: true
                - name: assert with the secret
                  assert: {{that: ["1 == 2"], fail_msg: "bad {{{{ secret }}}}"}}
                  no_log: true
                  ignore_errors: true
                - name: retried
                  shell: "echo {{{{ secret }}}}; exit 1"
                  retries: 1
                  delay: 0
                  no_log: true
                  ignore_errors: true
                - name: times out
                  shell: "sleep 6 # {{{{ secret }}}}"
                  no_log: true
            """
        )
    )
    return book


@pytest.mark.parametrize("mode", [[], ["--check", "--diff"]], ids=["run", "check"])
def test_no_log_hides_the_secret_everywhere(
    sshd_lab: SshdLab, tmp_path: Path, mode: list[str]
) -> None:
    host = sshd_lab.ok_hosts[2]
    inventory = sshd_lab.write_inventory(str(tmp_path / "inv.ini"), [host])
    book = str(_playbook(tmp_path))
    argv = ["-vv", "apply", "-i", inventory, "-p", book, "--command-timeout", "3", *mode]
    done = subprocess.run(
        [sys.executable, "-m", "provision", *argv],
        env=sshd_lab.env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out, err = done.stdout, done.stderr
    assert "run " in err and "PLAY RECAP" in out  # the -vv log is there, the run happened
    assert CANARY not in out
    assert CANARY not in err
    # the failures still say which task failed, in Ansible's words
    assert f"failed: [{host.name}] secrets / fail with the secret (ignored)" in out
    assert NO_LOG_MSG in out
    if not mode:
        assert (tmp_path / "target" / "secret").read_text() == CANARY + "\n"  # it did run
        assert f"failed: [{host.name}] secrets / times out" in out  # censored, yet a failure
        assert "(hidden: no_log: true)" in err
