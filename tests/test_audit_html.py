"""`--format html`: the status page, loaded in real headless Chromium from file:// and http://."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator

import pytest

from provision.audit import render
from provision.audit.checks import Status
from tests.audit_mixed import HOSTS, UNREACHABLE_REASON, audit_day, recorded_lab
from tests.browser import Browser, file_url, png_size
from tests.test_cli import REPO, cli

DOCS = os.path.join(REPO, "docs")
# The committed screenshots are refreshed only when asked: a test run leaves docs/ alone.
UPDATE = os.environ.get("PROVISION_UPDATE_SCREENSHOTS") == "1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(1280, 800) as b:
        yield b


@pytest.fixture
def page(tmp_path) -> str:
    """The mixed lab's page on the third day of its history (ws01's driver just upgraded)."""
    reports, run, delta = recorded_lab(str(tmp_path / "history.sqlite"))
    path = tmp_path / "lab.html"
    path.write_text(render(reports, "html", run=run, history=delta))
    return str(path)


def visible_hosts(b: Browser) -> list[str]:
    return list(
        b.js(
            "return Array.from(document.querySelectorAll('main .card'))"
            ".filter(c => c.offsetParent !== null).map(c => c.dataset.host);"
        )
    )


def test_page_offline_shows_every_host_and_every_fail(browser: Browser, page: str) -> None:
    browser.requests()  # drain what came before
    browser.open(file_url(page))
    assert browser.console_errors() == []
    assert browser.requests() == [file_url(page)]  # the page itself, nothing else
    text = browser.text()
    reports, _ = audit_day(2)
    for r in reports:
        assert r.host in text
        for c in r.checks:
            if c.status in (Status.FAIL, Status.UNREACHABLE):
                assert c.message in text, c.message
                assert c.remediation in text, c.remediation
    assert UNREACHABLE_REASON in text  # why the host was not audited
    assert "LOST" in text and "alice" in text and "jupyter" in text  # lost GPU, who uses GPUs
    assert "2025-12-03T00:00:00Z" in text and "previous audit 2025-12-02T00:00:00Z" in text
    assert browser.js("return document.querySelectorAll('.bar').length") == 5 * 4  # 5 GPUs
    # the history: what changed, the filling disk, a timeline per host
    assert "driver 550.54.15 -> 560.35.03" in text and "full in about 19 days" in text
    assert "unreachable since 2025-12-01T00:00:00Z" in text
    assert browser.js("return document.querySelectorAll('.timeline i').length") == 5 * 3


def test_filters_and_sort_work(browser: Browser, page: str) -> None:
    browser.open(file_url(page))
    assert visible_hosts(browser)[0] == HOSTS[4]  # worst first: the unreachable host
    browser.click("#f-status option[value=FAIL]")
    assert sorted(visible_hosts(browser)) == sorted(HOSTS[1:4])
    browser.type("#f-host", "nlp")
    assert sorted(visible_hosts(browser)) == sorted(HOSTS[2:4])
    assert "2 of 5 hosts shown" in browser.text()
    browser.clear("#f-host")
    browser.click("#f-status option[value='']")
    browser.click("#f-group option[value=robotics]")
    assert visible_hosts(browser) == [HOSTS[4]]
    browser.click("#f-group option[value='']")
    browser.click("#f-driver option[value='560.35.03']")
    assert visible_hosts(browser) == [HOSTS[0]]  # the upgraded host
    browser.click("#f-driver option[value='550.54.15']")
    assert sorted(visible_hosts(browser)) == sorted(HOSTS[1:3])  # mismatch: no driver reading
    browser.click("#f-driver option[value='']")
    browser.click("#f-model option[value=NVIDIA_RTX_A6000]")
    assert sorted(visible_hosts(browser)) == sorted(HOSTS[:3])
    browser.click("#f-model option[value='']")
    browser.click("#f-sort option[value=host]")
    assert visible_hosts(browser) == sorted(HOSTS)


def test_screenshots_on_a_wall_display_and_a_phone(browser: Browser, page: str, tmp_path) -> None:
    out = DOCS if UPDATE else str(tmp_path)
    browser.viewport(1280, 800)
    browser.open(file_url(page))
    wide = browser.screenshot(os.path.join(out, "audit-page-1280x800.png"))
    assert png_size(wide) == (1280, 800)
    # a status colours the card's edge and badge only: the text of every card stays light
    colours = browser.js(
        "return Array.from(document.querySelectorAll("
        "'main .card p, main .card h2 > span:first-child'))"
        ".map(e => getComputedStyle(e).color);"
    )
    assert set(colours) <= {"rgb(232, 236, 241)", "rgb(154, 165, 180)"}, set(colours)
    browser.viewport(390, 844, mobile=True)
    browser.open(file_url(page))
    phone = browser.screenshot(os.path.join(out, "audit-page-390x844.png"))
    assert png_size(phone) == (390, 844)
    # readable on a phone: one column, nothing wider than the screen
    assert browser.js("return document.documentElement.scrollWidth") <= 390
    lefts = browser.js(
        "return Array.from(document.querySelectorAll('main .card'))"
        ".map(c => c.getBoundingClientRect().left);"
    )
    assert len(set(lefts)) == 1
    browser.viewport(1280, 800)


def test_page_from_a_static_web_server(browser: Browser, page: str) -> None:
    folder = os.path.dirname(page)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/lab.html"
        browser.requests()
        browser.open(url)
        assert browser.console_errors() == []
        assert browser.requests() == [url]
        assert len(visible_hosts(browser)) == 5
    finally:
        server.shutdown()
        server.server_close()


def test_the_request_detector_sees_a_request(browser: Browser, tmp_path) -> None:
    """The no-network assertion above can fail: a page that loads an image is caught."""
    leaky = tmp_path / "leaky.html"
    leaky.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/logo.png">')
    browser.requests()
    browser.open(file_url(str(leaky)))
    assert "http://127.0.0.1:9/logo.png" in browser.requests()
    assert browser.console_errors()  # the refused load is an error too


def test_cli_writes_the_page(tmp_path) -> None:
    out = tmp_path / "lab.html"
    r = cli("audit", "--local", "--format", "html", "-o", str(out), "--fail-on", "never")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "localhost" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch
