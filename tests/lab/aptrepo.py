"""A local signed flat apt repository, served on 127.0.0.1, for the apt_repository tests.

It stands in for vendor repositories (NVIDIA, Docker) that cannot be reached here: one stand-in
package built with ``dpkg-deb`` plus any prebuilt ``.deb`` files the caller passes (``debs``: the
stand-in NVIDIA packages of tests/lab/standin_debs.py), indexed with ``apt-ftparchive``
(Debian package ``apt-utils``),
``Release`` signed into ``InRelease`` with a throwaway ed25519 key in a temporary GNUPGHOME (no
passphrase), served by a Python HTTP server thread. Booted lab hosts share the machine's network,
so they reach it. A second throwaway key is served as ``wrong.asc`` for the fingerprint refusal.

The repository is FLAT (no dists/ tree), like NVIDIA's CUDA and container toolkit repositories:
a deb822 source uses ``URIs: <url>`` with ``Suites: /`` (NVIDIA's spelling) or ``Suites: ./``.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import need_binary

STANDIN_PACKAGE = "provision-standin-hello"
STANDIN_VERSION = "1.0-1"
STANDIN_OUTPUT = "hello from the provision stand-in package"


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@dataclass
class AptRepo:
    """The served repository: its URL, the signing key's fingerprint and armored public key."""

    root: Path
    debs: tuple[Path, ...] = ()  # prebuilt packages served beside the built-in stand-in
    url: str = ""
    fingerprint: str = ""
    wrong_fingerprint: str = ""
    _gnupg: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pvgpg")))
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def key_url(self) -> str:
        return f"{self.url}key.asc"

    @property
    def wrong_key_url(self) -> str:
        return f"{self.url}wrong.asc"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self._gnupg), "LC_ALL": "C"}

    def _new_key(self, uid: str) -> str:
        env = self._env()
        _run(
            ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
             "--quick-gen-key", uid, "ed25519", "sign", "never"],
            env,
        )  # fmt: skip
        out = _run(["gpg", "--batch", "--with-colons", "--list-keys", uid], env)
        return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))

    def _build_deb(self) -> None:
        pkg = self.root / "build" / STANDIN_PACKAGE
        (pkg / "DEBIAN").mkdir(parents=True)
        (pkg / "DEBIAN" / "control").write_text(
            f"Package: {STANDIN_PACKAGE}\nVersion: {STANDIN_VERSION}\nArchitecture: all\n"
            "Maintainer: provision tests <tests@invalid>\n"
            "Description: stand-in package for the provision apt_repository tests\n"
        )
        script = pkg / "usr" / "bin" / STANDIN_PACKAGE
        script.parent.mkdir(parents=True)
        script.write_text(f"#!/bin/sh\necho '{STANDIN_OUTPUT}'\n")
        script.chmod(0o755)
        deb = self.root / "repo" / f"{STANDIN_PACKAGE}_{STANDIN_VERSION}_all.deb"
        deb.parent.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(deb)], self._env())

    def make_keys(self) -> AptRepo:
        """Two throwaway keys, exported armored as ``key.asc`` and ``wrong.asc``."""
        need_binary("gpg", "gpg")
        env = self._env()
        self._gnupg.chmod(0o700)
        self.fingerprint = self._new_key("Provision Lab Test Repo <repo@invalid>")
        self.wrong_fingerprint = self._new_key("Provision Wrong Key <wrong@invalid>")
        (self.root / "repo").mkdir(parents=True, exist_ok=True)
        for name, fpr in (("key.asc", self.fingerprint), ("wrong.asc", self.wrong_fingerprint)):
            key = _run(["gpg", "--batch", "--armor", "--export", fpr], env)
            (self.root / "repo" / name).write_text(key)
        return self

    def build(self) -> AptRepo:
        """Keys, the stand-in package, Packages, Release and the signed InRelease."""
        need_binary("apt-ftparchive", "apt-utils")
        need_binary("dpkg-deb", "dpkg")
        self.make_keys()
        env = self._env()
        self._build_deb()
        repo = self.root / "repo"
        for deb in self.debs:
            shutil.copyfile(deb, repo / deb.name)
        (repo / "Packages").write_text(_run(["apt-ftparchive", "packages", "."], env, repo))
        release = _run(["apt-ftparchive", "release", "."], env, repo)
        (repo / "Release").write_text(release)
        _run(
            ["gpg", "--batch", "--yes", "--local-user", self.fingerprint, "--clearsign",
             "--output", "InRelease", "Release"],
            env, repo,
        )  # fmt: skip
        return self

    def serve(self) -> AptRepo:
        handler = functools.partial(_Quiet, directory=str(self.root / "repo"))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        subprocess.run(
            ["gpgconf", "--kill", "all"], env=self._env(), capture_output=True, check=False
        )
        shutil.rmtree(self._gnupg, ignore_errors=True)


def start_repo(root: Path, debs: Sequence[Path] = ()) -> AptRepo:
    """Build and serve (with the prebuilt ``debs`` too); the caller closes it (see the
    ``apt_repo`` fixtures of the tests)."""
    repo = AptRepo(root, debs=tuple(debs))
    try:
        return repo.build().serve()
    except BaseException:
        repo.close()
        raise
