"""Upload routes through Flask's test client: an upload that fails mid-body is never
kept (all or nothing).

A client that disconnects (an error, or a body that just ends short of its
Content-Length), a body that goes idle (408), a disk that fills up (507, on a real
small tmpfs): each leaves no file and no row, and the server goes on serving.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flaskstream import db
from tests.uploads.tmpfs import small_tmpfs
from tests.uploads.views_support import CT, assert_nothing_stored, form

pytestmark = pytest.mark.db


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

