"""Fixtures for the browser tests: Debian's Chromium driven by Playwright's Python client.

The browser is the system one (``/usr/bin/chromium``), never a downloaded
build. One Playwright driver and one browser serve the whole session, started
with ``sync_playwright().start()`` inside a fixture so its event loop exists
only while the e2e tests run and never meets other tests' code. Each test
module gets its own browser context (cookies, localStorage) and page; what the
tests do with it is in ``support.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS


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
