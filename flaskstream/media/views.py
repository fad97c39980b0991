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

import functools
import mimetypes
import os
import stat
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from flaskstream import metrics
from flaskstream.errors import ApiError, error_response
from flaskstream.media import ranges
from flaskstream.media.stream import FileShrunk, PreadStream, gevent_offload

__all__ = ["FileShrunk", "PreadStream", "bp", "serve_descriptor", "serve_file"]

bp = Blueprint("media", __name__)


@bp.record_once
def _install_fast_path(state: Any) -> None:
    """Put ``fastpath.MediaFastPath`` in front of the app (see that module for why)."""
    from flaskstream.media.fastpath import MediaFastPath

    state.app.wsgi_app = MediaFastPath(state.app, state.app.wsgi_app)

#: Extension → Content-Type, ahead of ``mimetypes`` (whose table depends on the host).
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".ogv": "video/ogg",
    ".ts": "video/mp2t",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    # .opus files are Ogg streams; browsers play them as audio/ogg.
    ".opus": "audio/ogg; codecs=opus",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".weba": "audio/webm",
    ".vtt": "text/vtt; charset=utf-8",
    ".srt": "application/x-subrip",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".pdf": "application/pdf",
}
LISTING_LIMIT = 1000


@functools.lru_cache(maxsize=1024)
def content_type_for(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    if ext in CONTENT_TYPES:
        return CONTENT_TYPES[ext]
    guessed, encoding = mimetypes.guess_type(name)
    if guessed and not encoding:
        return guessed + ("; charset=utf-8" if guessed.startswith("text/") else "")
    return "application/octet-stream"


def _content_disposition(download_name: str, as_attachment: bool) -> str:
    """RFC 6266: an ASCII ``filename`` fallback plus the UTF-8 ``filename*``."""
    kind = "attachment" if as_attachment else "inline"
    ascii_name = unicodedata.normalize("NFKD", download_name).encode("ascii", "ignore").decode()
    ascii_name = "".join(c for c in ascii_name if c.isprintable() and c not in '"\\') or "download"
    value = f'{kind}; filename="{ascii_name}"'
    if ascii_name != download_name:
        value += f"; filename*=UTF-8''{quote(download_name, safe='')}"
    return value


#: The request headers ``ranges.evaluate`` reads, by WSGI environ key.
CONDITIONAL_HEADERS = tuple(
    (name, "HTTP_" + name.upper().replace("-", "_"))
    for name in ("Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since",
                 "If-Unmodified-Since")
)


def conditional_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """Only the headers that matter, straight from the environ (cheaper than
    walking every request header on each of thousands of range requests/s)."""
    return {name: environ[key] for name, key in CONDITIONAL_HEADERS if key in environ}


OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # a FIFO must not block


def serve_file(
    path: str | os.PathLike[str],
    download_name: str | None = None,
    content_type: str | None = None,
    *,
    as_attachment: bool = False,
    cache_control: str | None = None,
) -> Response:
    """Serve ``path`` with RFC 9110 ranges and conditional requests (GET or HEAD).

    200, 206 (single or ``multipart/byteranges``), 304, 412 or 416 as
    ``ranges.evaluate`` decides; strong ETag from inode/size/mtime_ns. Raises
    ``ApiError(404)`` when ``path`` is not a readable regular file. The caller
    is responsible for ``path`` being one it may serve. ``content_type`` wins
    over the guess from ``download_name`` or ``path``; ``download_name`` also
    sets Content-Disposition (inline unless ``as_attachment``).
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        raise ApiError(404, "NOT_FOUND", "no such file") from exc
    ctype = content_type or content_type_for(download_name or os.fspath(path))
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
    status, headers, body = plan_response(
        fd, request.method, conditional_headers(request.environ), current_app.config,
        content_type, download_name, as_attachment, cache_control)
    metrics.MEDIA_RESPONSES.labels(str(status)).inc()
    if status == 416:
        return error_response(416, "RANGE_NOT_SATISFIABLE",
                              "no requested range overlaps the file", headers)
    if body is None:
        return Response(status=status, headers=headers)
    return Response(body, status=status, headers=headers, direct_passthrough=True)


def plan_response(
    fd: int,
    method: str,
    request_headers: Mapping[str, str],
    config: Mapping[str, Any],
    content_type: str,
    download_name: str | None = None,
    as_attachment: bool = False,
    cache_control: str | None = None,
) -> tuple[int, dict[str, str], PreadStream | None]:
    """Status, headers and body (None: no body) for ``method`` on the open ``fd``.

    No Flask: the blueprint and the WSGI fast path (``fastpath.py``) share it.
    ``fd`` is always consumed — closed here, or owned by the returned body.
    Raises ``ApiError(404)`` when ``fd`` is not a regular file.
    """
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ApiError(404, "NOT_FOUND", "no such file")
        size = info.st_size
        etag = ranges.make_etag(info.st_ino, size, info.st_mtime_ns)
        last_modified = int(info.st_mtime)
        decision = ranges.evaluate(method, request_headers, size, etag, last_modified,
                                   int(config["MEDIA_MAX_RANGES"]))
        headers = {
            "ETag": etag,
            "Last-Modified": ranges.http_date(last_modified),
            "Cache-Control": cache_control or config["MEDIA_CACHE_CONTROL"],
        }
        if decision.status == 304:
            # §15.4.5: no representation metadata beyond the validators a cache needs;
            # with an ETag present that excludes Last-Modified.
            del headers["Last-Modified"]
            return 304, headers, None
        if decision.status == 412:
            headers["Content-Length"] = "0"
            return 412, headers, None
        if decision.status == 416:
            headers["Content-Range"] = ranges.unsatisfied_range(size)
            return 416, headers, None

        headers["Accept-Ranges"] = "bytes"
        headers["X-Content-Type-Options"] = "nosniff"
        if download_name:
            headers["Content-Disposition"] = _content_disposition(download_name, as_attachment)
        pieces: list[bytes | ranges.ByteRange]
        if decision.status == 200:
            pieces, length = [(0, size)], size
            headers["Content-Type"] = content_type
        elif not decision.multipart:
            start, stop = decision.ranges[0]
            pieces, length = [(start, stop)], stop - start
            headers["Content-Type"] = content_type
            headers["Content-Range"] = ranges.content_range(start, stop, size)
        else:
            plan = ranges.plan_multipart(decision.ranges, size, content_type)
            pieces = []
            for head, start, stop in plan.parts:
                pieces += [head, (start, stop)]
            pieces.append(plan.tail)
            length = plan.content_length
            headers["Content-Type"] = plan.content_type
        headers["Content-Length"] = str(length)

        if method == "HEAD" or length == 0:
            return decision.status, headers, None
        offload = gevent_offload() if config.get("MEDIA_OFFLOAD_COLD_READS", True) else None
        body = PreadStream(fd, pieces, int(config["MEDIA_CHUNK_SIZE"]), offload)
        fd = -1  # the body owns it now
        return decision.status, headers, body
    finally:
        if fd >= 0:
            os.close(fd)


# --- MEDIA_DIR ------------------------------------------------------------------------


def _hidden_or_dotted(parts: list[str]) -> bool:
    return any(part in ("", ".", "..") or part.startswith(".") for part in parts)


@functools.lru_cache(maxsize=16)
def real_root(root: str) -> str:
    """MEDIA_DIR with symlinks resolved, once per process (it is configuration)."""
    return os.path.realpath(root)


def _safe_subpath(subpath: str) -> bool:
    """The URL path (already percent-decoded: ``%2e%2e`` arrives as ``..``) names a
    visible file below the root: no ``..``/``.``/empty segments, no absolute
    path, no backslash or NUL, no hidden file or folder."""
    return not ("\x00" in subpath or "\\" in subpath or subpath.startswith("/")
                or _hidden_or_dotted(subpath.split("/")))


def _inside(root: str, real: str) -> bool:
    """``real`` (symlinks resolved) lies below ``root`` and is not hidden there."""
    if not real.startswith(root + os.sep):
        return False
    return not _hidden_or_dotted(real[len(root) + 1:].split(os.sep))


def resolve_media_path(root: str, subpath: str) -> str | None:
    """The real path of ``subpath`` inside ``root``, or None when it must be a 404
    (unsafe name, or a symlink resolving outside ``root`` or to a hidden name)."""
    if not _safe_subpath(subpath):
        return None
    base = real_root(root)
    real = os.path.realpath(os.path.join(base, subpath))
    return real if _inside(base, real) else None


def open_media_file(root: str, subpath: str) -> int | None:
    """A descriptor on ``subpath`` inside ``root``, or None for a 404.

    The containment check runs on what was actually opened: Linux names the
    descriptor's real path in ``/proc/self/fd`` (one syscall, where
    ``realpath`` costs an ``lstat`` per component, and no swap-a-symlink race).
    """
    if not _safe_subpath(subpath):
        return None
    base = real_root(root)
    try:
        fd = os.open(os.path.join(base, subpath), OPEN_FLAGS)
    except OSError:
        return None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = os.path.realpath(os.path.join(base, subpath))
    if not _inside(base, real):
        os.close(fd)
        return None
    return fd


@bp.route("/media/<path:subpath>", methods=["GET", "HEAD"])
def media_file(subpath: str) -> Response:
    fd = open_media_file(current_app.config["MEDIA_DIR"], subpath)
    if fd is None:
        raise ApiError(404, "NOT_FOUND", "no such media file")
    return serve_descriptor(fd, content_type_for(subpath))


@bp.get("/media/")
def media_listing() -> Response:
    """Regular files under MEDIA_DIR (hidden ones skipped), for the dashboard."""
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
