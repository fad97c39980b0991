"""What the browser tests do to the page and to the server, shared by the e2e modules.

Browser launch settings, a page-error collector, the dashboard opener, a CSP-safe
wait, and small helpers (files with known digests, upload throttling through the
DevTools protocol, response recording, CSV generation).
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.live import ROOT, LiveServer

MiB = 1024 * 1024
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1400, "height": 1000}

requires_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (Debian package chromium)")


class PageErrors:
    """Uncaught exceptions and console errors of a page, so a test can require none."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(
            f"console.error: {msg.text}"))

    def take(self, ignore: tuple[str, ...] = ()) -> list[str]:
        """Errors so far (minus the expected ones), then forget them."""
        found = [e for e in self.errors if not any(text in e for text in ignore)]
        self.errors.clear()
        return found


def wait_until(page: Any, expression: str, timeout: float = 20_000) -> Any:
    """Poll a JavaScript expression until it is truthy (``timeout`` in ms, as Playwright's).

    Not ``page.wait_for_function``: that compiles its predicate with ``eval`` inside
    the page, which the dashboard's Content-Security-Policy (no ``unsafe-eval``)
    rightly refuses. ``page.evaluate`` runs through the DevTools protocol instead.
    """
    deadline = time.monotonic() + timeout / 1000
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout / 1000:.0f} s: {expression}")
        time.sleep(0.05)


def open_dashboard(browser: Any, url: str) -> tuple[Any, Any, PageErrors]:
    """A fresh context and page on the dashboard, once every panel has started."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=False)
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors = PageErrors(page)
    page.goto(url + "/")
    page.wait_for_selector("html[data-ready=true]")
    return context, page, errors


def stats(server: LiveServer) -> dict[str, Any]:
    return requests.get(server.url + "/events/stats", timeout=5).json()


def text(page: Any, selector: str) -> str:
    return page.locator(selector).inner_text().strip()


def count(page: Any, selector: str) -> int:
    return int(text(page, selector).replace(",", "") or 0)


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(MiB, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def stored_uploads(server: LiveServer) -> list[dict[str, Any]]:
    return requests.get(server.url + "/uploads?limit=500", timeout=5).json()["uploads"]


def staging_files(server: LiveServer) -> list[str]:
    staging = server.instance_path / "uploads" / ".staging"
    return sorted(os.listdir(staging)) if staging.exists() else []


RECORD_BAR = """sel => {
  const seen = window.__bar = [];
  new MutationObserver(() => {
    const bar = document.querySelector(sel);
    if (bar) seen.push(Number(bar.getAttribute('aria-valuenow')));
  }).observe(document.querySelector('#up-transfers'), {subtree: true, attributes: true, childList: true});
}"""


def throttle_uploads(page: Any, bytes_per_second: int) -> Any:
    """Chromium's network emulation: uploads slowed down so a test can act mid-transfer."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": bytes_per_second})
    return cdp


@contextmanager
def throttled_uploads(page: Any, bytes_per_second: int) -> Iterator[Any]:
    """``throttle_uploads`` for a block: full speed again and the session detached after it,
    so the module-scoped page is never left slowed down for the next test."""
    cdp = throttle_uploads(page, bytes_per_second)
    try:
        yield cdp
    finally:
        cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        cdp.detach()


def record_responses(page: Any, fragment: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    page.on("response", lambda r: fragment in r.url and seen.append({
        "status": r.status, "range": r.request.headers.get("range"),
        "content_range": r.headers.get("content-range")}))
    return seen


def play_and_seek_to_middle(page: Any) -> tuple[float, float]:
    wait_until(page, "document.querySelector('#media-video').readyState >= 1")
    page.evaluate("() => { const v = document.querySelector('#media-video');"
                  " v.muted = true; return v.play(); }")
    wait_until(page, "document.querySelector('#media-video').currentTime > 0.3")
    duration = page.evaluate("document.querySelector('#media-video').duration")
    page.evaluate("""() => new Promise(resolve => {
        const v = document.querySelector('#media-video');
        v.addEventListener('seeked', resolve, {once: true});
        document.querySelector('#media-middle').click();
    })""")
    return duration, page.evaluate("document.querySelector('#media-video').currentTime")


def users_csv(path: Path, rows: int) -> tuple[int, int]:
    """A users CSV with one bad row in 97; returns (good, bad)."""
    bad = 0
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "age", "name"])
        for i in range(rows):
            if i % 97 == 5:
                bad += 1
                writer.writerow([f"broken-{i}", 30, "No email"] if i % 2 else
                                [f"old{i}@example.com", 400, "Too old"])
            else:
                writer.writerow([f"user{i}@example.com", 20 + i % 50, f"User, number {i}"])
    return rows - bad, bad
