"""The dashboard on a server with ``FLASKSTREAM_API_TOKEN``: asked once, sent on every write."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.support import open_dashboard, requires_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.live, requires_chromium]

TOKEN = "e2e-secret-token"


def test_the_page_asks_for_the_token_once_and_sends_it_on_writes(
        browser: Any, start_live_server: Any, tmp_path: Path, artifacts: Path) -> None:
    server = start_live_server(env={"FLASKSTREAM_API_TOKEN": TOKEN})
    context, page, errors = open_dashboard(browser, server.url)
    try:
        # Asked at once; dismissing it leaves reads working.
        page.wait_for_selector("#token-dialog[open]")
        page.locator("#token-dialog").screenshot(path=artifacts / "token-dialog.png")
        page.click("#token-cancel")
        page.wait_for_selector("#ev-state[data-state=open]")

        # A write without the token gets 401, and the page asks again, then retries.
        page.fill("#ev-data", '{"secured": true}')
        page.click("#ev-publish-button")
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", TOKEN)
        page.click("#token-save")
        page.wait_for_selector("#ev-publish-result[data-id]")
        event_id = page.get_attribute("#ev-publish-result", "data-id")
        page.wait_for_selector(f"#ev-feed li[data-id='{event_id}']")
        assert page.evaluate("localStorage.getItem('flaskstream.apiToken')") == TOKEN

        # XHR upload carries it too.
        path = tmp_path / "secured.txt"
        path.write_bytes(b"only with the token\n" * 1000)
        page.set_input_files("#up-input", str(path))
        row = page.locator("#up-transfers li[data-name='secured.txt']")
        row.locator(".pill[data-state=stored]").wait_for()
        assert row.locator(".sha256").inner_text() == hashlib.sha256(path.read_bytes()).hexdigest()

        # So does the ETL POST (a generated sample: one bad row in 50).
        page.fill("#etl-rows", "1000")
        page.click("#etl-generate")
        page.click("#etl-start")
        page.wait_for_selector("#etl-state[data-state=done]")
        assert page.inner_text("#etl-loaded") == "980"
        assert page.inner_text("#etl-rejected") == "20"

        # Asked once: a later visit reuses the stored token without a prompt.
        page.reload()
        page.wait_for_selector("html[data-ready=true]")
        page.wait_for_selector("#ev-state[data-state=open]")
        assert not page.is_visible("#token-dialog")
    finally:
        context.close()
    # The refused publish shows up as a failed resource load; nothing else may.
    assert errors.take(ignore=("401",)) == []
    # Without a token the server still refuses writes: the page, not the server, had it.
    refused = requests.post(server.url + "/events/demo", json={"data": 1}, timeout=5)
    assert refused.status_code == 401
