"""Upload routes through Flask's test client: contract, limits, faults, all-or-nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flaskstream import db
from flaskstream.uploads import receive
from tests.storage.moto import stored_leftovers
from tests.uploads.tmpfs import small_tmpfs

pytestmark = pytest.mark.db

BOUNDARY = "xYzZY-flaskstream-test"
CT = f"multipart/form-data; boundary={BOUNDARY}"
DRAIN_MAX = receive.DRAIN_MAX_BYTES + 2 * 262144  # the bounded drain plus read chunks


def form(*parts: tuple[str, str | None, bytes], content_type: str = "application/octet-stream"
         ) -> bytes:
    out = bytearray()
    for name, filename, content in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
            out += f"Content-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n" \
                .encode()
        else:
            out += f"Content-Disposition: {disposition}\r\n\r\n".encode()
        out += content + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def leftovers(app: Flask) -> list[str]:
    """Files in UPLOAD_DIR, plus objects and open multipart uploads when on S3."""
    return stored_leftovers(app)


def rows(app: Flask) -> int:
    with app.app_context(), db.connection() as con:
        return int(con.run("SELECT count(*) FROM flaskstream.uploads")[0][0])


def assert_nothing_stored(app: Flask) -> None:
    assert leftovers(app) == []
    assert rows(app) == 0


def test_multipart_upload_roundtrip(app: Flask, client: FlaskClient) -> None:
    a, b = os.urandom(200_003), b"second file"
    body = form(("title", None, "Grüße".encode()), ("file", "../ä.bin", a), ("doc", "b.txt", b))
    res = client.post("/uploads", data=body, headers={"Content-Type": CT})
    assert res.status_code == 201, res.json
    files = res.json["files"]
    assert res.json["fields"] == {"title": "Grüße"}
    assert [(f["field"], f["filename"], f["size"], f["sha256"]) for f in files] == [
        ("file", "ä.bin", len(a), hashlib.sha256(a).hexdigest()),
        ("doc", "b.txt", len(b), hashlib.sha256(b).hexdigest()),
    ]
    assert sorted(leftovers(app)) == sorted(f["id"] for f in files)

    got = client.get(files[0]["url"])
    assert got.status_code == 200 and got.data == a
    assert got.headers["Content-Disposition"] == \
        "attachment; filename=\"a.bin\"; filename*=UTF-8''%C3%A4.bin"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    part = client.get(files[0]["url"], headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.data == a[-10:]

    meta = client.get(f"/uploads/{files[1]['id']}")
    assert meta.status_code == 200 and meta.json["filename"] == "b.txt"
    assert client.delete(f"/uploads/{files[1]['id']}").status_code == 204
    assert client.get(f"/uploads/{files[1]['id']}").status_code == 404
    assert client.delete(f"/uploads/{files[1]['id']}").status_code == 404
    assert leftovers(app) == [files[0]["id"]]


def test_list_is_paginated_newest_first(client: FlaskClient) -> None:
    ids = []
    for i in range(5):
        res = client.put(f"/uploads/f{i}.txt", data=b"x" * i)
        assert res.status_code == 201
        ids.append(res.json["id"])
    seen, cursor = [], None
    while True:
        res = client.get("/uploads", query_string={"limit": 2, **({"cursor": cursor} if cursor
                                                                   else {})})
        seen += [u["id"] for u in res.json["uploads"]]
        cursor = res.json["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert client.get("/uploads?cursor=!!").status_code == 400


def test_raw_put(app: Flask, client: FlaskClient) -> None:
    data = os.urandom(70_000)
    res = client.put("/uploads/clip%20one.mp4", data=data)
    assert res.status_code == 201
    assert res.json["filename"] == "clip one.mp4" and res.json["content_type"] == "video/mp4"
    assert res.json["sha256"] == hashlib.sha256(data).hexdigest()
    assert res.headers["Location"] == f"/uploads/{res.json['id']}"
    assert client.get(res.json["url"]).data == data
    inline = client.get(res.json["url"] + "?inline=1")
    assert inline.headers["Content-Disposition"].startswith("inline;")


def test_html_is_never_served_inline(client: FlaskClient) -> None:
    res = client.put("/uploads/x.html", data=b"<script>alert(1)</script>",
                     headers={"Content-Type": "text/html"})
    got = client.get(res.json["url"] + "?inline=1")
    assert got.headers["Content-Disposition"].startswith("attachment;")


@pytest.mark.parametrize("config,body,status,code", [
    ({"LIMIT_BODY_SIZE": 1000}, form(("f", "a", b"x" * 2000)), 413, "LIMIT_BODY_SIZE"),
    ({"LIMIT_FILE_SIZE": 1000}, form(("f", "a", b"1"), ("f", "b", b"x" * 1001)), 413,
     "LIMIT_FILE_SIZE"),
    ({"LIMIT_FILE_COUNT": 1}, form(("f", "a", b"1"), ("f", "b", b"2")), 413, "LIMIT_FILE_COUNT"),
    ({"LIMIT_FIELD_COUNT": 1}, form(("f", "a", b"1"), ("x", None, b"1"), ("y", None, b"2")), 413,
     "LIMIT_FIELD_COUNT"),
    ({"LIMIT_FIELD_SIZE": 3}, form(("f", "a", b"1"), ("x", None, b"1234")), 413,
     "LIMIT_FIELD_SIZE"),
    ({"LIMIT_PART_HEADERS": 100}, form(("f", "a" * 200, b"1")), 413, "LIMIT_PART_HEADERS"),
    ({"LIMIT_PART_HEADER_COUNT": 1}, form(("f", "a", b"1")), 413, "LIMIT_PART_HEADERS"),
    ({"LIMIT_FILENAME_LENGTH": 20}, form(("f", "a" * 21, b"1")), 413, "LIMIT_FILENAME_LENGTH"),
    ({"UPLOAD_ALLOWED_TYPES": [".png"]}, form(("f", "ok.png", b"1"), ("f", "evil.exe", b"2")),
     415, "UPLOAD_TYPE_NOT_ALLOWED"),
    ({}, form(("f", "a", b"1"))[:-20], 400, "MALFORMED_MULTIPART"),
    ({}, b"complete junk", 400, "MALFORMED_MULTIPART"),
    ({}, form(("x", None, b"only a field")), 400, "NO_FILES"),
])
def test_rejections_leave_nothing(app_config: dict[str, Any], config: dict[str, Any],
                                  body: bytes, status: int, code: str) -> None:
    from flaskstream import create_app

    app = create_app({**app_config, **config})
    res = app.test_client().post("/uploads", data=body, headers={"Content-Type": CT})
    assert (res.status_code, res.json["error"]["code"]) == (status, code)
    assert_nothing_stored(app)
    db.get_database(app).close_all()


def test_wrong_content_type_is_415(app: Flask, client: FlaskClient) -> None:
    res = client.post("/uploads", data=b"{}", headers={"Content-Type": "application/json"})
    assert res.status_code == 415 and res.json["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    res = client.post("/uploads", data=b"x", headers={"Content-Type": "multipart/form-data"})
    assert res.status_code == 400 and res.json["error"]["code"] == "MALFORMED_MULTIPART"


def test_non_utf8_part_headers_are_malformed(app: Flask, client: FlaskClient) -> None:
    body = form(("f", "PLACEHOLDER", b"1")).replace(b"PLACEHOLDER", b"\xff\xfe.bin")
    res = client.post("/uploads", data=body, headers={"Content-Type": CT})
    assert (res.status_code, res.json["error"]["code"]) == (400, "MALFORMED_MULTIPART")
    assert_nothing_stored(app)


def test_declared_length_over_limit_is_refused_before_reading(app_config: dict[str, Any]
                                                              ) -> None:
    from flaskstream import create_app

    app = create_app({**app_config, "LIMIT_BODY_SIZE": 10})

    class Unreadable(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            raise AssertionError("the body must not be read")

    res = app.test_client().put("/uploads/a.bin", environ_overrides={
        "wsgi.input": Unreadable(), "CONTENT_LENGTH": "11"})
    assert res.json["error"]["code"] == "LIMIT_BODY_SIZE"
    db.get_database(app).close_all()


def chunked(client: FlaskClient, path: str, chunks: Iterator[bytes], **kw: Any) -> Any:
    """A request without Content-Length (as gunicorn passes a chunked body)."""
    class Stream(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = b""

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            while not self.buf:
                self.buf = next(chunks, b"")
                if not self.buf:
                    return 0
            n = min(len(b), len(self.buf))
            b[:n], self.buf = self.buf[:n], self.buf[n:]
            return n

    overrides = {"wsgi.input": Stream(), "wsgi.input_terminated": True,
                 "HTTP_TRANSFER_ENCODING": "chunked"}
    if "content_type" in kw:  # set after the builder, which would invent its own boundary
        overrides["CONTENT_TYPE"] = kw.pop("content_type")
    return getattr(client, kw.pop("method", "post"))(path, environ_overrides=overrides, **kw)


def test_chunked_bodies_are_bounded_too(app_config: dict[str, Any]) -> None:
    from flaskstream import create_app

    app = create_app({**app_config, "LIMIT_BODY_SIZE": 300_000, "LIMIT_FILE_SIZE": 200_000})
    client = app.test_client()
    sent = []

    def endless() -> Iterator[bytes]:
        yield form(("f", "a", b""))[: -len(f"\r\n--{BOUNDARY}--\r\n")]
        while True:
            sent.append(65536)
            yield b"z" * 65536

    res = chunked(client, "/uploads", endless(), content_type=CT)
    assert res.json["error"]["code"] == "LIMIT_FILE_SIZE", res.json
    assert sum(sent) < 300_000 + DRAIN_MAX
    sent.clear()
    res = chunked(client, "/uploads/raw.bin", endless(), method="put")
    assert res.json["error"]["code"] == "LIMIT_FILE_SIZE"
    assert sum(sent) < 200_000 + DRAIN_MAX
    ok = chunked(client, "/uploads/small.bin", iter([b"ab", b"cd"]), method="put")
    assert ok.status_code == 201 and ok.json["size"] == 4
    assert leftovers(app) == [ok.json["id"]]
    db.get_database(app).close_all()


def test_chunked_bodies_hit_the_body_limit(app_config: dict[str, Any]) -> None:
    from flaskstream import create_app

    app = create_app({**app_config, "LIMIT_BODY_SIZE": 100_000})
    client = app.test_client()
    head = form(("f", "a", b""))[: -len(f"\r\n--{BOUNDARY}--\r\n")]
    for method, path, first, kw in [("post", "/uploads", head, {"content_type": CT}),
                                    ("put", "/uploads/raw.bin", b"z", {})]:
        sent = [0]

        def endless(first: bytes = first, sent: list[int] = sent) -> Iterator[bytes]:
            yield first
            while True:
                sent[0] += 65536
                yield b"z" * 65536

        res = chunked(client, path, endless(), method=method, **kw)
        assert (res.status_code, res.json["error"]["code"]) == (413, "LIMIT_BODY_SIZE"), path
        assert sent[0] < 100_000 + DRAIN_MAX
    assert_nothing_stored(app)
    db.get_database(app).close_all()


def test_client_disconnect_cleans_up(app: Flask, client: FlaskClient) -> None:
    body = form(("f", "a.bin", os.urandom(500_000)))
    res = client.post("/uploads", environ_overrides={
        "wsgi.input": io.BytesIO(body[:300_000]), "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": CT})
    assert res.json["error"]["code"] == "CLIENT_DISCONNECTED"
    assert_nothing_stored(app)
    assert client.put("/uploads/after.txt", data=b"still serving").status_code == 201


@pytest.mark.parametrize("method,path,body", [
    ("put", "/uploads/short.bin", os.urandom(70_000)),
    # A complete multipart body: only its declared length shows that bytes are missing.
    ("post", "/uploads", form(("f", "short.bin", os.urandom(70_000)))),
])
def test_body_shorter_than_content_length_is_never_stored(app: Flask, client: FlaskClient,
                                                          method: str, path: str, body: bytes
                                                          ) -> None:
    """A disconnect can look like EOF (gunicorn hands the app a short body, no error)."""
    res = getattr(client, method)(path, environ_overrides={
        "wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
        "CONTENT_LENGTH": str(len(body) + 1000), "CONTENT_TYPE": CT})
    assert (res.status_code, res.json["error"]["code"]) == (400, "CLIENT_DISCONNECTED")
    assert_nothing_stored(app)


def test_idle_body_times_out_with_408(app_config: dict[str, Any]) -> None:
    from flaskstream import create_app

    app = create_app({**app_config, "UPLOAD_IDLE_TIMEOUT": 0.3})
    read_fd, write_fd = os.pipe()
    os.write(write_fd, form(("f", "a.bin", b"")).split(b"\r\n\r\n")[0] + b"\r\n\r\npartial")
    try:
        with open(read_fd, "rb", buffering=0, closefd=False) as pipe:
            res = app.test_client().post("/uploads", environ_overrides={
                "wsgi.input": pipe, "CONTENT_LENGTH": "100000", "CONTENT_TYPE": CT})
        assert res.status_code == 408 and res.json["error"]["code"] == "UPLOAD_IDLE_TIMEOUT"
        assert_nothing_stored(app)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    db.get_database(app).close_all()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs to fill up (needs root and mount; else skipped)."""
    with small_tmpfs(tmp_path, "2m") as mount_point:
        yield mount_point


def test_disk_full_is_507_and_cleans_up(app_config: dict[str, Any], tiny_fs: Path,
                                        storage_backend: str) -> None:
    from flaskstream import create_app

    if storage_backend != "local":
        pytest.skip("a full local disk; S3 failures: tests/storage/test_s3.py")
    app = create_app({**app_config, "UPLOAD_DIR": str(tiny_fs)})
    client = app.test_client()
    body = form(("f", "small.bin", b"s" * 1000), ("f", "huge.bin", os.urandom(3 << 20)))
    res = client.post("/uploads", data=body, headers={"Content-Type": CT})
    assert res.status_code == 507 and res.json["error"]["code"] == "INSUFFICIENT_STORAGE"
    assert_nothing_stored(app)
    raw = client.put("/uploads/huge.bin", data=os.urandom(3 << 20))
    assert raw.status_code == 507
    assert_nothing_stored(app)
    assert client.put("/uploads/fits.bin", data=b"f" * 100_000).status_code == 201
    db.get_database(app).close_all()


def test_progress_events(app: Flask, client: FlaskClient) -> None:
    data = os.urandom(600_000)
    res = client.post("/uploads?progress=job-1", data=form(("f", "p.bin", data)),
                      headers={"Content-Type": CT})
    assert res.status_code == 201
    with app.app_context(), db.connection() as con:
        events = con.run("SELECT event, data FROM flaskstream.events WHERE channel = 'uploads.job-1' "
                         "ORDER BY id")
    names = [e[0] for e in events]
    assert names[0] == "progress" and names[-1] == "done"
    last_progress = json.loads(events[-2][1])
    assert last_progress["bytes"] == last_progress["total"] == len(form(("f", "p.bin", data)))
    assert json.loads(events[-1][1])["files"][0]["id"] == res.json["files"][0]["id"]

    bad = client.post("/uploads?progress=job-2", data=form(("f", "p.bin", data))[:-5],
                      headers={"Content-Type": CT})
    assert bad.status_code == 400
    with app.app_context(), db.connection() as con:
        last = con.run("SELECT event, data FROM flaskstream.events WHERE channel = 'uploads.job-2' "
                       "ORDER BY id DESC LIMIT 1")
    assert last[0][0] == "error" and json.loads(last[0][1])["code"] == "MALFORMED_MULTIPART"
    assert client.post("/uploads?progress=../x", data=b"",
                       headers={"Content-Type": CT}).status_code == 400


def test_buffered_route_only_in_bench_config(app_config: dict[str, Any], client: FlaskClient
                                             ) -> None:
    from flaskstream import create_app

    assert client.post("/uploads/buffered", data=form(("f", "a", b"1")),
                       headers={"Content-Type": CT}).status_code in (404, 405)
    app = create_app({**app_config, "BENCH_BUFFERED_ROUTE": True})
    res = app.test_client().post("/uploads/buffered", data=form(("f", "a", b"1")),
                                 headers={"Content-Type": CT})
    assert res.status_code == 201 and res.json["files"][0]["size"] == 1
    db.get_database(app).close_all()


def test_raw_put_limits_and_names(app_config: dict[str, Any]) -> None:
    from flaskstream import create_app

    app = create_app({**app_config, "LIMIT_FILENAME_LENGTH": 30,
                      "UPLOAD_ALLOWED_TYPES": [".txt", "image/*"]})
    client = app.test_client()
    res = client.put("/uploads/" + "a" * 31 + ".txt", data=b"x")
    assert (res.status_code, res.json["error"]["code"]) == (413, "LIMIT_FILENAME_LENGTH")
    res = client.put("/uploads/tool.exe", data=b"x")
    assert (res.status_code, res.json["error"]["code"]) == (415, "UPLOAD_TYPE_NOT_ALLOWED")
    res = client.put("/uploads/pic.bin", data=b"x", headers={"Content-Type": "image/png"})
    assert res.status_code == 201 and res.json["content_type"] == "image/png"
    res = client.put("/uploads/dir/sub/../notes.txt", data=b"hello")
    assert res.status_code == 201 and res.json["filename"] == "notes.txt"
    assert res.json["content_type"] == "text/plain"
    assert rows(app) == 2 and len(leftovers(app)) == 2
    db.get_database(app).close_all()


def test_writes_need_the_token_when_set(app_config: dict[str, Any]) -> None:
    from flaskstream import create_app

    app = create_app({**app_config, "API_TOKEN": "s3cret"})
    client = app.test_client()
    assert client.put("/uploads/a.txt", data=b"x").status_code == 401
    assert client.post("/uploads", data=form(("f", "a", b"1")),
                       headers={"Content-Type": CT}).status_code == 401
    ok = client.put("/uploads/a.txt", data=b"x", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    assert client.get(ok.json["url"]).data == b"x"  # reads stay open
    assert client.delete(f"/uploads/{ok.json['id']}").status_code == 401
    db.get_database(app).close_all()
