"""tus on S3 (``storage/s3tus.py``) through the test client: PATCHes mapped onto parts.

Parts are 5 MiB (S3's minimum, which moto enforces too), so uploads of ~12 MiB in
uneven PATCHes cross part boundaries, leave tails, and resume from them. The
generic tus behaviour runs on both backends in the other modules; these are the
S3 mapping's own rules: the offset is what the bucket holds, a rejected body
never costs the committed tail, and nothing is left in the bucket at the end.
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
from flaskstream.storage import s3tus
from flaskstream.tus import janitor, store
from tests.storage.moto import stored_leftovers
from tests.tus.backends import kept_bytes, unfinished

pytestmark = pytest.mark.db

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
MiB = 1 << 20
PART = 5 * MiB


@pytest.fixture
def storage_backend() -> str:
    return "s3"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "STORAGE_PART_SIZE": PART, "TUS_MAX_SIZE": 64 * MiB,
            "TUS_LOCK_WAIT": 2, "TUS_LOCK_LEASE": 5}


def create(client: FlaskClient, length: int) -> str:
    response = client.post("/uploads/tus/", headers={**TUS, "Upload-Length": str(length)})
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.headers["Location"])


def patch(client: FlaskClient, url: str, offset: int, body: bytes, **headers: str) -> Any:
    return client.patch(url, data=body, headers={**TUS, "Upload-Offset": str(offset),
                                                 "Content-Type": OCTETS, **headers})


def row_of(app: Any, url: str) -> store.TusUpload:
    with app.app_context(), db.connection() as con:
        row = store.get(con, url.rsplit("/", 1)[1])
    assert row is not None
    return row


def stored_object(app: Any, upload_id: str) -> bytes:
    files = app.extensions["flaskstream"]["storage"]
    answer = files.client.get_object(Bucket=files.bucket, Key=files.object_key(upload_id))
    return bytes(answer["Body"].read())


def sha256_of(client: FlaskClient, upload_id: str) -> str:
    return str(client.get(f"/uploads/{upload_id}").get_json()["sha256"])


def test_uneven_patches_cross_parts_and_resume_from_tails(client: FlaskClient, app: Any) -> None:
    data = os.urandom(2 * PART + 1234567)
    url = create(client, len(data))
    uid = url.rsplit("/", 1)[1]
    cuts = [0, 3 * MiB, 3 * MiB + 1, 7 * MiB, PART * 2, len(data)]  # inside, on, past parts
    for start, stop in zip(cuts, cuts[1:], strict=False):
        response = patch(client, url, start, data[start:stop])
        assert response.status_code == 204, response.get_data(as_text=True)
        assert response.headers["Upload-Offset"] == str(stop)
        assert client.head(url, headers=TUS).headers["Upload-Offset"] == str(stop)
        if stop < len(data):
            row = row_of(app, url)
            whole, rest = divmod(stop, PART)
            tails = [k.rsplit("/", 1)[1] for k in unfinished(app, row) if s3tus.TAIL in k]
            # one tail at most, the one the offset needs: stale ones are deleted
            assert tails == ([f"{uid}{s3tus.TAIL}{whole + 1}"] if rest else [])
            assert kept_bytes(app, row) == stop
    assert stored_object(app, uid) == data
    assert sha256_of(client, uid) == hashlib.sha256(data).hexdigest()  # read back once
    assert stored_leftovers(app) == [uid]  # no tail, no marker, no open multipart upload


def test_one_patch_of_the_whole_file_hashes_as_it_streams(client: FlaskClient, app: Any) -> None:
    data = os.urandom(2 * PART + 17)
    url = create(client, len(data))
    uid = url.rsplit("/", 1)[1]
    assert patch(client, url, 0, data).status_code == 204
    assert stored_object(app, uid) == data
    assert sha256_of(client, uid) == hashlib.sha256(data).hexdigest()
    assert stored_leftovers(app) == [uid]


def test_a_rejected_body_across_a_part_keeps_the_committed_tail(client: FlaskClient, app: Any
                                                                 ) -> None:
    """Parts the rejected PATCH sent are overwritten later; the tail of the committed
    offset was never touched (a new tail object is numbered by its part)."""
    data = os.urandom(2 * PART + 99)
    url = create(client, len(data))
    uid = url.rsplit("/", 1)[1]
    first = 2 * MiB
    assert patch(client, url, 0, data[:first]).status_code == 204
    wrong = base64.b64encode(hashlib.sha256(b"not this").digest()).decode()
    response = patch(client, url, first, data[first:], **{"Upload-Checksum": f"sha256 {wrong}"})
    assert response.status_code == 460
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == str(first)
    bad = os.urandom(PART + MiB)  # a body of other bytes, cut off: parts 1 and 2 sent
    response = patch(client, url, first, bad, **{"Content-Digest": "sha-256=:" + base64.b64encode(
        hashlib.sha256(b"x").digest()).decode() + ":"})
    assert response.status_code == 400
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == str(first)
    good = base64.b64encode(hashlib.sha256(data[first:]).digest()).decode()
    response = patch(client, url, first, data[first:], **{"Upload-Checksum": f"sha256 {good}"})
    assert response.status_code == 204 and response.headers["Upload-Offset"] == str(len(data))
    assert stored_object(app, uid) == data
    assert sha256_of(client, uid) == hashlib.sha256(data).hexdigest()
    assert stored_leftovers(app) == [uid]


def test_an_overrun_keeps_whole_parts_and_its_tail(client: FlaskClient, app: Any) -> None:
    """A chunked body longer than the upload: 413, what fitted is kept (parts + tail) and
    the rest resumes; then the same with the last byte inside the overrun (completed)."""
    import io

    app.config["UPLOAD_CHUNK_SIZE"] = 256 * 1024
    for length in (PART + MiB + 5, PART + MiB):  # the chunk that overflows: refused / whole
        data = os.urandom(length)
        url = create(client, length)
        uid = url.rsplit("/", 1)[1]
        response = client.patch(url, input_stream=io.BytesIO(data + b"x" * MiB), headers={
            **TUS, "Upload-Offset": "0", "Content-Type": OCTETS},
            environ_overrides={"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
        assert response.status_code == 413
        kept = int(client.head(url, headers=TUS).headers["Upload-Offset"])
        assert PART < kept <= length
        if kept < length:
            assert kept_bytes(app, row_of(app, url)) == kept  # part 1 and a tail
            assert patch(client, url, kept, data[kept:]).status_code == 204
        assert stored_object(app, uid) == data
        assert sha256_of(client, uid) == hashlib.sha256(data).hexdigest()


def test_a_tail_extended_by_a_writer_that_died_is_read_to_the_offset(client: FlaskClient,
                                                                     app: Any) -> None:
    """A PATCH that put its tail but died before committing left a longer tail: the next
    PATCH uses its first ``offset`` bytes only."""
    data = os.urandom(PART + 100)
    url = create(client, len(data))
    uid = url.rsplit("/", 1)[1]
    assert patch(client, url, 0, data[:1000]).status_code == 204
    files = app.extensions["flaskstream"]["storage"]
    files.client.put_object(Bucket=files.bucket, Key=f"{files.object_key(uid)}{s3tus.TAIL}1",
                            Body=data[:1000] + b"unconfirmed bytes")
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == "1000"
    assert patch(client, url, 1000, data[1000:]).status_code == 204
    assert stored_object(app, uid) == data


def test_a_lost_tail_falls_back_to_the_part_boundary(client: FlaskClient, app: Any) -> None:
    data = os.urandom(PART + 2000)
    url = create(client, len(data))
    uid = url.rsplit("/", 1)[1]
    assert patch(client, url, 0, data[:PART + 1000]).status_code == 204
    files = app.extensions["flaskstream"]["storage"]
    files.client.delete_object(Bucket=files.bucket, Key=f"{files.object_key(uid)}{s3tus.TAIL}2")
    assert client.head(url, headers=TUS).headers["Upload-Offset"] == str(PART)
    assert patch(client, url, PART, data[PART:]).status_code == 204
    assert stored_object(app, uid) == data


def test_termination_and_expiry_leave_nothing_in_the_bucket(client: FlaskClient, app: Any
                                                            ) -> None:
    data = os.urandom(PART + 10)
    terminated, expiring = create(client, len(data)), create(client, len(data))
    for url in (terminated, expiring):
        assert patch(client, url, 0, data[:PART + 5]).status_code == 204
    assert len(stored_leftovers(app)) == 6  # per upload: its multipart upload, tail, marker
    assert client.delete(terminated, headers=TUS).status_code == 204
    assert len(stored_leftovers(app)) == 3
    app.config["TUS_EXPIRATION_SECONDS"] = 0.3
    assert patch(client, expiring, PART + 5, b"").status_code == 204  # pushes expiry to 0.3 s
    time.sleep(0.5)
    assert janitor.expire_and_purge(app) == (1, 0)
    assert stored_leftovers(app) == []


def test_a_zero_length_upload_is_an_empty_object(client: FlaskClient, app: Any) -> None:
    url = create(client, 0)
    uid = url.rsplit("/", 1)[1]
    assert stored_object(app, uid) == b""
    assert sha256_of(client, uid) == hashlib.sha256(b"").hexdigest()
    assert stored_leftovers(app) == [uid]


def test_the_orphan_sweeper_leaves_a_paused_tus_upload_alone(client: FlaskClient, app: Any
                                                             ) -> None:
    """A paused tus upload sends no part for hours; it is not a killed request's upload."""
    data = os.urandom(PART + 10)
    url = create(client, len(data))
    uid = url.rsplit("/", 1)[1]
    assert patch(client, url, 0, data[:PART]).status_code == 204
    files = app.extensions["flaskstream"]["storage"]
    assert files.sweep(0) == []  # first sight
    assert files.sweep(0) == []  # stood still, but it is a tus upload's
    assert patch(client, url, PART, data[PART:]).status_code == 204
    assert stored_object(app, uid) == data


def test_an_upload_started_on_the_local_backend_is_gone_on_s3(client: FlaskClient, app: Any
                                                              ) -> None:
    """After STORAGE_URL moved to a bucket, an upload whose bytes are a host's staging file
    answers 410 in the JSON shape to every request (clients start again: tus-js-client
    does on a 410 HEAD), and the janitor expires it without touching the bucket."""
    first, second = create(client, 10), create(client, 10)
    with app.app_context(), db.connection() as con:
        con.run("UPDATE flaskstream.tus_uploads SET staging_name = 'tus-0_1@h.part'")
    response = patch(client, first, 0, b"0123456789")
    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "UPLOAD_ON_OTHER_BACKEND"
    for method in (client.head, client.delete):
        assert method(first, headers=TUS).status_code == 410
    with app.app_context(), db.connection() as con:
        con.run("UPDATE flaskstream.tus_uploads SET expires = clock_timestamp() - "
                "interval '1 second' WHERE id = :id", id=second.rsplit("/", 1)[1])
    assert janitor.expire_and_purge(app) == (1, 0)
    assert client.head(second, headers=TUS).status_code == 410


def test_tus_parts_and_tails_are_bound_by_their_checksum_not_hashed_again(
        client: FlaskClient, app: Any) -> None:
    """As for uploads (tests/storage/test_s3_reads.py): botocore's SigV4 payload hash would
    be one more SHA-256 of every byte on the event loop; a tus part or tail goes
    UNSIGNED-PAYLOAD on the part client, bound by its signed x-amz-checksum-sha256."""
    files = app.extensions["flaskstream"]["storage"]
    sent: list[tuple[str, str, bool]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        payload = request.headers["X-Amz-Content-SHA256"]
        sent.append((event_name.rsplit(".", 1)[1],
                     payload.decode() if isinstance(payload, bytes) else payload,
                     "x-amz-checksum-sha256" in request.headers))

    clients = {id(files.client): files.client, id(files.part_client): files.part_client}
    for each in clients.values():
        each.meta.events.register("before-send.s3", record)
    try:
        data = os.urandom(PART + 2 * MiB)
        url = create(client, len(data))
        for start, stop in ((0, PART + MiB), (PART + MiB, len(data))):  # a part, a tail, the rest
            assert patch(client, url, start, data[start:stop]).status_code == 204
    finally:
        for each in clients.values():
            each.meta.events.unregister("before-send.s3", record)
    assert stored_object(app, url.rsplit("/", 1)[1]) == data
    checked = [(op, payload) for op, payload, has_checksum in sent if has_checksum]
    assert {op for op, _ in checked} == {"UploadPart", "PutObject"}  # parts and the tail
    assert all(payload == "UNSIGNED-PAYLOAD" for _, payload in checked), checked
    assert all(payload != "UNSIGNED-PAYLOAD" for _, payload, has in sent if not has)
