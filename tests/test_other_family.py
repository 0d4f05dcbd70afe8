"""Roles written for several distributions load; another family's package task fails only if a
guard lets it run here (the real CLI, this Debian machine through a local connection)."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import cli

PLAY = """\
- hosts: all
  tasks:
    - name: install on Red Hat
      ansible.builtin.yum: name=httpd state=present
      when: ansible_os_family == 'RedHat'
    - name: repo on Red Hat
      yum_repository: {{name: epel, baseurl: "https://example.invalid/epel"}}
      when: ansible_os_family == "RedHat"
    - name: install on Debian
      command: "true"
      when: ansible_os_family == 'Debian'
{unguarded}"""


def _run(tmp_path: Path, unguarded: str = "") -> tuple[int, str]:
    (tmp_path / "hosts.ini").write_text("[here]\nlocalhost ansible_connection=local\n")
    (tmp_path / "site.yml").write_text(PLAY.format(unguarded=unguarded))
    r = cli("apply", "site.yml", "-i", "hosts.ini", cwd=str(tmp_path))
    return r.returncode, r.stdout + r.stderr


def test_guarded_tasks_of_another_os_family_load_and_skip(tmp_path: Path) -> None:
    code, out = _run(tmp_path)
    assert code == 0, out
    assert "ok=2 " in out and "changed=1 " in out and "skipped=2 " in out, out


def test_an_unguarded_yum_task_fails_on_the_host_saying_what_to_guard(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "    - name: no guard\n      dnf: {name: httpd}\n")
    assert code == 2, out
    assert (
        "module 'dnf' is for RedHat-family hosts and this host's ansible_os_family is Debian; "
        "guard the task with `when: ansible_os_family == 'RedHat'`, or use apt"
    ) in out
    assert "failed=1 " in out
