"""State of tus uploads: a row in ``tus_uploads``, and the bytes so far in a ``Resumable``.

Why it is shaped like this:

- **Nothing lives in process memory.** Any gunicorn worker (or host sharing
  the folder and the database) can serve any request of an upload.
- **The row's offset is the durable offset.** A ``PATCH`` makes its bytes
  durable (an fsync of the staging file; acknowledged S3 parts and a tail
  object) before it writes a new ``upload_offset``, so the offset ``HEAD``
  reports is kept. Bytes past it (written by a worker that died before
  committing) are unconfirmed: the next holder drops or overwrites them
  (``reconcile``).
- **A lease, not a held connection, serialises writers.** ``lock_token`` +
  ``lock_expires`` mark the one request allowed to write; it renews the lease
  while it streams. A newer request sets ``release_requested``; a live holder
  sees that at its next renewal, commits what it has and lets go, and a dead
  holder's lease simply runs out. A held advisory lock would pin one pooled
  connection per upload in flight for the whole transfer.
- **Completion reuses the uploads pattern's storage** (the app's ``Storage``
  backend: ``UPLOAD_DIR/<id>`` or a bucket), same ``uploads`` row, so finished tus
  uploads are listed, served with ranges and deleted like any other. The
  unfinished bytes are the backend's ``Resumable`` (``storage.get_resumable``):
  locally a staging file in ``UPLOAD_DIR/.staging`` on the host that received
  them; on S3 multipart parts plus a tail object, which any host resumes.

Every function takes a pg8000.native connection; times come from the database
clock (``clock_timestamp()``) so workers on different hosts agree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from flaskstream import schema
from flaskstream.errorbase import FixedError, FlaskstreamError
from flaskstream.storage.base import Resumable, Storage
from flaskstream.uploads import storage

log = logging.getLogger(__name__)
COLUMNS = ("id, upload_length, upload_offset, metadata, filename, content_type, staging_name, "
           "state, created, updated, expires")
SECONDS = "* interval '1 second'"


def _table(con: Any) -> str:
    """The tus_uploads table of ``con``'s install, schema-qualified."""
    return schema.qualified(con, "tus_uploads")


@dataclasses.dataclass(frozen=True)
class TusUpload:
    """One row of ``tus_uploads``."""

    id: str
    length: int | None
    offset: int
    metadata: str | None
    filename: str
    content_type: str
    staging_name: str
    state: str
    created: dt.datetime
    updated: dt.datetime
    expires: dt.datetime

    @classmethod
    def from_row(cls, row: Any) -> TusUpload:
        return cls(*row)

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset >= self.length

    def staging_path(self, upload_dir: str | os.PathLike[str]) -> Path:
        """The staging file on the local backend (``localtus.LocalResumable``)."""
        return storage.staging_dir(upload_dir) / self.staging_name

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "offset": self.offset, "length": self.length,
                "filename": self.filename, "content_type": self.content_type,
                "state": self.state, "created": self.created.isoformat(),
                "expires": self.expires.isoformat()}


class UploadLocked(FixedError):
    """Another request holds the upload and did not let go in time."""

    code, status = "UPLOAD_LOCKED", 423

    def __init__(self, upload_id: str) -> None:
        super().__init__("another request is writing this upload; retry", upload_id=upload_id)


class LeaseLost(FixedError):
    """This request no longer holds the upload's lease (it ran out, or another took it)."""

    code, status = "UPLOAD_LEASE_LOST", 423

    def __init__(self, upload_id: str) -> None:
        super().__init__("another request took this upload over", upload_id=upload_id)


# --- creation and reads ---------------------------------------------------------------


def create(con: Any, resumable: Resumable, *, length: int | None,
           metadata: str | None, filename: str, content_type: str, expires_in: float,
           lock_token: str | None = None, lease: float = 0) -> TusUpload:
    """A new upload with empty room for its bytes; locked by ``lock_token`` if given
    (creation-with-upload writes right away)."""
    upload_id = storage.new_upload_id()
    name = resumable.create(upload_id)
    try:
        rows = con.run(
            f"INSERT INTO {_table(con)} (id, upload_length, metadata, filename, content_type, "
            f"staging_name, expires, lock_token, lock_expires) VALUES (:id, :length, :metadata, "
            f":filename, :content_type, :staging, clock_timestamp() + :expires_in {SECONDS}, "
            f":token, CASE WHEN CAST(:token AS text) IS NULL THEN NULL "
            f"ELSE clock_timestamp() + :lease {SECONDS} END) RETURNING {COLUMNS}",
            id=upload_id, length=length, metadata=metadata, filename=filename,
            content_type=content_type, staging=name, expires_in=float(expires_in),
            token=lock_token, lease=float(lease))
    except BaseException:
        resumable.remove(name, upload_id)
        raise
    return TusUpload.from_row(rows[0])


def get(con: Any, upload_id: str) -> TusUpload | None:
    if not storage.is_upload_id(upload_id):
        return None
    rows = con.run(f"SELECT {COLUMNS} FROM {_table(con)} WHERE id = :id", id=upload_id)
    return TusUpload.from_row(rows[0]) if rows else None


def db_now(con: Any) -> dt.datetime:
    return con.run("SELECT clock_timestamp()")[0][0]


# --- the lease --------------------------------------------------------------------------


def try_acquire(con: Any, upload_id: str, token: str, lease: float) -> TusUpload | None:
    """Take the lease if it is free or ran out; the row, or None if someone holds it."""
    rows = con.run(
        f"UPDATE {_table(con)} SET lock_token = :token, lock_expires = clock_timestamp() + "
        f":lease {SECONDS}, release_requested = NULL WHERE id = :id AND (lock_token IS NULL "
        f"OR lock_expires < clock_timestamp()) RETURNING {COLUMNS}",
        id=upload_id, token=token, lease=float(lease))
    return TusUpload.from_row(rows[0]) if rows else None


def request_release(con: Any, upload_id: str) -> None:
    con.run(f"UPDATE {_table(con)} SET release_requested = clock_timestamp() "
            "WHERE id = :id AND lock_token IS NOT NULL", id=upload_id)


def acquire(connect: Callable[[], AbstractContextManager[Any]], upload_id: str, token: str,
            lease: float, wait: float, sleep: Callable[[float], None] = time.sleep
            ) -> TusUpload | None:
    """Take the upload's lease, asking the current holder to let go; None if there is no upload.

    The holder is a request that is still streaming (perhaps from a client that
    vanished without closing its connection): it sees the request at its next
    renewal, commits the bytes it has and releases. A holder that died is waited
    out (its lease runs out). Raises ``UploadLocked`` after ``wait`` seconds.
    """
    if not storage.is_upload_id(upload_id):
        return None
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        with connect() as con:
            row = try_acquire(con, upload_id, token, lease)
            if row is not None:
                return row
            if not con.run(f"SELECT 1 FROM {_table(con)} WHERE id = :id", id=upload_id):
                return None
            request_release(con, upload_id)
        if time.monotonic() >= deadline:
            raise UploadLocked(upload_id)
        sleep(delay)
        delay = min(delay * 2, 0.2)


def renew(con: Any, upload_id: str, token: str, lease: float) -> bool:
    """Extend the lease; True if another request asked for the upload. Raises ``LeaseLost``."""
    rows = con.run(
        f"UPDATE {_table(con)} SET lock_expires = clock_timestamp() + :lease {SECONDS} "
        "WHERE id = :id AND lock_token = :token AND lock_expires >= clock_timestamp() "
        "RETURNING release_requested IS NOT NULL",
        id=upload_id, token=token, lease=float(lease))
    if not rows:
        raise LeaseLost(upload_id)
    return bool(rows[0][0])


def renew_many(con: Any, held: list[tuple[str, str]], lease: float) -> dict[tuple[str, str], bool]:
    """Extend many leases in one statement: ``{(id, token): release requested}`` for those
    still held (a pair missing from the answer has lost its lease)."""
    if not held:
        return {}
    rows = con.run(
        f"UPDATE {_table(con)} AS t SET lock_expires = clock_timestamp() + :lease {SECONDS} "
        "FROM unnest(CAST(:ids AS text[]), CAST(:tokens AS text[])) AS h(id, token) "
        "WHERE t.id = h.id AND t.lock_token = h.token AND t.lock_expires >= clock_timestamp() "
        "RETURNING t.id, t.lock_token, t.release_requested IS NOT NULL",
        ids=[i for i, _ in held], tokens=[t for _, t in held], lease=float(lease))
    return {(row[0], row[1]): bool(row[2]) for row in rows}


def release(con: Any, upload_id: str, token: str) -> None:
    con.run(f"UPDATE {_table(con)} SET lock_token = NULL, lock_expires = NULL "
            "WHERE id = :id AND lock_token = :token", id=upload_id, token=token)


# --- progress and completion ----------------------------------------------------------------


def commit_offset(con: Any, upload_id: str, token: str, offset: int, length: int | None,
                  expires_in: float) -> TusUpload:
    """Record a durable offset (the writer made it so) and push the expiry back.

    Only the lease holder can commit: raises ``LeaseLost`` otherwise.
    """
    rows = con.run(
        f"UPDATE {_table(con)} SET upload_offset = :offset, upload_length = :length, "
        f"updated = clock_timestamp(), expires = clock_timestamp() + :expires_in {SECONDS} "
        f"WHERE id = :id AND lock_token = :token AND state = 'active' RETURNING {COLUMNS}",
        id=upload_id, token=token, offset=offset, length=length, expires_in=float(expires_in))
    if not rows:
        raise LeaseLost(upload_id)
    return TusUpload.from_row(rows[0])


def reconcile(con: Any, resumable: Resumable, row: TusUpload, token: str) -> TusUpload:
    """Make the stored bytes agree with the durable offset, just after taking the lease.

    Longer: a writer died between writing and committing; its tail is
    unconfirmed and dropped. Shorter (the folder lost data, a tail object went):
    the offset falls back to what is really there, so the client re-sends the rest.
    """
    if row.complete:
        return row  # every byte is in (S3: as parts, no tail); finalize hands it over
    kept = resumable.reconcile(row.staging_name, row.id, row.offset)
    if kept < row.offset:
        row = commit_offset(con, row.id, token, kept, row.length,
                            (row.expires - db_now(con)).total_seconds())
    return row


def finalize(con: Any, resumable: Resumable, row: TusUpload, files: Storage,
             sha256: str | None = None) -> storage.Upload:
    """Turn a complete upload into an ordinary one: into ``files``, SHA-256, ``uploads`` row.

    Idempotent, so a worker that dies half-way is finished by the next request:
    the hand-over (``Resumable.finish``: a rename locally, completing the multipart
    upload on S3) is skipped if it already happened, the row reused if it exists.
    ``sha256`` is the hash of every byte when one request received them all.
    """
    upload = storage.get_upload(con, row.id)
    size = row.length if row.length is not None else row.offset
    if resumable.exists(row.staging_name, row.id):
        digest = resumable.finish(row.staging_name, row.id, size,
                                  upload.sha256 if upload is not None else sha256)
        if upload is None:
            upload = storage.Upload(id=row.id, filename=row.filename, size=size, sha256=digest,
                                    content_type=row.content_type, field=None)
    elif upload is None:
        info = files.stat(row.id)
        if info is None:
            raise FileNotFoundError(f"upload {row.id}: neither staging nor final file exists")
        resumable.remove(row.staging_name, row.id)  # what a finish cut short left
        upload = storage.Upload(id=row.id, filename=row.filename, size=info.size,
                                sha256=_stored_sha256(files, row.id), content_type=row.content_type,
                                field=None)
    if storage.get_upload(con, row.id) is None:
        storage.insert_uploads(con, [upload])
    set_state(con, row.id, "done")
    return upload


def _sha256_hex(path: Path) -> str:
    return storage.run_blocking(lambda: storage.hash_file(path).hexdigest())


def _stored_sha256(files: Storage, key: str) -> str:
    """The SHA-256 of an object already handed over (a worker died before its row)."""
    path = files.local_path(key)
    if path is not None:
        return _sha256_hex(path)
    stored = files.open(key)
    if stored is None:
        raise FileNotFoundError(f"upload {key}: the stored object vanished")
    hasher = hashlib.sha256()
    body = stored.body([(0, stored.info.size)], 1 << 20)
    try:
        for chunk in body:
            hasher.update(chunk)
    finally:
        getattr(body, "close", stored.close)()
    return hasher.hexdigest()


def set_state(con: Any, upload_id: str, state: str) -> None:
    con.run(f"UPDATE {_table(con)} SET state = :state, updated = clock_timestamp(), "
            "lock_token = NULL, lock_expires = NULL WHERE id = :id", id=upload_id, state=state)


def terminate(con: Any, resumable: Resumable, row: TusUpload, files: Storage) -> None:
    """Free everything of an upload (its finished file and row too); later requests get 410."""
    if row.state == "active":
        resumable.remove(row.staging_name, row.id)
    if row.state == "done":
        storage.delete_upload(con, files, row.id)
    set_state(con, row.id, "terminated")


def expire(con: Any, resumable: Resumable, row: TusUpload) -> None:
    resumable.remove(row.staging_name, row.id)
    set_state(con, row.id, "expired")


# --- the janitor ---------------------------------------------------------------------------


def expire_due(con: Any, resumable: Resumable, limit: int = 500) -> int:
    """Remove unfinished uploads past their ``Upload-Expires`` that nobody is writing.

    Rows stay as ``expired`` tombstones (answered with 410) until ``purge``.
    ``SKIP LOCKED`` lets janitors of several workers run at once.
    """
    rows = con.run(
        f"UPDATE {_table(con)} SET state = 'expired', updated = clock_timestamp(), "
        f"lock_token = NULL, lock_expires = NULL WHERE id IN (SELECT id FROM {_table(con)} "
        "WHERE state = 'active' AND expires < clock_timestamp() AND (lock_token IS NULL "
        "OR lock_expires < clock_timestamp()) ORDER BY expires LIMIT :limit "
        "FOR UPDATE SKIP LOCKED) RETURNING id, staging_name", limit=limit)
    for upload_id, name in rows:
        try:
            resumable.remove(name, upload_id)
        except FlaskstreamError:  # the bucket is down: its lifecycle rule is the backstop
            log.warning("tus upload %s expired but its bytes could not be removed", upload_id,
                        exc_info=True)
    return len(rows)


def purge(con: Any, older_than: float) -> int:
    """Forget finished/terminated/expired rows older than ``older_than`` s (then 404, not 410)."""
    rows = con.run(f"DELETE FROM {_table(con)} WHERE state <> 'active' AND updated < "
                   f"clock_timestamp() - :age {SECONDS} RETURNING id", age=float(older_than))
    return len(rows)
