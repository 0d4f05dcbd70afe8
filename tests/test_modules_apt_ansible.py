"""The apt module with Ansible's arguments (issue 14 item 2): ``deb``, ``upgrade``,
``autoremove``, ``autoclean``, ``allow_downgrade``, ``dpkg_options``, ``default_release``,
``force_apt_get`` and Ansible's ``update_cache`` semantics (a cache update beside packages is no
change). Spec tests (arguments + recorded state -> exact plan), then real apt on booted Debian
hosts: real ``.deb`` files built with dpkg-deb, served over HTTP from this machine, the same
playbook run by the real ansible-playbook on one host and provision on the other, compared.

Every assertion about a host's state is made inside the host (nsenter), never through the code
under test.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.modules import MODULES
from provision.modules.apt import parse_state
from provision.modules.base import ArgError, Context, ModuleError, Plan
from tests.conftest import need_binary
from tests.lab.booted import (
    BootedHost,
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
)
from tests.test_ansible_names import apply_with_both, provision, recap
from tests.test_modules_apt_reboot import ENV, OPTS, apt_state, commands

CTX = Context()
APT = f"{ENV} apt-get {OPTS.format(t=120)}"


def plan(args: dict, state: str | None, ctx: Context = CTX) -> Plan:
    m = MODULES["apt"]
    return m.plan(m.prepare(m.finalize(args), ctx), state, ctx)


def with_sections(state: str, **sections: str) -> str:
    """A recorded apt state with extra sections (@@upgrade, @@autoremove, @@deb...) before
    @@meta, as the state snippet prints them."""
    head, meta = state.split("@@meta", 1)
    extra = "".join(f"@@{name}\n{text}\n" for name, text in sections.items())
    return f"{head}{extra}@@meta{meta}"


# -- update_cache: Ansible's meaning ---------------------------------------------------------------


def test_update_cache_beside_installed_packages_runs_but_is_no_change() -> None:
    """ansible.builtin.apt: `{name: [jq], update_cache: true}` reports ok once jq is there (the
    update still runs: cache_valid_time 0 means always)."""
    state = apt_state({"jq": ("1.6-2.1", "ii ")}, age=60)
    p = plan({"name": ["jq"], "update_cache": True}, state)
    assert p.changed and commands(p)[0].startswith(f"{APT} update")
    assert p.changed_if is not None and not p.changed_if("") and not p.changed_if("Get:1 ...")
    assert p.reason == "jq 1.6-2.1: installed; package cache updated"
    # the update alone is the change (Ansible: changed when the cache was updated)
    alone = plan({"update_cache": True}, apt_state(age=60))
    assert alone.changed and alone.changed_if is None
    assert alone.changes == ["update the package cache (last updated 60 s ago)"]
    # a package to install is a change whatever the update does
    missing = plan({"name": "jq", "update_cache": True}, apt_state(candidates={"jq": "1.6-2.1"}))
    assert missing.changed_if is None and missing.changes[-1] == "install jq 1.6-2.1"


def test_cache_valid_time_alone_asks_for_the_update_as_in_ansible() -> None:
    p = plan({"name": "jq", "cache_valid_time": 3600}, apt_state({"jq": ("1", "ii ")}, age=7200))
    assert commands(p)[0].startswith(f"{APT} update")
    fresh = plan({"name": "jq", "cache_valid_time": 3600}, apt_state({"jq": ("1", "ii ")}, age=5))
    assert not fresh.changed and fresh.reason == "jq 1: installed; package cache is fresh"


# -- upgrade, autoremove, autoclean ----------------------------------------------------------------

SIM_UPGRADE = (
    "Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/oldstable-security)\n"
    "Inst openssl [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/oldstable-security)"
)


@pytest.mark.parametrize(
    ("written", "words"),
    [
        (True, "upgrade --with-new-pkgs"),  # YAML `upgrade: yes`
        ("safe", "upgrade --with-new-pkgs"),
        ("full", "dist-upgrade"),
        ("dist", "dist-upgrade"),
    ],
)
def test_upgrade_modes_are_ansibles_apt_get_commands(written: object, words: str) -> None:
    state = with_sections(apt_state(), upgrade=SIM_UPGRADE)
    p = plan({"upgrade": written}, state)
    assert p.changed and p.changed_if is None
    assert commands(p) == [f"{APT} {words}"]
    assert p.changes == [f"{words.split()[0]}: libssl3, openssl"]


def test_upgrade_with_nothing_to_do_and_after_a_cache_update() -> None:
    assert not plan({"upgrade": "dist"}, with_sections(apt_state(), upgrade="")).changed
    assert not plan({"upgrade": False, "update_cache": True}, apt_state(age=1)).changed_if
    # after an update the new lists may offer upgrades: apt-get's own summary decides
    p = plan({"upgrade": "dist", "update_cache": True}, with_sections(apt_state(), upgrade=""))
    assert commands(p) == [
        f"{APT} update && mkdir -p /var/lib/apt/periodic"
        " && touch /var/lib/apt/periodic/update-success-stamp",
        f"{APT} dist-upgrade",
    ]
    assert p.changed_if is not None
    assert not p.changed_if("...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
    assert p.changed_if("...\n2 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
    assert not p.changed_if("")  # --check: the state read's simulation found nothing


def test_autoremove_and_autoclean_follow_the_simulation() -> None:
    sim = with_sections(apt_state(), autoremove="Remv libfoo1 [1.0-1]\nRemv libbar2 [2-1]")
    p = plan({"autoremove": True, "purge": True}, sim)
    assert p.changes == ["autoremove: purge libfoo1, libbar2"]
    assert commands(p) == [f"{APT} --purge autoremove"]
    assert not plan({"autoremove": True}, with_sections(apt_state(), autoremove="")).changed
    clean = with_sections(apt_state(), autoclean="Del libssl3 3.0.11-1~deb12u2 [2031 kB]")
    p = plan({"autoclean": True}, clean)
    assert p.changes == ["autoclean: delete 1 obsolete package files"]
    assert commands(p) == [f"{APT} autoclean"]
    # beside packages, autoremove is apt-get's --auto-remove on the transaction (Ansible)
    p = plan({"name": "jq", "autoremove": True}, apt_state(candidates={"jq": "1.6"}))
    assert commands(p) == [f"{APT} install --no-install-recommends --auto-remove jq"]


def test_state_snippet_simulations_parse_for_real_on_this_debian_machine() -> None:
    m = MODULES["apt"]
    for args, section in (
        ({"upgrade": "dist"}, "upgrade"),
        ({"autoremove": True}, "autoremove"),
        ({"autoclean": True}, "autoclean"),
    ):
        script = m.state_script(m.finalize(args), CTX)
        assert script is not None
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert f"@@{section}\n" in done.stdout
        sim = subprocess.run(
            ["sh", "-c", script.split(f"echo @@{section}\n", 1)[1].split("\n")[0]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert parse_state(done.stdout).simulated.get(section, []) == [
            " ".join(line.split()[1:3]) if line.startswith("Del") else line.split()[1]
            for line in sim.stdout.splitlines()
        ]


# -- deb, allow_downgrade, dpkg_options, default_release -------------------------------------------


def deb_state(**fields: str) -> str:
    return with_sections(apt_state(), deb="\n".join(f"{k}={v}" for k, v in fields.items()))


def test_deb_installs_only_when_not_installed_at_that_version() -> None:
    deb = "/root/p14-demo_1.0-1_all.deb"
    same = deb_state(
        package="p14-demo", version="1.0-1", status="ii ", installed="1.0-1", same="yes"
    )
    p = plan({"deb": deb}, same)
    assert not p.changed and p.reason == "p14-demo 1.0-1: installed"
    new = deb_state(package="p14-demo", version="1.0-1", status="", installed="")
    p = plan({"deb": deb}, new)
    assert p.changes == [f"install p14-demo 1.0-1 from {deb}"]
    assert commands(p) == [f"{APT} install --no-install-recommends {deb}"]
    older = deb_state(package="p14-demo", version="1.0-1", status="ii ", installed="2.0-1")
    p = plan({"deb": deb, "allow_downgrade": True}, older)
    assert p.changes == [f"install p14-demo 1.0-1 from {deb} (was 2.0-1)"]
    assert commands(p) == [f"{APT} install --no-install-recommends --allow-downgrades {deb}"]
    with pytest.raises(ModuleError, match=f"deb {deb}: no such file on the host"):
        plan({"deb": deb}, deb_state(missing="yes"))
    url = "http://127.0.0.1:1/p.deb"
    with pytest.raises(ModuleError, match=r"the download failed: curl: \(22\) 404"):
        plan({"deb": url}, deb_state(fetch="curl: (22) 404 Not Found"))
    p = plan({"deb": url}, new)
    (line,) = commands(p)
    assert line.startswith('{ t=$(mktemp -d) && chmod 755 "$t" && fetch ')
    assert 'install --no-install-recommends "$t/p.deb"; rc=$?; rm -rf "$t"' in line
    assert "fetch() {" in p.steps[0].script


def test_dpkg_options_default_release_and_allow_downgrade() -> None:
    state = apt_state(candidates={"jq": "1.7"})
    p = plan(
        {
            "name": "jq=1.6",
            "dpkg_options": "force-confnew,force-overwrite",
            "default_release": "bookworm-backports",
            "allow_downgrade": True,
            "force_apt_get": True,
        },
        state,
    )
    env_opts = f"{ENV} apt-get -y -q -o DPkg::Lock::Timeout=120"
    assert commands(p) == [
        f"{env_opts} -o Dpkg::Options::=--force-confnew -o Dpkg::Options::=--force-overwrite "
        "install --no-install-recommends --allow-downgrades -t bookworm-backports jq=1.6"
    ]
    script = MODULES["apt"].state_script(
        MODULES["apt"].finalize({"name": "jq", "default_release": "bookworm-backports"}), CTX
    )
    assert script is not None
    assert "apt-cache -o APT::Default-Release=bookworm-backports policy jq" in script


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": "jq", "deb": "/x.deb"}, "give only one of name, deb"),
        ({"upgrade": "dist", "name": "jq"}, "give only one of name, upgrade"),
        ({"deb": "x.deb"}, "must be an absolute path on the host or a URL"),
        ({"deb": "/x.deb", "state": "absent"}, "deb only supports state: present"),
        ({"upgrade": "everything"}, "'upgrade' must be one of no, yes, safe, full, dist"),
        ({"autoclean": False}, "give 'name', 'deb', 'upgrade', 'autoremove'"),
    ],
)
def test_apt_argument_combinations_are_one_line_errors(args: dict, message: str) -> None:
    with pytest.raises(ArgError, match=message):
        m = MODULES["apt"]
        m.check_static(args)
        m.finalize(args)


# -- booted hosts: real apt, real .deb files, compared with ansible-playbook ---------------------


def build_deb(out: Path, name: str, version: str) -> Path:
    """A real package built with dpkg-deb: /usr/share/NAME/version holds its version."""
    need_binary("dpkg-deb", "dpkg")
    root = out / f"{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: provision tests <tests@invalid>\nDepends: hello\n"
        f"Description: test package for the provision apt deb tests\n"
    )
    (root / "usr" / "share" / name).mkdir(parents=True)
    (root / "usr" / "share" / name / "version").write_text(version + "\n")
    deb = out / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A directory of .deb files served over real HTTP on loopback (booted hosts share this
    machine's network): (directory, base URL)."""
    root = tmp_path_factory.mktemp("debs")
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


DEB_PLAY = """\
- hosts: all
  gather_facts: false
  vars:
    base: {base}
  tasks:
    - name: a package, with the cache updated
      ansible.builtin.apt:
        name: [cowsay]
        update_cache: true
    - name: a local .deb (its dependency comes from the archive)
      ansible.builtin.apt:
        deb: /root/p14-local_1.0-1_all.deb
    - name: a .deb by URL
      apt: deb={{{{ base }}}}/p14-url_2.0-1_all.deb
    - name: autoremove (sl was installed as a dependency nobody needs)
      ansible.builtin.apt:
        autoremove: true
        dpkg_options: force-confdef,force-confold
        force_apt_get: true
"""
DOWNGRADE_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: an older .deb
      apt:
        deb: /root/p14-local_0.9-1_all.deb
        allow_downgrade: "{{ allow | default(false) }}"
"""
PACKAGES_READ = (
    "dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n' "
    "cowsay hello sl p14-local p14-url 2>&1; cat /usr/share/p14-*/version"
)


def installed_packages(host: BootedHost) -> dict[str, str]:
    out = host.exec(PACKAGES_READ, check=False).stdout
    return {w[0]: w[1] for w in map(str.split, out.splitlines()) if len(w) == 3 and w[2] == "ii"}


def test_deb_autoremove_and_update_cache_match_ansible_playbook_on_booted_hosts(
    booted_hosts,  # noqa: F811
    served: tuple[Path, str],
    tmp_path: Path,
) -> None:
    root, base = served
    build_deb(root, "p14-url", "2.0-1")
    local = [build_deb(tmp_path, "p14-local", v) for v in ("1.0-1", "0.9-1")]
    hosts = booted_hosts(2, prefix="aptans")
    for host in hosts:
        for deb in local:
            shutil.copyfile(deb, host.merged / "root" / deb.name)
        host.exec(
            "apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            "--no-install-recommends sl && apt-mark auto sl",
            timeout=600,
        )
    (tmp_path / "deb.yml").write_text(DEB_PLAY.format(base=base))
    args = apply_with_both(hosts, tmp_path, "deb.yml")
    theirs, mine = (host.exec(PACKAGES_READ, check=False).stdout for host in hosts)
    assert mine == theirs
    have = installed_packages(hosts[1])
    assert have["p14-local"] == "1.0-1" and have["p14-url"] == "2.0-1"
    assert "cowsay" in have and "hello" in have and "sl" not in have  # autoremoved
    stamp = "stat -c %Y /var/lib/apt/periodic/update-success-stamp"
    before = hosts[1].exec(stamp).stdout
    hosts[1].exec("sleep 1.1")
    again = provision(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    # converged: the cache was updated again (update_cache, cache_valid_time 0), yet no task
    # reports a change, as with ansible-playbook
    assert recap(again.stdout)["changed"] == 0, again.stdout
    assert hosts[1].exec(stamp).stdout != before
    check = provision(*args, "--check", cwd=tmp_path)
    assert check.returncode == 0 and recap(check.stdout)["changed"] == 0, check.stdout

    # a downgrade needs allow_downgrade, as in Ansible (apt refuses it otherwise)
    (tmp_path / "down.yml").write_text(DOWNGRADE_PLAY)
    down = [a if a != "deb.yml" else "down.yml" for a in args]
    refused = provision(*down, cwd=tmp_path)
    assert refused.returncode == 2 and "--allow-downgrades" in refused.stdout, refused.stdout
    assert installed_packages(hosts[1])["p14-local"] == "1.0-1"
    done = provision(*down, "-e", "allow=true", cwd=tmp_path)
    assert done.returncode == 0 and recap(done.stdout)["changed"] == 1, done.stdout
    assert installed_packages(hosts[1])["p14-local"] == "0.9-1"
    assert hosts[1].exec("cat /usr/share/p14-local/version").stdout == "0.9-1\n"
