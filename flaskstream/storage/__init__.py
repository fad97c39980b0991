"""Where upload bytes live, chosen by ``FLASKSTREAM_STORAGE_URL`` and injected into the app.

``create_app`` calls ``init_app``, which builds one backend and keeps it in
``app.extensions["flaskstream"]["storage"]``; the uploads, tus and content code
look it up with ``get_storage()`` instead of joining ``UPLOAD_DIR`` paths, so
nothing is hard-wired to one host's disk.

- unset (or ``file:``): ``local.LocalStorage`` on ``UPLOAD_DIR`` (today's behaviour);
- ``s3://bucket/prefix?endpoint_url=...&region=...``: ``s3.S3Storage`` (boto3 is
  imported only then; credentials come from boto3's standard chain).

``MEDIA_URL=s3://...`` likewise puts ``/media/`` on a bucket (``get_media_storage``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from flaskstream import state
from flaskstream.storage.base import (
    InsufficientStorage,
    ObjectInfo,
    Resumable,
    StagedObject,
    Storage,
    StorageUnavailable,
    StoredObject,
)

__all__ = ["InsufficientStorage", "ObjectInfo", "Resumable", "StagedObject", "Storage", "StorageUnavailable",
           "StoredObject", "from_config", "get_media_storage", "get_resumable", "get_storage", "init_app",
           "media_from_config"]

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


def media_from_config(config: Mapping[str, Any]) -> Storage | None:
    """The bucket ``MEDIA_URL`` names for ``/media/`` (None: ``MEDIA_DIR`` on this host).

    Its keys are relative paths, served only when visible (no hidden or dotted
    segment: the rule ``MEDIA_DIR`` files follow).
    """
    url = config.get("MEDIA_URL")
    if not url:
        return None
    if urlsplit(str(url)).scheme != "s3":
        raise ValueError("MEDIA_URL: only s3:// is supported (leave it unset for MEDIA_DIR)")
    from flaskstream.media.files import safe_subpath
    from flaskstream.storage.s3 import S3Storage

    return S3Storage.from_url(str(url), config, key_check=safe_subpath)


def init_app(app: Flask) -> None:
    """Build the backends once, run their start-up step, keep them in ``app.extensions``."""
    backend = from_config(app.config)
    backend.setup()
    process = state.init_app(app)  # app.extensions["flaskstream"]
    process.storage = backend
    process.media = media_from_config(app.config)


def get_media_storage(app: Flask | None = None) -> Storage | None:
    """The bucket ``/media/`` serves from, or None for ``MEDIA_DIR``."""
    return state.get(app).media  # type: ignore[no-any-return]


def get_storage(app: Flask | None = None) -> Storage:
    """The app's backend (``current_app`` unless given)."""
    return state.get(app).storage  # type: ignore[no-any-return]


def get_resumable(app: Flask | None = None) -> Resumable:
    """Where unfinished tus uploads keep their bytes, for the app's backend.

    S3: multipart parts and a tail object in the bucket (``s3tus.py``), so any host
    resumes any upload. Local: today's staging file in ``UPLOAD_DIR/.staging``.
    """
    files = state.get(app).storage
    if files.kind == "s3":
        from flaskstream.storage.s3tus import S3Resumable

        return S3Resumable(files)
    from flask import current_app

    from flaskstream.storage.localtus import LocalResumable

    return LocalResumable(files, (app or current_app).config["UPLOAD_DIR"])
