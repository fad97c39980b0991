"""Upload storage: staging files, SHA-256 while streaming, fsync + atomic rename, metadata rows.

Why it is shaped like this:

- A request's bytes go to a **staging file** in ``UPLOAD_DIR/.staging`` — the
  same filesystem as the final folder, so the final ``rename`` is atomic and
  never a copy (a tmpfs ``/tmp`` would be both a copy and a RAM cost).
- The SHA-256 is updated on every chunk as it is written, so no second read of
  a 4 GB file is needed to learn its checksum.
- ``finalize`` fsyncs the file, renames it to a **server-generated name**
  (the upload id; the client's filename is metadata only), then fsyncs the
  folder: after ``finalize`` returns, the file survives a power cut.
- Rows go into PostgreSQL after every file of a request is in place, in one
  transaction; if that fails, the finalized files are removed again. Together
  with ``StagingFile.discard`` this makes a request all-or-nothing.

Under gunicorn's gevent worker, ``fsync`` of a large file can take seconds; it
runs on gevent's thread pool so other greenlets (SSE streams, health checks)
keep running. Everything else here is plain blocking file I/O on the page cache.

Public API (the tus pattern builds on it)::

    staging = StagingFile.create(upload_dir)          # or StagingFile.resume(upload_dir, name)
    staging.write(chunk)                              # hashes as it writes
    path = staging.finalize(upload_id)                # fsync + atomic rename
    upload = Upload.new(...); insert_uploads(con, [upload])
    staging.discard()                                 # on any failure (idempotent)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from flaskstream.errorbase import FlaskstreamError

# The stored-upload names live in records.py; storage is the API others import.
from flaskstream.uploads.records import (
    COLUMNS,
    Upload,
    delete_upload,
    final_path,
    get_upload,
    insert_uploads,
    is_upload_id,
    list_uploads,
    new_upload_id,
)

__all__ = [
    "COLUMNS", "FILE_MODE", "NO_SPACE_ERRNOS", "STAGING_DIRNAME", "STAGING_SUFFIX",
    "InsufficientStorage", "StagingFile", "Upload", "commit_staged", "delete_upload",
    "discard_staged",
    "final_path", "fsync_dir", "get_upload", "gevent_threadpool", "hash_file",
    "insert_uploads", "is_upload_id", "list_uploads", "new_upload_id", "run_blocking",
    "owner_tag", "staging_dir", "staging_host", "sweep_staging",
]

STAGING_DIRNAME = ".staging"
STAGING_SUFFIX = ".part"
# Errors that mean "the disk (or the user's quota) is full" → HTTP 507.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FILE_MODE = 0o640
# Chunks at least this big are hashed on gevent's thread pool (smaller: inline,
# where the hand-off would cost more than the hash).
HASH_OFFLOAD_MIN = 64 * 1024
# Start disk writeback every this many bytes (see StagingFile._start_writeback).
WRITEBACK_STEP = 8 * 1024 * 1024

T = TypeVar("T")


class InsufficientStorage(FlaskstreamError, OSError):
    """The filesystem is full (ENOSPC/EDQUOT) while staging or finalizing: 507.

    Still an ``OSError`` with the ``errno`` for code that handles disk errors."""

    def __init__(self, number: int | None, strerror: str) -> None:
        super().__init__("INSUFFICIENT_STORAGE", 507, "the upload folder is full")
        self.errno, self.strerror = number, strerror


def gevent_threadpool() -> Any | None:
    """gevent's hub thread pool when this process runs under gevent (monkey-patched), else None."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a runtime dependency
        return None
    if not monkey.is_module_patched("os") and not monkey.is_module_patched("socket"):
        return None
    import gevent

    return gevent.get_hub().threadpool


def run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run a call that may block for long (fsync) off the gevent loop when gevent is active."""
    pool = gevent_threadpool()
    return func(*args) if pool is None else pool.apply(func, args)


def _raise_storage_error(exc: OSError) -> None:
    if exc.errno in NO_SPACE_ERRNOS:
        raise InsufficientStorage(exc.errno, os.strerror(exc.errno or 0)) from exc
    raise exc


def staging_host() -> str:
    """This host's name as it appears in staging file names (safe characters, ≤ 64)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "localhost"


def owner_tag() -> str:
    """``_<pid>@<host>``: which process writes a staging file, read back by the staging
    janitor (``uploads/janitor.py``) to remove a killed worker's files at once."""
    return f"_{os.getpid()}@{staging_host()}"


def staging_dir(upload_dir: str | os.PathLike[str]) -> Path:
    """``UPLOAD_DIR/.staging``, created on first use."""
    path = Path(upload_dir) / STAGING_DIRNAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename/unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fadvise_dontneed(fd: int, offset: int, length: int) -> None:
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):  # not Linux, or a filesystem without it
        pass


class StagingFile:
    """One file being received, written under ``UPLOAD_DIR/.staging`` and hashed as it grows.

    Not thread-safe; one request (greenlet) owns it. Use as a context manager
    (or call ``discard`` in a ``finally``): unless ``finalize`` succeeded, the
    staging file is removed.

    Under gevent, ``write`` writes synchronously (so ENOSPC surfaces at once)
    but hands the chunk's SHA-256 update to a pool thread (hashlib releases
    the GIL) while the greenlet goes on reading and parsing the next chunk:
    one chunk in flight per file, and a second core does the hashing.
    """

    def __init__(self, upload_dir: str | os.PathLike[str], path: Path, fd: int,
                 size: int, hasher: Any | None) -> None:
        self.upload_dir = Path(upload_dir)
        self.path = path
        self.size = size
        self._fd: int | None = fd
        self._hasher = hasher
        self.finalized_path: Path | None = None
        self._pool = gevent_threadpool()
        self._pending: Any | None = None
        self._writeback_from = self._writeback_to = size
        self._writeback_job: Any | None = None

    @classmethod
    def create(cls, upload_dir: str | os.PathLike[str], prefix: str = "up-") -> StagingFile:
        """A new empty staging file named ``<prefix><random>_<pid>@<host>.part`` (its owner)."""
        directory = staging_dir(upload_dir)
        path = directory / f"{prefix}{secrets.token_hex(16)}{owner_tag()}{STAGING_SUFFIX}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            _raise_storage_error(exc)
        return cls(upload_dir, path, fd, 0, hashlib.sha256())

    @classmethod
    def resume(cls, upload_dir: str | os.PathLike[str], name: str) -> StagingFile:
        """Reopen an existing staging file (by its name in ``.staging``) to append to it.

        For resumable uploads across requests: the running hash cannot be kept
        between requests, so the SHA-256 is computed once, at ``finalize``, by
        reading the file back in chunks.
        """
        path = staging_dir(upload_dir) / Path(name).name
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        return cls(upload_dir, path, fd, os.fstat(fd).st_size, None)

    @property
    def name(self) -> str:
        return self.path.name

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (fully: short writes are retried) and update the hash.

        Raises ``InsufficientStorage`` when the disk is full; the caller then
        discards the file.
        """
        if self._fd is None:
            raise ValueError("staging file is closed")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            _raise_storage_error(exc)
        self.size += len(data)
        if self.size - self._writeback_to >= WRITEBACK_STEP:
            self._start_writeback()
        if self._hasher is None:
            return
        # Hash on a pool thread (hashlib releases the GIL) while this greenlet
        # reads the next chunk; only immutable bytes may outlive this call.
        self.flush()
        immutable = isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly)
        if self._pool is not None and immutable and len(data) >= HASH_OFFLOAD_MIN:
            self._pending = self._pool.spawn(self._hasher.update, data)
        else:
            self._hasher.update(data)

    def _start_writeback(self) -> None:
        """Start writing what we have to disk now, and drop what is already written.

        Without it a 1 GiB upload sits as 1 GiB of dirty page cache until the
        final fsync, which then stalls for seconds (and the page cache fills
        with data nobody will read soon). ``POSIX_FADV_DONTNEED`` on Linux
        starts asynchronous writeback of the range and evicts its clean pages;
        the range from the previous call is clean by now, so it is dropped.
        """
        assert self._fd is not None
        job = self._writeback_job
        if job is not None and not job.ready():
            return  # the previous one is still running: the next call covers more
        start = self._writeback_from
        if self._pool is None:
            _fadvise_dontneed(self._fd, start, self.size - start)
        else:  # ~0.25 s per GiB of syscalls: off the event loop
            self._writeback_job = self._pool.spawn(_fadvise_dontneed, self._fd, start,
                                                   self.size - start)
        self._writeback_from = self._writeback_to
        self._writeback_to = self.size

    def _wait_writeback(self) -> None:
        job, self._writeback_job = self._writeback_job, None
        if job is not None:
            job.get()

    def flush(self) -> None:
        """Wait for the hash update in flight (if any)."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.get()
        finally:
            # Interrupted (gevent.Timeout, kill) before the thread finished: keep
            # it, so that close() still waits and never closes a descriptor in use.
            if pending.ready():
                self._pending = None

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of everything written so far (computed by reading back if resumed)."""
        self.flush()
        if self._hasher is None:
            self._hasher = hash_file(self.path)
        return self._hasher.hexdigest()

    def finalize(self, upload_id: str) -> Path:
        """fsync, close, and atomically rename to ``UPLOAD_DIR/<upload_id>``; fsync the folder.

        Returns the final path. On failure the staging file is removed and the
        error re-raised (``InsufficientStorage`` for a full disk).
        """
        if self._fd is None:
            raise ValueError("staging file is closed")
        target = final_path(self.upload_dir, upload_id)
        try:
            self.sha256  # noqa: B018 - resumed files hash now, before the rename
            self._wait_writeback()
            run_blocking(os.fsync, self._fd)
            os.close(self._fd)
            self._fd = None
            os.rename(self.path, target)
            self.finalized_path = target
            fsync_dir(self.upload_dir)
        except OSError as exc:
            self.discard()
            _raise_storage_error(exc)
        return target

    def close(self) -> None:
        """Close the descriptor, keeping the staging file (resumable uploads)."""
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - closing after a failed write still closes
            pass
        self._wait_writeback()  # never close a descriptor a pool thread still uses
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Close and remove the staging file; also the final file if it was finalized. Idempotent."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self.finalized_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.finalized_path)
            self.finalized_path = None

    def __enter__(self) -> StagingFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or self.finalized_path is None:
            self.discard()


def hash_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> Any:
    """A sha256 hasher fed with the file's bytes, read in chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            hasher.update(chunk)
    return hasher


def sweep_staging(upload_dir: str | os.PathLike[str], older_than: float,
                  prefix: str = "up-") -> int:
    """Remove staging files with ``prefix`` not modified for ``older_than`` seconds.

    A worker killed hard (SIGKILL, OOM) runs no ``finally``; this is the backstop.
    Returns how many were removed.
    """
    removed = 0
    cutoff = time.time() - older_than
    for entry in os.scandir(staging_dir(upload_dir)):
        if entry.name.startswith(prefix) and entry.name.endswith(STAGING_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def discard_staged(staged: Sequence[tuple[StagingFile, Upload]]) -> None:
    """Remove every file of a batch (staging or final). Idempotent: callers that failed
    before ``commit_staged`` ran (no database connection) and after it both call it."""
    for staging, _ in staged:
        staging.discard()


def commit_staged(con: Any, staged: Sequence[tuple[StagingFile, Upload]]) -> None:
    """Finalize every staging file, then insert every row in one transaction.

    All-or-nothing: if any rename or the insert fails, every file of the batch
    (staging or final) is removed and the error re-raised.
    """
    try:
        for staging, upload in staged:
            staging.finalize(upload.id)
        insert_uploads(con, [upload for _, upload in staged])
    except BaseException:
        discard_staged(staged)
        raise
