"""Downloads made ON the host, with whichever of curl, wget or python3 it has (in that order).

Used where the host itself must fetch a file: ``apt`` ``deb: https://...`` (Ansible's apt
downloads the package on the host too). The function prints one line naming the URL when the
host has none of the three, instead of a shell's "not found".
"""

from __future__ import annotations

from provision.shell import quote

# fetch URL FILE SECONDS: exit status 0 only when FILE holds the complete response body.
FETCH_FUNCTION = "\n".join(
    [
        "fetch() {",
        "  if command -v curl >/dev/null 2>&1; then",
        '    curl -fsSL --max-time "$3" -o "$2" "$1"',
        "  elif command -v wget >/dev/null 2>&1; then",
        '    wget -q -T "$3" -O "$2" "$1"',
        "  elif command -v python3 >/dev/null 2>&1; then",
        "    python3 -c 'import shutil, sys, urllib.request as u\n"
        "with u.urlopen(sys.argv[1], timeout=float(sys.argv[3])) as r, "
        'open(sys.argv[2], "wb") as f:\n'
        '    shutil.copyfileobj(r, f)\' "$1" "$2" "$3"',
        "  else",
        '    echo "provision: the host has no curl, wget or python3 to download $1" >&2',
        "    return 127",
        "  fi",
        "}",
    ]
)


def fetch(url: str, target: str, timeout: int) -> str:
    """A call of :data:`FETCH_FUNCTION` (which must be defined before it); ``target`` is a
    shell word (``"$t/pkg.deb"``)."""
    return f"fetch {quote(url)} {target} {int(timeout)}"
