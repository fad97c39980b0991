"""Media tests need no database: ``app_config`` points MEDIA_DIR at a folder the
tests fill, and the URL is never dialled (media routes do not touch PostgreSQL)."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import ROOT, LiveServer


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    return folder


@pytest.fixture(params=[True, False], ids=["fastpath", "flask"])
def app_config(request: pytest.FixtureRequest, tmp_path: Path, media_dir: Path) -> dict[str, Any]:
    """Every app-level test runs twice: through the WSGI fast path and through Flask."""
    return {
        "MEDIA_FAST_PATH": request.param,
        "TESTING": True,
        "DATABASE_URL": "postgresql://unused@127.0.0.1:9/unused",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "MEDIA_DIR": str(media_dir),
        "MEDIA_CHUNK_SIZE": 256 * 1024,
    }


class MediaServer:
    """A live gunicorn whose MEDIA_DIR is a temp folder filled for the tests."""

    def __init__(self, server: LiveServer, folder: Path, access_log: Path) -> None:
        self.server = server
        self.url = server.url
        self.host = "127.0.0.1"
        self.port = server.port
        self.folder = folder
        self.access_log = access_log

    def path(self, name: str) -> Path:
        return self.folder / name

    def media_url(self, name: str) -> str:
        return f"{self.url}/media/{name}"


@pytest.fixture(scope="package")
def media_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    """One gunicorn (1 gevent worker) for the media package, serving ``folder``:
    ``blob.bin`` (8 MiB + 77 random bytes), ``sample.mp4`` (the shipped faststart
    clip), ``small.txt``, a hidden file, an escaping symlink and ``sub/``."""
    base = tmp_path_factory.mktemp("media-live")
    folder = base / "media"
    folder.mkdir()
    (folder / "blob.bin").write_bytes(random.Random(5).randbytes(8 * 1024 * 1024 + 77))
    shutil.copy(ROOT / "media" / "sample.mp4", folder / "sample.mp4")
    (folder / "small.txt").write_bytes(b"0123456789abcdefghij")
    (folder / ".secret").write_text("hidden")
    (folder / ".private").mkdir()
    (folder / ".private" / "clip.mp4").write_text("hidden folder")
    (base / "outside.txt").write_text("outside secret")
    (folder / "escape.txt").symlink_to(base / "outside.txt")
    (folder / "sub").mkdir()
    (folder / "sub" / "tone.opus").write_bytes(b"OggS" + bytes(100))
    access_log = base / "access.log"
    server = LiveServer(base / "instance", database_url=database_url, env={
        "FLASKSTREAM_MEDIA_DIR": str(folder),
        "FLASKSTREAM_MEDIA_CHUNK_SIZE": str(256 * 1024),
        "GUNICORN_ACCESSLOG": str(access_log),
    })
    with server:
        yield MediaServer(server, folder, access_log)
