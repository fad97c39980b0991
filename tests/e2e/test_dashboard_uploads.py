"""The dashboard's upload panel beyond one chosen file, in a real headless Chromium.

A file dropped on the zone and several chosen at once are each stored with the
right SHA-256; deleting from the stored list removes the upload; cancelling a
plain upload mid-transfer leaves nothing on the server, and cancelling a
resumable (tus) one terminates it there. One page is shared by the tests of
this module, in order, against this module's gunicorn, and every test requires
that it logged no JavaScript error (``dashboard`` and ``no_page_errors`` in
``conftest.py``). The main upload, a 50 MB file, is in ``test_dashboard.py``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.support import (
    MiB,
    random_file,
    requires_chromium,
    staging_files,
    stored_uploads,
    throttled_uploads,
    wait_until,
)
from tests.live import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.live, requires_chromium]


def test_deleting_from_the_stored_list_removes_the_upload(
        dashboard: Any, live_server: LiveServer, tmp_path: Path) -> None:
    page = dashboard
    path = tmp_path / "delete-me.txt"
    path.write_text("short-lived\n")
    page.set_input_files("#up-input", str(path))
    page.locator("#up-transfers li[data-name='delete-me.txt'] .pill[data-state=stored]").wait_for()
    (upload,) = [u for u in stored_uploads(live_server) if u["filename"] == "delete-me.txt"]
    row = page.locator(f"#up-list tr[data-id='{upload['id']}']")
    row.locator("button", has_text="Delete").click()
    row.wait_for(state="detached")
    assert requests.get(f"{live_server.url}/uploads/{upload['id']}", timeout=5).status_code == 404


def test_dropped_and_multiple_files_upload_one_after_another(
        dashboard: Any, live_server: LiveServer, tmp_path: Path) -> None:
    page = dashboard
    # Dropping: a DataTransfer with a file made in the page, as a drag from the desktop.
    page.evaluate("""() => {
        const transfer = new DataTransfer();
        transfer.items.add(new File(["dropped on the zone\\n"], "dropped.txt", {type: "text/plain"}));
        document.querySelector('#up-drop').dispatchEvent(
            new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""")
    names = [f"multi-{n}.bin" for n in range(3)]
    digests = {}
    for n, name in enumerate(names):
        digests[name] = random_file(tmp_path / name, (n + 1) * 100_000)
    page.set_input_files("#up-input", [str(tmp_path / name) for name in names])
    for name in ["dropped.txt", *names]:
        page.locator(f"#up-transfers li[data-name='{name}'] .pill[data-state=stored]").wait_for()
    dropped = hashlib.sha256(b"dropped on the zone\n").hexdigest()
    assert page.locator("#up-transfers li[data-name='dropped.txt'] .sha256").inner_text() == dropped
    for name in names:
        shown = page.locator(f"#up-transfers li[data-name='{name}'] .sha256").inner_text()
        assert shown == digests[name]
    stored = {u["filename"]: u["sha256"] for u in stored_uploads(live_server)}
    assert {name: stored.get(name) for name in names} == digests
    assert stored.get("dropped.txt") == dropped


def test_a_cancelled_upload_leaves_nothing_on_the_server(
        dashboard: Any, live_server: LiveServer, tmp_path: Path) -> None:
    page = dashboard
    path = tmp_path / "cancel-me.bin"
    random_file(path, 24 * MiB)
    before = stored_uploads(live_server)
    with throttled_uploads(page, 4 * MiB):
        page.set_input_files("#up-input", str(path))
        row = page.locator("#up-transfers li[data-name='cancel-me.bin']")
        # Cancel once the server has written part of it (its progress events say so).
        wait_until(page,
            "Number(document.querySelector(\"#up-transfers li[data-name='cancel-me.bin'] .bar\")"
            "?.dataset.serverEvents) >= 1", timeout=20_000)
        assert staging_files(live_server)  # the partial file exists while it streams
        row.locator("button", has_text="Cancel").click()
        row.locator(".pill[data-state=cancelled]").wait_for()
    deadline = time.monotonic() + 10
    while staging_files(live_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert staging_files(live_server) == []
    assert stored_uploads(live_server) == before
    assert page.locator("#up-list tr", has_text="cancel-me.bin").count() == 0


def test_a_cancelled_resumable_upload_is_terminated_on_the_server(
        dashboard: Any, live_server: LiveServer, tmp_path: Path) -> None:
    page = dashboard
    path = tmp_path / "terminate-me.bin"
    random_file(path, 40 * MiB)
    before = stored_uploads(live_server)
    created: list[str] = []
    page.on("response", lambda r: r.request.method == "POST" and "/uploads/tus" in r.url
            and r.status == 201 and created.append(r.headers["location"]))
    try:
        with throttled_uploads(page, 8 * MiB):
            page.check("#up-resumable")
            page.set_input_files("#up-input", str(path))
            row = page.locator("#up-transfers li[data-name='terminate-me.bin']")
            wait_until(page,
                "Number(document.querySelector(\"#up-transfers li[data-name='terminate-me.bin'] .bar\")"
                "?.dataset.serverEvents) >= 1", timeout=30_000)
            row.locator("button", has_text="Cancel").click()
            row.locator(".pill[data-state=cancelled]").wait_for()
            assert "deleted" in row.inner_text()
    finally:
        page.uncheck("#up-resumable")
    assert len(created) == 1
    status = requests.head(live_server.url + created[0], headers={"Tus-Resumable": "1.0.0"}, timeout=5)
    assert status.status_code in (404, 410)  # terminated: tus DELETE removed it
    deadline = time.monotonic() + 10
    while staging_files(live_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert staging_files(live_server) == []
    assert stored_uploads(live_server) == before
