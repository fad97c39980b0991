"""The dashboard with ``READ_ACCESS=token``: asks for a JWT once, then subscribes,
uploads, plays and seeks a video through the HttpOnly session cookie."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from tests.auth.helpers import AUDIENCE, SECRET, token
from tests.e2e.support import (
    VIEWPORT,
    PageErrors,
    play_and_seek_to_middle,
    record_responses,
    requires_chromium,
    wait_until,
)
from tests.live import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.live, requires_chromium]


def test_the_page_uses_a_token_for_every_read(
        browser: Any, start_live_server: Any, tmp_path: Path, artifacts: Path) -> None:
    server = start_live_server(env={
        "FLASKSTREAM_READ_ACCESS": "token", "FLASKSTREAM_WRITE_ACCESS": "token",
        "FLASKSTREAM_JWT_SECRET": SECRET, "FLASKSTREAM_JWT_AUDIENCE": AUDIENCE})
    jwt_ = token(ttl=600, sub="viewer", subscribe=["*"], publish=["*"],
                 read=["/media/*", "/events/stats"], write=["/uploads"])
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=False)
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors = PageErrors(page)
    try:
        page.goto(server.url + "/")
        page.wait_for_selector("#token-dialog[open]")  # asked before any read
        page.fill("#token-input", jwt_)
        page.click("#token-save")
        page.wait_for_selector("html[data-ready=true]")
        # EventSource carries the cookie; the page's script cannot read it.
        page.wait_for_selector("#ev-state[data-state=open]")
        assert jwt_ not in page.evaluate("document.cookie")
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["flaskstream_token"]["httpOnly"] is True
        assert cookies["flaskstream_token"]["sameSite"] == "Lax"

        page.fill("#ev-data", '{"with": "a token"}')
        page.click("#ev-publish-button")
        page.wait_for_selector("#ev-publish-result[data-id]")
        event_id = page.get_attribute("#ev-publish-result", "data-id")
        page.wait_for_selector(f"#ev-feed li[data-id='{event_id}']")

        path = tmp_path / "mine.txt"
        path.write_bytes(b"owned by viewer\n" * 2000)
        page.set_input_files("#up-input", str(path))
        row = page.locator("#up-transfers li[data-name='mine.txt']")
        row.locator(".pill[data-state=stored]").wait_for()
        assert row.locator(".sha256").inner_text() == hashlib.sha256(path.read_bytes()).hexdigest()
        page.locator("#up-list tr", has_text="mine.txt").wait_for()  # its owner lists it

        seen = record_responses(page, "/media/sample.mp4")
        page.click("#media-list button[data-src='/media/sample.mp4']")
        duration, position = play_and_seek_to_middle(page)
        assert position == pytest.approx(duration / 2, abs=0.25)
        wait_until(page, "!document.querySelector('#media-video').paused")
        assert seen and all(r["status"] == 206 for r in seen), seen
        size = (ROOT / "media" / "sample.mp4").stat().st_size
        assert all(re.fullmatch(rf"bytes \d+-\d+/{size}", r["content_range"]) for r in seen), seen
        page.screenshot(path=artifacts / "dashboard-read-token.png")
        assert errors.take() == []
    finally:
        context.close()


def test_an_expired_token_is_asked_for_again_and_the_feed_resumes(
        browser: Any, start_live_server: Any) -> None:
    server = start_live_server(env={
        "FLASKSTREAM_READ_ACCESS": "token", "FLASKSTREAM_JWT_SECRET": SECRET,
        "FLASKSTREAM_JWT_AUDIENCE": AUDIENCE, "FLASKSTREAM_JWT_LEEWAY": "1"})
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=False)
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", token(ttl=4, subscribe=["*"], read=["/media/*"]))
        page.click("#token-save")
        page.wait_for_selector("#ev-state[data-state=open]")
        page.wait_for_selector("#token-dialog[open]")  # the stream ended at exp: asked again
        assert "expired" in page.inner_text("#token-error")
        page.fill("#token-input", token(ttl=600, subscribe=["*"], read=["/media/*"]))
        page.click("#token-save")
        page.wait_for_selector("#ev-state[data-state=open]")
    finally:
        context.close()
