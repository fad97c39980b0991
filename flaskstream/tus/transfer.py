"""The body of a PATCH (or a creation-with-upload POST): stream it in, keep it, finish it.

The glue between ``request.stream`` and the pure/streaming parts: it holds the
upload's lease while ``receive.append_body`` writes, makes what arrived durable
(fsync, then the offset in the row), and when the last byte is in turns the
upload into an ordinary one and publishes ``done`` on ``uploads.<id>``. On an
interrupted body it keeps what arrived (checksummed bodies excepted, which the
spec says to discard) and closes the connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from typing import Any

from flask import current_app, request, url_for

from flaskstream import db
from flaskstream.adapters import gunicorn as gunicorn_adapter
from flaskstream.errors import ApiError
from flaskstream.storage import get_storage
from flaskstream.tus import checkpoint, protocol, receive, store
from flaskstream.uploads import digest, storage
from flaskstream.uploads import receive as uploads_receive

log = logging.getLogger(__name__)


def _cfg(name: str) -> Any:
    return current_app.config[name]


def _max_size() -> int | None:
    value = _cfg("TUS_MAX_SIZE")
    return int(value) if value else None


def _connect() -> Any:
    return db.get_database().connection()


def drain_or_close(max_bytes: int = 1 << 20, seconds: float = 1.0) -> None:
    """After a refusal, read a little of an unread body so the client sees the answer
    (closing on unread data resets the connection); if more is coming, close instead
    of letting gunicorn's keep-alive drain a multi-GB body."""
    raw = request.environ.get("wsgi.input")
    if getattr(raw, "failed", False) or not (request.content_length or request.headers.get(
            "Transfer-Encoding")):
        return
    timeout: Any = contextlib.nullcontext()
    if receive.gevent_active():
        import gevent

        timeout = gevent.Timeout(seconds, False)
    deadline, read = time.monotonic() + seconds, 0
    with timeout:
        try:
            while chunk := request.stream.read(64 * 1024):
                read += len(chunk)
                if read > max_bytes or time.monotonic() > deadline:
                    break
            else:
                return  # reached the end: the connection can be reused
        except Exception:  # noqa: BLE001 - a broken body is closed below
            pass
    close_connection()


def close_connection() -> None:
    """Have gunicorn close the connection instead of draining a body we stopped reading."""
    gunicorn_adapter.mark_body_failed(request.environ)


def receive_body(row: store.TusUpload, token: str, checksum: protocol.Checksum | None
             ) -> store.TusUpload:
    """Stream this request's body into the upload; commit the durable offset; finish if complete."""
    digest_check = _content_digest()
    from_digest = checksum is None and digest_check is not None
    checksum = checksum or digest_check
    upload_dir = _cfg("UPLOAD_DIR")
    max_size = _max_size()
    length = protocol.resolve_length(row.length, request.headers.get("Upload-Length"),
                                     row.offset, max_size)
    budget = protocol.body_budget(row.offset, length, max_size)
    protocol.check_declared_body(request.content_length, budget)
    path = row.staging_path(upload_dir)
    start = row.offset
    # The watcher greenlet runs outside the app context: give it the bound pool.
    keeper = receive.LeaseKeeper(db.get_database().connection, row.id, token, lease=_cfg("TUS_LOCK_LEASE"),
                                 interval=_cfg("TUS_LOCK_POLL"),
                                 idle_timeout=_cfg("UPLOAD_IDLE_TIMEOUT") or None).start()
    database, expires_in = db.get_database(), _cfg("TUS_EXPIRATION_SECONDS")

    def durable(written: int) -> None:  # runs in its own greenlet: no app context there
        checkpoint.fsync_path(path)
        with database.connection() as con:
            store.commit_offset(con, row.id, token, start + written, length, expires_in)

    # With a checksum nothing may be recorded before the whole body is verified.
    checkpoints = checkpoint.Checkpointer(
        durable, 0 if checksum is not None else int(_cfg("TUS_CHECKPOINT_BYTES") or 0))
    progress = _progress_publisher(row.id, length, float(_cfg("TUS_PROGRESS_INTERVAL") or 0))

    def on_chunk(written: int) -> None:
        checkpoints.maybe(written)
        progress(start + written)

    check = checksum.hasher() if checksum else None
    # A body that is the whole file (the usual tus-js-client/tuspy case) is hashed
    # as it streams, so completion need not read the file back.
    whole = hashlib.sha256() if start == 0 else None
    # The uploads pattern's direct socket reader (one copy per chunk, nothing held
    # between reads, and a recv() interrupted by a takeover loses no byte), with the
    # worker's shared read-buffer budget; request.stream where it does not apply.
    direct = gunicorn_adapter.direct_body_reader(request.environ)
    chunks = uploads_receive.ChunkBudget(int(_cfg("UPLOAD_BUFFER_BUDGET")),
                                         int(_cfg("UPLOAD_CHUNK_SIZE")))
    try:
        with chunks:
            written = receive.append_body(
                path, direct or request.stream, keeper, chunk_size=chunks.size, budget=budget,
                hasher=receive.Tee(check, whole), declared=request.content_length,
                on_chunk=on_chunk, salvage=None if direct else raw_input_salvage)
        if checksum is not None and not checksum.matches(check):
            os.truncate(path, start)
            if from_digest:
                raise protocol.TusError(400, "DIGEST_MISMATCH", "the body does not match its "
                                        "Content-Digest; it was discarded")
            raise protocol.checksum_mismatch(checksum.algorithm)
    except receive.Interrupted as exc:
        keeper.stop()
        _settle(checkpoints)
        kept = _keep_partial(path, row, token, start, length, exc, checksum is not None)
        log.info("tus upload %s: PATCH interrupted (%s) at offset %s", row.id, exc.code, kept)
        close_connection()
        raise ApiError(exc.status, exc.code, str(exc),
                       headers={"Upload-Offset": str(kept)}) from exc
    except receive.LengthExceeded as exc:
        _settle(checkpoints)  # the bytes before the overrun were within the length: kept
        _keep_partial(path, row, token, start, length, exc, checksum is not None)
        close_connection()
        raise protocol.TusError(413, "TUS_LENGTH_EXCEEDED", str(exc)) from exc
    except storage.InsufficientStorage as exc:
        _settle(checkpoints)
        _keep_partial(path, row, token, start, length, exc, checksum is not None)
        close_connection()
        raise
    finally:
        keeper.stop()
        _settle(checkpoints)
    checkpoints.wait()
    row = _commit(path, row, token, start + written, length)
    if row.complete:
        row = complete(row, whole.hexdigest() if whole is not None else None)
    return row


def _content_digest() -> protocol.Checksum | None:
    """A ``Content-Digest: sha-256=:...:`` (RFC 9530) on the PATCH, checked like an
    ``Upload-Checksum`` (nothing of a mismatching body is kept); malformed → 400."""
    value = request.headers.get("Content-Digest")
    if value is None:
        return None
    try:
        expected = digest.parse_digests(value).get("sha-256")
    except digest.DigestError as exc:
        raise protocol.TusError(400, "BAD_DIGEST", f"Content-Digest: {exc}") from exc
    return None if expected is None else protocol.Checksum("sha256", expected)


def _settle(checkpoints: checkpoint.Checkpointer) -> None:
    """Let a checkpoint in flight finish (its error, if any, is for the caller to see later)."""
    with contextlib.suppress(Exception):
        checkpoints.wait()


def raw_input_salvage() -> bytes:
    return receive.salvage_gunicorn_buffers(request.environ.get("wsgi.input"))


def _keep_partial(path: os.PathLike[str], row: store.TusUpload, token: str, start: int,
                  length: int | None, exc: BaseException, discard: bool) -> int:
    """After an interrupted body: keep (fsync + commit) what arrived, or discard it if it
    carried a checksum that can no longer be verified. Returns the durable offset."""
    written = int(getattr(exc, "written", 0))
    if isinstance(exc, receive.LeaseExpired):
        return start  # another request may own the file now: touch nothing
    try:
        if discard or written == 0:
            os.truncate(path, start)
            return start
        os.truncate(path, start + written)  # a chunk the disk could not take in full
        return _commit(path, row, token, start + written, length).offset
    except store.LeaseLost:
        log.warning("tus upload %s: lease lost before committing %d bytes", row.id, written)
        return start


def _commit(path: os.PathLike[str], row: store.TusUpload, token: str, offset: int,
            length: int | None) -> store.TusUpload:
    """fsync the staging file, then record ``offset`` as durable."""
    checkpoint.fsync_path(path)
    with _connect() as con:
        return store.commit_offset(con, row.id, token, offset, length,
                                   _cfg("TUS_EXPIRATION_SECONDS"))


def complete(row: store.TusUpload, sha256: str | None = None) -> store.TusUpload:
    """Finalize into an ordinary upload and publish ``done`` on ``uploads.<id>``."""
    with _connect() as con:
        upload = store.finalize(con, _cfg("UPLOAD_DIR"), row, get_storage(),
                                (lambda _path: sha256) if sha256 else None)
        row = store.get(con, row.id) or row
    file_json = upload.to_json(url_for("uploads.content", upload_id=upload.id))
    _publish(upload.id, "done", {"bytes": upload.size, "files": [file_json]})
    log.info("tus upload %s complete: %d bytes, sha256 %s", upload.id, upload.size, upload.sha256)
    return row


def _publish(upload_id: str, event: str, data: Any) -> None:
    """Best effort: a failing event bus must not fail the upload."""
    try:
        from flaskstream.events.broker import publish

        publish(f"uploads.{upload_id}", data, event)
    except Exception:  # noqa: BLE001
        log.warning("could not publish %s for tus upload %s", event, upload_id, exc_info=True)


def _progress_publisher(upload_id: str, total: int | None, interval: float) -> Any:
    """``progress`` events (``{"bytes", "total"}``) on ``uploads.<id>``, at most every
    ``interval`` s; off when 0 (tus clients report progress themselves, and an event a
    second per upload in flight is load on the event bus for nobody)."""
    last = [time.monotonic()]

    def progress(offset: int) -> None:
        now = time.monotonic()
        if interval > 0 and now - last[0] >= interval:
            last[0] = now
            _publish(upload_id, "progress", {"bytes": offset, "total": total})

    return progress
