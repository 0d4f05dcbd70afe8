"""unarchive (issue 14, item 5): tar archives from the controller and on the host
(``remote_src``), ``extra_opts``, ``creates``, ``mode``, ``list_files``. The same playbook is run by
the real ansible-playbook and by provision on this machine and the trees compared; then a
converged second run and a --check run that changes nothing.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from provision.modules import MODULES, module_named
from provision.modules.base import ArgError, Context, ModuleError
from provision.modules.unarchive import is_unarchived
from tests.ansible_local import (
    run_ansible_playbook_locally,
    run_provision_locally,
    umask,
    write_local_inventory,
)
from tests.test_ansible_names import recap
from tests.test_ansible_names import tree as text_tree


def make_tar(path: Path, mode: str, top: str = "app-1.0") -> None:
    """An archive like a release tarball: a top directory, a script, a config."""
    members = {
        f"{top}/": (None, 0o755),
        f"{top}/bin/": (None, 0o755),
        f"{top}/bin/run": (b"#!/bin/sh\necho run\n", 0o755),
        f"{top}/etc/": (None, 0o755),
        f"{top}/etc/app.conf": (b"level=1\n", 0o644),
    }
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, (data, perm) in members.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mode, info.mtime, info.uid, info.gid = perm, 1_700_000_000, 0, 0
            info.uname = info.gname = "root"
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every path but the archives themselves (dist/): (mode, content)."""
    dist = root / "dist"
    archives = {p: p.read_bytes() for p in dist.iterdir()}
    for p in archives:
        p.unlink()
    try:
        return {k: v for k, v in text_tree(root).items() if k != "dist"}
    finally:
        for p, data in archives.items():
            p.write_bytes(data)


def test_names_and_arguments() -> None:
    assert module_named("ansible.builtin.unarchive") == "unarchive"
    with pytest.raises(ArgError, match="include and exclude are mutually exclusive"):
        MODULES["unarchive"].check_static(
            {"src": "a", "dest": "/d", "include": "x", "exclude": "y"}
        )
    m = MODULES["unarchive"]
    args = m.finalize({"src": "https://example.org/a.tgz", "dest": "/d", "remote_src": True})
    with pytest.raises(ModuleError, match="is a URL: download it first"):
        m.prepare(args, Context())


def test_is_unarchived_follows_ansible_cores_tar_rules() -> None:
    plain = {"owner": None, "group": None, "mode": None}
    assert is_unarchived([], plain, root=True)
    assert not is_unarchived(["app/etc/app.conf: Contents differ"], plain, root=True)
    assert not is_unarchived(["app/run: Mode differs"], plain, root=True)
    assert is_unarchived(["app/run: Mode differs"], {**plain, "mode": "700"}, root=True)
    assert not is_unarchived(["app/run: Uid differs"], plain, root=True)
    assert is_unarchived(["app/run: Uid differs"], plain, root=False)
    missing = "tar: app/run: Warning: Cannot stat: No such file or directory"
    assert not is_unarchived([missing], plain, root=True)
    # a top directory stripped by --strip-components leaves an empty name: ignored
    assert is_unarchived(
        ["tar: : Warning: Cannot stat: No such file or directory"], plain, root=True
    )


PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: a controller archive
      ansible.builtin.unarchive: src=app.tar.gz dest={{ out }}/ctl
    - name: a host archive, its top directory stripped
      unarchive:
        src: "{{ out }}/dist/app.tar.gz"
        dest: "{{ out }}/strip"
        remote_src: true
        extra_opts: [--strip-components=1]
    - name: skipped, since it exists
      unarchive:
        src: "{{ out }}/dist/app.tar.gz"
        dest: "{{ out }}/strip"
        remote_src: yes
        creates: "{{ out }}/strip/bin/run"
    - name: an xz archive, listed, a mode for every path
      unarchive:
        src: "{{ out }}/dist/app.tar.xz"
        dest: "{{ out }}/modes"
        remote_src: yes
        mode: "u=rwX,g=rX,o="
        list_files: yes
      register: listed
    - name: what it listed
      copy:
        dest: "{{ out }}/listed.txt"
        content: "{{ listed.files | sort | join(' ') }}\\n"
"""


def seed(out: Path) -> None:
    for sub in ("ctl", "strip", "modes", "dist"):
        (out / sub).mkdir(parents=True)
    make_tar(out / "dist" / "app.tar.gz", "w:gz")
    make_tar(out / "dist" / "app.tar.xz", "w:xz")


def test_unarchive_matches_ansible_playbook(tmp_path: Path) -> None:
    (tmp_path / "unarchive.yml").write_text(PLAY)
    make_tar(tmp_path / "app.tar.gz", "w:gz")
    write_local_inventory(tmp_path)
    theirs, mine, checked = tmp_path / "ansible", tmp_path / "provision", tmp_path / "checked"
    with umask(0o022):
        for out in (theirs, mine, checked):
            seed(out)
        done = run_ansible_playbook_locally(tmp_path, "unarchive.yml", "-e", f"out={theirs}")
        before = tree(checked)
        check = run_provision_locally(tmp_path, "unarchive.yml", "-e", f"out={checked}", "--check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert tree(checked) == before
        args = ("unarchive.yml", "-e", f"out={mine}")
        first = run_provision_locally(tmp_path, *args)
        assert first.returncode == 0, first.stdout + first.stderr
        assert recap(first.stdout) | {"ok": 0} == recap(done.stdout) | {"ok": 0}, first.stdout
        assert tree(mine) == tree(theirs)
        assert tree(mine)["strip/bin/run"] == ("0o755", "#!/bin/sh\necho run\n")
        assert tree(mine)["modes/app-1.0/bin/run"][0] == "0o750"
        assert tree(mine)["modes/app-1.0/etc/app.conf"][0] == "0o640"
        again = run_provision_locally(tmp_path, *args)
        assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout
