"""tus 1.0 at ``/uploads/tus/``: creation, creation-with-upload, deferred length, HEAD/PATCH,
termination, checksum and expiration.

Each request that touches an upload's bytes or offset first takes the
upload's lease (``store.acquire``) — ``HEAD`` and ``DELETE`` included, so that
a client that resumes first stops the request its lost connection left
behind, then reads the offset that request committed. Taking over stops a
writer, so a ``HEAD`` without the API token (when one is set) only reads the
committed offset and never asks for the lease. Protocol rules live in
``protocol.py``; state and files in ``store.py``; request bodies in
``transfer.py`` (with the streaming loop in ``receive.py``). A finished upload
becomes an ordinary upload (``/uploads/<id>``) and a ``done`` event is published
on ``uploads.<id>``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from flaskstream import auth
from flaskstream.errors import ApiError, FlaskstreamError
from flaskstream.storage import get_resumable, get_storage
from flaskstream.tus import janitor, protocol, store, transfer
from flaskstream.uploads import multipart, names, storage

log = logging.getLogger(__name__)

bp = Blueprint("tus", __name__, url_prefix="/uploads/tus")

EXPOSED = ("Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
           "Tus-Checksum-Algorithm", "Upload-Offset", "Upload-Length", "Upload-Defer-Length",
           "Upload-Metadata", "Upload-Expires", "Location")


# One definition of each, shared with the request-body code.
_cfg = transfer._cfg
_max_size = transfer._max_size
_connect = transfer._connect


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
    if not auth.has_api_token():
        raise ApiError(401, "UNAUTHORIZED", "this write needs Authorization: Bearer <token>")


@bp.after_request
def _tus_resumable(response: Response) -> Response:
    response.headers["Tus-Resumable"] = protocol.TUS_VERSION
    if response.status_code >= 400:
        transfer.drain_or_close()
    if response.status_code in (201, 204) and not response.content_length:
        response.headers.pop("Content-Type", None)  # no body, no type
    return response


# TusError, UploadLocked, LeaseLost, InsufficientStorage and the rest are
# FlaskstreamErrors: the app's one handler answers them with their own headers
# (``Tus-Version``, ``Upload-Offset``); ``Tus-Resumable`` is added above.


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
    # The same name rules as PUT /uploads/<name> (stored names are <= 255 bytes); a raw
    # name over LIMIT_FILENAME_LENGTH raises FilenameTooLong, a 413.
    filename = names.client_filename(name or "", int(_cfg("LIMIT_FILENAME_LENGTH")))
    content_type = multipart.clean_content_type(ctype)
    if not multipart.type_allowed(filename, content_type, _cfg("UPLOAD_ALLOWED_TYPES") or []):
        raise ApiError(415, "UPLOAD_TYPE_NOT_ALLOWED", f"{content_type} uploads are not allowed")
    with_body = protocol.is_offset_stream(request.content_type)
    checksum = protocol.parse_checksum(request.headers.get("Upload-Checksum")) if with_body else None
    if not with_body and (request.content_length or 0) > 0:
        protocol.check_patch_content_type(request.content_type)
    token = secrets.token_hex(16)
    with _connect() as con:
        row = store.create(con, get_resumable(), length=creation.length,
                           metadata=raw_metadata.strip() if metadata and raw_metadata else None,
                           filename=filename, content_type=content_type,
                           expires_in=_cfg("TUS_EXPIRATION_SECONDS"),
                           lock_token=token, lease=_cfg("TUS_LOCK_LEASE"))
    headers = {"Location": url_for("tus.upload", upload_id=row.id)}
    try:
        if with_body:
            row = transfer.receive_body(row, token, checksum)
        elif row.complete:  # a zero-length upload is complete when created
            transfer.complete(row)
    except Exception as exc:
        _creation_failed(row.id, exc, headers["Location"])
        raise
    finally:
        _release(row.id, token)
    headers.update(_progress_headers(row))
    return Response(status=201, headers=headers)


def _creation_failed(upload_id: str, exc: Exception, location: str) -> None:
    """The body of a creation-with-upload failed: only this response can name the upload.

    With bytes kept, the error carries ``Location`` and ``Upload-Offset`` so the
    client can resume it (HEAD/PATCH). With nothing kept the upload is
    terminated now: the client will create another, and the record would
    otherwise wait for the janitor with a URL nobody knows.
    """
    try:
        with _connect() as con:
            row = store.get(con, upload_id)
            if row is None or row.state != "active":
                return
            if row.offset == 0:
                store.terminate(con, get_resumable(), row, get_storage())
                return
    except Exception:  # noqa: BLE001 - the body's own error is the one to answer
        log.warning("tus upload %s: could not settle a failed creation", upload_id, exc_info=True)
        return
    if isinstance(exc, FlaskstreamError):
        exc.headers.update({"Location": location, "Upload-Offset": str(row.offset)})


def head_upload(upload_id: str) -> Response:
    """The offset to resume from; only a caller with the token may take the upload over.

    An anonymous ``HEAD`` (reads are public) must not interrupt the ``PATCH`` in
    flight: it reads the committed offset and writes nothing (``_peek``).
    """
    row = _take(upload_id) if auth.has_api_token() else _peek(upload_id)
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
        row = transfer.receive_body(row, token, checksum)
    finally:
        _release(upload_id, token)
    return Response(status=204, headers=_progress_headers(row))


def delete_upload(upload_id: str) -> Response:
    token = secrets.token_hex(16)
    row = _take(upload_id, token=token, keep=True)
    try:
        with _connect() as con:
            store.terminate(con, get_resumable(), row, get_storage())
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
                store.expire(con, get_resumable(), row)
                row = store.get(con, upload_id) or row
            if row.state in ("terminated", "expired"):
                raise ApiError(410, "GONE", f"this upload was {row.state}")
            if row.state == "active":
                row = store.reconcile(con, get_resumable(), row, token)
        if row.state == "active" and row.complete:  # a worker died before finishing it
            row = transfer.complete(row)
        if row.state == "done" and not _final_exists(row):
            raise ApiError(410, "GONE", "this upload was completed and then deleted")
    except BaseException:
        _release(upload_id, token)
        raise
    if not keep:
        _release(upload_id, token)
    return row


def _peek(upload_id: str) -> store.TusUpload:
    """The upload as ``_take`` would answer it, read without its lease and without writing:
    404/410 alike, the committed (durable) offset; reconciling is left to the next holder."""
    with _connect() as con:
        row = store.get(con, upload_id)
        lapsed = row is not None and row.state == "active" and \
            protocol.expired(row.expires, store.db_now(con))
    if row is None:
        raise ApiError(404, "NOT_FOUND", "no such upload")
    if lapsed or row.state in ("terminated", "expired"):
        raise ApiError(410, "GONE", f"this upload was {'expired' if lapsed else row.state}")
    if row.state == "done" and not _final_exists(row):
        raise ApiError(410, "GONE", "this upload was completed and then deleted")
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
