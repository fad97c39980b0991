"""The body of a PATCH (or a creation-with-upload POST): stream it in, keep it, finish it.

The glue between ``request.stream`` and the pure/streaming parts: it holds the
upload's lease while ``receive.append_body`` writes into the backend's
``ResumableWriter``, makes what arrived durable (an fsync, or S3 parts and a tail
object; then the offset in the row), and when the last byte is in turns the
upload into an ordinary one and publishes ``done`` on ``uploads.<id>``. On an
interrupted body it keeps what arrived (checksummed bodies excepted, which the
spec says to discard) and closes the connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from typing import Any

from flask import current_app, request, url_for

from flaskstream import db, state
from flaskstream.adapters import gunicorn as gunicorn_adapter
from flaskstream.storage import get_resumable, get_storage
from flaskstream.storage.base import ResumableWriter
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
    with PatchTransfer(row, token, checksum) as transfer:
        transfer.receive()
    return transfer.finish()


class PatchTransfer:
    """One request body appended to one upload, with its cleanup in one place.

    ``__init__`` checks the declared body against what the upload may still take
    (nothing is touched yet); ``__enter__`` starts the lease keeper, the
    checkpointer and progress; ``receive`` streams the body and verifies its
    checksum; ``__exit__`` stops the keeper and settles the checkpoint in flight
    whatever happened, and after a body that stopped early (interrupted, too long,
    a full disk) keeps what arrived — or discards it when it carried a checksum —
    and closes the connection; ``finish`` commits the offset and completes the upload.
    """

    def __init__(self, row: store.TusUpload, token: str, checksum: protocol.Checksum | None
                 ) -> None:
        max_size = _max_size()
        digest_check = _content_digest()
        # A Content-Digest (RFC 9530) is checked like an Upload-Checksum (which wins).
        self.from_digest = checksum is None and digest_check is not None
        checksum = checksum or digest_check
        self.row, self.token, self.checksum = row, token, checksum
        self.length = protocol.resolve_length(row.length, request.headers.get("Upload-Length"),
                                              row.offset, max_size)
        self.budget = protocol.body_budget(row.offset, self.length, max_size)
        protocol.check_declared_body(request.content_length, self.budget)
        self.resumable = get_resumable()
        self.start = row.offset
        self.written = 0
        # Checkpoints run in their own greenlet, outside the app context: bind what they need.
        self.database, self.expires_in = db.get_database(), _cfg("TUS_EXPIRATION_SECONDS")
        self.check = checksum.hasher() if checksum else None
        # A body that is the whole file (the usual tus-js-client/tuspy case) is hashed
        # as it streams, so completion need not read the file back.
        self.whole = hashlib.sha256() if self.start == 0 else None

    def __enter__(self) -> PatchTransfer:
        self.writer = self.resumable.writer(self.row.staging_name, self.row.id, self.start)
        self.keeper = receive.LeaseKeeper(
            self.database.connection, self.row.id, self.token, lease=_cfg("TUS_LOCK_LEASE"),
            interval=_cfg("TUS_LOCK_POLL"), idle_timeout=_cfg("UPLOAD_IDLE_TIMEOUT") or None,
            renewers=state.get().lease_renewers).start()
        # With a checksum nothing may be recorded before the whole body is verified.
        self.checkpoints = checkpoint.Checkpointer(
            self._durable, 0 if self.checksum is not None else int(_cfg("TUS_CHECKPOINT_BYTES") or 0))
        self.progress = ProgressEvents(self.row.id, self.length,
                                       float(_cfg("TUS_PROGRESS_INTERVAL") or 0))
        return self

    def _durable(self, written: int) -> None:  # its own greenlet: no app context there
        offset = self.writer.durable(written)
        with self.database.connection() as con:
            store.commit_offset(con, self.row.id, self.token, offset, self.length,
                                self.expires_in)

    def _on_chunk(self, written: int) -> None:
        self.checkpoints.maybe(written)
        self.progress(self.start + written)

    def receive(self) -> None:
        """Append the body, then verify its checksum (a mismatch keeps nothing: 460)."""
        # The uploads pattern's direct socket reader (one copy per chunk, nothing held
        # between reads, and a recv() interrupted by a takeover loses no byte), with the
        # worker's shared read-buffer budget; request.stream where it does not apply.
        direct = gunicorn_adapter.direct_body_reader(request.environ)
        chunks = uploads_receive.ChunkBudget(state.get(), int(_cfg("UPLOAD_BUFFER_BUDGET")),
                                             int(_cfg("UPLOAD_CHUNK_SIZE")))
        with chunks:
            self.written = receive.append_body(
                self.writer, direct or request.stream, self.keeper, chunk_size=chunks.size,
                budget=self.budget, hasher=receive.Tee(self.check, self.whole),
                declared=request.content_length, on_chunk=self._on_chunk,
                salvage=None if direct else raw_input_salvage)
        if self.checksum is not None and not self.checksum.matches(self.check):
            self.writer.rollback()
            if self.from_digest:
                raise protocol.TusError(400, "DIGEST_MISMATCH", "the body does not match its "
                                        "Content-Digest; it was discarded")
            raise protocol.checksum_mismatch(self.checksum.algorithm)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: Any) -> None:
        self.keeper.stop()
        _settle(self.checkpoints)
        if exc is None:
            return  # finish() closes the writer
        if not isinstance(exc, receive.Interrupted | receive.LengthExceeded
                          | storage.InsufficientStorage):
            self.writer.close(None)
            return  # an error that kept nothing (checksum, lease, storage, bug)
        # The bytes before an overrun or a full disk were within the length: kept too.
        kept = _keep_partial(self.writer, self.row, self.token, self.start, self.length, exc,
                             self.checksum is not None)
        close_connection()
        if isinstance(exc, receive.Interrupted):
            log.info("tus upload %s: PATCH interrupted (%s) at offset %s", self.row.id, exc.code,
                     kept)
            exc.headers["Upload-Offset"] = str(kept)

    def finish(self) -> store.TusUpload:
        """Wait for the last checkpoint, commit the offset, complete the upload if it is whole."""
        committed = None
        try:
            self.checkpoints.wait()
            offset = self.writer.flush(self.written, _completes(self.start + self.written,
                                                                self.length))
            row = _commit(self.row, self.token, offset, self.length)
            committed = row.offset
        finally:
            self.writer.close(committed)
        if row.complete:
            row = complete(row, self.whole.hexdigest() if self.whole is not None else None)
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


def _completes(offset: int, length: int | None) -> bool:
    return length is not None and offset == length


def _keep_partial(writer: ResumableWriter, row: store.TusUpload, token: str, start: int,
                  length: int | None, exc: BaseException, discard: bool) -> int:
    """After an interrupted body: keep (make durable + commit) what arrived, or discard it
    if it carried a checksum that can no longer be verified. Returns the durable offset."""
    written = int(getattr(exc, "written", 0))
    committed = None
    try:
        if isinstance(exc, receive.LeaseExpired):
            return start  # another request may own the upload now: touch nothing
        if discard or written == 0:
            writer.rollback()
            committed = start
            return start
        offset = writer.flush(written, _completes(start + written, length))
        committed = _commit(row, token, offset, length).offset
        return committed
    except store.LeaseLost:
        log.warning("tus upload %s: lease lost before committing %d bytes", row.id, written)
        return start
    finally:
        writer.close(committed)


def _commit(row: store.TusUpload, token: str, offset: int, length: int | None
            ) -> store.TusUpload:
    """Record ``offset`` (made durable by the writer) in the upload's row."""
    with _connect() as con:
        return store.commit_offset(con, row.id, token, offset, length,
                                   _cfg("TUS_EXPIRATION_SECONDS"))


def complete(row: store.TusUpload, sha256: str | None = None) -> store.TusUpload:
    """Finalize into an ordinary upload and publish ``done`` on ``uploads.<id>``."""
    with _connect() as con:
        upload = store.finalize(con, get_resumable(), row, get_storage(), sha256)
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


class ProgressEvents:
    """``progress`` events (``{"bytes", "total"}``) on ``uploads.<id>``, at most every
    ``interval`` s; off when 0 (tus clients report progress themselves, and an event a
    second per upload in flight is load on the event bus for nobody)."""

    def __init__(self, upload_id: str, total: int | None, interval: float) -> None:
        self.upload_id, self.total, self.interval = upload_id, total, interval
        self.last = time.monotonic()

    def __call__(self, offset: int) -> None:
        now = time.monotonic()
        if self.interval > 0 and now - self.last >= self.interval:
            self.last = now
            _publish(self.upload_id, "progress", {"bytes": offset, "total": self.total})
