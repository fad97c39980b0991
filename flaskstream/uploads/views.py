"""HTTP routes of the uploads pattern.

``POST /uploads`` (multipart) and ``PUT /uploads/<filename>`` (raw) read
``request.stream`` in chunks — never ``request.files``/``form``/``get_data()``,
which would parse or buffer the body before the view runs — and stream each
file into a staging file (``receive.py``). Only when the whole body is in and
valid are the files renamed into place and their rows inserted, in one step
(``storage.commit_staged``): a request is all-or-nothing.

When anything goes wrong the view cleans up, reads at most a bounded tail of
the body, and tells gunicorn not to reuse the connection (its keep-alive path
would otherwise drain a rejected multi-GB body to the end).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import mimetypes
import re
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from flaskstream import auth, db, metrics, state
from flaskstream.adapters import gunicorn as gunicorn_adapter
from flaskstream.errors import ApiError, FlaskstreamError
from flaskstream.uploads import multipart, receive, storage

log = logging.getLogger(__name__)

bp = Blueprint("uploads", __name__)

PROGRESS_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
PAGE_DEFAULT, PAGE_MAX = 50, 500
# Types a browser may render in place when asked with ?inline=1; anything else
# (HTML, SVG, scripts) is always an attachment, so an upload cannot run script
# on our origin.
INLINE_SAFE_PREFIXES = ("image/png", "image/jpeg", "image/gif", "image/webp", "audio/",
                        "video/", "text/plain", "application/pdf")
STALE_STAGING_SECONDS = 24 * 3600


def limits_from_config() -> multipart.Limits:
    c = current_app.config
    return multipart.Limits(
        body_size=c["LIMIT_BODY_SIZE"], file_size=c["LIMIT_FILE_SIZE"],
        file_count=c["LIMIT_FILE_COUNT"], field_count=c["LIMIT_FIELD_COUNT"],
        field_size=c["LIMIT_FIELD_SIZE"], part_headers=c["LIMIT_PART_HEADERS"],
        part_header_count=c["LIMIT_PART_HEADER_COUNT"],
        filename_length=c["LIMIT_FILENAME_LENGTH"], part_count=c["LIMIT_PART_COUNT"],
    )


def _publisher() -> Any:
    """``flaskstream.events.broker.publish`` (imported on first use, as the upload needs it)."""
    from flaskstream.events.broker import publish

    return publish


def _progress(total: int | None) -> receive.Progress:
    progress_id = request.args.get("progress")
    if progress_id is not None and not PROGRESS_ID_RE.fullmatch(progress_id):
        raise ApiError(400, "BAD_PROGRESS_ID", "progress must be 1-64 of A-Z a-z 0-9 _ -")
    return receive.Progress(progress_id, total, _publisher() if progress_id else None)


def _body_stream() -> Any:
    """The request body to read: the server's own stream when it terminates it.

    With ``wsgi.input_terminated`` (gunicorn sets it) the server stops at the
    end of the body itself, so werkzeug's ``LimitedStream`` — three extra
    copies of every chunk through ``RawIOBase.read`` — buys nothing; elsewhere
    ``request.stream`` is the safe wrapper.
    """
    environ = request.environ
    if environ.get("wsgi.input_terminated") and environ.get("wsgi.input") is not None:
        return environ["wsgi.input"]
    return request.stream


def _chunks() -> Iterator[bytes]:
    """The body in chunks sized by the worker's buffer budget (see ``receive.ChunkBudget``)."""
    c = current_app.config
    timeout = c["UPLOAD_IDLE_TIMEOUT"]
    budget = receive.ChunkBudget(state.get(), int(c["UPLOAD_BUFFER_BUDGET"]),
                                 int(c["UPLOAD_CHUNK_SIZE"]))
    stream = gunicorn_adapter.direct_body_reader(request.environ) or _body_stream()
    with budget:
        yield from receive.read_chunks(stream, request.environ.get("wsgi.input"), budget.size,
                                       float(timeout) if timeout else None,
                                       expected=request.content_length)


def _check_declared_length(limits: multipart.Limits) -> int | None:
    """Refuse a declared Content-Length over the body limit before reading a byte."""
    length = request.content_length
    if length is not None:
        limits.check_body(length)
    return length


def _close_connection() -> None:
    """Make gunicorn close this connection after the response instead of draining the body.

    gunicorn drops a ``Connection: close`` set by the app (hop-by-hop), but it
    never reuses a connection whose body reader is marked ``failed``.
    """
    gunicorn_adapter.mark_body_failed(request.environ)


@bp.after_request
def _close_after_refused_upload(response: Response) -> Response:
    """Never keep a connection alive after refusing an upload (auth, limits, bad input).

    gunicorn would otherwise read the unread rest of the body — possibly
    gigabytes — before serving the next request on the connection.
    """
    if response.status_code >= 400 and request.method in ("POST", "PUT"):
        _close_connection()
    return response


def _receive(kind: str, run: Any, chunks: Iterator[bytes], progress: receive.Progress
             ) -> Any:
    """Run a receive function; on a refusal report it and let the body go.

    Every refusal is a ``FlaskstreamError`` raised where it was found (the form
    reader's limits, the type check, a full disk, the idle timer, a broken body)
    and answered by the app's one handler: nothing is translated here. After one,
    a bounded tail of the body is drained (so the client can read the response);
    if more is left, the connection is closed instead.
    """
    try:
        result = run()
    except FlaskstreamError as error:
        if isinstance(error, receive.ClientGone):
            log.info("%s upload aborted by the client: %s", kind, error.__cause__ or error)
        progress.error(error.code, error.message)
        if error.status in (400, 408) and error.code != "MALFORMED_MULTIPART" \
                or not receive.drain(chunks):
            _close_connection()
        chunks.close()  # type: ignore[attr-defined]
        raise
    chunks.close()  # type: ignore[attr-defined]
    return result


def _commit(staged: receive.Staged, progress: receive.Progress) -> list[dict[str, Any]]:
    started = time.monotonic()
    try:
        with db.connection() as con:
            storage.commit_staged(con, staged)
    except FlaskstreamError as exc:  # a full disk (507), no connection to be had (503)
        storage.discard_staged(staged)
        progress.error(exc.code, exc.message)
        raise
    except BaseException:
        storage.discard_staged(staged)  # e.g. no connection to be had (database down)
        progress.error("INTERNAL_ERROR", "could not store the upload")
        raise
    files = [file_json(upload) for _, upload in staged]
    progress.done(files)
    metrics.uploads_stored([upload.size for _, upload in staged])
    log.info("stored %d file(s), %d bytes: body in %.2f s, fsync+rename+insert in %.2f s",
             len(files), progress.bytes, started - progress.started, time.monotonic() - started)
    return files


def file_json(upload: storage.Upload) -> dict[str, Any]:
    return upload.to_json(url_for("uploads.content", upload_id=upload.id))


@bp.post("/uploads")
def create_uploads() -> tuple[Response, int]:
    """Multipart upload: every file part streamed to disk; 201 with files and fields."""
    boundary = multipart.parse_boundary(request.headers.get("Content-Type"))
    limits = limits_from_config()
    total = _check_declared_length(limits)
    progress = _progress(total)
    chunks = _chunks()
    config = current_app.config
    staged, fields = _receive("multipart", lambda: receive.receive_multipart(
        chunks, boundary, limits, config["UPLOAD_DIR"], list(config["UPLOAD_ALLOWED_TYPES"]),
        progress), chunks, progress)
    if not staged:
        progress.error("NO_FILES", "the form had no file part")
        raise ApiError(400, "NO_FILES", "the form had no file part with a filename")
    files = _commit(staged, progress)
    return jsonify({"files": files, "fields": fields}), 201


@bp.put("/uploads/<path:filename>")
def put_upload(filename: str) -> tuple[Response, int, dict[str, str]]:
    """Raw upload (``curl -T file URL/uploads/name``): the body is the file."""
    limits = limits_from_config()
    if limits.filename_length is not None and len(filename.encode()) > limits.filename_length:
        _close_connection()
        raise ApiError(413, "LIMIT_FILENAME_LENGTH",
                       f"the filename exceeds {limits.filename_length} bytes")
    name = multipart.sanitize_filename(filename)
    declared = request.headers.get("Content-Type")
    content_type = multipart.clean_content_type(declared) if declared \
        else (mimetypes.guess_type(name)[0] or multipart.DEFAULT_CONTENT_TYPE)
    if not multipart.type_allowed(name, content_type,
                                  list(current_app.config["UPLOAD_ALLOWED_TYPES"])):
        _close_connection()
        raise ApiError(415, "UPLOAD_TYPE_NOT_ALLOWED",
                       f"{name!r} ({content_type}) is not an allowed upload type")
    total = _check_declared_length(limits)
    if total is not None:
        limits.check_file(total)
    progress = _progress(total)
    chunks = _chunks()
    staged = _receive("raw", lambda: receive.receive_raw(
        chunks, name, content_type, limits, current_app.config["UPLOAD_DIR"], progress),
        chunks, progress)
    files = _commit(staged, progress)
    return jsonify(files[0]), 201, {"Location": files[0]["url"].rsplit("/content", 1)[0]}


def _encode_cursor(upload: storage.Upload) -> str:
    raw = f"{upload.created.isoformat()}|{upload.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, upload_id = raw.partition("|")
        when = dt.datetime.fromisoformat(created)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "BAD_CURSOR", "cursor is not one this server gave out") from exc
    if not storage.is_upload_id(upload_id) or when.tzinfo is None:
        # Checked here, before any query: a NUL or garbage id would reach PostgreSQL.
        raise ApiError(400, "BAD_CURSOR", "cursor is not one this server gave out")
    return when, upload_id


@bp.get("/uploads")
def list_all() -> Response:
    """Newest first; ``?limit=`` (≤ 500) and ``?cursor=`` from the previous page's ``next``."""
    try:
        limit = min(max(int(request.args.get("limit", PAGE_DEFAULT)), 1), PAGE_MAX)
    except ValueError as exc:
        raise ApiError(400, "BAD_LIMIT", "limit must be an integer") from exc
    cursor = request.args.get("cursor")
    before = _decode_cursor(cursor) if cursor else None
    owner = auth.listing_owner("/uploads")
    with db.connection() as con:
        uploads = storage.list_uploads(con, limit + 1, before, owner=owner)
    more = len(uploads) > limit
    uploads = uploads[:limit]
    return jsonify({"uploads": [file_json(u) for u in uploads],
                    "next": _encode_cursor(uploads[-1]) if more else None})


def _get_or_404(upload_id: str) -> storage.Upload:
    with db.connection() as con:
        upload = storage.get_upload(con, upload_id)
    if upload is None:
        raise ApiError(404, "NOT_FOUND", "no such upload")
    return upload


@bp.get("/uploads/<upload_id>")
def get_one(upload_id: str) -> Response:
    return jsonify(file_json(_get_or_404(upload_id)))


@bp.get("/uploads/<upload_id>/content")
def content(upload_id: str) -> Response:
    """The bytes, with Range/conditional support (media's ``serve_file``) and RFC 6266 names.

    With ``MEDIA_ACCEL`` the record and the file are checked here and nginx sends
    ``UPLOAD_DIR/<id>`` from its internal location (``X-Accel-Redirect``).
    """
    from flaskstream.media.files import accel_location
    from flaskstream.media.views import serve_file

    upload = _get_or_404(upload_id)
    inline = request.args.get("inline") == "1" \
        and upload.content_type.startswith(INLINE_SAFE_PREFIXES)
    prefix = current_app.config.get("MEDIA_ACCEL")
    accel = accel_location(str(prefix), "uploads", upload.id) if prefix else None
    return serve_file(storage.final_path(current_app.config["UPLOAD_DIR"], upload.id),
                      download_name=upload.filename, content_type=upload.content_type,
                      as_attachment=not inline, cache_control="private, no-cache", accel=accel)


@bp.delete("/uploads/<upload_id>")
def delete_one(upload_id: str) -> Response:
    with db.connection() as con:
        deleted = storage.delete_upload(con, current_app.config["UPLOAD_DIR"], upload_id)
    if not deleted:
        raise ApiError(404, "NOT_FOUND", "no such upload")
    return Response(status=204)


def buffered_upload() -> tuple[Response, int]:
    """The anti-pattern, for the memory benchmark only: the whole body in RAM first.

    Registered only when ``BENCH_BUFFERED_ROUTE`` is true (never by default).
    """
    boundary = multipart.parse_boundary(request.headers.get("Content-Type"))
    body = request.get_data(cache=False)
    step = int(current_app.config["UPLOAD_CHUNK_SIZE"])
    progress = receive.Progress(None, len(body), None)
    staged, fields = receive.receive_multipart(
        (body[i:i + step] for i in range(0, len(body), step)), boundary, limits_from_config(),
        current_app.config["UPLOAD_DIR"], [], progress)
    return jsonify({"files": _commit(staged, progress), "fields": fields}), 201


@bp.record_once
def _setup(state: Any) -> None:
    app = state.app
    storage.staging_dir(app.config["UPLOAD_DIR"])
    try:
        removed = storage.sweep_staging(app.config["UPLOAD_DIR"], STALE_STAGING_SECONDS)
        if removed:
            log.info("removed %d stale staging files", removed)
    except OSError:
        log.warning("could not sweep %s/.staging", app.config["UPLOAD_DIR"], exc_info=True)
    if app.config.get("BENCH_BUFFERED_ROUTE"):
        app.add_url_rule("/uploads/buffered", "uploads_buffered", buffered_upload,
                         methods=["POST"])
