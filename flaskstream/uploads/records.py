"""Stored uploads as rows: the ``uploads`` table (migrations/), and committing a batch.

Split from the storage backends (``flaskstream/storage/``; ``uploads/storage.py``
re-exports every name here) so that the staging and durability code and the SQL
stay small modules each. The client's filename is metadata only: the bytes live
under the upload id (``UPLOAD_DIR/<id>`` locally, ``<prefix>/<id>`` in a bucket),
ids being random hex.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flaskstream import schema

if TYPE_CHECKING:  # the backends import this module for the ids
    from flaskstream.storage.base import StagedObject, Storage

log = logging.getLogger(__name__)

def final_path(upload_dir: str | os.PathLike[str], upload_id: str) -> Path:
    """Where an upload's bytes live: ``UPLOAD_DIR/<id>`` (ids are server-generated hex)."""
    if not is_upload_id(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    return Path(upload_dir) / upload_id


def new_upload_id() -> str:
    """A random 32-hex-digit id (uuid4), used both as the row key and the file name."""
    return uuid.uuid4().hex


def is_upload_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


# --- metadata rows (table in flaskstream/migrations/) ----------------------------

COLUMNS = "id, filename, size, sha256, content_type, field, created"


@dataclasses.dataclass(frozen=True)
class Upload:
    """One stored upload: its row in ``uploads`` and the file at ``final_path(dir, id)``."""

    id: str
    filename: str
    size: int
    sha256: str
    content_type: str
    field: str | None = None
    created: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Upload:
        return cls(*row)

    def to_json(self, url: str | None = None) -> dict[str, Any]:
        """The contract's file object (``url`` is added by the view that knows the route)."""
        body: dict[str, Any] = {
            "id": self.id, "field": self.field, "filename": self.filename, "size": self.size,
            "sha256": self.sha256, "content_type": self.content_type,
            "created": self.created.isoformat(),
        }
        if url is not None:
            body["url"] = url
        return body


def _uploads(con: Any) -> str:
    """The uploads table of ``con``'s install, schema-qualified."""
    return schema.qualified(con, "uploads")


def insert_uploads(con: Any, uploads: Iterable[Upload]) -> None:
    """Insert every row in one transaction: all or none (``con`` is a pg8000.native connection)."""
    con.run("BEGIN")
    try:
        for u in uploads:
            con.run(
                f"INSERT INTO {_uploads(con)} ({COLUMNS}) VALUES "
                "(:id, :filename, :size, :sha256, :content_type, :field, :created)",
                id=u.id, filename=u.filename, size=u.size, sha256=u.sha256,
                content_type=u.content_type, field=u.field, created=u.created,
            )
        con.run("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            con.run("ROLLBACK")
        raise


def get_upload(con: Any, upload_id: str) -> Upload | None:
    if not is_upload_id(upload_id):
        return None
    rows = con.run(f"SELECT {COLUMNS} FROM {_uploads(con)} WHERE id = :id", id=upload_id)
    return Upload.from_row(rows[0]) if rows else None


def list_uploads(con: Any, limit: int, before: tuple[dt.datetime, str] | None = None,
                 owner: str | None = None) -> list[Upload]:
    """Newest first, keyset-paginated: ``before`` is the (created, id) of the last row seen.

    ``owner``: only that caller's uploads (a finished tus upload's owner is on tus_uploads)."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if before is not None:
        where.append("(created, id) < (:c, :i)")
        params.update(c=before[0], i=before[1])
    if owner is not None:
        where.append(f"(owner = :o OR id IN (SELECT id FROM {schema.qualified(con, 'tus_uploads')} "
                     "WHERE owner = :o))")
        params["o"] = owner
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    rows = con.run(f"SELECT {COLUMNS} FROM {_uploads(con)} {clause}"
                   "ORDER BY created DESC, id DESC LIMIT :limit", **params)
    return [Upload.from_row(r) for r in rows]


def delete_upload(con: Any, files: Storage, upload_id: str) -> bool:
    """Delete the row, then the stored object. False if there was no such upload.

    The row goes first: once it is gone nobody is served the bytes, and an object
    whose delete failed is only an orphan (logged), never a dangling row.
    """
    if not is_upload_id(upload_id):
        return False
    rows = con.run(f"DELETE FROM {_uploads(con)} WHERE id = :id RETURNING id", id=upload_id)
    if not rows:
        return False
    try:
        files.delete(upload_id)
    except Exception:  # noqa: BLE001 - the upload is deleted; the bytes are an orphan
        log.warning("upload %s: row deleted, object not", upload_id, exc_info=True)
    return True


# --- a request's batch: all files stored and all rows inserted, or nothing ----------

Staged = list[tuple["StagedObject", Upload]]


def discard_staged(staged: Sequence[tuple[StagedObject, Upload]]) -> None:
    """Remove every object of a batch (staging or final). Idempotent: callers that failed
    before ``commit_staged`` ran (no database connection) and after it both call it."""
    for staging, _ in staged:
        staging.discard()


def commit_staged(con: Any, staged: Sequence[tuple[StagedObject, Upload]]) -> None:
    """Finalize every staged object, then insert every row in one transaction.

    All-or-nothing: if any finalize or the insert fails, every object of the batch
    (staging or final) is removed and the error re-raised.
    """
    try:
        for staging, upload in staged:
            staging.finalize(upload.id)
        insert_uploads(con, [upload for _, upload in staged])
    except BaseException:
        discard_staged(staged)
        raise
