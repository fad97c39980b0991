"""MEDIA_ACCEL through Flask's test client (fast path and blueprint, from
conftest's params): containment as always, then an empty 200 naming the real
file for nginx; tests/ops/test_nginx.py checks what nginx makes of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "MEDIA_ACCEL": "/_accel/"}


@pytest.fixture
def tree(tmp_path: Path, media_dir: Path) -> Path:
    (media_dir / "clip.mp4").write_bytes(b"x" * 1000)
    (media_dir / "sub").mkdir()
    (media_dir / "sub" / "a b?#%é.opus").write_bytes(b"OggS")
    (media_dir / "inside.mp4").symlink_to(media_dir / "clip.mp4")
    (media_dir / ".hidden").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    (media_dir / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return media_dir


def test_accel_answer(client: FlaskClient, tree: Path) -> None:
    res = client.get("/media/clip.mp4", headers={"Range": "bytes=0-9"})
    assert res.status_code == 200 and res.data == b""  # nginx does the range
    assert res.headers["X-Accel-Redirect"] == "/_accel/media/clip.mp4"
    assert res.headers["Content-Type"] == "video/mp4"
    assert res.headers["Cache-Control"] == "public, max-age=3600"
    assert "Content-Range" not in res.headers and "ETag" not in res.headers


def test_accel_names_the_real_file_escaped(client: FlaskClient, tree: Path) -> None:
    # A symlink inside is named by its target: nginx's location refuses symlinks.
    assert client.get("/media/inside.mp4").headers["X-Accel-Redirect"] == "/_accel/media/clip.mp4"
    res = client.get("/media/sub/a%20b%3F%23%25%C3%A9.opus")
    assert res.headers["X-Accel-Redirect"] == "/_accel/media/sub/a%20b%3F%23%25%C3%A9.opus"
    assert res.headers["Content-Type"] == "audio/ogg; codecs=opus"


@pytest.mark.parametrize("url", ["/media/.hidden", "/media/escape.txt", "/media/sub",
                                 "/media/%2e%2e/secret.txt", "/media/missing.mp4"])
def test_accel_refuses_what_serving_refuses(client: FlaskClient, tree: Path, url: str) -> None:
    res = client.get(url)
    assert res.status_code == 404 and "X-Accel-Redirect" not in res.headers
    assert res.get_json()["error"]["code"] == "NOT_FOUND"


def test_accel_off_by_default(app: Flask, tree: Path) -> None:
    app.config["MEDIA_ACCEL"] = None
    res = app.test_client().get("/media/clip.mp4")
    assert res.data == b"x" * 1000 and "X-Accel-Redirect" not in res.headers
