"""Make a booted lab host look like a freshly installed Ubuntu workstation (for onboard tests).

What the Ubuntu installer leaves: one user with a password, in the ``sudo`` group (sudo asks for
that password), password SSH logins on, and no ``~/.ssh/authorized_keys``. Booted lab hosts are
made for key logins as root (``PasswordAuthentication no`` in their ``lab.conf``); this turns
password logins on there and adds such a user. Everything is done from the machine (nsenter),
never through the code under test.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from provision.shell import quote
from tests.lab.booted import BootedHost

LAB_CONF = "/etc/ssh/sshd_config.d/lab.conf"


@dataclass(frozen=True)
class FreshInstall:
    host: BootedHost
    user: str
    password: str  # a throwaway test credential, random per host

    def journal_count(self, text: str) -> int:
        """How many journal lines of the host contain ``text`` (sshd logs every login try)."""
        done = self.host.exec(
            f"journalctl --no-pager -o cat | grep -cF -- {quote(text)}", check=False
        )
        return int(done.stdout.strip() or 0)


def prepare_fresh_install(host: BootedHost, user: str = "fresh") -> FreshInstall:
    """Add ``user`` with a random password and password sudo; allow password SSH logins."""
    password = "pw-" + secrets.token_urlsafe(12)
    host.exec(
        f"id -u {quote(user)} >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo {quote(user)}"
    )
    host.exec("chpasswd", input=f"{user}:{password}\n")  # on stdin, never in argv
    host.exec(f"rm -rf ~{user}/.ssh")
    fresh = FreshInstall(host, user, password)
    listening = fresh.journal_count("Server listening on")
    host.exec(
        f"sed -i 's/^PasswordAuthentication no$/PasswordAuthentication yes/' {LAB_CONF} && "
        "sshd -t && systemctl reload ssh"
    )
    effective = host.exec("sshd -T | grep -i '^passwordauthentication '").stdout.split()
    assert effective == ["passwordauthentication", "yes"], effective
    # `systemctl reload` returns once sshd has its SIGHUP, before it has re-executed with the
    # new file: a login in between meets the old "no passwords" (a CI run lost that race).
    deadline = time.monotonic() + 30
    while fresh.journal_count("Server listening on") <= listening:
        if time.monotonic() > deadline:
            raise AssertionError(f"{host.name}: sshd did not restart after its reload")
        time.sleep(0.1)
    return fresh
