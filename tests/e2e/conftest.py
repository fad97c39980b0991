"""Fixtures for the browser tests: Debian's Chromium driven by Playwright's Python client.

The browser is the system one (``/usr/bin/chromium``), never a downloaded
build. One Playwright driver and one browser serve the whole session, started
with ``sync_playwright().start()`` inside a fixture so its event loop exists
only while the e2e tests run and never meets other tests' code. Each test
module gets its own browser context (cookies, localStorage) and page; what the
tests do with it is in ``support.py``. The dashboard modules that walk one page
through their tests in order take it as ``dashboard`` (one page per module, on
that module's gunicorn), which must have logged no JavaScript error after each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, open_dashboard
from tests.live import LiveServer


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


@pytest.fixture(scope="module")
def dashboard(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    context, page, errors = open_dashboard(browser, live_server.url)
    page.errors = errors  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(autouse=True)
def no_page_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "dashboard" in request.fixturenames:
        page = request.getfixturevalue("dashboard")
        assert page.errors.take() == []
