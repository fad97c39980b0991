"""Unfinished tus uploads on this host's disk: one staging file each (``base.Resumable``).

Today's behaviour, moved behind the interface the S3 backend also implements
(``s3tus.py``): the bytes of an unfinished upload live in
``UPLOAD_DIR/.staging/tus-<random>_<pid>@<host>.part`` on the host that
received them; every committed offset follows an ``fsync``, bytes past it (a
writer that died before committing) are cut off by ``reconcile``, and the
finished file is handed to the storage backend with ``adopt`` (a rename
locally, an upload into a bucket when only staging is local).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from flaskstream.storage.base import (
    NO_SPACE_ERRNOS,
    InsufficientStorage,
    Storage,
    hash_file,
    run_blocking,
)
from flaskstream.storage.local import StagingFile, staging_dir

STAGING_PREFIX = "tus-"


def fsync_path(path: os.PathLike[str] | str) -> None:
    """fsync a file by path, off the gevent loop (a large fsync can take seconds)."""
    def sync() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    run_blocking(sync)


class LocalResumable:
    """Staging files in ``UPLOAD_DIR/.staging``, finished into ``files`` (any backend)."""

    def __init__(self, files: Storage, upload_dir: str | os.PathLike[str]) -> None:
        self.files = files
        self.upload_dir = upload_dir

    def path(self, name: str) -> Path:
        return staging_dir(self.upload_dir) / Path(name).name

    def create(self, key: str) -> str:
        staging = StagingFile.create(self.upload_dir, prefix=STAGING_PREFIX)
        staging.close()
        return staging.name

    def reconcile(self, name: str, key: str, offset: int) -> int:
        """Longer than ``offset``: cut the unconfirmed tail; shorter (the folder lost data):
        the offset falls back to what is really there, so the client re-sends the rest."""
        path = self.path(name)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return offset
        if size > offset:
            os.truncate(path, offset)
        return min(size, offset)

    def writer(self, name: str, key: str, offset: int) -> LocalWriter:
        return LocalWriter(self.path(name), offset)

    def exists(self, name: str, key: str) -> bool:
        return self.path(name).exists()

    def finish(self, name: str, key: str, size: int, sha256: str | None) -> str:
        """SHA-256 (read back unless given), then ``adopt`` (fsync'd by the last PATCH)."""
        source = self.path(name)
        digest = sha256 or run_blocking(lambda: hash_file(source).hexdigest())
        self.files.adopt(source, key)
        return digest

    def remove(self, name: str, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))


class LocalWriter:
    """Appends to a staging file; durable = fsync'd."""

    def __init__(self, path: Path, start: int) -> None:
        self.path, self.start = path, start
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            if exc.errno in NO_SPACE_ERRNOS:
                raise InsufficientStorage(exc.errno, os.strerror(exc.errno or 0)) from exc
            raise

    def durable(self, written: int) -> int:
        """The bytes a checkpoint covers were all written before it started: fsync them."""
        fsync_path(self.path)
        return self.start + written

    def flush(self, written: int, complete: bool) -> int:
        os.truncate(self.path, self.start + written)  # a chunk the disk could not take in full
        fsync_path(self.path)
        return self.start + written

    def rollback(self) -> None:
        os.truncate(self.path, self.start)

    def close(self, committed: int | None = None) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
