"""raw and pause as Ansible users write them (the real CLI, a local connection)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.test_cli import cli

PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: raw with shell syntax
      ansible.builtin.raw: echo a=b > {out}/raw.txt; echo done
      register: r
    - name: raw with an executable
      raw: echo "$0" > {out}/shell.txt
      args:
        executable: /bin/bash
    - name: wait
      pause:
        seconds: "{{{{ wait }}}}"
      register: p
    - copy:
        content: >-
          {{{{ {{'raw': r.stdout | default(''), 'paused': p.stdout, 'delta': p.delta}}
          | to_json }}}}
        dest: "{out}/seen.json"
"""


def _write(tmp_path: Path, text: str) -> None:
    (tmp_path / "hosts.ini").write_text("[here]\nlocalhost ansible_connection=local\n")
    (tmp_path / "site.yml").write_text(text)


def test_raw_runs_the_string_in_the_shell_and_pause_waits(tmp_path: Path) -> None:
    _write(tmp_path, PLAY.format(out=tmp_path))
    started = time.monotonic()
    r = cli("apply", "site.yml", "-i", "hosts.ini", "-e", "wait=1.5", cwd=str(tmp_path))
    took = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "raw.txt").read_text() == "a=b\n"
    assert (tmp_path / "shell.txt").read_text() == "/bin/bash\n"
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["raw"] == "done" and seen["paused"] == "Paused for 1.5 seconds"
    assert seen["delta"] >= 1.5 and took >= 1.5


def test_raw_is_skipped_in_check_mode_and_a_prompt_is_refused_at_load(tmp_path: Path) -> None:
    _write(tmp_path, PLAY.format(out=tmp_path))
    r = cli("apply", "site.yml", "-i", "hosts.ini", "-e", "wait=0", "--check", cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "raw.txt").exists()
    _write(tmp_path, "- hosts: all\n  tasks:\n    - pause: {prompt: Press enter}\n")
    r = cli("apply", "site.yml", "-i", "hosts.ini", "--syntax-check", cwd=str(tmp_path))
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "a prompt waits for a person" in r.stderr
