"""The dashboard in a real headless Chromium against a real gunicorn: every panel's main use.

One page is shared by the tests of this module, in order, the way a person
would use it: events, tokens, an upload, media, ETL. Each test saves a
screenshot of its panel to ``test-artifacts/``; the last one saves the whole
page. Every test also requires that the page logged no JavaScript error (the
``dashboard`` and ``no_page_errors`` fixtures in ``conftest.py``). The upload
panel's other ways in and out (drop, several files, delete, cancel) are in
``test_dashboard_uploads.py``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from flaskstream.events.tokens import answer_tokens
from tests.e2e.support import (
    RECORD_BAR,
    MiB,
    count,
    play_and_seek_to_middle,
    random_file,
    record_responses,
    requires_chromium,
    stats,
    stored_uploads,
    text,
    throttled_uploads,
    users_csv,
    wait_until,
)
from tests.live import ROOT, LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.live, requires_chromium]


# --- events ---------------------------------------------------------------------------


def test_events_arrive_and_a_publish_from_the_page_is_received(
        dashboard: Any, live_server: LiveServer, artifacts: Path) -> None:
    page = dashboard
    channel = f"e2e-{os.getpid()}"
    page.fill("#ev-channel", channel)
    page.click("#ev-connect-button")
    page.wait_for_selector("#ev-state[data-state=open]")
    assert channel in text(page, "#ev-state")

    # An event published by someone else (curl, another service) arrives.
    sent = requests.post(f"{live_server.url}/events/{channel}",
                         json={"event": "notice", "data": {"from": "server"}}, timeout=5)
    assert sent.status_code == 202
    server_id = sent.json()["id"]
    item = page.wait_for_selector(f"#ev-feed li[data-id='{server_id}']")
    assert item.get_attribute("data-type") == "notice"
    assert '{"from":"server"}' in item.inner_text()

    # A publish from the page's form reaches the server and comes back on the stream.
    page.fill("#ev-event", "greeting")
    page.fill("#ev-data", '{"hello": "from the page", "n": 1}')
    page.click("#ev-publish-button")
    page.wait_for_selector("#ev-publish-result[data-id]")
    page_id = page.get_attribute("#ev-publish-result", "data-id")
    assert int(page_id) > server_id
    item = page.wait_for_selector(f"#ev-feed li[data-id='{page_id}']")
    assert item.get_attribute("data-type") == "greeting"
    assert '"hello":"from the page"' in item.inner_text()
    assert text(page, "#ev-last-id") == page_id
    assert count(page, "#ev-count") == 2

    # The server stored it: a replay from before it returns the same data.
    replay = requests.get(f"{live_server.url}/events/{channel}", stream=True, timeout=5,
                          headers={"Last-Event-ID": str(server_id)})
    try:
        body = b""
        for chunk in replay.iter_content(None):
            body += chunk
            if b"from the page" in body:
                break
        assert f"id: {page_id}".encode() in body
        assert b"event: greeting" in body
    finally:
        replay.close()

    # Disconnect, miss an event, connect again: the page resumes with ?lastEventId=.
    page.click("#ev-disconnect")
    page.wait_for_selector("#ev-state[data-state=closed]")
    missed = requests.post(f"{live_server.url}/events/{channel}", json={"data": "while away"},
                           timeout=5).json()["id"]
    page.click("#ev-connect-button")
    item = page.wait_for_selector(f"#ev-feed li[data-id='{missed}']")
    assert "while away" in item.inner_text()
    assert count(page, "#ev-count") == 3

    # The tick demo: per-connection ticks, stopped by the button.
    page.click("#tick-toggle")
    wait_until(page, "Number(document.querySelector('#tick-count').textContent) >= 2")
    assert re.fullmatch(r"\d\d:\d\d:\d\d", text(page, "#tick-clock"))
    page.locator("#panel-events").screenshot(path=artifacts / "panel-events.png")
    page.click("#tick-toggle")
    assert page.get_attribute("#tick-toggle", "data-running") == "false"


# --- tokens ---------------------------------------------------------------------------


def test_tokens_stream_and_stop_aborts_the_request(
        dashboard: Any, live_server: LiveServer, artifacts: Path) -> None:
    page = dashboard
    prompt = "Why stream a response?"
    expected = "".join(answer_tokens(prompt))
    page.fill("#tok-prompt", prompt)
    page.click("#tok-start")
    page.wait_for_selector("#tok-state[data-state=done]", timeout=30_000)
    assert page.locator("#tok-output").text_content() == expected
    assert count(page, "#tok-chunks") > 10  # typed out piece by piece, not in one block
    page.locator("#panel-tokens").screenshot(path=artifacts / "panel-tokens.png")

    page.fill("#tok-prompt", "Now stop me halfway")
    page.click("#tok-start")
    wait_until(page, "Number(document.querySelector('#tok-chunks').textContent) >= 5")
    assert stats(live_server)["streams_by_kind"].get("tokens") == 1
    page.click("#tok-stop")
    page.wait_for_selector("#tok-state[data-state=stopped]")
    stopped_at = page.locator("#tok-output").text_content()
    full = "".join(answer_tokens("Now stop me halfway"))
    assert stopped_at and full.startswith(stopped_at) and len(stopped_at) < len(full)

    # The server's generator ended too: its stream is gone from the worker's books.
    deadline = time.monotonic() + 5
    while stats(live_server)["streams_by_kind"].get("tokens", 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stats(live_server)["streams_by_kind"].get("tokens", 0) == 0
    page.wait_for_timeout(500)
    assert page.locator("#tok-output").text_content() == stopped_at
    assert page.is_enabled("#tok-start") and not page.is_enabled("#tok-stop")


# --- uploads --------------------------------------------------------------------------


def test_a_50_mb_upload_reaches_100_percent_with_the_right_sha256(
        dashboard: Any, live_server: LiveServer, artifacts: Path, tmp_path: Path) -> None:
    page = dashboard
    path = tmp_path / "fifty.bin"
    size = 50 * MiB
    sha256 = random_file(path, size)
    page.evaluate(RECORD_BAR, "#up-transfers li[data-name='fifty.bin'] .bar")

    # Over loopback 50 MB can go in one progress tick; at 20 MiB/s (~2.5 s) the
    # browser reports progress along the way, as it would on a real network.
    with throttled_uploads(page, 20 * MiB):
        page.set_input_files("#up-input", str(path))
        row = page.locator("#up-transfers li[data-name='fifty.bin']")
        row.locator(".pill[data-state=stored]").wait_for(timeout=60_000)

    bar = row.locator(".bar")
    assert bar.get_attribute("aria-valuenow") == "100"
    seen = page.evaluate("window.__bar")
    assert any(0 < v < 100 for v in seen), seen  # it moved through intermediate values
    assert int(bar.get_attribute("data-server-events")) >= 1  # uploads.<id> progress arrived
    assert row.locator(".sha256").inner_text() == sha256
    assert row.locator(".size").inner_text() == str(size)

    stored = [u for u in stored_uploads(live_server) if u["filename"] == "fifty.bin"]
    assert [(u["size"], u["sha256"]) for u in stored] == [(size, sha256)]
    page.wait_for_selector(f"#up-list tr[data-id='{stored[0]['id']}']")
    page.locator("#panel-uploads").screenshot(path=artifacts / "panel-uploads.png")




# --- media ----------------------------------------------------------------------------


def test_the_sample_video_plays_and_seeks_with_206(
        dashboard: Any, live_server: LiveServer, artifacts: Path) -> None:
    page = dashboard
    seen = record_responses(page, "/media/sample.mp4")
    page.click("#media-list button[data-src='/media/sample.mp4']")
    duration, position = play_and_seek_to_middle(page)
    assert duration == pytest.approx(10, abs=0.1)
    assert position == pytest.approx(duration / 2, abs=0.25)
    wait_until(page, "!document.querySelector('#media-video').paused")
    assert seen and all(r["status"] == 206 for r in seen), seen
    size = (ROOT / "media" / "sample.mp4").stat().st_size
    assert all(re.fullmatch(rf"bytes \d+-\d+/{size}", r["content_range"]) for r in seen), seen


@pytest.fixture(scope="module")
def big_video(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 40 s, ~25 MB noisy clip uploaded through PUT: big enough that seeking needs a new range."""
    path = tmp_path_factory.mktemp("video") / "seek-test.mp4"
    subprocess.run([
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=24:duration=40,noise=alls=60:allf=t+u",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=40",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "24", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(path),
    ], check=True, timeout=60)
    with open(path, "rb") as body:
        response = requests.put(live_server.url + "/uploads/seek-test.mp4", data=body,
                                headers={"Content-Type": "video/mp4"}, timeout=60)
    assert response.status_code == 201, response.text
    return {**response.json(), "bytes": path.stat().st_size}


def test_an_uploaded_video_seeks_to_the_middle_with_a_mid_file_range(
        dashboard: Any, big_video: dict[str, Any], artifacts: Path) -> None:
    page = dashboard
    seen = record_responses(page, big_video["url"])
    page.click("#media-refresh")
    button = page.locator("#media-list button", has_text="seek-test.mp4")
    button.click()
    duration, position = play_and_seek_to_middle(page)
    assert duration == pytest.approx(40, abs=0.2)
    assert position == pytest.approx(duration / 2, abs=0.25)
    wait_until(page, "document.querySelector('#media-video').currentTime > 20.2")
    size = big_video["bytes"]
    starts = [int(re.match(r"bytes (\d+)-", r["content_range"]).group(1))
              for r in seen if r["status"] == 206]
    assert all(r["status"] == 206 for r in seen), seen
    # The seek was answered from the middle of the file, not by reading from byte 0.
    assert any(size * 0.3 < start < size * 0.7 for start in starts), (starts, size)
    page.locator("#panel-media").screenshot(path=artifacts / "panel-media.png")
    page.evaluate("document.querySelector('#media-video').pause()")


# --- ETL ------------------------------------------------------------------------------


def test_a_failed_etl_job_shows_the_error(dashboard: Any, tmp_path: Path) -> None:
    page = dashboard
    path = tmp_path / "wrong-header.csv"
    path.write_text("colour,size\nred,3\n")
    page.set_input_files("#etl-file", str(path))
    page.click("#etl-start")
    page.wait_for_selector("#etl-state[data-state=failed]")
    assert "BAD_HEADER" in text(page, "#etl-error")
    assert page.is_enabled("#etl-start")  # ready for the next file
    assert page.errors.take(ignore=("status of 422",)) == []  # the browser logs the 422 itself


def test_an_etl_job_completes_with_the_right_counts(
        dashboard: Any, live_server: LiveServer, artifacts: Path, tmp_path: Path) -> None:
    page = dashboard
    path = tmp_path / "users.csv"
    rows = 200_000
    good, bad = users_csv(path, rows)
    page.evaluate("""() => {
        const seen = window.__etl = [];
        new MutationObserver(() => seen.push(document.querySelector('#etl-read').textContent))
          .observe(document.querySelector('#etl-read'),
                   {childList: true, characterData: true, subtree: true});
    }""")
    page.set_input_files("#etl-file", str(path))
    # ~1.5 s of sending at most, so the 250 ms progress events show up on any machine.
    with throttled_uploads(page, 6 * MiB):
        page.click("#etl-start")
        page.wait_for_selector("#etl-state[data-state=done]", timeout=60_000)

    assert count(page, "#etl-read") == rows
    assert count(page, "#etl-loaded") == good
    assert count(page, "#etl-rejected") == bad
    assert page.get_attribute("#etl-bar", "aria-valuenow") == "100"
    assert text(page, "#etl-summary dd[data-key=status]") == "done"
    live = [int(v.replace(",", "")) for v in page.evaluate("window.__etl") if v not in ("", "–")]
    assert any(0 < v < rows for v in live), live  # counts moved while the job ran (etl.<job>)

    job = page.get_attribute("#panel-etl", "data-job")
    rejects_href = page.get_attribute("#etl-rejects", "href")
    assert rejects_href == f"/etl/jobs/{job}/rejects"
    rejects = requests.get(live_server.url + rejects_href, timeout=10)
    assert rejects.status_code == 200
    assert len(list(csv.reader(io.StringIO(rejects.text)))) - 1 == bad
    export = requests.get(live_server.url + page.get_attribute("#etl-export", "href"), timeout=30)
    assert export.status_code == 200
    assert len(export.text.splitlines()) - 1 == good
    page.locator("#panel-etl").screenshot(path=artifacts / "panel-etl.png")


def test_full_page_screenshot(dashboard: Any, big_video: dict[str, Any], artifacts: Path) -> None:
    """The README's picture: every panel after use, the token answer complete."""
    page = dashboard
    page.fill("#tok-prompt", "Why stream a response?")
    page.click("#tok-start")
    page.wait_for_selector("#tok-state[data-state=done]", timeout=30_000)
    page.click("#up-refresh")
    page.locator("#up-list tr", has_text="seek-test.mp4").wait_for()
    page.click("#media-list button[data-src='/media/sample.mp4']")
    wait_until(page, "document.querySelector('#media-video').readyState >= 1")
    page.evaluate("""() => new Promise(resolve => {
        const v = document.querySelector('#media-video');
        v.addEventListener('seeked', resolve, {once: true});
        v.currentTime = 3.5;
    })""")
    page.locator("#up-transfers li[data-name='fifty.bin']").scroll_into_view_if_needed()
    page.mouse.move(0, 0)  # no hover state on the player's controls
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=artifacts / "dashboard.png", full_page=True)
    assert (artifacts / "dashboard.png").stat().st_size > 10_000
