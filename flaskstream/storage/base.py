"""The storage interface the uploads, tus and content code talk to, and what backends share.

Why an interface: every byte used to live on one host's disk (``UPLOAD_DIR``),
so a second host behind a load balancer answered 404 for the first one's
uploads. The code that receives and serves uploads now asks ``Storage`` (built
once by ``create_app``, see ``flaskstream/storage/__init__.py``) instead of
joining paths itself, and the same calls land on the local filesystem
(``local.py``, the default) or an S3-compatible bucket (``s3.py``).

The shape follows what both backends can do without buffering a payload:

- ``stage()`` returns a ``StagedObject``: bytes are appended as they arrive and
  hashed on the way (SHA-256); ``finalize()`` makes the object durable under its
  key only once the body is whole; ``discard()`` leaves nothing behind.
- ``adopt(path, key)`` takes in a finished file written elsewhere (tus staging).
- ``stat(key)`` gives the validators; ``open(key)`` a ``StoredObject`` whose
  ``body(pieces, chunk_size)`` streams byte ranges in chunks; a backend on this
  filesystem also answers ``local_path(key)`` so the media code can ``pread`` it.
- ``delete(key)`` and ``keys()`` (listing) complete it.
- A ``Resumable`` holds unfinished tus uploads (``storage.get_resumable``): a
  staging file on this host (``localtus.py``), or S3 multipart parts plus a
  tail object that any host can resume (``s3tus.py``).

Keys are upload ids (32 hex digits, ``records.new_upload_id``), chosen when the
object is staged: S3 needs an object's key before its first byte is sent.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from flaskstream.errorbase import FixedError, FlaskstreamError

T = TypeVar("T")
ByteRange = tuple[int, int]

# Errors that mean "the disk (or the user's quota) is full" → HTTP 507.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class InsufficientStorage(FlaskstreamError, OSError):
    """The filesystem is full (ENOSPC/EDQUOT) while staging or finalizing: 507.

    Still an ``OSError`` with the ``errno`` for code that handles disk errors."""

    def __init__(self, number: int | None, strerror: str) -> None:
        super().__init__("INSUFFICIENT_STORAGE", 507, "the upload folder is full")
        self.errno, self.strerror = number, strerror


class StorageUnavailable(FixedError):
    """The storage backend could not be reached or refused a request: 503.

    Raised by remote backends where the fact is known (a failed S3 call); the
    error base renders it (the message names the S3 call, never Python internals).
    """

    code, status = "STORAGE_UNAVAILABLE", 503


@dataclass(frozen=True)
class ObjectInfo:
    """What a read needs before the first byte: size and validators.

    ``etag`` is a quoted strong entity tag; ``last_modified`` whole seconds
    since the epoch (HTTP dates have no finer resolution).
    """

    size: int
    etag: str
    last_modified: int


@runtime_checkable
class StagedObject(Protocol):
    """One object being received: append, hash, then finalize or discard."""

    key: str
    size: int

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    @property
    def sha256(self) -> str: ...

    def finalize(self, key: str | None = None) -> Any: ...

    def discard(self) -> None: ...

    def __enter__(self) -> StagedObject: ...

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...


class StoredObject(Protocol):
    """An object opened for reading: one validator snapshot, then byte ranges of it."""

    info: ObjectInfo

    def body(self, pieces: list[bytes | ByteRange], chunk_size: int) -> Iterable[bytes]:
        """A WSGI body yielding literal ``bytes`` pieces and ``(start, stop)`` ranges in
        chunks of at most ``chunk_size``; it owns the object and closes it in ``close()``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Storage(Protocol):
    """Where finished uploads live. One instance per app (``app.extensions``)."""

    kind: str

    def stage(self, prefix: str = "up-") -> StagedObject: ...

    def adopt(self, path: Path, key: str) -> None: ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def open(self, key: str) -> StoredObject | None: ...

    def local_path(self, key: str) -> Path | None: ...

    def delete(self, key: str) -> bool: ...

    def keys(self) -> Iterator[str]: ...

    def sweep(self, older_than: float) -> list[str]:
        """Remove what writers killed hard left behind (unfinished objects); their keys."""
        ...

    def setup(self) -> None: ...


class ResumableWriter(Protocol):
    """One request's bytes appended to an unfinished upload, from its durable offset.

    The tus code commits an offset to the database only after the writer said
    it is durable, so ``HEAD`` on any host never reports a byte that is not kept.
    """

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def durable(self, written: int) -> int:
        """Mid-request checkpoint: make the first ``written`` bytes durable as far as this
        backend can without waiting for the rest; the absolute offset that now is."""
        ...

    def flush(self, written: int, complete: bool) -> int:
        """Make all ``written`` bytes durable (``complete``: they end the upload); the offset."""
        ...

    def rollback(self) -> None:
        """Forget this request's bytes: the durable offset stays where the request began."""
        ...

    def close(self, committed: int | None) -> None:
        """Release the writer; ``committed`` is the offset the database now holds (None if
        unknown), so state that offset no longer needs can go."""
        ...


class Resumable(Protocol):
    """The bytes of unfinished resumable (tus) uploads, by upload id (``key``) and the
    backend's ``name`` for them (kept in the upload's row)."""

    def create(self, key: str) -> str:
        """Room for a new upload; its name."""
        ...

    def reconcile(self, name: str, key: str, offset: int) -> int:
        """After taking the upload's lease: drop bytes past ``offset`` (a writer that died
        before committing) and return how many are really kept (``offset``, or fewer)."""
        ...

    def writer(self, name: str, key: str, offset: int) -> ResumableWriter: ...

    def exists(self, name: str, key: str) -> bool:
        """Whether the unfinished bytes are still there (not yet handed to the storage)."""
        ...

    def finish(self, name: str, key: str, size: int, sha256: str | None) -> str:
        """Make the whole upload the stored object ``key``; its SHA-256 (``sha256`` if the
        caller hashed every byte). Idempotent with ``exists``: a retry after it went."""
        ...

    def remove(self, name: str, key: str) -> None:
        """Remove the unfinished bytes (never the finished object). Idempotent."""
        ...


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


def raise_storage_error(exc: OSError) -> None:
    """Re-raise ``exc``, as ``InsufficientStorage`` when it means the disk is full."""
    if exc.errno in NO_SPACE_ERRNOS:
        raise InsufficientStorage(exc.errno, os.strerror(exc.errno or 0)) from exc
    raise exc


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename/unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> Any:
    """A sha256 hasher fed with the file's bytes, read in chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            hasher.update(chunk)
    return hasher
