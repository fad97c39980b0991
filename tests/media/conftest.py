"""Media tests need no database: ``app_config`` points MEDIA_DIR at a folder the
tests fill, and the URL is never dialled (media routes do not touch PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    return folder


@pytest.fixture
def app_config(tmp_path: Path, media_dir: Path) -> dict[str, Any]:
    return {
        "TESTING": True,
        "DATABASE_URL": "postgresql://unused@127.0.0.1:9/unused",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "MEDIA_DIR": str(media_dir),
        "MEDIA_CHUNK_SIZE": 256 * 1024,
    }
