"""tus 1.0 at ``/uploads/tus/``: creation, creation-with-upload, deferred length, HEAD/PATCH,
termination, checksum and expiration.

Each request that touches an upload's bytes or offset first takes the
upload's lease (``store.acquire``) — ``HEAD`` and ``DELETE`` included, so that
a client that resumes first stops the request its lost connection left
behind, then reads the offset that request committed. Protocol rules live in
``protocol.py``; state and files in ``store.py``; the streaming loop in
``receive.py``. A finished upload becomes an ordinary upload (``/uploads/<id>``)
and a ``done`` event is published on ``uploads.<id>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from flaskstream import auth, db
from flaskstream.errors import ApiError, error_response
from flaskstream.tus import janitor, protocol, receive, store
from flaskstream.uploads import multipart, storage

log = logging.getLogger(__name__)

bp = Blueprint("tus", __name__, url_prefix="/uploads/tus")

EXPOSED = ("Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
           "Tus-Checksum-Algorithm", "Upload-Offset", "Upload-Length", "Upload-Defer-Length",
           "Upload-Metadata", "Upload-Expires", "Location")


def _cfg(name: str) -> Any:
    return current_app.config[name]


def _max_size() -> int | None:
    value = _cfg("TUS_MAX_SIZE")
    return int(value) if value else None


def _connect() -> Any:
    return db.get_database().connection()


def _method() -> str:
    return protocol.effective_method(request.method, request.headers.get("X-HTTP-Method-Override"))


@bp.before_request
def _check_request() -> None:
    janitor.start(current_app._get_current_object())  # type: ignore[attr-defined]
    method = _method()
    if method != request.method and method in auth.WRITE_METHODS \
            and request.method not in auth.WRITE_METHODS:
        _require_token()  # the override must not turn a read into an unauthenticated write
    if method != "GET":  # GET (the JSON status) is ours, not tus's
        protocol.check_version(method, request.headers.get("Tus-Resumable"))


def _require_token() -> None:
    expected = current_app.config["API_TOKEN"]
    given = auth.bearer_token()
    if expected and (given is None or not hmac.compare_digest(given.encode(), expected.encode())):
        raise ApiError(401, "UNAUTHORIZED", "this write needs Authorization: Bearer <token>")


@bp.after_request
def _tus_resumable(response: Response) -> Response:
    response.headers["Tus-Resumable"] = protocol.TUS_VERSION
    if response.status_code >= 400:
        _drain_or_close()
    if response.status_code in (201, 204) and not response.content_length:
        response.headers.pop("Content-Type", None)  # no body, no type
    return response


@bp.errorhandler(protocol.TusError)
def _tus_error(exc: protocol.TusError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


@bp.errorhandler(store.UploadLocked)
def _locked(exc: store.UploadLocked) -> Response:
    return error_response(423, "UPLOAD_LOCKED", "another request is writing this upload; retry")


@bp.errorhandler(store.LeaseLost)
def _lease_lost(exc: store.LeaseLost) -> Response:
    return error_response(423, "UPLOAD_LEASE_LOST", "another request took this upload over")


@bp.errorhandler(storage.InsufficientStorage)
def _no_space(exc: storage.InsufficientStorage) -> Response:
    return error_response(507, "INSUFFICIENT_STORAGE", "the upload folder is full")


# --- routes ---------------------------------------------------------------------------------


@bp.route("/", methods=["OPTIONS", "POST"], strict_slashes=False)
def creation() -> Response:
    if _method() == "OPTIONS":
        return Response(status=204, headers=protocol.options_headers(_max_size()))
    if _method() != "POST":
        raise ApiError(405, "METHOD_NOT_ALLOWED", "use POST to create an upload")
    return create_upload()


@bp.route("/<upload_id>", methods=["OPTIONS", "HEAD", "GET", "PATCH", "DELETE", "POST"])
def upload(upload_id: str) -> Response:
    method = _method()
    if method == "OPTIONS":
        return Response(status=204, headers=protocol.options_headers(_max_size()))
    if method == "HEAD":
        return head_upload(upload_id)
    if method == "GET":
        return status_json(upload_id)
    if method == "PATCH":
        return patch_upload(upload_id)
    if method == "DELETE":
        return delete_upload(upload_id)
    raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not part of tus on an upload URL",
                   headers={"Allow": "OPTIONS, HEAD, GET, PATCH, DELETE"})


def create_upload() -> Response:
    creation = protocol.parse_creation(request.headers.get("Upload-Length"),
                                       request.headers.get("Upload-Defer-Length"), _max_size())
    raw_metadata = request.headers.get("Upload-Metadata")
    metadata = protocol.parse_metadata(raw_metadata)
    name, ctype = protocol.file_info(metadata)
    filename = multipart.sanitize_filename(name or multipart.FALLBACK_FILENAME,
                                           int(_cfg("LIMIT_FILENAME_LENGTH")))
    content_type = multipart.clean_content_type(ctype)
    if not multipart.type_allowed(filename, content_type, _cfg("UPLOAD_ALLOWED_TYPES") or []):
        raise ApiError(415, "UPLOAD_TYPE_NOT_ALLOWED", f"{content_type} uploads are not allowed")
    with_body = protocol.is_offset_stream(request.content_type)
    checksum = protocol.parse_checksum(request.headers.get("Upload-Checksum")) if with_body else None
    if not with_body and (request.content_length or 0) > 0:
        protocol.check_patch_content_type(request.content_type)
    token = secrets.token_hex(16)
    with _connect() as con:
        row = store.create(con, _cfg("UPLOAD_DIR"), length=creation.length,
                           metadata=raw_metadata.strip() if metadata and raw_metadata else None,
                           filename=filename, content_type=content_type,
                           expires_in=_cfg("TUS_EXPIRATION_SECONDS"),
                           lock_token=token, lease=_cfg("TUS_LOCK_LEASE"))
    headers = {"Location": url_for("tus.upload", upload_id=row.id)}
    try:
        if with_body:
            row = _receive(row, token, checksum)
        elif row.complete:  # a zero-length upload is complete when created
            _complete(row)
    finally:
        _release(row.id, token)
    headers.update(_progress_headers(row))
    return Response(status=201, headers=headers)


def head_upload(upload_id: str) -> Response:
    row = _take(upload_id)
    return Response(status=200, headers=protocol.upload_headers(
        offset=row.offset, length=row.length, metadata=row.metadata,
        expires=row.expires if row.state == "active" else None))


def status_json(upload_id: str) -> Response:
    """Not part of tus: the upload's state as JSON (dashboards, curl)."""
    with _connect() as con:
        row = store.get(con, upload_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "no such upload")
    body = row.to_json()
    if row.state == "done":
        body["url"] = url_for("uploads.get_one", upload_id=row.id)
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def patch_upload(upload_id: str) -> Response:
    protocol.check_patch_content_type(request.content_type)
    offset = protocol.parse_non_negative("Upload-Offset", request.headers.get("Upload-Offset"))
    assert offset is not None
    checksum = protocol.parse_checksum(request.headers.get("Upload-Checksum"))
    token = secrets.token_hex(16)
    row = _take(upload_id, token=token, keep=True)
    try:
        if row.state == "done":
            protocol.check_offset(row.offset, offset)
            if request.content_length:
                raise protocol.TusError(413, "TUS_LENGTH_EXCEEDED", "the upload is complete")
            return Response(status=204, headers={"Upload-Offset": str(row.offset)})
        protocol.check_offset(row.offset, offset)
        row = _receive(row, token, checksum)
    finally:
        _release(upload_id, token)
    return Response(status=204, headers=_progress_headers(row))


def delete_upload(upload_id: str) -> Response:
    token = secrets.token_hex(16)
    row = _take(upload_id, token=token, keep=True)
    try:
        with _connect() as con:
            store.terminate(con, _cfg("UPLOAD_DIR"), row)
    finally:
        _release(upload_id, token)
    return Response(status=204)


# --- helpers -----------------------------------------------------------------------------------


def _take(upload_id: str, *, token: str | None = None, keep: bool = False) -> store.TusUpload:
    """Take the upload's lease (stopping an older request), check it is usable, reconcile.

    404 for an unknown id, 410 for a terminated/expired one (an active upload
    past its expiry is expired right here). Without ``keep`` the lease is
    released again before returning (``HEAD``).
    """
    token = token or secrets.token_hex(16)
    row = store.acquire(_connect, upload_id, token, _cfg("TUS_LOCK_LEASE"),
                        _cfg("TUS_LOCK_WAIT"))
    if row is None:
        raise ApiError(404, "NOT_FOUND", "no such upload")
    try:
        with _connect() as con:
            if row.state == "active" and protocol.expired(row.expires, store.db_now(con)):
                store.expire(con, _cfg("UPLOAD_DIR"), row)
                row = store.get(con, upload_id) or row
            if row.state in ("terminated", "expired"):
                raise ApiError(410, "GONE", f"this upload was {row.state}")
            if row.state == "active":
                row = store.reconcile(con, _cfg("UPLOAD_DIR"), row, token)
        if row.state == "active" and row.complete:  # a worker died before finishing it
            row = _complete(row)
        if row.state == "done" and not _final_exists(row):
            raise ApiError(410, "GONE", "this upload was completed and then deleted")
    except BaseException:
        _release(upload_id, token)
        raise
    if not keep:
        _release(upload_id, token)
    return row


def _final_exists(row: store.TusUpload) -> bool:
    with _connect() as con:
        return storage.get_upload(con, row.id) is not None


def _release(upload_id: str, token: str) -> None:
    try:
        with _connect() as con:
            store.release(con, upload_id, token)
    except Exception:  # noqa: BLE001 - the lease runs out by itself
        log.warning("could not release tus upload %s", upload_id, exc_info=True)


def _progress_headers(row: store.TusUpload) -> dict[str, str]:
    headers = {"Upload-Offset": str(row.offset)}
    if row.state == "active":
        headers["Upload-Expires"] = protocol.http_date(row.expires)
    return headers


def _drain_or_close(max_bytes: int = 1 << 20, seconds: float = 1.0) -> None:
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
    _close_connection()


def _close_connection() -> None:
    """Have gunicorn close the connection instead of draining a body we stopped reading."""
    body = request.environ.get("wsgi.input")
    if body is not None and hasattr(body, "failed"):
        body.failed = True


def _receive(row: store.TusUpload, token: str, checksum: protocol.Checksum | None
             ) -> store.TusUpload:
    """Stream this request's body into the upload; commit the durable offset; finish if complete."""
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
    checkpoint = int(_cfg("TUS_CHECKPOINT_BYTES") or 0)
    state = {"committed": 0}
    progress = _progress_publisher(row.id, length)

    def on_chunk(written: int) -> None:
        if checksum is None and checkpoint and written - state["committed"] >= checkpoint:
            _commit(path, row, token, start + written, length)
            state["committed"] = written
        progress(start + written)

    check = checksum.hasher() if checksum else None
    # A body that is the whole file (the usual tus-js-client/tuspy case) is hashed
    # as it streams, so completion need not read the file back.
    whole = hashlib.sha256() if start == 0 else None
    try:
        written = receive.append_body(path, request.stream, keeper,
                                      chunk_size=int(_cfg("UPLOAD_CHUNK_SIZE")), budget=budget,
                                      hasher=receive.Tee(check, whole),
                                      declared=request.content_length,
                                      on_chunk=on_chunk, salvage=raw_input_salvage)
        if checksum is not None and not checksum.matches(check):
            os.truncate(path, start)
            raise protocol.checksum_mismatch(checksum.algorithm)
    except receive.Interrupted as exc:
        keeper.stop()
        kept = _keep_partial(path, row, token, start, length, exc, checksum is not None)
        log.info("tus upload %s: PATCH interrupted (%s) at offset %s", row.id, exc.code, kept)
        _close_connection()
        raise ApiError(exc.status, exc.code, str(exc),
                       headers={"Upload-Offset": str(kept)}) from exc
    except receive.LengthExceeded as exc:
        os.truncate(path, start)
        _close_connection()
        raise protocol.TusError(413, "TUS_LENGTH_EXCEEDED", str(exc)) from exc
    except storage.InsufficientStorage as exc:
        _keep_partial(path, row, token, start, length, exc, checksum is not None)
        _close_connection()
        raise
    finally:
        keeper.stop()
    row = _commit(path, row, token, start + written, length)
    if row.complete:
        row = _complete(row, whole.hexdigest() if whole is not None else None)
    return row


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
    receive.fsync_path(path)
    with _connect() as con:
        return store.commit_offset(con, row.id, token, offset, length,
                                   _cfg("TUS_EXPIRATION_SECONDS"))


def _complete(row: store.TusUpload, sha256: str | None = None) -> store.TusUpload:
    """Finalize into an ordinary upload and publish ``done`` on ``uploads.<id>``."""
    with _connect() as con:
        upload = store.finalize(con, _cfg("UPLOAD_DIR"), row,
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


def _progress_publisher(upload_id: str, total: int | None, interval: float = 0.25) -> Any:
    """``progress`` events (``{"bytes", "total"}``) on ``uploads.<id>``, at most every 250 ms."""
    last = [time.monotonic()]

    def progress(offset: int) -> None:
        now = time.monotonic()
        if now - last[0] >= interval:
            last[0] = now
            _publish(upload_id, "progress", {"bytes": offset, "total": total})

    return progress


# --- janitor and setup -------------------------------------------------------------------------


@bp.cli.command("expire")
def expire_command() -> None:
    """Remove expired unfinished tus uploads now (the workers also do it periodically)."""
    import click

    expired, purged = janitor.expire_and_purge(current_app._get_current_object())  # type: ignore[attr-defined]
    click.echo(f"{expired} expired uploads removed, {purged} old records purged")


@bp.record_once
def _setup(state: Any) -> None:
    from flaskstream import cors

    cors.expose_headers(*EXPOSED)
