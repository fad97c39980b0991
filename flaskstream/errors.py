"""One JSON error shape for the whole API: ``{"error": {"code", "message"}}``.

Every error the API answers is a ``FlaskstreamError`` (``errorbase.py``:
code, status, message, headers), raised where the fact is known — a pure core,
a receive loop, the connection pool — and rendered here by one handler, tus's
protocol headers included. ``ApiError(status, code, message)`` is the same
base with the arguments in the order the views have always used. werkzeug's own
HTTP errors (404, 405, 413 …) and unexpected exceptions are turned into the
same shape, so clients parse one thing. Streaming responses cannot change status once the
first byte is out: they report errors in-band (an SSE ``error`` event).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from flaskstream.errorbase import FixedError, FlaskstreamError

__all__ = ["ApiError", "FixedError", "FlaskstreamError", "error_response", "init_app"]

log = logging.getLogger(__name__)

# Codes for werkzeug's errors, by status, when nothing more specific was raised.
HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    410: "GONE",
    411: "LENGTH_REQUIRED",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    416: "RANGE_NOT_SATISFIABLE",
    422: "UNPROCESSABLE_ENTITY",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
    507: "INSUFFICIENT_STORAGE",
}


class ApiError(FlaskstreamError):
    """A ``FlaskstreamError`` raised by a view: ``ApiError(status, code, message)``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(code, status, message, headers, **details)


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **details: Any,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(details)
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flaskstream_error(exc: FlaskstreamError) -> Response:
    """The one renderer: status, code, message and headers all come from the error."""
    if exc.status >= 500:
        log.warning("%s %s: %s", exc.status, exc.code, exc.message, exc_info=exc.__cause__)
    return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.details)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = error_response(status, HTTP_CODES.get(status, f"HTTP_{status}"),
                              exc.description or exc.name)
    if status == 405 and exc.get_response().headers.get("Allow"):
        response.headers["Allow"] = exc.get_response().headers["Allow"]
    return response


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "INTERNAL_ERROR", "internal server error")


# --- malformed request bodies ---------------------------------------------------

BODY_ERROR_KEY = "flaskstream.body_error"
BODY_ERROR_MESSAGE = "the request body is malformed or ended early"


class _BodyReader:
    """A chunked request's ``wsgi.input`` that remembers when the server could not read it.

    gunicorn raises from its chunked reader while the app reads (``InvalidChunkSize``
    for a chunk size of ``zz``, ``NoMoreData``, ``ChunkMissingTerminator``); each route
    then fails in its own way, some with the server's text in the message. The
    error is re-raised unchanged (the route cleans up as for any broken body) and
    the fact is kept in the environ, so ``_body_error_response`` can answer the one
    400 whatever the route made of it. Only chunked bodies are wrapped: a
    fixed-length body stays gunicorn's own object (the uploads fast path needs it).
    Attributes other than the read methods are the server's (``failed``, ``reader``).
    """

    __slots__ = ("_raw", "_environ")

    def __init__(self, raw: Any, environ: dict[str, Any]) -> None:
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_environ", environ)

    @property
    def __wrapped__(self) -> Any:
        """The server's own body object, for ``adapters.gunicorn`` (``mark_body_failed``)."""
        return self._raw

    def _guard(self, read: Callable[..., Any], *args: Any) -> Any:
        try:
            return read(*args)
        except Exception:
            # Exception only: a gevent.Timeout thrown in by an idle timer is not the body's fault.
            self._environ[BODY_ERROR_KEY] = True
            raise

    def read(self, *args: Any) -> bytes:
        return self._guard(self._raw.read, *args)  # type: ignore[no-any-return]

    def readline(self, *args: Any) -> bytes:
        return self._guard(self._raw.readline, *args)  # type: ignore[no-any-return]

    def readlines(self, *args: Any) -> list[bytes]:
        return self._guard(self._raw.readlines, *args)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._raw, name, value)


def _guard_chunked_bodies(wsgi_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() \
                and environ.get("wsgi.input") is not None:
            environ["wsgi.input"] = _BodyReader(environ["wsgi.input"], environ)
        return wsgi_app(environ, start_response)
    return app


def _body_error_response(response: Response) -> Response:
    """A route that failed because the server could not read the body answers a 400
    with our message: its own code if it gave one in a 400 (``CLIENT_DISCONNECTED``),
    else ``BAD_REQUEST_BODY`` (it answered 5xx, or not in the JSON shape)."""
    if not request.environ.get(BODY_ERROR_KEY) or not (
            response.status_code == 400 or response.status_code >= 500):
        return response
    code = "BAD_REQUEST_BODY"
    if response.status_code == 400 and response.is_json and not response.is_streamed:
        error = (response.get_json(silent=True) or {}).get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            code = error["code"]
    replacement = error_response(400, code, BODY_ERROR_MESSAGE)
    for name, value in response.headers.items():  # e.g. tus Location + Upload-Offset
        if name.lower() not in ("content-type", "content-length"):
            replacement.headers[name] = value
    return replacement


def init_app(app: Flask) -> None:
    app.wsgi_app = _guard_chunked_bodies(app.wsgi_app)  # type: ignore[method-assign]
    app.after_request(_body_error_response)
    app.register_error_handler(FlaskstreamError, _flaskstream_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
