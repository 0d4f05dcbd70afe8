"""apt: Debian packages present, absent or latest, version pins, holds, a cache kept fresh.

Everything the plan needs (package status, holds, candidates, cache age, an interrupted dpkg)
is read by one snippet that the engine batches with the other reads. Commands run with
``DEBIAN_FRONTEND=noninteractive`` and ``NEEDRESTART_SUSPEND=1`` (no prompts, no needrestart
dialog) and wait for the dpkg lock a bounded time (``DPkg::Lock::Timeout``); when the wait
fails, the holder of the lock (pid and command line) is named in the error.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from provision.modules.base import Arg, ArgError, Context, Module, ModuleError, Plan, Step, noop
from provision.shell import join, quote

LOCKS = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)
STAMP = "/var/lib/apt/periodic/update-success-stamp"
_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_SUSPEND": "1"}
# An install (the NVIDIA driver builds its DKMS module) takes minutes, after apt may have waited
# lock_timeout seconds for the dpkg lock: the step's own bound covers both, so the "lock held by
# pid N" message can appear instead of the run's shorter --command-timeout cutting it off.
INSTALL_TIMEOUT = 1800


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


class AptModule(Module):
    name = "apt"
    spec = (
        Arg("name", "list", default=[], aliases=("package", "pkg")),
        Arg("state", choices=("present", "absent", "latest"), default="present"),
        Arg("hold", "bool"),
        Arg("update_cache", "bool", default=False),
        Arg("cache_valid_time", "int", default=0),
        Arg("lock_timeout", "int", default=120),
        Arg("purge", "bool", default=False),
        # Off by default (a lab host gets what the playbook names, nothing more); a package set
        # that needs its Recommends (Debian's nvidia-driver: libcuda1, nvidia-smi) names them.
        Arg("install_recommends", "bool", default=False),
    )

    def check_combination(self, args: dict[str, Any]) -> None:
        names = args.get("name")
        if isinstance(names, str) and "{" not in names:
            names = [names]
        if isinstance(names, list):
            for spec in names:
                if isinstance(spec, str) and "{" not in spec:
                    split_pin(spec)
        nothing = not names and not args.get("update_cache") and args.get("hold") is None
        if nothing and "update_cache" in args:  # finalized: nothing to do at all is a mistake
            raise ArgError("module 'apt': give 'name' and/or 'update_cache: true'")

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
            policy = f"LANG=C apt-cache policy {q} 2>/dev/null"
            if args["state"] == "latest":
                lines.append(policy)
            else:
                lines.append(
                    "if [ \"$(dpkg-query -W -f '${db:Status-Abbrev}\\n' "
                    f"{q} 2>/dev/null | grep -c '^[ih]i')\" -ne {len(names)} ]; then {policy}; fi"
                )
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
        opts = [
            "-y",
            "-q",
            "-o",
            f"DPkg::Lock::Timeout={args['lock_timeout']}",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ]
        return f"{env} apt-get {join([*opts, *words])}"

    def plan(self, args: dict[str, Any], state: str | None, ctx: Context) -> Plan:
        st = parse_state(state)
        pins = [split_pin(str(s)) for s in args["name"]]
        want = args["state"]
        changes: list[str] = []
        cmds: list[str] = []
        status = {n: st.packages.get(n, ("", "un"))[0] or None for n, _ in pins}
        half = [n for n, _ in pins if half_installed(st.packages.get(n, ("", ""))[1])]
        if st.interrupted or half:
            why = "dpkg was interrupted" if st.interrupted else f"{', '.join(half)} half-installed"
            changes.append(f"repair: {why}, running dpkg --configure -a")
            cmds.append(
                f"{' '.join(f'{k}={quote(v)}' for k, v in _ENV.items())} dpkg --configure -a"
                ' || { rc=$?; echo "provision: dpkg was interrupted and '
                "'dpkg --configure -a' failed (exit $rc); repair it by hand\" >&2; exit $rc; }"
            )
        updating = False
        if args["update_cache"]:
            age = st.now - st.cache_mtime if st.cache_mtime else None
            valid = args["cache_valid_time"]
            if valid <= 0 or age is None or age > valid:
                updating = True
                changes.append(
                    "update the package cache"
                    + (f" (last updated {age} s ago)" if age is not None else " (never updated)")
                )
                cmds.append(self.update_cache(args))
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
        if to_install:
            held = [s for s in to_install if split_pin(s)[0] in still_held]
            extra = ["--allow-change-held-packages"] if held else []
            recommends = [] if args["install_recommends"] else ["--no-install-recommends"]
            cmds.append(self.apt_get(args, "install", *recommends, *extra, *to_install))
        if to_remove:
            extra = ["--allow-change-held-packages"] if still_held & set(to_remove) else []
            verb = "purge" if args["purge"] else "remove"
            cmds.append(self.apt_get(args, verb, *extra, *to_remove))
        if hold:
            changes.append(f"hold {', '.join(hold)}")
            cmds.append(f"apt-mark hold {join(hold)} >/dev/null")
        if not changes:
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
            if args["update_cache"] and names:
                reason += "; package cache is fresh"
            if args["hold"] is True and names:
                reason += "; held"
            return noop(reason, packages=status)
        script = "\n".join(
            [
                "set +e",
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
        return Plan(True, changes=changes, steps=[step], result={"packages": status})
