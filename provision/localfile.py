"""Replace a file on this machine whole or not at all: the one local atomic write.

Reports, metrics files, retry files, known_hosts and inventories are read by other programs
(a textfile collector, ssh, a later run) at any moment, so a reader must see either the old file
or the new one, never a part: the data goes to a temporary file in the same directory (a rename
is atomic only within one filesystem), is flushed to disk, gets its mode, and is renamed over the
target. Any failure removes the temporary file and leaves the target untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def default_mode(path: str) -> int:
    """The mode a replaced file keeps, or what a plain ``open(path, "w")`` would create."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def replace_file(path: str, data: bytes | str, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically; raises OSError (the target is then unchanged).

    Text is written as UTF-8 exactly as given (no newline translation). ``mode`` defaults to
    the existing file's mode, else the umask's default. The temporary name starts with a dot and
    does not end like the target, so a collector that reads ``*.prom`` never picks it up.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    final_mode = default_mode(path) if mode is None else mode
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, final_mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
