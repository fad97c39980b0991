"""tus routes: the limits and refusals ``test_views.py`` does not reach.

Methods outside tus (405), a PATCH on a finished upload, the length rules of a
PATCH (immutable once known; a deferred one bounded by what arrived and by
``Tus-Max-Size``), the type allow-list, progress events, and the janitor
forgetting old tombstones (410 becomes 404).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flaskstream import db
from flaskstream.tus import janitor, store
from tests.tus.backends import unfinished

pytestmark = pytest.mark.db

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
MAX = 1 << 20


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "TUS_MAX_SIZE": MAX, "TUS_LOCK_WAIT": 2, "TUS_LOCK_LEASE": 3}


def create(client: FlaskClient, length: int | None, **headers: str) -> str:
    size = {"Upload-Defer-Length": "1"} if length is None else {"Upload-Length": str(length)}
    response = client.post("/uploads/tus/", headers={**TUS, **size, **headers})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.headers["Location"]


def patch(client: FlaskClient, url: str, offset: int, body: bytes, **headers: str) -> Any:
    return client.patch(url, data=body, headers={**TUS, "Upload-Offset": str(offset),
                                                 "Content-Type": OCTETS, **headers})


def code(response: Any) -> str:
    return response.get_json()["error"]["code"]


def test_methods_outside_tus_are_405(client: FlaskClient) -> None:
    url = create(client, 3)
    response = client.post(url, headers=TUS)  # POST on an upload URL, no override
    assert response.status_code == 405 and code(response) == "METHOD_NOT_ALLOWED"
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {
        "OPTIONS", "HEAD", "GET", "PATCH", "DELETE"}
    override = client.post("/uploads/tus/", headers={**TUS, "X-HTTP-Method-Override": "PATCH"})
    assert override.status_code == 405
    options = client.options(url)
    assert options.status_code == 204 and options.headers["Tus-Version"] == "1.0.0"


def test_patch_on_a_finished_upload(client: FlaskClient) -> None:
    url = create(client, 3)
    assert patch(client, url, 0, b"abc").status_code == 204
    again = patch(client, url, 3, b"")  # a client retrying its last, empty PATCH
    assert again.status_code == 204 and again.headers["Upload-Offset"] == "3"
    more = patch(client, url, 3, b"d")
    assert more.status_code == 413 and code(more) == "TUS_LENGTH_EXCEEDED"
    stale = patch(client, url, 0, b"abc")
    assert stale.status_code == 409 and stale.headers["Upload-Offset"] == "3"
    upload_id = url.rsplit("/", 1)[1]
    assert client.get(f"/uploads/{upload_id}/content").data == b"abc"


def test_a_known_length_cannot_change(client: FlaskClient) -> None:
    url = create(client, 10)
    response = patch(client, url, 0, b"abc", **{"Upload-Length": "20"})
    assert response.status_code == 400 and code(response) == "TUS_LENGTH_IMMUTABLE"
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == "0"
    same = patch(client, url, 0, b"abc", **{"Upload-Length": "10"})
    assert same.status_code == 204 and same.headers["Upload-Offset"] == "3"


def test_a_deferred_length_is_bounded(client: FlaskClient) -> None:
    url = create(client, None)
    assert patch(client, url, 0, b"abcd").status_code == 204
    below = patch(client, url, 4, b"", **{"Upload-Length": "3"})
    assert below.status_code == 400 and code(below) == "TUS_HEADER_INVALID"
    over = patch(client, url, 4, b"", **{"Upload-Length": str(MAX + 1)})
    assert over.status_code == 413 and code(over) == "TUS_MAX_SIZE_EXCEEDED"
    # without a length, Tus-Max-Size still bounds the body
    too_long = patch(client, url, 4, b"x" * (MAX - 3))
    assert too_long.status_code == 413 and code(too_long) == "TUS_LENGTH_EXCEEDED"
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == "4"
    head = client.head(url, headers=TUS)
    assert head.headers["Upload-Defer-Length"] == "1"


def test_type_allow_list_applies_at_creation(app: Flask, client: FlaskClient) -> None:
    app.config["UPLOAD_ALLOWED_TYPES"] = ["image/*", ".csv"]
    text = "filename bm90ZXMudHh0,filetype dGV4dC9wbGFpbg=="  # notes.txt, text/plain
    refused = client.post("/uploads/tus/", headers={**TUS, "Upload-Length": "1",
                                                    "Upload-Metadata": text})
    assert refused.status_code == 415 and code(refused) == "UPLOAD_TYPE_NOT_ALLOWED"
    png = "filename YS5wbmc=,filetype aW1hZ2UvcG5n"  # a.png, image/png
    assert create(client, 1, **{"Upload-Metadata": png})


def test_creation_with_upload_checks_its_checksum(client: FlaskClient) -> None:
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    response = client.post("/uploads/tus/", data=b"hello", headers={
        **TUS, "Upload-Length": "5", "Content-Type": OCTETS, "Upload-Checksum": f"sha1 {wrong}"})
    assert response.status_code == 460 and code(response) == "TUS_CHECKSUM_MISMATCH"


def test_progress_and_done_events(app: Flask, client: FlaskClient) -> None:
    app.config.update(TUS_PROGRESS_INTERVAL=1e-9, UPLOAD_CHUNK_SIZE=4096)
    data = bytes(range(256)) * 64  # 16 KiB: several chunks
    url = create(client, len(data))
    assert patch(client, url, 0, data).status_code == 204
    upload_id = url.rsplit("/", 1)[1]
    with app.app_context(), db.connection() as con:
        rows = con.run("SELECT event, data FROM flaskstream.events WHERE channel = :c ORDER BY id",
                       c=f"uploads.{upload_id}")
    events = [(event, json.loads(body)) for event, body in rows]
    progress = [body["bytes"] for event, body in events if event == "progress"]
    assert progress and progress == sorted(progress) and progress[-1] <= len(data)
    assert all(body["total"] == len(data) for event, body in events if event == "progress")
    assert events[-1][0] == "done" and events[-1][1]["bytes"] == len(data)
    assert events[-1][1]["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_old_tombstones_are_purged(app: Flask, client: FlaskClient) -> None:
    url = create(client, 10)
    assert client.delete(url, headers=TUS).status_code == 204
    assert client.head(url, headers=TUS).status_code == 410
    app.config["TUS_TOMBSTONE_SECONDS"] = 0
    assert janitor.expire_and_purge(app) == (0, 1)
    assert client.head(url, headers=TUS).status_code == 404


def uploads_rows(app: Flask) -> list[list[Any]]:
    with app.app_context(), db.connection() as con:
        return con.run("SELECT state, upload_offset, staging_name FROM flaskstream.tus_uploads")


def test_a_failed_creation_with_nothing_kept_leaves_no_upload(app: Flask,
                                                               client: FlaskClient) -> None:
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    response = client.post("/uploads/tus/", data=b"hello", headers={
        **TUS, "Upload-Length": "5", "Content-Type": OCTETS, "Upload-Checksum": f"sha1 {wrong}"})
    assert response.status_code == 460 and "Location" not in response.headers
    (state, offset, staging_name), = uploads_rows(app)
    assert (state, offset) == ("terminated", 0)  # at once, not left for the janitor
    with app.app_context(), db.connection() as con:
        row = con.run("SELECT id FROM flaskstream.tus_uploads WHERE staging_name = :n",
                      n=staging_name)[0][0]
        assert unfinished(app, store.get(con, row)) == []


def test_a_failed_creation_that_kept_bytes_names_the_upload(app: Flask,
                                                            client: FlaskClient) -> None:
    import io

    app.config["UPLOAD_CHUNK_SIZE"] = 64  # the body arrives in several reads
    # no Content-Length: the overrun is only seen as the bytes arrive
    response = client.post("/uploads/tus/", input_stream=io.BytesIO(b"x" * 150), headers={
        **TUS, "Upload-Length": "100", "Content-Type": OCTETS},
        environ_overrides={"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    assert response.status_code == 413 and code(response) == "TUS_LENGTH_EXCEEDED", \
        (response.headers, uploads_rows(app))
    url = response.headers["Location"]
    kept = int(response.headers["Upload-Offset"])
    assert 0 < kept <= 100
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == str(kept)
    rest = patch(client, url, kept, b"x" * (100 - kept))
    assert rest.status_code == 204 and rest.headers["Upload-Offset"] == "100"
