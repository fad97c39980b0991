"""The S3 backend against moto's real S3 API: objects bigger than a part, limits and
aborts mid-object, ranged reads equal to the local backend's, presigned redirects."""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask

from flaskstream import create_app, db
from flaskstream.storage.s3 import S3Storage
from flaskstream.uploads import records
from tests.storage.moto import S3Bucket, stored_leftovers

pytestmark = pytest.mark.db

MiB = 1024 * 1024
PART = 5 * MiB  # S3's minimum part size: objects of a few MiB span several parts
BOUNDARY = "s3-test-boundary"
CT = f"multipart/form-data; boundary={BOUNDARY}"


def form(filename: str, content: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"{filename}\""
            f"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + content \
        + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def s3_app(app_config: dict[str, Any], s3_bucket: S3Bucket) -> Iterator[Flask]:
    app = create_app({**app_config, "STORAGE_URL": s3_bucket.url(), "STORAGE_PART_SIZE": PART,
                      "STORAGE_PARTS_IN_FLIGHT": 2, "MEDIA_CHUNK_SIZE": 64 * 1024})
    yield app
    db.get_database(app).close_all()


@pytest.fixture
def local_app(app_config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app({**app_config, "MEDIA_CHUNK_SIZE": 64 * 1024})
    yield app
    db.get_database(app).close_all()


def prefix(app: Flask) -> str:
    return str(app.extensions["flaskstream"]["storage"].prefix)


def test_an_object_of_several_parts_is_streamed_and_stored_exactly(
        s3_app: Flask, s3_bucket: S3Bucket) -> None:
    data = random.Random(1).randbytes(3 * PART + 12345)
    client = s3_app.test_client()
    put = client.put("/uploads/big.bin", data=data)
    assert put.status_code == 201, put.json
    post = client.post("/uploads", data=form("big.bin", data), headers={"Content-Type": CT})
    assert post.status_code == 201, post.json
    ids = [put.json["id"], post.json["files"][0]["id"]]
    for upload_id in ids:
        assert s3_bucket.body(prefix(s3_app), upload_id) == data
    assert {put.json["sha256"], post.json["files"][0]["sha256"]} == \
        {hashlib.sha256(data).hexdigest()}
    assert stored_leftovers(s3_app) == sorted(ids)  # no open multipart upload either
    head = s3_bucket.client.head_object(Bucket="flaskstream-test",
                                        Key=f"{prefix(s3_app)}/{ids[0]}")
    assert head["ETag"].strip('"').endswith("-4")  # four parts: it was a multipart upload


def test_a_limit_hit_after_parts_went_out_aborts_the_multipart_upload(
        app_config: dict[str, Any], s3_bucket: S3Bucket) -> None:
    app = create_app({**app_config, "STORAGE_URL": s3_bucket.url(), "STORAGE_PART_SIZE": PART,
                      "LIMIT_FILE_SIZE": 2 * PART + 1})
    client = app.test_client()
    big = os.urandom(3 * PART)
    for res in (client.put("/uploads/x.bin", data=big,
                           environ_overrides={"wsgi.input_terminated": True}),
                client.post("/uploads", data=form("x.bin", big), headers={"Content-Type": CT})):
        assert (res.status_code, res.json["error"]["code"]) == (413, "LIMIT_FILE_SIZE")
    assert stored_leftovers(app) == []
    assert s3_bucket.open_uploads(prefix(app)) == []
    db.get_database(app).close_all()


def test_a_client_gone_mid_object_leaves_no_object_and_no_open_upload(s3_app: Flask) -> None:
    body = form("cut.bin", os.urandom(3 * PART))
    res = s3_app.test_client().post("/uploads", environ_overrides={
        "wsgi.input": io.BytesIO(body[: 2 * PART + 100]), "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": CT})
    assert res.json["error"]["code"] == "CLIENT_DISCONNECTED"
    assert stored_leftovers(s3_app) == []
    with s3_app.app_context(), db.connection() as con:
        assert con.run("SELECT count(*) FROM flaskstream.uploads")[0][0] == 0


def test_a_failed_insert_removes_the_finished_objects(s3_app: Flask) -> None:
    """commit_staged is all-or-nothing on S3 too: the completed object is deleted."""
    backend = s3_app.extensions["flaskstream"]["storage"]
    with s3_app.app_context(), db.connection() as con:
        staged = backend.stage()
        staged.write(os.urandom(PART + 10))
        con.run("INSERT INTO flaskstream.uploads (id, filename, size, sha256, content_type) "
                "VALUES (:i, 'x', 0, '', 'a/b')", i=staged.key)
        upload = records.Upload(staged.key, "a.bin", staged.size, staged.sha256, "a/b")
        with pytest.raises(db.DatabaseError):
            records.commit_staged(con, [(staged, upload)])
    assert stored_leftovers(s3_app) == []


def test_an_unreachable_bucket_is_503_and_nothing_is_kept(app_config: dict[str, Any]) -> None:
    from tests.live import free_port

    dead = f"s3://nowhere/p?endpoint_url=http://127.0.0.1:{free_port()}&region=us-east-1"
    app = create_app({**app_config, "STORAGE_URL": dead})
    client = app.test_client()
    for res in (client.put("/uploads/a.txt", data=b"hello"),
                client.post("/uploads", data=form("b.bin", b"x" * 1000),
                            headers={"Content-Type": CT})):
        assert (res.status_code, res.json["error"]["code"]) == (503, "STORAGE_UNAVAILABLE")
    with app.app_context(), db.connection() as con:
        assert con.run("SELECT count(*) FROM flaskstream.uploads")[0][0] == 0
    assert client.get("/healthz").status_code == 200  # still serving
    db.get_database(app).close_all()


RANGE_CASES: list[dict[str, str]] = [
    {},
    {"Range": "bytes=0-0"},
    {"Range": "bytes=-10"},
    {"Range": f"bytes={PART - 5}-{PART + 5}"},  # across a part boundary
    {"Range": "bytes=100-"},
    {"Range": "bytes=0-9,4000000-4000009,-3"},  # multi-range: several ranged GETs
    {"Range": "bytes=99999999-"},  # 416
    {"Range": "bytes=5-1"},  # invalid: ignored, 200
]


@pytest.mark.parametrize("headers", RANGE_CASES, ids=lambda h: h.get("Range", "none"))
def test_ranges_from_a_bucket_answer_as_the_local_backend_does(
        s3_app: Flask, local_app: Flask, headers: dict[str, str]) -> None:
    data = random.Random(2).randbytes(PART + 3 * MiB + 17)
    answers = []
    for app in (local_app, s3_app):
        client = app.test_client()
        url = client.put("/uploads/r.bin", data=data).json["url"]
        for method in ("GET", "HEAD"):
            res = client.open(url, method=method, headers=headers)
            body = res.data
            if res.headers.get("Content-Type", "").startswith("multipart/byteranges"):
                boundary = res.headers["Content-Type"].split("boundary=")[1]
                body = body.replace(boundary.encode(), b"BOUNDARY")
            answers.append((method, res.status_code, body, res.headers.get("Content-Range"),
                            res.headers.get("Content-Length"),
                            res.headers.get("Content-Disposition"),
                            res.headers.get("Accept-Ranges")))
    local, s3 = answers[:2], answers[2:]
    assert s3 == local
    if not headers:
        assert s3[0][2] == data


def test_conditional_requests_use_the_objects_etag(s3_app: Flask) -> None:
    client = s3_app.test_client()
    url = client.put("/uploads/c.txt", data=b"conditional").json["url"]
    first = client.get(url)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('"')
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={"If-Match": '"other"'}).status_code == 412
    stale = client.get(url, headers={"Range": "bytes=0-3", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.data == b"conditional"
    fresh = client.get(url, headers={"Range": "bytes=0-3", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.data == b"cond"


def test_delete_removes_the_object(s3_app: Flask) -> None:
    client = s3_app.test_client()
    res = client.put("/uploads/d.txt", data=b"delete me")
    assert stored_leftovers(s3_app) == [res.json["id"]]
    assert client.delete(f"/uploads/{res.json['id']}").status_code == 204
    assert stored_leftovers(s3_app) == []
    assert client.get(res.json["url"]).status_code == 404


def test_presigned_redirect_sends_the_client_to_the_bucket(
        app_config: dict[str, Any], s3_bucket: S3Bucket) -> None:
    app = create_app({**app_config, "STORAGE_URL": s3_bucket.url(),
                      "STORAGE_REDIRECT": "presigned"})
    client = app.test_client()
    data = os.urandom(100_000)
    url = client.put("/uploads/p.bin", data=data).json["url"]
    res = client.get(url)
    assert res.status_code == 302
    direct = requests.get(res.headers["Location"], timeout=10)
    assert direct.status_code == 200 and direct.content == data
    assert "p.bin" in direct.headers["Content-Disposition"]
    db.get_database(app).close_all()


class CountingClient:
    """The real boto3 client, counting ``upload_part`` calls in progress at once."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def upload_part(self, **kwargs: Any) -> Any:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.05)  # hold the part on the wire long enough to overlap
            return self.client.upload_part(**kwargs)
        finally:
            with self.lock:
                self.active -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.mark.parametrize("in_flight", [1, 3])
def test_parts_in_flight_are_bounded(s3_bucket: S3Bucket, in_flight: int) -> None:
    counting = CountingClient(s3_bucket.client)
    backend = S3Storage(counting, "flaskstream-test", f"bound-{in_flight}", part_size=PART,
                        parts_in_flight=in_flight)
    staged = backend.stage()
    data = os.urandom(6 * PART)
    for i in range(0, len(data), MiB):
        staged.write(data[i:i + MiB])
    staged.finalize()
    assert counting.peak == in_flight
    assert s3_bucket.body(f"bound-{in_flight}", staged.key) == data


def test_part_size_below_the_s3_minimum_is_refused(app_config: dict[str, Any],
                                                   s3_bucket: S3Bucket) -> None:
    with pytest.raises(ValueError, match="STORAGE_PART_SIZE"):
        create_app({**app_config, "STORAGE_URL": s3_bucket.url(), "STORAGE_PART_SIZE": MiB})


def test_part_buffers_of_all_uploads_share_one_budget(s3_bucket: S3Bucket) -> None:
    """Four uploads at once, two parts in flight allowed each, but buffers for two parts in
    the worker: never more than two parts on the wire, every object still whole."""
    counting = CountingClient(s3_bucket.client)
    backend = S3Storage(counting, "flaskstream-test", "budget", part_size=PART,
                        parts_in_flight=2, buffer_budget=2 * PART)
    data = [os.urandom(3 * PART + i) for i in range(4)]
    keys: list[str] = []
    errors: list[BaseException] = []

    def upload(body: bytes) -> None:
        try:
            staged = backend.stage()
            for i in range(0, len(body), MiB):
                staged.write(body[i:i + MiB])
            staged.finalize()
            keys.append(staged.key)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(body,)) for body in data]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and len(keys) == 4
    assert counting.peak <= 2
    assert sorted(s3_bucket.body("budget", key) for key in keys) == sorted(data)
    assert s3_bucket.open_uploads("budget") == []


def test_the_sweeper_aborts_only_uploads_that_stood_still(s3_bucket: S3Bucket) -> None:
    """An orphan (no new part for older_than, by this process's clock) is aborted; an upload
    that gained a part meanwhile is not, and neither is one seen for the first time."""
    backend = S3Storage(s3_bucket.client, "flaskstream-test", "sweep", part_size=PART)
    orphan, live = backend.stage(), backend.stage()
    for staged in (orphan, live):
        staged.write(os.urandom(PART + 1))  # one part out: a multipart upload is open
        staged._jobs[-1].result()  # and listed by S3 before the first sweep
    assert backend.sweep(0.3) == []  # first sight of both
    time.sleep(0.4)
    live.write(os.urandom(PART))  # a second part: progress
    live._jobs[-1].result()
    assert backend.sweep(0.3) == [f"sweep/{orphan.key}"]
    assert s3_bucket.open_uploads("sweep") == [f"sweep/{live.key}"]
    live.finalize()
    assert s3_bucket.open_uploads("sweep") == []
