"""HTTP routes of the media pattern: ``GET``/``HEAD /media/<path>`` and ``GET /media/``.

The decisions (which status, which bytes) are made by the pure ``ranges``
module; this module does the I/O: resolve the path safely, take one ``fstat``
snapshot of an open descriptor, and stream the chosen bytes with ``os.pread``
at absolute offsets (``stream.PreadStream``). ``serve_file`` is public:
uploads' ``/uploads/<id>/content`` serves stored files through it.

Why not werkzeug's ``send_file``: under gunicorn it reads from byte 0 up to a
range's start (gunicorn's ``FileWrapper`` cannot seek), answers multi-range with
416 and skips 304/412 when a Range is present; and gunicorn's sendfile path under
gevent is an 8 KiB read/send loop, slower than 256 KiB–1 MiB ``pread`` chunks
(figures in bench/README.md). The response is built by hand
(``direct_passthrough``, explicit Content-Length, no ``make_conditional``) so
werkzeug never re-wraps or re-evaluates it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from flaskstream import auth, metrics
from flaskstream.errors import ApiError, error_response
from flaskstream.media import files
from flaskstream.media.files import (
    OPEN_FLAGS,
    conditional_headers,
    content_type_for,
    open_media_file,
    plan_response,
    real_root,
    resolve_media_path,
    safe_subpath,
)
from flaskstream.media.stream import FileShrunk, PreadStream
from flaskstream.storage import get_media_storage, serve

__all__ = ["FileShrunk", "PreadStream", "bp", "content_type_for", "open_media_file",
           "resolve_media_path", "serve_descriptor", "serve_file"]

bp = Blueprint("media", __name__)


LISTING_LIMIT = 1000


def serve_file(
    path: str | os.PathLike[str],
    download_name: str | None = None,
    content_type: str | None = None,
    *,
    as_attachment: bool = False,
    cache_control: str | None = None,
    accel: str | None = None,
) -> Response:
    """Serve ``path`` with RFC 9110 ranges and conditional requests (GET or HEAD).

    200, 206 (single or ``multipart/byteranges``), 304, 412 or 416 as
    ``ranges.evaluate`` decides; strong ETag from inode/size/mtime_ns. Raises
    ``ApiError(404)`` when ``path`` is not a readable regular file. The caller
    is responsible for ``path`` being one it may serve. ``content_type`` wins
    over the guess from ``download_name`` or ``path``; ``download_name`` also
    sets Content-Disposition (inline unless ``as_attachment``). With ``accel``
    (an ``X-Accel-Redirect`` URI, see ``MEDIA_ACCEL``) the file is only checked
    here and nginx sends it.
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        raise ApiError(404, "NOT_FOUND", "no such file") from exc
    ctype = content_type or content_type_for(download_name or os.fspath(path))
    if accel is not None:
        try:
            files.FileInfo.of(os.fstat(fd))
        finally:
            os.close(fd)
        return _response(files.accel_plan(accel, current_app.config, ctype, download_name,
                                          as_attachment, cache_control))
    return serve_descriptor(fd, ctype, download_name, as_attachment, cache_control)


def serve_descriptor(
    fd: int,
    content_type: str,
    download_name: str | None = None,
    as_attachment: bool = False,
    cache_control: str | None = None,
) -> Response:
    """``serve_file`` for a descriptor the caller opened; it is always consumed
    (closed here, or handed to the response body, which closes it)."""
    return _response(plan_response(
        fd, request.method, conditional_headers(request.environ), current_app.config,
        content_type, download_name, as_attachment, cache_control))


def _response(plan: files.Plan | serve.Plan) -> Response:
    status, headers, body = plan
    metrics.media_response(status)
    if status == 416:
        return error_response(416, "RANGE_NOT_SATISFIABLE",
                              "no requested range overlaps the file", headers)
    if body is None:
        return Response(status=status, headers=headers)
    return Response(body, status=status, headers=headers, direct_passthrough=True)


def _within_token_life(plan: files.Plan) -> files.Plan:
    """An answer allowed by an expiring token (JWT ``exp``, a signed URL's expiry)
    is reused by nginx's decision tier no later than that expiry: ``X-Accel-Expires``
    is capped at the whole seconds left (0: not reused at all). A revoked token can
    still read for up to ``MEDIA_ACCEL_CACHE`` s; an expired one cannot."""
    found = auth.claims() if auth.token_mode("READ") else None  # checked by the access hook
    if found is None or found.exp is None:
        return plan
    status, headers, body = plan
    left = max(0, int(found.exp - time.time()))
    headers["X-Accel-Expires"] = str(min(int(headers.get("X-Accel-Expires", "0")), left))
    return status, headers, body


@bp.route("/media/<path:subpath>", methods=["GET", "HEAD"])
def media_file(subpath: str) -> Response:
    config = current_app.config
    bucket = get_media_storage()
    if bucket is not None:
        return _bucket_file(bucket, subpath)
    if config.get("MEDIA_ACCEL"):
        plan = files.accel_media(config["MEDIA_DIR"], subpath, config)
        if plan is None:
            raise ApiError(404, "NOT_FOUND", "no such media file")
        return _response(_within_token_life(plan))
    fd = open_media_file(config["MEDIA_DIR"], subpath)
    if fd is None:
        raise ApiError(404, "NOT_FOUND", "no such media file")
    return serve_descriptor(fd, content_type_for(subpath))


def _bucket_file(bucket: Any, subpath: str) -> Response:
    """``MEDIA_URL``: the same decisions on the object's cached HEAD, bytes from ranged GETs."""
    if not safe_subpath(subpath):
        raise ApiError(404, "NOT_FOUND", "no such media file")
    stored = bucket.open(subpath)  # StorageUnavailable: 503 from the error base
    if stored is None:
        raise ApiError(404, "NOT_FOUND", "no such media file")
    config = current_app.config
    return _response(serve.plan_stored(stored, request.method,
                                       conditional_headers(request.environ), config,
                                       content_type_for(subpath),
                                       config["MEDIA_CACHE_CONTROL"]))


def _bucket_listing(bucket: Any) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = []
    for name, size in bucket.listing():  # StorageUnavailable: 503 from the error base
        listed.append({"name": name, "size": size, "content_type": content_type_for(name),
                       "url": url_for("media.media_file", subpath=name)})
        if len(listed) >= LISTING_LIMIT:
            break
    return listed


@bp.get("/media/")
def media_listing() -> Response:
    """Regular files under MEDIA_DIR (hidden ones skipped), for the dashboard."""
    bucket = get_media_storage()
    if bucket is not None:
        response = jsonify({"files": sorted(_bucket_listing(bucket), key=lambda f: str(f["name"]))})
        response.headers["Cache-Control"] = "no-cache"
        return response
    root = real_root(current_app.config["MEDIA_DIR"])
    files: list[dict[str, object]] = []
    stack = [""]
    seen: set[str] = set()  # real folders already listed: symlinked loops end here
    while stack and len(files) < LISTING_LIMIT:
        folder = stack.pop()
        real_folder = os.path.realpath(os.path.join(root, folder))
        if real_folder in seen:
            continue
        seen.add(real_folder)
        try:
            entries = sorted(os.scandir(os.path.join(root, folder)), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            name = f"{folder}/{entry.name}" if folder else entry.name
            if entry.name.startswith(".") or not name.isprintable() \
                    or resolve_media_path(root, name) is None:
                continue
            try:
                name.encode("utf-8")  # undecodable bytes (surrogates) have no URL to offer
            except UnicodeEncodeError:
                continue
            try:
                if entry.is_dir():
                    stack.append(name)
                    continue
                if not entry.is_file():
                    continue
                size = entry.stat().st_size
            except OSError:
                continue
            files.append({
                "name": name,
                "size": size,
                "content_type": content_type_for(name),
                "url": url_for("media.media_file", subpath=name),
            })
    files.sort(key=lambda f: str(f["name"]))
    response = jsonify({"files": files[:LISTING_LIMIT]})
    response.headers["Cache-Control"] = "no-cache"
    return response
