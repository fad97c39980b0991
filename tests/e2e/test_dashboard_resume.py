"""Reloads and dropped connections: what the browser resumes on its own.

Each test opens its own page (its own localStorage), against this module's live
gunicorn: an EventSource cut by a relay reconnects with ``Last-Event-ID`` and the
server replays what was missed; a tus upload interrupted by a page reload goes on
from the server's offset when the same file is chosen again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.proxy import DroppingProxy
from tests.e2e.support import (
    RECORD_BAR,
    MiB,
    count,
    open_dashboard,
    random_file,
    requires_chromium,
    stats,
    stored_uploads,
    text,
    throttle_uploads,
    wait_until,
)
from tests.live import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.live, requires_chromium]


def test_a_dropped_stream_reconnects_and_resumes_from_last_event_id(
        browser: Any, live_server: LiveServer) -> None:
    """The browser's own reconnect sends Last-Event-ID; events published meanwhile are replayed."""
    channel = f"e2e-resume-{os.getpid()}"
    with DroppingProxy(live_server.port) as proxy:
        context, page, errors = open_dashboard(browser, proxy.url)
        try:
            page.fill("#ev-channel", channel)
            page.click("#ev-connect-button")
            page.wait_for_selector("#ev-state[data-state=open]")
            first = requests.post(f"{live_server.url}/events/{channel}", json={"data": "before"},
                                  timeout=5).json()["id"]
            page.wait_for_selector(f"#ev-feed li[data-id='{first}']")

            assert proxy.drop_all() > 0
            page.wait_for_selector("#ev-state[data-state=reconnecting]")
            missed = [requests.post(f"{live_server.url}/events/{channel}",
                                    json={"data": f"missed {n}"}, timeout=5).json()["id"]
                      for n in range(3)]

            # The server's retry hint is a few seconds; the replay brings all three back.
            for event_id in missed:
                page.wait_for_selector(f"#ev-feed li[data-id='{event_id}']", timeout=15_000)
            page.wait_for_selector("#ev-state[data-state=open]")
            assert count(page, "#ev-reconnects") == 1
            assert count(page, "#ev-count") == 4  # nothing twice, nothing lost
            feed = page.locator("#ev-feed li .data").all_inner_texts()
            assert feed == ["missed 2", "missed 1", "missed 0", "before"]
            assert stats(live_server)["counters"]["replays"] >= 1
        finally:
            context.close()
    # The cut connection shows up as a network error in the console; nothing else may.
    assert errors.take(ignore=("net::ERR_",)) == []


def test_a_resumable_upload_resumes_after_a_reload(
        browser: Any, live_server: LiveServer, tmp_path: Path) -> None:
    """tus-js-client (vendored) against /uploads/tus/: reload mid-upload, pick the file again."""
    path = tmp_path / "resume-me.bin"
    size = 40 * MiB
    sha256 = random_file(path, size)
    context, page, errors = open_dashboard(browser, live_server.url)
    try:
        cdp = throttle_uploads(page, 8 * MiB)
        page.check("#up-resumable")
        page.set_input_files("#up-input", str(path))
        row = "#up-transfers li[data-name='resume-me.bin']"
        # The first 16 MiB PATCH is acknowledged (the server's offset moved): now reload.
        wait_until(page,
            f"Number(document.querySelector(\"{row} .bar\")?.dataset.serverEvents) >= 1",
            timeout=30_000)
        cdp.detach()
        page.reload()
        page.wait_for_selector("html[data-ready=true]")
        page.wait_for_selector("#up-pending:not([hidden])")
        assert "resume-me.bin" in text(page, "#up-pending")

        page.evaluate(RECORD_BAR, f"{row} .bar")
        page.check("#up-resumable")
        page.set_input_files("#up-input", str(path))
        page.wait_for_selector(f"{row}[data-resumed=true]")
        page.locator(f"{row} .pill[data-state=stored]").wait_for(timeout=60_000)
        assert page.locator(f"{row} .sha256").inner_text() == sha256
        assert page.locator(f"{row} .size").inner_text() == str(size)
        seen = [v for v in page.evaluate("window.__bar") if v > 0]
        assert seen and seen[0] >= 40, seen  # it went on from the server's offset, not from 0
        page.wait_for_selector("#up-pending[hidden]", state="attached")
    finally:
        context.close()
    stored = [u for u in stored_uploads(live_server) if u["filename"] == "resume-me.bin"]
    assert [(u["size"], u["sha256"]) for u in stored] == [(size, sha256)]
    # The aborted PATCH of the reloaded page may log a failed request; nothing else may.
    assert errors.take(ignore=("net::ERR_",)) == []
