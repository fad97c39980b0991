"""Bench-only app: flaskstream plus werkzeug's ``send_file(conditional=True)`` on
``/bench/send_file/<path>``, so bench/media.py can compare both in one gunicorn.

Never imported by the application or the tests: gunicorn loads it only when the
benchmark names ``bench.media_app:app`` as its target.
"""

from __future__ import annotations

import os

from flask import Response, send_file

from flaskstream import create_app, logs, metrics
from flaskstream.errors import ApiError
from flaskstream.media.views import resolve_media_path

app = create_app()
CEILING_BODY = bytes(64 * 1024)


@app.get("/bench/ceiling")
def bench_ceiling() -> Response:
    """64 KiB from memory, no file, no headers to compute: what Flask + gunicorn
    alone cost per request on this machine (the ceiling for any Flask file server)."""
    return Response(CEILING_BODY, 206, content_type="application/octet-stream")


def _raw_wsgi(flask_wsgi_app):  # noqa: ANN001, ANN202 - WSGI callables
    """``/bench/raw``: 64 KiB from memory by a bare WSGI callable in front of
    Flask — gunicorn's own ceiling, to separate its cost from Flask's."""

    def wsgi(environ, start_response):  # noqa: ANN001, ANN202
        path = environ.get("PATH_INFO")
        if path == "/bench/raw-pread":
            return _raw_pread(environ, start_response)
        if path == "/bench/raw-headers":
            return _raw_headers(environ, start_response)
        if path != "/bench/raw":
            return flask_wsgi_app(environ, start_response)
        start_response("206 Partial Content", [("Content-Type", "application/octet-stream"),
                                               ("Content-Length", str(len(CEILING_BODY)))])
        return [CEILING_BODY]

    return wsgi


_PREAD_FD: list[int] = []


def _media_headers(start: int, stop: int) -> list[tuple[str, str]]:
    """The eight headers of a fast-path 206 before ``RequestContext`` adds X-Request-ID
    (tests/media/test_views.py checks the fast path answers what Flask does), with fixed validators."""
    return [
        ("ETag", '"1-2-3"'), ("Last-Modified", "Tue, 01 Dec 2026 00:00:00 GMT"),
        ("Cache-Control", "public, max-age=3600"), ("Accept-Ranges", "bytes"),
        ("X-Content-Type-Options", "nosniff"), ("Content-Type", "application/octet-stream"),
        ("Content-Range", f"bytes {start}-{stop - 1}/{16 << 20}"),
        ("Content-Length", str(stop - start))]


def _requested(environ) -> tuple[int, int]:  # noqa: ANN001
    first, _, last = environ["HTTP_RANGE"][6:].partition("-")
    return int(first), int(last) + 1


def _raw_pread(environ, start_response):  # noqa: ANN001, ANN202
    """``/bench/raw-pread``: the requested 64 KiB of MEDIA_DIR/m16.bin by one
    ``pread`` on a descriptor held open, with the eight headers a media answer
    carries, no check of anything: the floor of any Python file server here."""
    if not _PREAD_FD:
        _PREAD_FD.append(os.open(os.path.join(app.config["MEDIA_DIR"], "m16.bin"), os.O_RDONLY))
    start, stop = _requested(environ)
    start_response("206 Partial Content", _media_headers(start, stop))
    return [os.pread(_PREAD_FD[0], stop - start, start)]


def _raw_headers(environ, start_response):  # noqa: ANN001, ANN202
    """``/bench/raw-headers``: ``/bench/raw`` (64 KiB from memory, no file) with the
    nine headers a fast-path 206 carries (the eight above and X-Request-ID): what
    gunicorn alone costs to send a media answer's headers, each of which it checks
    with two regexes. Its gap to ``/bench/raw`` is headers only; no file server,
    however lean, can beat it."""
    start, stop = _requested(environ)
    headers = _media_headers(start, stop)
    headers.append(("X-Request-ID", "c0bc8ac02420ddde00000000201a301b"))  # an id's shape
    start_response("206 Partial Content", headers)
    return [CEILING_BODY]


def _inner_pread(next_app):  # noqa: ANN001, ANN202 - WSGI callables
    """``/bench/raw-pread-inner``: ``_raw_pread`` where the media fast path sits, behind
    every WSGI layer ``create_app`` puts in front of it (request id, request metrics and
    duration, the chunked-body guard): the floor of the fast path inside flaskstream.
    The fast path's gap to it is its own work; this one's gap to ``/bench/raw-pread``
    is those layers'."""

    def wsgi(environ, start_response):  # noqa: ANN001, ANN202
        if environ.get("PATH_INFO") == "/bench/raw-pread-inner":
            environ[metrics.BLUEPRINT_ENVIRON_KEY] = "media"  # observed like a media request
            return _raw_pread(environ, start_response)
        return next_app(environ, start_response)

    return wsgi


# create_app's outermost layer is logs.RequestContext (ops.init_app): go just inside it.
assert isinstance(app.wsgi_app, logs.RequestContext)
app.wsgi_app.wsgi_app = _inner_pread(app.wsgi_app.wsgi_app)
app.wsgi_app = _raw_wsgi(app.wsgi_app)  # type: ignore[method-assign]


@app.get("/bench/send_file/<path:subpath>")
def bench_send_file(subpath: str) -> Response:
    real = resolve_media_path(app.config["MEDIA_DIR"], subpath)
    if real is None:
        raise ApiError(404, "NOT_FOUND", "no such media file")
    return send_file(real, conditional=True, etag=True, max_age=3600)
