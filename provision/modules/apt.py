"""apt: Debian packages present, absent or latest, version pins, holds, a cache kept fresh.

Everything the plan needs (package status, holds, candidates, cache age, an interrupted dpkg)
is read by one snippet that the engine batches with the other reads. Commands run with
``DEBIAN_FRONTEND=noninteractive`` and ``NEEDRESTART_SUSPEND=1`` (no prompts, no needrestart
dialog) and wait for the dpkg lock a bounded time (``DPkg::Lock::Timeout``); when the wait
fails, the holder of the lock (pid and command line) is named in the error.

Ansible's arguments mean what they mean in ansible.builtin.apt: ``upgrade``, ``autoremove``,
``autoclean`` and a local or downloaded ``deb`` are decided from apt-get's own simulation
(``apt-get -s``) and ``dpkg-deb -f`` in the same batched read; a cache update beside packages is
no change (Ansible reports ok once the packages are there).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step, noop
from provision.modules.download import FETCH_FUNCTION, fetch
from provision.shell import join, quote

LOCKS = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)
STAMP = "/var/lib/apt/periodic/update-success-stamp"
# what the state read of apt looks at (Debian's apt and dpkg: apt.conf(5) Dir::State, Dir::Cache
# and Dir::Etc; dpkg(1) --admindir), so that a file change elsewhere keeps it cached
APT_READ_PATHS = ("/etc/apt", "/var/lib/apt", "/var/cache/apt", "/var/lib/dpkg")
_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_SUSPEND": "1"}
# An install (the NVIDIA driver builds its DKMS module) takes minutes, after apt may have waited
# lock_timeout seconds for the dpkg lock: the step's own bound covers both, so the "lock held by
# pid N" message can appear instead of the run's shorter --command-timeout cutting it off.
INSTALL_TIMEOUT = 1800
# Ansible's apt: dpkg_options default, and apt-get's summary line when a run changed nothing.
DPKG_OPTIONS = "force-confdef,force-confold"
APT_GET_ZERO = "\n0 upgraded, 0 newly installed, 0 to remove"
# upgrade: apt-get's command for each of Ansible's modes (aptitude is never used: on a host without
# it Ansible's apt uses these same apt-get commands, and force_apt_get forces them).
UPGRADE_COMMANDS = {
    "yes": ("upgrade", "--with-new-pkgs"),
    "safe": ("upgrade", "--with-new-pkgs"),
    "full": ("dist-upgrade",),
    "dist": ("dist-upgrade",),
}
DEB_TIMEOUT = 300  # seconds to download a ``deb:`` URL on the host
TEMP_DEB = '"$t/p.deb"'  # where a downloaded ``deb`` lies, in a directory made by mktemp -d


def step_timeout(args: dict[str, Any]) -> float:
    """The bound of an apt step: the lock wait plus :data:`INSTALL_TIMEOUT`."""
    return float(args["lock_timeout"] + INSTALL_TIMEOUT)


def split_pin(spec: str) -> tuple[str, str | None]:
    """``name=version`` -> (name, version); a bare name has no pin."""
    name, sep, version = spec.partition("=")
    name, version = name.strip(), version.strip()
    if not name or (sep and not version):
        raise ArgError(f"module 'apt': invalid package {spec!r} (expected NAME or NAME=VERSION)")
    return name, version if sep else None


@dataclass
class AptState:
    """What the state snippet printed, parsed."""

    packages: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (ver, abbrev)
    holds: set[str] = field(default_factory=set)
    candidates: dict[str, str] = field(default_factory=dict)
    installed: dict[str, str] = field(default_factory=dict)  # apt-cache policy's "Installed:"
    cache_mtime: int = 0
    now: int = 0
    interrupted: bool = False
    simulated: dict[str, list[str]] = field(default_factory=dict)  # upgrade/autoremove/autoclean
    deb: dict[str, str] = field(default_factory=dict)  # the ``deb`` file's fields and status


def parse_state(text: str | None) -> AptState:
    st = AptState()
    section = ""
    current = ""
    for raw in (text or "").splitlines():
        line = raw.rstrip("\n")
        if line.startswith("@@"):
            section = line[2:].strip()
            continue
        if section == "pkgs":
            parts = line.split("\t")
            if len(parts) >= 3 and parts[0]:
                st.packages[parts[0]] = (parts[1], parts[2])
                if parts[2].startswith("h"):  # dpkg selection "hold": what apt-mark hold sets
                    st.holds.add(parts[0])
        elif section == "policy":
            if line and not line.startswith(" ") and line.endswith(":"):
                current = line[:-1]
            elif line.strip().startswith("Candidate:") and current:
                st.candidates[current] = line.split(":", 1)[1].strip()
            elif line.strip().startswith("Installed:") and current:
                version = line.split(":", 1)[1].strip()
                st.installed[current] = "" if version == "(none)" else version
        elif section in ("upgrade", "autoremove", "autoclean"):
            words = line.split()
            if len(words) >= 2 and words[0] in ("Inst", "Remv", "Purg", "Del"):
                # "Inst NAME [OLD] (NEW ...)", "Remv NAME [VER]", "Del NAME VER [SIZE]"
                what = " ".join(words[1:3]) if words[0] == "Del" else words[1]
                st.simulated.setdefault(section, []).append(what)
        elif section == "deb":
            key, sep, value = line.partition("=")
            if sep:
                st.deb[key] = value.strip()
        elif section == "meta":
            key, _, value = line.partition("=")
            value = value.strip()
            if key == "cache_mtime" and value.isdigit():
                st.cache_mtime = int(value)
            elif key == "now" and value.isdigit():
                st.now = int(value)
            elif key == "interrupted":
                st.interrupted = bool(value)
    return st


def installed(abbrev: str) -> bool:
    """``ii`` (and ``hi``): fully installed. ``rc`` (config files only) counts as absent."""
    return len(abbrev) >= 2 and abbrev[1] == "i"


def half_installed(abbrev: str) -> bool:
    """Unpacked, half-configured, triggers pending...: dpkg must finish its work first."""
    return len(abbrev) >= 2 and abbrev[1] in "UFhWt"


def lock_holder_script() -> str:
    """Print who holds one of apt's/dpkg's locks: /proc/locks first (the real fcntl holder),
    else any process with the lock file open (scanning /proc/*/fd). Prints nothing if free."""
    locks = " ".join(quote(p) for p in LOCKS)
    return "\n".join(
        [
            f"for lf in {locks}; do",
            '  [ -e "$lf" ] || continue',
            '  ino=$(stat -c %i "$lf")',
            '  pids=$(awk -v ino="$ino" \'{n=split($6,a,":"); if (a[n]==ino) print $5}\''
            " /proc/locks 2>/dev/null | sort -u)",
            '  if [ -z "$pids" ]; then',
            "    for fd in /proc/[0-9]*/fd/*; do",
            '      [ "$(readlink "$fd" 2>/dev/null)" = "$lf" ] || continue',
            '      p=${fd#/proc/}; pids="$pids ${p%%/*}"',
            "    done",
            "  fi",
            "  for p in $pids; do",
            '    [ "$p" = "$$" ] && continue',
            "    cmd=$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)",
            '    echo "provision: $lf is held by pid $p (${cmd:-unknown command})"',
            "  done",
            "done",
        ]
    )


def upgrade_mode(value: Any) -> str:
    """Ansible's ``upgrade``: no/yes/safe/full/dist; YAML's booleans (``upgrade: yes`` is
    True) are read back as "yes"/"no", as Ansible's choice check does."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return "yes" if text == "true" else "no"
    if text not in ("no", *UPGRADE_COMMANDS):
        raise ArgError(
            f"module 'apt': argument 'upgrade' must be one of no, yes, safe, full, dist, "
            f"got {value!r}"
        )
    return text


def dpkg_option_words(options: str) -> list[str]:
    """``force-confdef,force-confold`` -> ``-o Dpkg::Options::=--force-confdef ...``."""
    words: list[str] = []
    for option in options.split(","):
        if option.strip():
            words += ["-o", f"Dpkg::Options::=--{option.strip()}"]
    return words


def is_url(deb: str) -> bool:
    return "://" in deb


def deb_probe(args: dict[str, Any]) -> str:
    """Print the ``deb`` file's Package and Version (``dpkg-deb -f``), the installed version
    of that package and whether it is the same (dpkg's own comparison); a URL is downloaded
    to a temporary directory first and removed after (Ansible's apt downloads it each run too)."""
    deb = args["deb"]
    lines = ["echo @@deb", "("]
    if is_url(deb):
        lines += [
            FETCH_FUNCTION,
            "t=$(mktemp -d) || exit 0",
            f'if {fetch(deb, TEMP_DEB, DEB_TIMEOUT)} 2>"$t/err"; then',
            '  f="$t/p.deb"',
            "else",
            "  echo \"fetch=$(tail -c 300 \"$t/err\" | tr '\\n' ' ')\"; f=",
            "fi",
        ]
    else:
        lines += [f"f={quote(deb)}"]
    lines += [
        'if [ -n "$f" ] && [ -f "$f" ]; then',
        '  n=$(dpkg-deb -f "$f" Package); v=$(dpkg-deb -f "$f" Version)',
        '  echo "package=$n"; echo "version=$v"',
        '  echo "status=$(dpkg-query -W -f \'${db:Status-Abbrev}\' "$n" 2>/dev/null)"',
        "  iv=$(dpkg-query -W -f '${Version}' \"$n\" 2>/dev/null)",
        '  echo "installed=$iv"',
        '  if [ -n "$iv" ] && dpkg --compare-versions "$v" eq "$iv"; then echo same=yes; fi',
        'elif [ -n "$f" ]; then echo missing=yes; fi',
    ]
    if is_url(deb):
        lines.append('rm -rf "$t"')
    lines.append(")")
    return "\n".join(lines)


class AptModule(Module):
    name = "apt"
    spec = (
        Arg("name", "list", default=[], aliases=("package", "pkg")),
        Arg("state", choices=("present", "absent", "latest"), default="present"),
        Arg("hold", "bool"),
        Arg("update_cache", "bool", default=False, aliases=("update-cache",)),
        Arg("cache_valid_time", "int", default=0),
        Arg("lock_timeout", "int", default=120),
        Arg("purge", "bool", default=False),
        # Off by default (a lab host gets what the playbook names, nothing more); a package set
        # that needs its Recommends (Debian's nvidia-driver: libcuda1, nvidia-smi) names them.
        Arg("install_recommends", "bool", default=False, aliases=("install-recommends",)),
        Arg("deb"),
        Arg("upgrade", "raw", default="no"),
        Arg("autoremove", "bool", default=False),
        Arg("autoclean", "bool", default=False),
        Arg(
            "allow_downgrade",
            "bool",
            default=False,
            aliases=("allow-downgrade", "allow_downgrades", "allow-downgrades"),
        ),
        Arg("dpkg_options", default=DPKG_OPTIONS),
        Arg("default_release", aliases=("default-release",)),
        Arg("force_apt_get", "bool", default=False),  # accepted: apt-get is always used
    )

    def finalize(self, args: dict[str, Any]) -> dict[str, Any]:
        out = super().finalize(args)
        out["upgrade"] = upgrade_mode(out["upgrade"])
        return out

    def check_combination(self, args: dict[str, Any]) -> None:
        names = args.get("name")
        if isinstance(names, str) and "{" not in names:
            names = [names]
        if isinstance(names, list):
            for spec in names:
                if isinstance(spec, str) and "{" not in spec:
                    split_pin(spec)
        upgrade = args.get("upgrade")
        if upgrade is not None and not (isinstance(upgrade, str) and "{" in upgrade):
            upgrade = upgrade_mode(upgrade)
        deb = args.get("deb")
        given = [k for k, v in (("name", names), ("deb", deb)) if v] + (
            ["upgrade"] if upgrade not in (None, "no") else []
        )
        if len(given) > 1:  # Ansible: mutually exclusive
            raise ArgError(f"module 'apt': give only one of {', '.join(given)}")
        if isinstance(deb, str) and "{" not in deb:
            if not is_url(deb) and not deb.startswith("/"):
                raise ArgError(
                    f"module 'apt': deb {deb!r} must be an absolute path on the host or a URL"
                )
            if args.get("state", "present") != "present":
                raise ArgError("module 'apt': deb only supports state: present")
        nothing = (
            not given
            and not args.get("update_cache")
            and not args.get("cache_valid_time")
            and not args.get("autoremove")
            and not args.get("autoclean")
            and args.get("hold") is None
        )
        if nothing and "update_cache" in args:  # finalized: nothing to do at all is a mistake
            raise ArgError(
                "module 'apt': give 'name', 'deb', 'upgrade', 'autoremove' and/or "
                "'update_cache: true'"
            )

    def release_words(self, args: dict[str, Any]) -> list[str]:
        return ["-t", args["default_release"]] if args["default_release"] else []

    def read_paths(self, args: dict[str, Any]) -> tuple[str, ...] | None:
        """What the read looks at: dpkg's database, apt's lists, stamps and cache, its sources
        and preferences (apt-cache policy), and a ``deb`` file on the host. An install changes
        anything (``paths`` stays None); a file written elsewhere leaves this read as it was,
        so a first run does not read the packages again after every batch of file changes."""
        debs = (args["deb"],) if args.get("deb") and not is_url(args["deb"]) else ()
        return (*APT_READ_PATHS, *debs)

    def state_script(self, args: dict[str, Any], ctx: Context) -> str:
        names = [split_pin(str(s))[0] for s in args["name"]]
        q = join(names) if names else ""
        lines = ["echo @@pkgs"]
        if names:
            lines.append(
                "dpkg-query -W -f '${Package}\\t${Version}\\t${db:Status-Abbrev}\\n' "
                f"{q} 2>/dev/null"
            )
        # Holds come from dpkg's selection state above (no apt-mark: it loads apt's whole cache).
        # The candidates are needed only to install or upgrade: skip apt-cache when every named
        # package is installed and the state is not `latest` (the converged case).
        if names and args["state"] != "absent":
            lines.append("echo @@policy")
            release = args["default_release"]
            opt = f"-o APT::Default-Release={quote(release)} " if release else ""
            policy = f"LANG=C apt-cache {opt}policy {q} 2>/dev/null"
            if args["state"] == "latest":
                lines.append(policy)
            else:
                lines.append(
                    "if [ \"$(dpkg-query -W -f '${db:Status-Abbrev}\\n' "
                    f"{q} 2>/dev/null | grep -c '^[ih]i')\" -ne {len(names)} ]; then {policy}; fi"
                )
        lines += self.simulations(args, bool(names))
        if args["deb"]:
            lines.append(deb_probe(args))
        lines += [
            "echo @@meta",
            f"s=$(stat -c %Y {quote(STAMP)} 2>/dev/null || echo 0)",
            "l=$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -printf '%T@\\n' "
            "2>/dev/null | cut -d. -f1 | sort -n | tail -n1)",
            'if [ "${l:-0}" -gt "$s" ]; then s=$l; fi',
            'echo "cache_mtime=$s"',
            'echo "now=$(date +%s)"',
            'echo "interrupted=$(ls -A /var/lib/dpkg/updates 2>/dev/null | head -n1)"',
        ]
        return "\n".join(lines)

    def simulations(self, args: dict[str, Any], names: bool) -> list[str]:
        """``apt-get -s`` (a simulation: no lock, nothing changed) of the upgrade, autoremove or
        autoclean the task asks for: what it would do decides whether it is a change."""
        sim = "LANG=C apt-get -s -q"
        lines: list[str] = []
        if args["upgrade"] != "no":
            words = [*self.release_words(args), *self.upgrade_words(args)]
            lines += [
                "echo @@upgrade",
                f"{sim} {join(words)} 2>/dev/null | grep -E '^(Inst|Remv|Purg) '",
            ]
        elif args["autoclean"] and not names and not args["deb"]:
            lines += ["echo @@autoclean", f"{sim} autoclean 2>/dev/null | grep '^Del '"]
        elif args["autoremove"] and not names and not args["deb"]:
            purge = " --purge" if args["purge"] else ""
            lines += [
                "echo @@autoremove",
                f"{sim}{purge} autoremove 2>/dev/null | grep -E '^(Remv|Purg) '",
            ]
        return lines

    def upgrade_words(self, args: dict[str, Any]) -> list[str]:
        words = list(UPGRADE_COMMANDS[args["upgrade"]])
        if args["autoremove"]:
            words.append("--auto-remove")
        if args["allow_downgrade"]:
            words.append("--allow-downgrades")
        return words

    def update_cache(self, args: dict[str, Any]) -> str:
        """``apt-get update``, then the success stamp that ``cache_valid_time`` reads.

        apt gives the lists the mirror's Last-Modified time, often days old, and on Debian nothing
        touches the stamp (Ubuntu's update-notifier does): without it a fresh cache looks stale
        and every run would update again.
        """
        stamp = quote(STAMP)
        return (
            f"{self.apt_get(args, 'update')} && mkdir -p {quote(posixpath.dirname(STAMP))}"
            f" && touch {stamp}"
        )

    def apt_get(self, args: dict[str, Any], *words: str) -> str:
        env = " ".join(f"{k}={quote(v)}" for k, v in _ENV.items())
        options = args.get("dpkg_options") or DPKG_OPTIONS
        opts = [
            "-y",
            "-q",
            "-o",
            f"DPkg::Lock::Timeout={args['lock_timeout']}",
            *dpkg_option_words(options),
        ]
        return f"{env} apt-get {join([*opts, *words])}"

    def cache_update_due(self, args: dict[str, Any], st: AptState) -> str | None:
        """The change line of a due cache update (``cache_valid_time`` alone asks for one too,
        as in Ansible since 2.4), or None."""
        if not args["update_cache"] and not args["cache_valid_time"]:
            return None
        age = st.now - st.cache_mtime if st.cache_mtime else None
        valid = args["cache_valid_time"]
        if valid > 0 and age is not None and age <= valid:
            return None
        return "update the package cache" + (
            f" (last updated {age} s ago)" if age is not None else " (never updated)"
        )

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        st = parse_state(state)
        pins = [split_pin(str(s)) for s in args["name"]]
        changes: list[str] = []  # certain changes, known from the state read
        cmds: list[str] = []
        half = [n for n, _ in pins if half_installed(st.packages.get(n, ("", ""))[1])]
        if st.interrupted or half:
            why = "dpkg was interrupted" if st.interrupted else f"{', '.join(half)} half-installed"
            changes.append(f"repair: {why}, running dpkg --configure -a")
            cmds.append(
                f"{' '.join(f'{k}={quote(v)}' for k, v in _ENV.items())} dpkg --configure -a"
                ' || { rc=$?; echo "provision: dpkg was interrupted and '
                "'dpkg --configure -a' failed (exit $rc); repair it by hand\" >&2; exit $rc; }"
            )
        update = self.cache_update_due(args, st)
        after_repair = len(changes)  # the update's change line goes where its command runs
        if update:
            cmds.append(self.update_cache(args))
        if args["upgrade"] != "no":
            reason = self.plan_upgrade(args, st, bool(update), changes, cmds)
        elif args["deb"]:
            reason = self.plan_deb(args, st, changes, cmds)
        elif not pins and (args["autoclean"] or args["autoremove"]):
            reason = self.plan_cleanup(args, st, changes, cmds)
        else:
            reason = self.plan_packages(args, st, state, bool(update), pins, changes, cmds)
        status = {n: st.packages.get(n, ("", "un"))[0] or None for n, _ in pins}
        if not cmds:
            if (
                update is None
                and (args["update_cache"] or args["cache_valid_time"])
                and (pins or args["deb"] or args["upgrade"] != "no")
            ):
                reason += "; package cache is fresh"
            return noop(reason, packages=status)
        script = "\n".join(
            [
                "set +e",
                *([FETCH_FUNCTION] if args["deb"] and is_url(args["deb"]) else []),
                "run() {",
                "\n".join(f"  {c} || return $?" for c in cmds),
                "}",
                "run; rc=$?",
                'if [ "$rc" -ne 0 ]; then',
                lock_holder_script() + " >&2",
                "fi",
                'exit "$rc"',
            ]
        )
        step = Step(script, timeout=step_timeout(args))
        result = {"packages": status, "cache_updated": bool(update)}
        if changes:
            changes[after_repair:after_repair] = [update] if update else []
            return Plan(True, changes=changes, steps=[step], result=result)
        # Only the cache update (and an upgrade it may make possible) runs. Ansible reports the
        # update alone as a change, and beside packages, a deb or an upgrade as none.
        alone = not pins and not args["deb"] and args["upgrade"] == "no"
        if alone:
            return Plan(True, changes=[str(update)], steps=[step], result=result)
        changed_if = (
            (lambda out: bool(out) and APT_GET_ZERO not in out)
            if args["upgrade"] != "no"
            else (lambda out: False)
        )
        return Plan(
            True,
            reason=f"{reason}; package cache updated",
            changes=[str(update)]
            + (["upgrade what the new cache offers"] if args["upgrade"] != "no" else []),
            steps=[step],
            result=result,
            changed_if=changed_if,
        )

    def plan_upgrade(
        self,
        args: dict[str, Any],
        st: AptState,
        updating: bool,
        changes: list[str],
        cmds: list[str],
    ) -> str:
        """``upgrade``: apt-get's (dist-)upgrade when its simulation does anything, or after a
        cache update (whose new lists may offer more)."""
        words = self.upgrade_words(args)
        simulated = st.simulated.get("upgrade", [])
        if simulated or updating:
            cmds.append(self.apt_get(args, *self.release_words(args), *words))
        if simulated:
            shown = ", ".join(simulated[:8]) + (
                f" and {len(simulated) - 8} more" if len(simulated) > 8 else ""
            )
            changes.append(f"{' '.join(words[:1])}: {shown}")
        return "no packages to upgrade"

    def plan_deb(
        self, args: dict[str, Any], st: AptState, changes: list[str], cmds: list[str]
    ) -> str:
        deb, info = args["deb"], st.deb
        if "fetch" in info:
            raise ModuleError(f"deb {deb}: the download failed: {info['fetch'].strip()}")
        if info.get("missing") or not info.get("package"):
            raise ModuleError(f"deb {deb}: no such file on the host")
        name, version, have = info["package"], info.get("version", ""), info.get("installed", "")
        if installed(info.get("status", "")) and info.get("same"):
            return f"{name} {version}: installed"
        changes.append(f"install {name} {version} from {deb}" + (f" (was {have})" if have else ""))
        words = self.install_words(args)
        if is_url(deb):
            install = self.apt_get(args, "install", *words, "$t/p.deb").replace(
                "'$t/p.deb'", TEMP_DEB
            )
            get = fetch(deb, TEMP_DEB, DEB_TIMEOUT)
            cmds.append(
                f'{{ t=$(mktemp -d) && chmod 755 "$t" && {get} && {install}; rc=$?; rm -rf "$t"; '
                '[ "$rc" -eq 0 ]; }'
            )
        else:
            cmds.append(self.apt_get(args, "install", *words, deb))
        return ""

    def install_words(self, args: dict[str, Any]) -> list[str]:
        words = [] if args["install_recommends"] else ["--no-install-recommends"]
        if args["allow_downgrade"]:
            words.append("--allow-downgrades")
        return words

    def plan_cleanup(
        self, args: dict[str, Any], st: AptState, changes: list[str], cmds: list[str]
    ) -> str:
        """``autoclean`` (stale .debs in apt's cache) or else ``autoremove`` (packages nothing
        depends on any more), each only when its simulation lists something (as Ansible: one
        of the two, autoclean first)."""
        if args["autoclean"]:
            stale = st.simulated.get("autoclean", [])
            if stale:
                changes.append(f"autoclean: delete {len(stale)} obsolete package files")
                cmds.append(self.apt_get(args, "autoclean"))
            return "no obsolete package files"
        unused = st.simulated.get("autoremove", [])
        if unused:
            verb = "purge" if args["purge"] else "remove"
            changes.append(f"autoremove: {verb} {', '.join(unused)}")
            cmds.append(self.apt_get(args, *(["--purge"] if args["purge"] else []), "autoremove"))
        return "no unused packages to remove"

    def plan_packages(
        self,
        args: dict[str, Any],
        st: AptState,
        state: str | None,
        updating: bool,
        pins: list[tuple[str, str | None]],
        changes: list[str],
        cmds: list[str],
    ) -> str:
        want = args["state"]
        status = {n: st.packages.get(n, ("", "un"))[0] or None for n, _ in pins}
        to_install: list[str] = []
        to_remove: list[str] = []
        for name, version in pins:
            ver, abbrev = st.packages.get(name, ("", "un"))
            have = installed(abbrev) or (want != "absent" and half_installed(abbrev))
            cand = st.candidates.get(name)
            if want == "absent":
                if have or half_installed(abbrev):
                    to_remove.append(name)
                    changes.append(f"remove {name} {ver}".rstrip())
                continue
            if version is not None:
                if not have or ver != version:
                    to_install.append(f"{name}={version}")
                    changes.append(f"install {name} {version}" + (f" (was {ver})" if have else ""))
                continue
            if not have:
                if cand in (None, "(none)") and not updating and state is not None:
                    raise ModuleError(f"package {name} has no installation candidate")
                to_install.append(name)
                changes.append(f"install {name}" + (f" {cand}" if cand else ""))
            elif want == "latest" and cand not in (None, "(none)", ver):
                to_install.append(name)
                changes.append(f"upgrade {name} {ver} -> {cand}")
        names = [n for n, _ in pins]
        unhold: list[str] = []
        hold: list[str] = []
        if args["hold"] is True and want != "absent":
            hold = [n for n in names if n not in st.holds]
        elif args["hold"] is not None:
            unhold = [n for n in names if n in st.holds]
        if unhold:  # first, so that a package let go can be changed right away
            changes.append(f"unhold {', '.join(unhold)}")
            cmds.append(f"apt-mark unhold {join(unhold)} >/dev/null")
        still_held = st.holds - set(unhold)
        autoremove = ["--auto-remove"] if args["autoremove"] else []
        if to_install:
            held = [s for s in to_install if split_pin(s)[0] in still_held]
            extra = ["--allow-change-held-packages"] if held else []
            words = [*self.install_words(args), *autoremove, *extra, *self.release_words(args)]
            cmds.append(self.apt_get(args, "install", *words, *to_install))
        if to_remove:
            extra = ["--allow-change-held-packages"] if still_held & set(to_remove) else []
            verb = "purge" if args["purge"] else "remove"
            cmds.append(self.apt_get(args, verb, *autoremove, *extra, *to_remove))
        if hold:
            changes.append(f"hold {', '.join(hold)}")
            cmds.append(f"apt-mark hold {join(hold)} >/dev/null")
        parts = []
        for name, _pin in pins:
            current = status.get(name)
            parts.append(f"{name} {current}" if current and want != "absent" else name)
        what = ", ".join(parts) or "package cache"
        if want == "absent":
            reason = f"{what}: not installed"
        elif names:
            reason = f"{what}: installed" + (" and up to date" if want == "latest" else "")
        else:
            reason = "package cache is fresh"
        if args["hold"] is True and names:
            reason += "; held"
        return reason
