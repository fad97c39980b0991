"""tus routes through Flask's test client, on a real PostgreSQL.

``test_spec_sequence`` follows the tus 1.0.0 specification's own examples in
order (creation with metadata, HEAD, PATCH, the checksum example, termination);
the others take one rule each.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from flaskstream import db
from flaskstream.tus import janitor, store
from tests.tus.backends import kept_bytes, unfinished

pytestmark = pytest.mark.db

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "TUS_MAX_SIZE": 1 << 20, "TUS_LOCK_WAIT": 2, "TUS_LOCK_LEASE": 3}


def create(client: FlaskClient, length: int | None = None, **headers: str) -> str:
    h = {**TUS, **headers}
    if length is None:
        h["Upload-Defer-Length"] = "1"
    else:
        h["Upload-Length"] = str(length)
    response = client.post("/uploads/tus/", headers=h)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.headers["Location"]


def patch(client: FlaskClient, url: str, offset: int, body: bytes, **headers: str) -> Any:
    return client.patch(url, data=body, headers={**TUS, "Upload-Offset": str(offset),
                                                 "Content-Type": OCTETS, **headers})


def test_spec_sequence(client: FlaskClient, app: Any) -> None:
    options = client.options("/uploads/tus/")
    assert options.status_code in (200, 204)
    assert options.headers["Tus-Version"].split(",")[0] == "1.0.0"
    assert "creation" in options.headers["Tus-Extension"].split(",")
    assert "sha1" in options.headers["Tus-Checksum-Algorithm"].split(",")

    metadata = "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
    created = client.post("/uploads/tus/", headers={**TUS, "Upload-Length": "100",
                                                    "Upload-Metadata": metadata,
                                                    "Content-Length": "0"})
    assert created.status_code == 201
    assert created.headers["Tus-Resumable"] == "1.0.0"
    url = created.headers["Location"]
    assert "Upload-Expires" in created.headers  # "MUST be included in the response to the POST"

    head = client.head(url, headers=TUS)
    assert head.status_code in (200, 204)
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers["Upload-Length"] == "100"
    assert head.headers["Upload-Metadata"] == metadata
    assert head.headers["Cache-Control"] == "no-store"
    assert head.headers["Tus-Resumable"] == "1.0.0"

    data = os.urandom(100)
    first = patch(client, url, 0, data[:70])
    assert first.status_code == 204
    assert first.headers["Upload-Offset"] == "70"
    assert "Upload-Expires" in first.headers
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == "70"

    conflict = patch(client, url, 0, data[:30])
    assert conflict.status_code == 409
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == "70"

    sha1 = base64.b64encode(hashlib.sha1(data[70:]).digest()).decode()
    last = patch(client, url, 70, data[70:], **{"Upload-Checksum": f"sha1 {sha1}"})
    assert last.status_code == 204
    assert last.headers["Upload-Offset"] == "100"
    head = client.head(url, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "100"

    upload_id = url.rsplit("/", 1)[1]
    stored = client.get(f"/uploads/{upload_id}").get_json()
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored["filename"] == "world_domination_plan.pdf"
    assert client.get(f"/uploads/{upload_id}/content").data == data

    deleted = client.delete(url, headers=TUS)
    assert deleted.status_code == 204
    for method in ("head", "patch", "delete"):
        assert getattr(client, method)(url, headers={**TUS, "Upload-Offset": "100",
                                                     "Content-Type": OCTETS}).status_code in (404, 410)
    assert client.get(f"/uploads/{upload_id}").status_code == 404


def test_every_response_carries_tus_resumable_and_412_on_bad_version(client: FlaskClient) -> None:
    url = create(client, 10)
    for headers in ({}, {"Tus-Resumable": "0.2.2"}):
        for method in ("head", "patch", "delete", "post"):
            target = "/uploads/tus/" if method == "post" else url
            response = getattr(client, method)(target, headers=headers)
            assert response.status_code == 412, (method, headers)
            assert response.headers["Tus-Version"] == "1.0.0"
            assert response.headers["Tus-Resumable"] == "1.0.0"
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == "0"  # not processed


def test_patch_needs_offset_octet_stream(client: FlaskClient) -> None:
    url = create(client, 10)
    response = client.patch(url, data=b"abc", headers={**TUS, "Upload-Offset": "0",
                                                       "Content-Type": "application/octet-stream"})
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "TUS_CONTENT_TYPE"


def test_checksum_mismatch_is_460_and_chunk_discarded(client: FlaskClient, app: Any) -> None:
    url = create(client, 11)
    wrong = base64.b64encode(hashlib.sha1(b"hello there").digest()).decode()
    response = patch(client, url, 0, b"hello world", **{"Upload-Checksum": f"sha1 {wrong}"})
    assert response.status_code == 460
    assert response.get_json()["error"]["code"] == "TUS_CHECKSUM_MISMATCH"
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == "0"
    with app.app_context(), db.connection() as con:
        row = store.get(con, url.rsplit("/", 1)[1])
    assert row is not None
    assert kept_bytes(app, row) == 0
    bad_algorithm = patch(client, url, 0, b"hello world", **{"Upload-Checksum": "crc32 AAAAAA=="})
    assert bad_algorithm.status_code == 400
    good = base64.b64encode(hashlib.sha256(b"hello world").digest()).decode()
    ok = patch(client, url, 0, b"hello world", **{"Upload-Checksum": f"sha256 {good}"})
    assert ok.status_code == 204 and ok.headers["Upload-Offset"] == "11"


def test_over_max_size_is_413(client: FlaskClient) -> None:
    response = client.post("/uploads/tus/", headers={**TUS, "Upload-Length": str((1 << 20) + 1)})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "TUS_MAX_SIZE_EXCEEDED"


def test_body_longer_than_upload_is_413_and_discarded(client: FlaskClient) -> None:
    url = create(client, 4)
    assert patch(client, url, 0, b"12345").status_code == 413
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == "0"


def test_creation_with_upload(client: FlaskClient) -> None:
    response = client.post("/uploads/tus/", data=b"hello", headers={
        **TUS, "Upload-Length": "100", "Content-Type": OCTETS})
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "5"
    url = response.headers["Location"]
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == "5"


def test_creation_with_whole_upload_completes(client: FlaskClient) -> None:
    response = client.post("/uploads/tus/", data=b"tiny", headers={
        **TUS, "Upload-Length": "4", "Content-Type": OCTETS,
        "Upload-Metadata": "filename dC50eHQ=,filetype dGV4dC9wbGFpbg=="})
    assert response.status_code == 201 and response.headers["Upload-Offset"] == "4"
    upload_id = response.headers["Location"].rsplit("/", 1)[1]
    body = client.get(f"/uploads/{upload_id}").get_json()
    assert (body["filename"], body["content_type"], body["size"]) == ("t.txt", "text/plain", 4)


def test_zero_length_upload_is_complete_at_creation(client: FlaskClient) -> None:
    url = create(client, 0)
    upload_id = url.rsplit("/", 1)[1]
    assert client.get(f"/uploads/{upload_id}").get_json()["sha256"] == hashlib.sha256().hexdigest()


def test_deferred_length(client: FlaskClient) -> None:
    url = create(client, None)
    head = client.head(url, headers=TUS)
    assert head.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in head.headers
    assert patch(client, url, 0, b"abc").headers["Upload-Offset"] == "3"
    done = patch(client, url, 3, b"def", **{"Upload-Length": "6"})
    assert done.status_code == 204 and done.headers["Upload-Offset"] == "6"
    head = client.head(url, headers=TUS)
    assert head.headers["Upload-Length"] == "6" and "Upload-Defer-Length" not in head.headers
    upload_id = url.rsplit("/", 1)[1]
    assert client.get(f"/uploads/{upload_id}/content").data == b"abcdef"


def test_metadata_is_validated(client: FlaskClient) -> None:
    response = client.post("/uploads/tus/", headers={**TUS, "Upload-Length": "1",
                                                     "Upload-Metadata": "a b c"})
    assert response.status_code == 400


def test_unknown_upload_is_404(client: FlaskClient) -> None:
    assert client.head("/uploads/tus/" + "0" * 32, headers=TUS).status_code == 404
    assert client.head("/uploads/tus/not-an-id", headers=TUS).status_code == 404


def test_method_override(client: FlaskClient) -> None:
    url = create(client, 3)
    response = client.post(url, data=b"abc", headers={
        **TUS, "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0", "Content-Type": OCTETS})
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "3"


def test_token_protects_overridden_writes(app: Any) -> None:
    app.config["API_TOKEN"] = "s3cret"
    client = app.test_client()
    assert client.post("/uploads/tus/", headers={**TUS, "Upload-Length": "1"}).status_code == 401
    response = client.get("/uploads/tus/" + "0" * 32,
                          headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 401
    ok = client.post("/uploads/tus/", headers={**TUS, "Upload-Length": "1",
                                               "Authorization": "Bearer s3cret"})
    assert ok.status_code == 201


def test_expired_upload_answers_410_and_janitor_removes_files(client: FlaskClient, app: Any
                                                              ) -> None:
    app.config["TUS_EXPIRATION_SECONDS"] = 0.5
    first, second = create(client, 10), create(client, 10)
    with app.app_context(), db.connection() as con:
        rows = [store.get(con, u.rsplit("/", 1)[1]) for u in (first, second)]
    assert all(r is not None and unfinished(app, r) for r in rows)
    time.sleep(0.7)
    assert janitor.expire_and_purge(app) == (2, 0)
    assert not any(r is not None and unfinished(app, r) for r in rows)
    for url in (first, second):
        assert client.head(url, headers=TUS).status_code == 410
        assert patch(client, url, 0, b"x").status_code == 410


def test_lease_held_by_another_request_is_423_after_the_wait(client: FlaskClient, app: Any
                                                              ) -> None:
    url = create(client, 10)
    upload_id = url.rsplit("/", 1)[1]
    with app.app_context(), db.connection() as con:
        assert store.try_acquire(con, upload_id, "someone-else", 30) is not None
    started = time.monotonic()
    response = client.head(url, headers=TUS)
    assert response.status_code == 423
    assert time.monotonic() - started >= 2


def test_expire_command(client: FlaskClient, app: Any) -> None:
    app.config["TUS_EXPIRATION_SECONDS"] = 0.2
    url = create(client, 10)
    time.sleep(0.4)
    result = app.test_cli_runner().invoke(args=["tus", "expire"])
    assert result.exit_code == 0, result.output
    assert "1 expired uploads removed" in result.output
    assert client.head(url, headers=TUS).status_code == 410


def test_get_status_json_needs_no_tus_header(client: FlaskClient) -> None:
    url = create(client, 10)
    body = client.get(url).get_json()
    assert body["offset"] == 0 and body["length"] == 10 and body["state"] == "active"
    assert client.get("/uploads/tus/" + "0" * 32).status_code == 404


@pytest.fixture
def tiny_upload_dir(tmp_path: Any) -> Any:
    """A real 2 MiB tmpfs to fill up (needs root and mount; else skipped)."""
    from tests.uploads.tmpfs import small_tmpfs

    with small_tmpfs(tmp_path, "2m") as mount_point:
        yield mount_point


def test_disk_full_is_507_and_keeps_what_fit(app: Any, tiny_upload_dir: Any,
                                             storage_backend: str) -> None:
    if storage_backend != "local":
        pytest.skip("a full disk is the local backend's")
    app.config.update(UPLOAD_DIR=str(tiny_upload_dir), TUS_MAX_SIZE=8 << 20)
    client = app.test_client()
    url = create(client, 3 << 20)
    response = patch(client, url, 0, os.urandom(3 << 20))
    assert response.status_code == 507
    assert response.get_json()["error"]["code"] == "INSUFFICIENT_STORAGE"
    offset = int(client.head(url, headers=TUS).headers["Upload-Offset"])
    assert 0 < offset <= 2 << 20  # every whole chunk that fit is kept, durable
    with app.app_context(), db.connection() as con:
        row = store.get(con, url.rsplit("/", 1)[1])
    assert row is not None and row.staging_path(tiny_upload_dir).stat().st_size == offset
    # a terminated upload frees the space
    assert client.delete(url, headers=TUS).status_code == 204
    assert not row.staging_path(tiny_upload_dir).exists()


def test_random_chunking_reassembles_exactly(client: FlaskClient) -> None:
    """However the client splits its PATCHes (with or without checksums, with a resend
    of an already-stored range refused as 409), the stored bytes are the sent ones."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.binary(min_size=0, max_size=4096),
           cuts=st.lists(st.integers(0, 4096), max_size=6), sums=st.booleans())
    def run(data: bytes, cuts: list[int], sums: bool) -> None:
        url = create(client, len(data))
        points = sorted({c for c in cuts if 0 < c < len(data)} | {len(data)})
        offset = 0
        for point in points if data else []:
            piece = data[offset:point]
            extra = {}
            if sums:
                extra["Upload-Checksum"] = "sha256 " + base64.b64encode(
                    hashlib.sha256(piece).digest()).decode()
            response = patch(client, url, offset, piece, **extra)
            assert response.status_code == 204, (response.status_code, response.get_data())
            assert response.headers["Upload-Offset"] == str(point)
            if offset:
                assert patch(client, url, 0, data[:offset]).status_code == 409
            offset = point
        stored = client.get("/uploads/" + url.rsplit("/", 1)[1] + "/content")
        assert stored.status_code == 200 and stored.data == data

    run()


def test_renew_many_extends_held_leases_and_reports_takeover_requests(client: FlaskClient,
                                                                       app: Any) -> None:
    ids = [create(client, 10).rsplit("/", 1)[1] for _ in range(3)]
    with app.app_context(), db.connection() as con:
        for i, upload_id in enumerate(ids):
            assert store.try_acquire(con, upload_id, f"t{i}", 30) is not None
        store.request_release(con, ids[1])
        held = store.renew_many(con, [(ids[0], "t0"), (ids[1], "t1"), (ids[2], "wrong")], 30)
        assert held == {(ids[0], "t0"): False, (ids[1], "t1"): True}
        assert store.renew_many(con, [], 30) == {}
