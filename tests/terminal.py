"""A real terminal for tests: a tmux session on its own server socket (Debian package tmux),
driven with send-keys and read with capture-pane, as a user's terminal would show it."""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from tests.conftest import need_binary

_sessions = itertools.count()


class Tmux:
    """One window of ``width`` x ``height`` running ``argv``; closed by :meth:`close`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        width: int = 100,
        height: int = 30,
    ) -> None:
        self.tmux = need_binary("tmux", "tmux")
        self.socket = f"provision-test-{os.getpid()}-{next(_sessions)}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        # After the command, its exit status, and the screen stays readable until close().
        command = f'env {exports} {shlex.join(argv)}; echo "[exited $?]"; sleep 3600'
        self._tmux(
            "new-session", "-d", "-x", str(width), "-y", str(height), "-c", cwd or os.getcwd(),
            command,
        )  # fmt: skip

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            [self.tmux, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tmux {args[0]}: {done.stderr.strip()}")
        return done.stdout

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "0", "--", *keys)  # "--": keys may start with -

    def screen(self) -> str:
        """The visible screen, trailing blanks dropped."""
        return self._tmux("capture-pane", "-p", "-t", "0").rstrip("\n")

    def wait(self, done: Callable[[str], bool], timeout: float = 20) -> str:
        """The screen once ``done(screen)`` holds; AssertionError with the screen otherwise."""
        end = time.monotonic() + timeout
        while True:
            text = self.screen()
            if done(text):
                return text
            if time.monotonic() > end:
                raise AssertionError(f"terminal never showed what was awaited:\n{text}")
            time.sleep(0.1)

    def exit_status(self, timeout: float = 60) -> int:
        """Wait for the command to end; its exit status."""
        text = self.wait(lambda screen: "[exited " in screen, timeout)
        return int(text.rsplit("[exited ", 1)[1].split("]", 1)[0])

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already gone
            self._tmux("kill-server")
