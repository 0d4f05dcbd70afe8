"""Real headless Chromium for page tests, driven through chromedriver's W3C WebDriver HTTP API
(stdlib urllib: no Selenium, no browser download). Debian packages: chromium, chromium-driver.

The browser runs with a fresh empty profile and everything that phones home switched off, so the
performance log's network events are the page's own requests only.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import need_binary

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One chromedriver and one Chromium session; ``with Browser() as b: b.open(url)``."""

    def __init__(self, width: int = 1280, height: int = 800) -> None:
        self.driver = need_binary("chromedriver", "chromium-driver")
        need_binary("chromium", "chromium")
        self.size = (width, height)
        self.profile = tempfile.TemporaryDirectory(prefix="provision-chromium-")
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.session = ""

    # -- WebDriver plumbing ---------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.load(resp).get("value")
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"WebDriver {method} {path}: {exc.read().decode()[:500]}"
            ) from None

    def _s(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def __enter__(self) -> Browser:
        self.proc = subprocess.Popen(
            [self.driver, f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status", timeout=2).get("ready"):
                    break
            except (OSError, AssertionError):
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.1)
        width, height = self.size
        args = [*FLAGS, f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}"]
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }
        value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = value["sessionId"]
        self.viewport(*self.size)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.session:
                self._call("DELETE", f"/session/{self.session}", timeout=20)
        finally:
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait(timeout=20)
            self.profile.cleanup()

    # -- what a test does -----------------------------------------------------------------
    def viewport(self, width: int, height: int, mobile: bool = False) -> None:
        """The CSS viewport exactly (a phone: ``mobile``, so the page's meta viewport counts)."""
        params = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        self._s(
            "POST",
            "/goog/cdp/execute",
            {"cmd": "Emulation.setDeviceMetricsOverride", "params": params},
        )

    def open(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def element(self, css: str) -> str:
        found = self._s("POST", "/element", {"using": "css selector", "value": css})
        return str(next(iter(found.values())))

    def click(self, css: str) -> None:
        self._s("POST", f"/element/{self.element(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self._s("POST", f"/element/{self.element(css)}/value", {"text": text})

    def clear(self, css: str) -> None:
        self._s("POST", f"/element/{self.element(css)}/clear", {})

    def text(self) -> str:
        """What a reader sees: the rendered text of the page (hidden elements left out)."""
        return str(self.js("return document.body.innerText;"))

    def screenshot(self, path: str) -> bytes:
        png = base64.b64decode(self._s("GET", "/screenshot"))
        with open(path, "wb") as fh:
            fh.write(png)
        return png

    def console_errors(self) -> list[str]:
        logs = self._s("POST", "/se/log", {"type": "browser"}) or []
        return [e["message"] for e in logs if e.get("level") == "SEVERE"]

    def requests(self) -> list[str]:
        """Every URL the page asked the network stack for since the last call."""
        urls = []
        for entry in self._s("POST", "/se/log", {"type": "performance"}) or []:
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                urls.append(msg["params"]["request"]["url"])
        return urls


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def file_url(path: str) -> str:
    return "file://" + os.path.abspath(path)
