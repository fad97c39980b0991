"""Open, contain, stat and plan: everything about serving a file except HTTP glue.

No Flask here: the blueprint (``views.py``), the WSGI fast path
(``fastpath.py``) and uploads' ``/uploads/<id>/content`` all call these, so a
``GET /media/x`` answers the same bytes and headers whichever way it goes.

* ``open_media_file`` resolves a URL path inside ``MEDIA_DIR`` and checks the
  descriptor actually opened (``/proc/self/fd``), so a swapped symlink cannot
  lead outside;
* ``FileInfo`` is one ``fstat`` snapshot and the validators derived from it;
* ``plan_response`` turns ``ranges.evaluate``'s decision into a status, headers
  and a body (``stream.PreadStream``, or the bytes themselves when they fit in
  one chunk: one ``pread`` before returning, no generator to schedule).
"""

from __future__ import annotations

import functools
import mimetypes
import os
import stat
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flaskstream import metrics
from flaskstream.errors import ApiError
from flaskstream.media import ranges
from flaskstream.media.stream import FileShrunk, PreadStream, gevent_offload, read_chunk

Body = PreadStream | list[bytes] | None
Plan = tuple[int, dict[str, str], Body]

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


@functools.lru_cache(maxsize=1024)
def content_type_for(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    if ext in CONTENT_TYPES:
        return CONTENT_TYPES[ext]
    guessed, encoding = mimetypes.guess_type(name)
    if guessed and not encoding:
        return guessed + ("; charset=utf-8" if guessed.startswith("text/") else "")
    return "application/octet-stream"


def content_disposition(download_name: str, as_attachment: bool) -> str:
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


@dataclass(frozen=True)
class FileInfo:
    """One ``fstat`` snapshot of a regular file and the validators derived from it.

    The ETag comes from inode, size and mtime_ns: any rewrite changes size or
    mtime_ns, and a replace-by-rename changes the inode.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    etag: str
    last_modified: int
    last_modified_header: str

    @classmethod
    def of(cls, st: os.stat_result) -> FileInfo:
        if not stat.S_ISREG(st.st_mode):
            raise ApiError(404, "NOT_FOUND", "no such file")
        seconds = int(st.st_mtime)
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                   ranges.make_etag(st.st_ino, st.st_size, st.st_mtime_ns), seconds,
                   ranges.http_date(seconds))

    def same_file(self, st: os.stat_result) -> bool:
        """``st`` (a fresh ``stat`` of the path) still describes this very snapshot."""
        return (st.st_ino == self.ino and st.st_mtime_ns == self.mtime_ns
                and st.st_size == self.size and st.st_dev == self.dev)


def plan_response(
    fd: int,
    method: str,
    request_headers: Mapping[str, str],
    config: Mapping[str, Any],
    content_type: str,
    download_name: str | None = None,
    as_attachment: bool = False,
    cache_control: str | None = None,
) -> Plan:
    """Status, headers and body (None: no body) for ``method`` on the open ``fd``.

    ``fd`` is always consumed — closed here, or owned by the returned body.
    Raises ``ApiError(404)`` when ``fd`` is not a regular file.
    """
    try:
        info = FileInfo.of(os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    # plan() closes it, or hands it to the body.
    return plan(fd, info, functools.partial(os.close, fd), method, request_headers, config,
                content_type, download_name, as_attachment, cache_control)


def plan(
    fd: int,
    info: FileInfo,
    release: Callable[[], None],
    method: str,
    request_headers: Mapping[str, str],
    config: Mapping[str, Any],
    content_type: str,
    download_name: str | None = None,
    as_attachment: bool = False,
    cache_control: str | None = None,
) -> Plan:
    """``plan_response`` for a descriptor already snapshotted (the open-file cache's).

    ``release`` is called exactly once: before returning, or by the body when it
    is closed. A body of at most one ``MEDIA_CHUNK_SIZE`` is read here (one
    ``pread``), so the descriptor is free again before the response is sent.
    """
    handed_over = False
    try:
        decision = ranges.evaluate(method, request_headers, info.size, info.etag,
                                   info.last_modified, int(config["MEDIA_MAX_RANGES"]))
        headers = {
            "ETag": info.etag,
            "Last-Modified": info.last_modified_header,
            "Cache-Control": cache_control or config["MEDIA_CACHE_CONTROL"],
        }
        if decision.status in (304, 412, 416):
            return _without_body(decision.status, headers, info.size)
        headers["Accept-Ranges"] = "bytes"
        headers["X-Content-Type-Options"] = "nosniff"
        if download_name:
            headers["Content-Disposition"] = content_disposition(download_name, as_attachment)
        pieces, length = _pieces(decision, info.size, content_type, headers)
        if method == "HEAD" or length == 0:
            return decision.status, headers, None
        chunk_size = int(config["MEDIA_CHUNK_SIZE"])
        offload = gevent_offload() if config.get("MEDIA_OFFLOAD_COLD_READS", True) else None
        if len(pieces) == 1 and length <= chunk_size:
            return decision.status, headers, [_read_whole(fd, pieces[0], length, offload)]
        body = PreadStream(fd, pieces, chunk_size, offload, release)
        handed_over = True
        return decision.status, headers, body
    finally:
        if not handed_over:
            release()


def _without_body(status: int, headers: dict[str, str], size: int) -> Plan:
    """304, 412 or 416: validators (and for 416 the size), never a body."""
    if status == 304:
        # §15.4.5: no representation metadata beyond the validators a cache needs;
        # with an ETag present that excludes Last-Modified.
        del headers["Last-Modified"]
    elif status == 412:
        headers["Content-Length"] = "0"
    else:
        headers["Content-Range"] = ranges.unsatisfied_range(size)
    return status, headers, None


def _pieces(decision: ranges.Decision, size: int, content_type: str, headers: dict[str, str]
            ) -> tuple[list[bytes | ranges.ByteRange], int]:
    """What a 200 or 206 sends (byte ranges, and for multipart its part heads and tail),
    its total length, and the entity headers that go with it."""
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
        plan_ = ranges.plan_multipart(decision.ranges, size, content_type)
        pieces = []
        for head, start, stop in plan_.parts:
            pieces += [head, (start, stop)]
        pieces.append(plan_.tail)
        length = plan_.content_length
        headers["Content-Type"] = plan_.content_type
    headers["Content-Length"] = str(length)
    return pieces, length


def _read_whole(fd: int, piece: bytes | ranges.ByteRange, length: int, offload: Any) -> bytes:
    """A body of at most one chunk, read now (one ``pread``) so the descriptor is free."""
    start = piece[0]  # type: ignore[index]
    data = read_chunk(fd, start, length, offload)
    if len(data) != length:
        raise FileShrunk(f"file ended before {start + length}")
    metrics.MEDIA_BYTES.inc(length)
    return data


# --- MEDIA_DIR ------------------------------------------------------------------------


def _hidden_or_dotted(parts: list[str]) -> bool:
    return any(part in ("", ".", "..") or part.startswith(".") for part in parts)


@functools.lru_cache(maxsize=16)
def real_root(root: str) -> str:
    """MEDIA_DIR with symlinks resolved, once per process (it is configuration)."""
    return os.path.realpath(root)


def safe_subpath(subpath: str) -> bool:
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
    if not safe_subpath(subpath):
        return None
    base = real_root(root)
    real = os.path.realpath(os.path.join(base, subpath))
    return real if _inside(base, real) else None


def open_contained(root: str, subpath: str) -> tuple[int, str] | None:
    """A descriptor on ``subpath`` inside ``root`` and its real path, or None for a 404.

    The containment check runs on what was actually opened: Linux names the
    descriptor's real path in ``/proc/self/fd`` (one syscall, where
    ``realpath`` costs an ``lstat`` per component, and no swap-a-symlink race).
    """
    if not safe_subpath(subpath):
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
    return fd, real


def open_media_file(root: str, subpath: str) -> int | None:
    """``open_contained`` without the real path."""
    opened = open_contained(root, subpath)
    return None if opened is None else opened[0]


# --- X-Accel-Redirect (MEDIA_ACCEL) ---------------------------------------------------


def accel_location(prefix: str, area: str, relative: str) -> str:
    """The internal URI nginx serves ``relative`` (a path below ``area``'s folder) from.

    nginx percent-decodes X-Accel-Redirect and splits it at ``?``, so every byte
    outside the unreserved set is escaped (``/`` kept).
    """
    return f"{prefix.rstrip('/')}/{area}/{quote(relative, safe='/')}"


def accel_plan(location: str, config: Mapping[str, Any], content_type: str,
               download_name: str | None = None, as_attachment: bool = False,
               cache_control: str | None = None) -> Plan:
    """An empty 200 naming the file for nginx (``X-Accel-Redirect``), with the
    headers only the application knows; nginx adds ranges, validators, 304/412/416.

    nginx keeps Content-Type, Content-Disposition and Cache-Control of the
    upstream answer when it follows the redirect (the internal location in
    ``conf/nginx.conf.template`` re-adds ``X-Content-Type-Options``).
    """
    headers = {
        "X-Accel-Redirect": location,
        "Content-Type": content_type,
        "Cache-Control": cache_control or config["MEDIA_CACHE_CONTROL"],
        "Content-Length": "0",
    }
    if download_name:
        headers["Content-Disposition"] = content_disposition(download_name, as_attachment)
    return 200, headers, None


def accel_media(root: str, subpath: str, config: Mapping[str, Any]) -> Plan | None:
    """``accel_plan`` for ``/media/<subpath>``, or None for a 404: the file is
    opened and contained exactly as for serving it, and named by its real path
    (no symlink left for nginx to follow; its location sets ``disable_symlinks``)."""
    opened = open_contained(root, subpath)
    if opened is None:
        return None
    fd, real = opened
    try:
        FileInfo.of(os.fstat(fd))  # a folder or a device: 404
    finally:
        os.close(fd)
    return accel_media_plan(root, real, subpath, config)


def accel_media_plan(root: str, real: str, subpath: str, config: Mapping[str, Any]) -> Plan:
    """``accel_plan`` for the contained regular file ``real`` requested as ``subpath``,
    with ``X-Accel-Expires``: how long nginx's decision tier may reuse it
    (``MEDIA_ACCEL_CACHE``; 0 tells nginx never to keep it, whatever Cache-Control says)."""
    relative = real[len(real_root(root)) + 1:]
    status, headers, body = accel_plan(accel_location(str(config["MEDIA_ACCEL"]), "media",
                                                      relative), config, content_type_for(subpath))
    headers["X-Accel-Expires"] = str(max(0, int(config["MEDIA_ACCEL_CACHE"] or 0)))
    return status, headers, body
