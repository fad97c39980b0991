"""Upload routes through Flask's test client: limits and malformed bodies are refused
and leave nothing stored.

Each configured limit (body, file, counts, field and header sizes, filename length,
the type allow-list) with its error code, on a multipart POST and a raw PUT; a wrong
or broken content type; a declared length over the limit refused before reading;
chunked bodies (no Content-Length) bounded by the same limits, reading at most a
bounded drain past them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flaskstream import db
from flaskstream.uploads import receive
from tests.uploads.views_support import (
    BOUNDARY,
    CT,
    assert_nothing_stored,
    form,
    leftovers,
    rows,
)

pytestmark = pytest.mark.db

DRAIN_MAX = receive.DRAIN_MAX_BYTES + 2 * 262144  # the bounded drain plus read chunks


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

