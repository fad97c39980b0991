"""Where upload bytes live, chosen by ``FLASKSTREAM_STORAGE_URL`` and injected into the app.

``create_app`` calls ``init_app``, which builds one backend and keeps it in
``app.extensions["flaskstream"]["storage"]``; the uploads, tus and content code
look it up with ``get_storage()`` instead of joining ``UPLOAD_DIR`` paths, so
nothing is hard-wired to one host's disk.

- unset (or ``file:``): ``local.LocalStorage`` on ``UPLOAD_DIR`` (today's behaviour);
- ``s3://bucket/prefix?endpoint_url=...&region=...``: ``s3.S3Storage`` (boto3 is
  imported only then; credentials come from boto3's standard chain).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app

from flaskstream.storage.base import (
    InsufficientStorage,
    ObjectInfo,
    StagedObject,
    Storage,
    StorageUnavailable,
    StoredObject,
)

__all__ = ["InsufficientStorage", "ObjectInfo", "StagedObject", "Storage", "StorageUnavailable",
           "StoredObject", "from_config", "get_storage", "init_app"]

EXTENSION = "flaskstream"


def from_config(config: Mapping[str, Any]) -> Storage:
    """The backend ``STORAGE_URL`` names (``UPLOAD_DIR`` when it is unset)."""
    url = config.get("STORAGE_URL")
    scheme = urlsplit(str(url)).scheme if url else "file"
    if scheme == "file":
        from flaskstream.storage.local import LocalStorage

        path = urlsplit(str(url)).path if url else ""
        return LocalStorage(path or config["UPLOAD_DIR"])
    if scheme == "s3":
        from flaskstream.storage.s3 import S3Storage

        return S3Storage.from_url(str(url), config)
    raise ValueError(f"STORAGE_URL: unsupported scheme {scheme!r} (use s3:// or leave it unset)")


def init_app(app: Flask) -> None:
    """Build the backend once, run its start-up step, keep it in ``app.extensions``."""
    backend = from_config(app.config)
    backend.setup()
    app.extensions.setdefault(EXTENSION, {})["storage"] = backend


def get_storage(app: Flask | None = None) -> Storage:
    """The app's backend (``current_app`` unless given)."""
    return (app or current_app).extensions[EXTENSION]["storage"]  # type: ignore[no-any-return]
