"""A WSGI fast path for the hot media requests, in front of Flask.

A 64 KiB range request costs flaskstream's range logic ~15 µs, but Flask's
request/response machinery (contexts, URL adapter twice, hooks, two header
copies) costs ~200 µs of gunicorn worker time — with it, a gevent worker
serves less than half of what the same worker does for a bare WSGI callable
(figures in bench/README.md).

So ``GET``/``HEAD /media/<path>`` requests that will succeed (200, 206, 304,
412) are answered here with exactly what the blueprint would answer — both
go through ``files.plan`` — and everything else is handed to Flask
untouched: with ``READ_ACCESS=token`` or a credential in the query string,
everything (the access policy is a Flask hook); listings, 404s (unsafe or
missing paths, which Flask may redirect first), 416 (its JSON error body),
cross-origin requests (CORS headers come from an ``after_request`` hook), any
other method, and any unexpected error.
No Flask hook is skipped that could apply: the only ``before_request`` guards
writes, and these requests touch no database. ``MEDIA_FAST_PATH = False``
turns it off. Descriptors come from an open-file cache (``cache.py``) and a
body of one chunk is read before returning, so a typical range costs one
``stat``, one ``pread`` (plus the page-cache probe under gevent) and no
generator. ``create_app`` installs it (``install``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from flaskstream import metrics
from flaskstream.errors import ApiError
from flaskstream.media import files, ranges
from flaskstream.media.cache import CachedFile, OpenFileCache
from flaskstream.media.stream import FileShrunk, Offload, gevent_offload, read_chunk

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
PREFIX = "/media/"
STATUS_LINES = {code: f"{code} {HTTP_STATUS_CODES[code]}" for code in (200, 206, 304, 412)}
#: Request headers that make a range request more than a range request.
PRECONDITIONS = tuple(key for name, key in files.CONDITIONAL_HEADERS if name != "Range")
FastPlan = tuple[int, dict[str, str] | list[tuple[str, str]], files.Body]


class MediaFastPath:
    """WSGI middleware: serve the happy path of ``/media/<path>``, delegate the rest."""

    def __init__(self, app: Flask, wsgi_app: WSGIApp) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.cache = OpenFileCache(int(app.config["MEDIA_OPEN_FILE_CACHE"]),
                                   valid=float(app.config["MEDIA_OPEN_FILE_CACHE_VALID"]))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        config = self.app.config
        if (method not in ("GET", "HEAD") or not path.startswith(PREFIX) or len(path) == len(PREFIX)
                or "HTTP_ORIGIN" in environ or not config.get("MEDIA_FAST_PATH", True)
                or config.get("READ_ACCESS") == "token" or _credential_in(environ)):
            return self.wsgi_app(environ, start_response)
        try:
            # PEP 3333 carries the path as latin-1; werkzeug decodes it as UTF-8 the same way.
            subpath = path[len(PREFIX):].encode("latin-1").decode("utf-8", "replace")
            planned = self.plan(method, subpath, environ, config)
        except ApiError:  # not a regular file: Flask answers the 404
            return self.wsgi_app(environ, start_response)
        except Exception:  # noqa: BLE001 - Flask's error handlers give the one error shape
            log.exception("media fast path failed; handing the request to Flask")
            return self.wsgi_app(environ, start_response)
        if planned is None or planned[0] == 416:
            return self.wsgi_app(environ, start_response)
        status, headers, body = planned
        metrics.media_fast_path(environ, status)
        start_response(STATUS_LINES[status],
                       headers if isinstance(headers, list) else list(headers.items()))
        return body if body is not None else []

    def plan(self, method: str, subpath: str, environ: dict[str, Any],
             config: Any) -> FastPlan | None:
        """The response to give, or None for a 404 (Flask's)."""
        root = config["MEDIA_DIR"]
        entry = self.cache.acquire(root, subpath)
        if entry is None:
            return None
        if config.get("MEDIA_ACCEL"):  # the cache did containment: name the file for nginx
            try:
                return files.accel_media_plan(root, entry.real, subpath, config)
            finally:
                self.cache.release(entry)
        header = environ.get("HTTP_RANGE")
        if header is not None and environ.keys().isdisjoint(PRECONDITIONS):
            byte_range = ranges.single_range(header, entry.info.size)
            if byte_range is not None and byte_range[1] - byte_range[0] <= \
                    int(config["MEDIA_CHUNK_SIZE"]):
                return self.one_chunk(entry, method, byte_range, subpath, config)
        return files.plan(entry.fd, entry.info, functools.partial(self.cache.release, entry),
                          method, files.conditional_headers(environ), config,
                          files.content_type_for(subpath))

    def one_chunk(self, entry: CachedFile, method: str, byte_range: ranges.ByteRange,
                  subpath: str, config: Any) -> FastPlan:
        """The commonest request — one range of at most a chunk, no precondition —
        with the entry's precomputed headers: what ``files.plan`` answers to it
        (tests/media/test_views.py compares them), without the general machinery."""
        try:
            start, stop = byte_range
            cache_control = config["MEDIA_CACHE_CONTROL"]
            if entry.headers is None or entry.headers[0] != cache_control:
                entry.headers = (cache_control, [
                    ("ETag", entry.info.etag), ("Last-Modified", entry.info.last_modified_header),
                    ("Cache-Control", cache_control), ("Accept-Ranges", "bytes"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("Content-Type", files.content_type_for(subpath))])
            headers = entry.headers[1] + [
                ("Content-Range", ranges.content_range(start, stop, entry.info.size)),
                ("Content-Length", str(stop - start))]
            if method == "HEAD":
                return 206, headers, None
            offload = self.offload if config.get("MEDIA_OFFLOAD_COLD_READS", True) else None
            data = read_chunk(entry.fd, start, stop - start, offload)
            if len(data) != stop - start:
                raise FileShrunk(f"file ended before {stop}")
            metrics.MEDIA_BYTES.inc(len(data))
            return 206, headers, [data]
        finally:
            self.cache.release(entry)

    @functools.cached_property
    def offload(self) -> Offload | None:
        """gevent's pool when this worker is patched; asked once, at the first request
        (the worker patches before it loads the app, but not before the master does)."""
        return gevent_offload()


def _credential_in(environ: dict[str, Any]) -> bool:
    """A query token or signed URL: Flask checks it and sets the private cache headers."""
    query = environ.get("QUERY_STRING", "")
    return "access_token=" in query or "sig=" in query


def install(app: Flask) -> None:
    """Put the fast path in front of ``app`` (see the module docstring for why)."""
    app.wsgi_app = MediaFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
