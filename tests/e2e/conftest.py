"""Fixtures for the browser tests: Debian's Chromium driven by Playwright's Python client.

The browser is the system one (``/usr/bin/chromium``), never a downloaded
build. One Playwright driver and one browser serve the whole session, started
with ``sync_playwright().start()`` inside a fixture so its event loop exists
only while the e2e tests run and never meets other tests' code. Each test
module gets its own browser context (cookies, localStorage) and page.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import ROOT

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


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    driver = sync_playwright().start()
    try:
        instance = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
    finally:
        driver.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots land here (gitignored; CI keeps the folder as test artifacts)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


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
