"""Where output goes and how it may look: read from the process once, by the CLI."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

DEFAULT_WIDTH = 100


@dataclass(frozen=True)
class Environment:
    stdout: TextIO
    stderr: TextIO
    width: int  # columns a table may use
    colour: bool  # whether ANSI colour may be written to stdout
    isatty: bool  # stdout is a terminal
    live: bool = False  # the progress line may be redrawn in place on stderr
    stderr_width: int = 80  # columns the progress line must fit in

    @classmethod
    def of_process(
        cls,
        color: str = "auto",
        to_file: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Environment:
        """``color``: always, never or auto (a terminal, not ``-o FILE``, no ``NO_COLOR``: an
        explicit flag wins over the variable, as no-color.org asks). Width: ``COLUMNS``, the
        terminal's, else 100. The progress line's terms are provision/progress.py's."""
        from provision import progress

        out, err = stdout or sys.stdout, stderr or sys.stderr
        env = os.environ if environ is None else environ
        isatty = out.isatty()
        colour = color == "always" or (
            color == "auto" and isatty and not to_file and not env.get("NO_COLOR")
        )
        width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
        live = progress.is_live(err, env)
        stderr_width = progress.width_of(err, env) if live else 0
        return cls(out, err, width, colour, isatty, live, stderr_width)

    def write(self, text: str) -> None:
        """A line (or lines) on stdout, flushed: it interleaves with the progress line."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def warn(self, text: str) -> None:
        """A line on stderr."""
        self.stderr.write(text + "\n")
        self.stderr.flush()
