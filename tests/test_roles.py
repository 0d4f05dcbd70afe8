"""Ansible roles (issue 14, item 7) and play ``tags``/``connection``/``collections``.

Pure tests read real role directories written under tmp_path with provision's loader and
assert what a user gets: the order tasks run in, the variables each sees, the handlers, the
one-line errors. The booted test runs one role-based playbook with the real ansible-playbook
and with provision on two booted hosts and compares the hosts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.loops import loop_items
from provision.modules import MODULES, module_named
from provision.modules.base import Context
from provision.playbook import (
    FLUSH_HANDLERS,
    Play,
    PlaybookError,
    Task,
    leaf_tasks,
    load_included_role,
    load_playbook,
)
from provision.roles import RoleLoader, configured_roles_path, role_ref
from tests.ansible_local import (
    run_ansible_playbook_locally,
    run_provision_locally,
    write_local_inventory,
)
from tests.lab.booted import (
    booted_hosts,  # noqa: F401  (pytest fixture, imported explicitly)
)
from tests.test_ansible_names import apply_with_both, provision, recap, tree
from tests.test_cli import cli


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def play_of(root: Path, files: dict[str, str], site: str) -> Play:
    write_tree(root, {**files, "site.yml": site})
    return load_playbook(str(root / "site.yml")).plays[0]


def messages(play: Play) -> list[str]:
    """What each task says (debug msg) or does (its module), in the order they run."""
    out = []
    for task in leaf_tasks(play.tasks):
        if task.name == FLUSH_HANDLERS:
            out.append("FLUSH")
        elif task.module == "debug":
            out.append(str(task.args["msg"]))
        else:
            out.append(task.module)
    return out


def debug_role(name: str, *deps: str, meta: str = "") -> dict[str, str]:
    files = {f"roles/{name}/tasks/main.yml": f"- debug: msg={name}\n"}
    if deps or meta:
        listed = "".join(f"  - {d}\n" for d in deps) or "  []\n"
        files[f"roles/{name}/meta/main.yml"] = (
            f"galaxy_info:\n  author: someone\n{meta}dependencies:\n{listed}"
        )
    return files


# -- order ---------------------------------------------------------------------------------


def test_sections_run_in_ansibles_order_with_dependencies_first(tmp_path: Path) -> None:
    files = {**debug_role("web", "common"), **debug_role("common"), **debug_role("db")}
    play = play_of(
        tmp_path,
        files,
        "- hosts: all\n  post_tasks:\n    - debug: msg=post\n  tasks:\n    - debug: msg=task\n"
        "  roles:\n    - web\n    - db\n  pre_tasks:\n    - debug: msg=pre\n",
    )
    # Play.compile: pre_tasks, flush, roles (deps first), tasks, flush, post_tasks
    assert messages(play) == ["pre", "FLUSH", "common", "web", "db", "task", "FLUSH", "post"]
    flush = leaf_tasks(play.tasks)[1]
    assert flush.module == "meta" and flush.args == {"free_form": "flush_handlers"}
    assert "always" in flush.tags  # --tags never drops Ansible's implicit flush
    names = [t.name for t in leaf_tasks(play.tasks)]
    assert names[2:5] == ["common : task 1", "web : task 1", "db : task 1"]  # "ROLE : TASK"


def test_a_role_runs_once_unless_duplicates_are_allowed(tmp_path: Path) -> None:
    files = {
        **debug_role("a", "common"),
        **debug_role("b", "common"),
        **debug_role("common"),
        **debug_role("twice", meta="allow_duplicates: true\n"),
        "roles/p/tasks/main.yml": "- debug: msg=p{{ n }}\n",
    }
    play = play_of(
        tmp_path,
        files,
        "- hosts: all\n  roles:\n    - a\n    - b\n    - a\n    - twice\n    - twice\n"
        "    - {role: p, n: 1}\n    - {role: p, n: 1}\n    - {role: p, n: 2}\n",
    )
    # common once (shared dependency), a once, twice twice (its meta), p once per params
    assert messages(play) == ["common", "a", "b", "twice", "twice", "p{{ n }}", "p{{ n }}"]
    assert [t.vars["n"] for t in leaf_tasks(play.tasks)[-2:]] == [1, 2]


def test_import_role_is_inlined_with_its_from_files_and_runs_again(tmp_path: Path) -> None:
    files = {
        **debug_role("web"),
        "roles/web/tasks/extra.yml": "- debug: msg=extra\n",
        "roles/web/vars/other.yml": "colour: blue\n",
        "roles/web/defaults/other.yml": "size: 3\n",
        "roles/web/handlers/other.yml": "- name: other handler\n  debug: msg=h\n",
    }
    play = play_of(
        tmp_path,
        files,
        "- hosts: all\n  roles: [web]\n  tasks:\n    - import_role:\n        name: web\n"
        "        tasks_from: extra\n        vars_from: other\n        defaults_from: other.yml\n"
        "        handlers_from: other\n      when: go\n      tags: [x]\n"
        "    - ansible.builtin.import_role: name=web\n",
    )
    assert messages(play) == ["web", "extra", "web"]  # import_role: allow_duplicates true
    extra = leaf_tasks(play.tasks)[1]
    assert extra.vars == {"colour": "blue"} and extra.when == ["go"] and extra.tags == ["x"]
    assert play.defaults == {"size": 3}
    assert [h.name for h in play.handlers] == ["other handler"]


# -- variables -----------------------------------------------------------------------------


def test_role_variables_sit_where_ansible_puts_them(tmp_path: Path) -> None:
    files = {
        "roles/web/tasks/main.yml": "- debug: msg=x\n  vars:\n    task_var: task\n    both: task\n",
        "roles/web/defaults/main.yml": "port: 80\nonly_default: d\n",
        "roles/web/vars/main.yml": "both: role-vars\nrole_var: r\n",
        "roles/web/meta/main.yml": "dependencies:\n  - role: base\n    base_param: 7\n",
        "roles/base/tasks/main.yml": "- debug: msg=base\n",
        "roles/base/vars/main.yml": "base_var: b\n",
        "roles/base/defaults/main.yml": "port: 22\nbase_default: bd\n",
    }
    play = play_of(
        tmp_path,
        files,
        "- hosts: all\n  defaults:\n    port: 8080\n  roles:\n"
        "    - role: web\n      param: p\n      both: param\n      vars:\n        entry: e\n",
    )
    base, web = leaf_tasks(play.tasks)
    # defaults: lowest, the play's (its own keyword) over the roles', later roles over earlier
    assert play.defaults == {"port": 8080, "base_default": "bd", "only_default": "d"}
    # role vars < task vars < role params (Ansible's precedence 15 < 17 < 20)
    assert web.vars == {
        "base_var": "b",  # a dependency's vars/ are exported to its parent
        "role_var": "r",
        "entry": "e",
        "task_var": "task",
        "both": "param",
        "param": "p",
    }
    # a dependency inherits its parents' vars and params (Role.get_inherited_vars)
    assert base.vars == {
        "role_var": "r",
        "both": "param",
        "entry": "e",
        "base_var": "b",
        "param": "p",
        "base_param": 7,
    }
    assert web.role_path == str(tmp_path / "roles" / "web")
    assert base.role_path == str(tmp_path / "roles" / "base")


def test_role_entry_keywords_reach_every_task_and_dependency(tmp_path: Path) -> None:
    files = {
        **debug_role("web", "base"),
        **debug_role("base"),
        "roles/web/tasks/main.yml": "- debug: msg=web\n  tags: [own]\n  become: false\n",
    }
    play = play_of(
        tmp_path,
        files,
        "- hosts: all\n  tags: site\n  roles:\n    - role: web\n      when: enabled\n"
        "      tags: [web]\n      become: true\n      environment: {LANG: C}\n"
        "      collections: [community.general]\n",
    )
    base, web = leaf_tasks(play.tasks)
    assert base.when == ["enabled"] and web.when == ["enabled"]
    assert base.tags == ["site", "web"] and web.tags == ["site", "web", "own"]
    assert base.become is True and web.become is False  # the task's own value wins
    assert web.environment == {"LANG": "C"}


def test_role_handlers_join_the_plays_and_answer_to_role_colon_name(tmp_path: Path) -> None:
    files = {
        "roles/web/tasks/main.yml": "- copy: {dest: /tmp/x, content: x}\n"
        "  notify: [restart web, 'web : reload']\n",
        "roles/web/handlers/main.yml": "- name: restart web\n  debug: msg=r\n"
        "- name: reload\n  debug: msg=l\n",
    }
    play = play_of(
        tmp_path,
        files,
        "- hosts: all\n  roles: [web, {role: web, x: 2}]\n  handlers:\n"
        "    - name: play handler\n      debug: msg=p\n",
    )
    assert [h.name for h in play.handlers] == ["restart web", "reload", "play handler"]
    assert play.handlers[0].vars == {"x": 2}  # the last copy is the one notified (Ansible)
    assert "web : reload" in play.handlers[1].listen
    assert play.handlers[0].role_path == str(tmp_path / "roles" / "web")


# -- where roles are -----------------------------------------------------------------------


def test_role_search_path_is_ansibles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shelf, cfg_shelf = tmp_path / "shelf", tmp_path / "cfg-shelf"
    write_tree(shelf, debug_role("shelved"))
    write_tree(shelf / "roles", {"dup/tasks/main.yml": "- debug: msg=from-env\n"})
    write_tree(cfg_shelf, {"cfgrole/tasks/main.yml": "- debug: msg=from-cfg\n"})
    (tmp_path / "ansible.cfg").write_text("[defaults]\nroles_path = cfg-shelf\n")
    site = tmp_path / "play"
    write_tree(site, {"roles/dup/tasks/main.yml": "- debug: msg=beside\n"})
    write_tree(site, {"here/tasks/main.yml": "- debug: msg=playdir\n"})
    monkeypatch.setenv("ANSIBLE_CONFIG", str(tmp_path / "ansible.cfg"))
    monkeypatch.delenv("ANSIBLE_ROLES_PATH", raising=False)
    assert configured_roles_path() == [str(cfg_shelf)]  # relative to the file's directory
    # find reads no file, so the loader needs no reader
    loader = RoleLoader(str(site), files=None)  # type: ignore[arg-type]
    ref = role_ref("cfgrole", "site.yml", 1)
    assert loader.find(ref) == str(cfg_shelf / "cfgrole")
    monkeypatch.setenv("ANSIBLE_ROLES_PATH", f"{shelf / 'roles'}:{shelf}")  # env beats cfg
    loader = RoleLoader(str(site), files=None)  # type: ignore[arg-type]
    assert loader.find(role_ref("shelved", "site.yml", 1)) == str(shelf / "roles" / "shelved")
    assert loader.find(role_ref("dup", "site.yml", 1)) == str(site / "roles" / "dup")  # first
    assert loader.find(role_ref("here", "site.yml", 1)) == str(site / "here")  # play's dir
    assert loader.find(role_ref(str(shelf / "roles" / "dup"), "f", 1)) == str(shelf / "roles/dup")
    monkeypatch.delenv("ANSIBLE_ROLES_PATH")
    monkeypatch.setenv("ANSIBLE_CONFIG", str(tmp_path / "none.cfg"))
    monkeypatch.setenv("ANSIBLE_HOME", str(tmp_path / "home"))
    assert configured_roles_path() == [
        str(tmp_path / "home" / "roles"),
        "/usr/share/ansible/roles",
        "/etc/ansible/roles",
    ]


def test_a_dependency_is_found_beside_the_role_that_needs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANSIBLE_ROLES_PATH", str(tmp_path / "nowhere"))
    write_tree(tmp_path / "vendor", {**debug_role("app", "helper"), **debug_role("helper")})
    play = play_of(tmp_path / "pb", {}, f"- hosts: all\n  roles: ['{tmp_path}/vendor/roles/app']\n")
    assert messages(play) == ["helper", "app"]
    assert leaf_tasks(play.tasks)[1].name == "app : task 1"  # a path shows its basename


@pytest.mark.parametrize(
    ("site", "files", "message"),
    [
        (
            "- hosts: all\n  roles:\n    - nosuch\n",
            {},
            "site.yml:3: role 'nosuch': the role 'nosuch' was not found in {root}/roles:"
            "{root}/nowhere:{root} (put it in roles/ beside the playbook",
        ),
        (
            "- hosts: all\n  roles:\n    - nvidia.gpu.driver\n",
            {},
            "site.yml:3: role 'nvidia.gpu.driver': a collection role, not found as a role "
            "directory in {root}/roles:{root}/nowhere:{root}; provision does not read "
            "collections",
        ),
        (
            "- hosts: all\n  tasks:\n    - import_role: {name: web, tasks_from: nope}\n",
            debug_role("web"),
            "site.yml:3: role 'web': could not find the specified file in role: tasks/nope",
        ),
        (
            "- hosts: all\n  roles: [a]\n",
            {**debug_role("a", "b"), **debug_role("b", "a")},
            "meta/main.yml:4: role 'a': role dependency cycle",
        ),
        (
            "- hosts: all\n  roles:\n    - role: web\n      port: 81\n",
            debug_role("web"),
            "site.yml:4: role 'web': 'port' is not supported on a role entry",
        ),
        (
            "- hosts: all\n  connection: winrm\n  tasks: []\n",
            {},
            "site.yml:2: connection 'winrm' is not supported (provision connects with local, "
            "paramiko, paramiko_ssh, smart, ssh)",
        ),
        (
            "- hosts: all\n  tasks: []\n  handlers:\n    - import_role: {name: web}\n",
            debug_role("web"),
            "site.yml:4: import_role: import_role as a handler is not supported",
        ),
        (
            "- hosts: all\n  tasks:\n    - import_role: {name: web}\n      loop: [1]\n",
            debug_role("web"),
            "site.yml:4: import_role: 'loop' is not supported on an import (use include_role",
        ),
        (
            "- hosts: all\n  tasks:\n    - import_role: {name: web, apply: {tags: x}}\n",
            debug_role("web"),
            "site.yml:3: import_role: 'apply' is only for include_role",
        ),
        (
            "- hosts: all\n  roles: [web]\n",
            {"roles/web/tasks/main.yml": "- debug: msg=x\n  notify: nobody\n"},
            "roles/web/tasks/main.yml:1: task 'web : task 1': notify names no handler: 'nobody'",
        ),
    ],
)
def test_bad_roles_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: str, files: dict[str, str], message: str
) -> None:
    monkeypatch.setenv("ANSIBLE_ROLES_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(PlaybookError) as caught:
        play_of(tmp_path, files, site)
    text = str(caught.value)
    assert "\n" not in text
    assert message.format(root=tmp_path) in text


def test_syntax_check_reads_roles_and_names_a_missing_one(tmp_path: Path) -> None:
    write_tree(tmp_path, {**debug_role("web", "common"), **debug_role("common")})
    (tmp_path / "hosts.ini").write_text("[here]\nlocalhost ansible_connection=local\n")
    (tmp_path / "site.yml").write_text("- hosts: all\n  roles: [web]\n")
    (tmp_path / "bad.yml").write_text("- hosts: all\n  roles:\n    - web\n    - nosuch\n")
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(tmp_path / "shelf")}
    good = provision("apply", "--syntax-check", "-i", "hosts.ini", "site.yml", cwd=tmp_path)
    assert good.returncode == 0 and "syntax ok" in good.stdout, good.stdout + good.stderr
    bad = cli("apply", "--syntax-check", "-i", "hosts.ini", "bad.yml", cwd=str(tmp_path), env=env)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"provision: error: bad.yml:4: role 'nosuch': the role 'nosuch' was not found in "
        f"{tmp_path}/roles:{tmp_path}/shelf:{tmp_path} (put it in roles/ beside the playbook, "
        "or name its directory in ANSIBLE_ROLES_PATH or ansible.cfg roles_path)"
    ]


# -- play keywords -------------------------------------------------------------------------


def test_play_tags_connection_and_collections(tmp_path: Path) -> None:
    play = play_of(
        tmp_path,
        debug_role("web"),
        "- hosts: all\n  tags: [lab, gpu]\n  connection: smart\n  collections: [ansible.posix]\n"
        "  roles: [web]\n  pre_tasks:\n    - debug: msg=pre\n      tags: own\n",
    )
    tags = [t.tags for t in leaf_tasks(play.tasks)]
    assert tags == [["lab", "gpu", "own"], ["lab", "gpu", "always"], ["lab", "gpu"]]
    assert play.connection == "ssh" and play.tags == ["lab", "gpu"]
    local = play_of(tmp_path, {}, "- hosts: all\n  connection: local\n  tasks: []\n")
    assert local.connection == "local" and local.tasks == []  # no sections, no flushes
    for written in ("paramiko_ssh", "ansible.builtin.ssh"):
        other = play_of(tmp_path, {}, f"- hosts: all\n  connection: {written}\n  tasks: []\n")
        assert other.connection == "ssh"


# -- include_role: the module entry and the loader the play iterator calls ----------------------


def test_include_role_passes_syntax_check_and_loads_when_asked(tmp_path: Path) -> None:
    files = {
        **debug_role("web", "base"),
        **debug_role("base"),
        "roles/web/tasks/setup.yml": "- debug: msg=setup\n  notify: done\n",
        "roles/web/handlers/main.yml": "- name: done\n  debug: msg=done\n",
        "roles/web/defaults/main.yml": "port: 80\n",
        "roles/web/vars/main.yml": "colour: red\n",
    }
    play = play_of(
        tmp_path,
        files,
        "- hosts: all\n  tasks:\n    - ansible.builtin.include_role:\n"
        "        name: '{{ which }}'\n        tasks_from: setup\n      loop: [1, 2]\n",
    )
    task = leaf_tasks(play.tasks)[0]
    assert module_named("ansible.builtin.include_role") == "include_role"
    assert MODULES["include_role"].includes == "role"
    assert task.args["name"] == "{{ which }}"  # rendered when it runs, per loop item
    included = load_included_role(
        {"name": "web", "tasks_from": "setup"}, task.file, task.line, play.base_dir
    )
    assert messages(Play("p", "all", "f", 1, tasks=included.tasks)) == ["base", "setup"]
    assert included.tasks[1].name == "web : task 1"
    second = included.tasks[1]
    assert isinstance(second, Task) and second.role_path == str(tmp_path / "roles" / "web")
    assert [h.name for h in included.handlers] == ["done"]
    assert included.defaults == {"port": 80} and included.vars == {"colour": "red"}
    with pytest.raises(PlaybookError, match=r"f:9: role 'gone': the role 'gone' was not found"):
        load_included_role({"name": "gone"}, "f", 9, play.base_dir)


# -- a role's files, templates and vars: the role's directory first --------------------------


def test_modules_read_the_roles_files_before_the_plays(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "roles/web/templates/site.conf.j2": "role template\n",
            "templates/site.conf.j2": "play template\n",
            "templates/only-play.j2": "play only\n",
            "roles/web/files/motd": "role file\n",
            "roles/web/vars/extra.yml": "from: role\n",
        },
    )
    role = Context(
        base_dir=str(tmp_path), role_path=str(tmp_path / "roles/web"), render=lambda text: text
    )
    play = Context(base_dir=str(tmp_path), render=lambda text: text)
    template, copy, include_vars = (MODULES[m] for m in ("template", "copy", "include_vars"))

    def rendered(ctx: Context, src: str) -> bytes:
        args = template.finalize({"src": src, "dest": "/etc/x"})
        return bytes(template.prepare(args, ctx)["data"])

    assert rendered(role, "site.conf.j2") == b"role template\n"
    assert rendered(play, "site.conf.j2") == b"play template\n"
    assert rendered(role, "only-play.j2") == b"play only\n"  # then the play's
    copied = copy.prepare(copy.finalize({"src": "motd", "dest": "/etc/motd"}), role)
    assert b"role file" in repr(copied).encode()
    found = include_vars.prepare(include_vars.finalize({"file": "extra.yml"}), role)
    assert found["vars"] == {"from": "role"}
    assert role.search_dirs() == (str(tmp_path / "roles/web"), str(tmp_path))
    role_dir = str(tmp_path / "roles/web")
    assert loop_items("fileglob", "mot*", str(tmp_path), "t", role_path=role_dir) == [
        f"{role_dir}/files/motd"
    ]
    assert loop_items("fileglob", "mot*", str(tmp_path), "t") == []  # the play has none


# -- both tools, two booted hosts --------------------------------------------------------------


ROLE_SITE = """\
- hosts: all
  gather_facts: false
  become: true
  pre_tasks:
    - name: the lab directory
      ansible.builtin.file: {path: /srv/lab, state: directory, mode: "0755"}
  roles:
    - role: motd
      motd_owner: nobody
    - role: web
      vars:
        web_colour: green
  tasks:
    - name: a role's other task file
      ansible.builtin.import_role:
        name: web
        tasks_from: extra
  post_tasks:
    - name: what the handler left
      ansible.builtin.command: cat /srv/lab/restarted
      register: restarted
      changed_when: false
      check_mode: false
    - ansible.builtin.copy:
        dest: /srv/lab/post.txt
        content: "post saw {{ restarted.stdout }}\\n"
        mode: "0600"
"""

ROLE_FILES = {
    "roles/common/tasks/main.yml": """\
- name: common marker
  ansible.builtin.copy:
    dest: /srv/lab/common.txt
    content: "common {{ common_level }}\\n"
    mode: "0640"
""",
    "roles/common/defaults/main.yml": "common_level: 1\n",
    "roles/motd/meta/main.yml": "galaxy_info:\n  author: lab\ndependencies:\n  - common\n",
    "roles/motd/tasks/main.yml": """\
- name: the message of the day
  ansible.builtin.copy:
    src: motd.txt
    dest: /srv/lab/motd
    owner: "{{ motd_owner }}"
    mode: "0644"
""",
    "roles/motd/files/motd.txt": "welcome to the lab\n",
    "roles/web/defaults/main.yml": "web_port: 8080\nweb_colour: blue\n",
    "roles/web/vars/main.yml": "web_name: lab-web\n",
    "roles/web/meta/main.yml": "dependencies:\n  - role: common\n",
    "roles/web/tasks/main.yml": """\
- name: the site config
  ansible.builtin.template:
    src: site.conf.j2
    dest: /srv/lab/site.conf
    mode: "0640"
  notify: restart web
""",
    "roles/web/tasks/extra.yml": """\
- name: extra from tasks_from
  ansible.builtin.copy:
    dest: /srv/lab/extra.txt
    content: "{{ web_name }} on {{ web_port }}\\n"
""",
    "roles/web/templates/site.conf.j2": "name={{ web_name }}\nport={{ web_port }}\n"
    "colour={{ web_colour }}\n",
    "roles/web/handlers/main.yml": """\
- name: restart web
  ansible.builtin.shell: echo "restarted {{ web_colour }}" > /srv/lab/restarted
""",
}
STATE = "cd /srv/lab && for f in $(ls); do stat -c '%n %a %U %G' $f; cat $f; done"


def test_role_playbook_matches_ansible_playbook_on_booted_hosts(
    booted_hosts,  # noqa: F811
    tmp_path: Path,
) -> None:
    write_tree(tmp_path, ROLE_FILES)  # the role's files and templates only inside the roles
    (tmp_path / "site.yml").write_text(ROLE_SITE)
    hosts = booted_hosts(2, prefix="roles")
    args = apply_with_both(hosts, tmp_path, "site.yml")
    theirs, mine = (h.exec(STATE).stdout for h in hosts)
    assert mine == theirs
    assert "motd 644 nobody root\nwelcome to the lab\n" in mine
    assert "site.conf 640 root root\nname=lab-web\nport=8080\ncolour=green\n" in mine
    # the handler ran before post_tasks (the flush), as the last copy of the role's handlers:
    # import_role's, which has no ``vars: {web_colour: green}`` (Ansible's shadowing)
    assert "post.txt 600 root root\npost saw restarted blue\n" in mine
    assert "common.txt 640 root root\ncommon 1\n" in mine
    again = provision(*args, cwd=tmp_path)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout
    hosts[1].exec("rm /srv/lab/extra.txt && echo tampered > /srv/lab/site.conf")
    before = hosts[1].exec(STATE).stdout
    check = provision(*args, "--check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert recap(check.stdout)["changed"] == 2, check.stdout  # it says what it would do
    assert hosts[1].exec(STATE).stdout == before  # and does nothing


INCLUDE_ROLE_FILES = {
    "roles/gpu/defaults/main.yml": "gpu_model: A100\ngpu_note: default\n",
    "roles/gpu/vars/main.yml": "gpu_vendor: nvidia\n",
    "roles/gpu/tasks/main.yml": (
        "- copy:\n"
        '    dest: "{{ out }}/{{ item }}.txt"\n'
        '    content: "{{ item }} {{ gpu_model }} {{ gpu_vendor }} {{ gpu_note }}\\n"\n'
        "  notify: gpu done\n"
    ),
    "roles/gpu/tasks/extra.yml": (
        '- template: {src: card.j2, dest: "{{ out }}/card-{{ item }}.txt"}\n'
    ),
    "roles/gpu/templates/card.j2": "card {{ item }} of {{ gpu_vendor }}\n",
    "roles/gpu/handlers/main.yml": (
        '- name: gpu done\n  copy: {dest: "{{ out }}/handled.txt", content: "handled\\n"}\n'
    ),
}
INCLUDE_ROLE_SITE = """\
- hosts: all
  gather_facts: false
  vars:
    gpu_note: from-play
  tasks:
    - include_role:
        name: gpu
      loop: [one, two]
      vars:
        gpu_model: H200
    - ansible.builtin.include_role:
        name: gpu
        tasks_from: extra
      loop: [three]
      when: out is defined
    - include_role: {name: gpu}
      loop: [never]
      when: false
"""


def test_include_role_runs_like_ansible_playbook(tmp_path: Path) -> None:
    """include_role in a loop, with vars and tasks_from; role defaults under the play's vars,
    role vars, the role's templates and its handler: the same files as ansible-playbook."""
    write_tree(tmp_path, {**INCLUDE_ROLE_FILES, "site.yml": INCLUDE_ROLE_SITE})
    write_local_inventory(tmp_path)
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    theirs.mkdir()
    mine.mkdir()
    run_ansible_playbook_locally(tmp_path, "site.yml", "-e", f"out={theirs}")
    first = run_provision_locally(tmp_path, "site.yml", "-e", f"out={mine}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert tree(mine) == tree(theirs)
    assert (mine / "one.txt").read_text() == "one H200 nvidia from-play\n"
    assert (mine / "card-three.txt").read_text() == "card three of nvidia\n"
    assert (mine / "handled.txt").exists()
    again = run_provision_locally(tmp_path, "site.yml", "-e", f"out={mine}")
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout
