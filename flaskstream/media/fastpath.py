"""A WSGI fast path for the hot media requests, in front of Flask.

A 64 KiB range request costs flaskstream's range logic ~15 µs, but Flask's
request/response machinery (contexts, URL adapter twice, hooks, two header
copies) costs ~200 µs of gunicorn worker time — with it, a gevent worker
serves less than half of what the same worker does for a bare WSGI callable,
and under the Node seed server's req/s (figures in bench/README.md).

So ``GET``/``HEAD /media/<path>`` requests that will succeed (200, 206, 304,
412) are answered here with exactly what the blueprint would answer — both
call ``views.plan_response`` — and everything else is handed to Flask
untouched: listings, 404s (unsafe or missing paths, which Flask may redirect
first), 416 (its JSON error body), cross-origin requests (CORS headers come
from an ``after_request`` hook), any other method, and any unexpected error.
No Flask hook is skipped that could apply: the only ``before_request`` guards
writes, and these requests touch no database. ``MEDIA_FAST_PATH = False``
turns it off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from flaskstream import metrics
from flaskstream.errors import ApiError
from flaskstream.media import views

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
PREFIX = "/media/"


class MediaFastPath:
    """WSGI middleware: serve the happy path of ``/media/<path>``, delegate the rest."""

    def __init__(self, app: Flask, wsgi_app: WSGIApp) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        config = self.app.config
        if (method not in ("GET", "HEAD") or not path.startswith(PREFIX) or len(path) == len(PREFIX)
                or "HTTP_ORIGIN" in environ or not config.get("MEDIA_FAST_PATH", True)):
            return self.wsgi_app(environ, start_response)
        try:
            # PEP 3333 carries the path as latin-1; werkzeug decodes it as UTF-8 the same way.
            subpath = path[len(PREFIX):].encode("latin-1").decode("utf-8", "replace")
            fd = views.open_media_file(config["MEDIA_DIR"], subpath)
            if fd is None:
                return self.wsgi_app(environ, start_response)
            status, headers, body = views.plan_response(
                fd, method, views.conditional_headers(environ), config,
                views.content_type_for(subpath))
        except ApiError:  # not a regular file: Flask answers the 404
            return self.wsgi_app(environ, start_response)
        except Exception:  # noqa: BLE001 - Flask's error handlers give the one error shape
            log.exception("media fast path failed; handing the request to Flask")
            return self.wsgi_app(environ, start_response)
        if status == 416:
            return self.wsgi_app(environ, start_response)
        metrics.media_fast_path(environ, status)
        start_response(f"{status} {HTTP_STATUS_CODES[status]}", list(headers.items()))
        return body if body is not None else []
