"""Request ids, request timing and one-JSON-object-per-line logs.

``RequestContext`` is the outermost WSGI layer (outside the media fast path,
so every response gets one): it takes the client's ``X-Request-ID`` when it is
short and plain, else makes one, echoes it in the response, keeps it in a
context variable for log lines and ETL job rows (a greenlet has its own
context under gevent, a thread under a threaded server), and times the
request until the server closes the body — for a stream that is when the
stream ends, which Flask's ``after_request`` cannot see (``direct_passthrough``
bodies skip ``call_on_close``).

``JsonFormatter`` renders app records and gunicorn's access records (whose
``args`` are gunicorn's atom mapping) as one JSON object per line, with
secrets scrubbed from query strings. No flask import: gunicorn's master loads
it for its own logs.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote_plus

REQUEST_ID_HEADER = "X-Request-ID"
ENVIRON_KEY = "flaskstream.request_id"
# Accepted ids: what tracing systems and proxies send (uuids, hex, base64url, dotted).
_VALID_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
# Query parameters whose values never reach a log line.
SECRET_PARAMS = frozenset({"access_token", "sig", "token"})

_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "flaskstream_request", default=None)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def request_id() -> str | None:
    """The id of the request this greenlet/thread is serving, if any."""
    environ = _current.get()
    return None if environ is None else environ.get(ENVIRON_KEY)


class _IdSource:
    """32 hex digits per id: 16 random per process, then a 64-bit counter — unique
    like a random id, at a quarter of ``os.urandom``'s cost (a syscall per request).
    A forked child draws its own prefix (``os.register_at_fork``)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_ids = _IdSource()
os.register_at_fork(after_in_child=_ids.reset)


def accept_request_id(value: str | None) -> str:
    """The client's id if it is 1-128 plain characters, else a new unique one."""
    if value and _VALID_ID.fullmatch(value):
        return value
    return _ids.next()


def scrub_query(query: str) -> str:
    """``query`` with the values of ``SECRET_PARAMS`` replaced, the rest untouched."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, sep, _ = part.partition("=")
        if unquote_plus(name).lower() in SECRET_PARAMS:
            part = f"{name}{sep}REDACTED" if sep else part
        parts.append(part)
    return "&".join(parts)


# A secret parameter inside any text (a request line, a Referer, a message that quotes a URL).
_SECRET_IN_TEXT = re.compile(
    r"(?i)((?:^|[?&;\s])(?:" + "|".join(sorted(SECRET_PARAMS)) + r")=)[^&\s\"'#]*")


def scrub_text(text: str) -> str:
    """``text`` with every ``access_token=``/``sig=``/``token=`` value replaced (text-mode logs)."""
    return _SECRET_IN_TEXT.sub(r"\1REDACTED", text) if "=" in text else text


def scrub_atoms(atoms: dict[str, Any]) -> dict[str, Any]:
    """gunicorn's access-log atoms with secrets out of the request line, query, Referer
    and credential headers, whatever ``access_log_format`` asks for."""
    for key, value in list(atoms.items()):
        if not isinstance(value, str):
            continue
        if key in ("{authorization}i", "{cookie}i"):
            atoms[key] = "REDACTED"
        elif key in ("r", "q", "f", "U") or key.endswith("}i"):
            atoms[key] = scrub_text(value)
    return atoms


class ScrubFilter(logging.Filter):
    """Text-mode app records: the formatted message, scrubbed (JSON mode scrubs its fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "gunicorn.access":
            message = record.getMessage()
            cleaned = scrub_text(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def use_scrubbing(handlers: Iterable[logging.Handler]) -> None:
    for handler in handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())


def safe_path(path: str, query: str) -> str:
    return f"{path}?{scrub_query(query)}" if query else path


class _TimedBody:
    """The app's body, passed through untouched; ``close`` records the duration."""

    __slots__ = ("body", "environ", "started", "on_close")

    def __init__(self, body: Iterable[bytes], environ: dict[str, Any], started: float,
                 on_close: Callable[[dict[str, Any], float], None]) -> None:
        self.body = body
        self.environ = environ
        self.started = started
        self.on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.on_close(self.environ, time.perf_counter() - self.started)
            _current.set(None)  # later lines of this greenlet/thread belong to no request


class RequestContext:
    """WSGI middleware: request id in and out, context for logs, duration on close."""

    def __init__(self, wsgi_app: WSGIApp,
                 on_close: Callable[[dict[str, Any], float], None]) -> None:
        self.wsgi_app = wsgi_app
        self.on_close = on_close

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        started = time.perf_counter()
        rid = accept_request_id(environ.get("HTTP_X_REQUEST_ID"))
        environ[ENVIRON_KEY] = rid
        _current.set(environ)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((REQUEST_ID_HEADER, rid))
            return start_response(status, headers, exc_info)

        try:
            body = self.wsgi_app(environ, start)
        except BaseException:
            self.on_close(environ, time.perf_counter() - started)
            raise
        wrapper = environ.get("wsgi.file_wrapper")  # PEP 3333: any callable, maybe a class
        if isinstance(wrapper, type) and isinstance(body, wrapper):
            self.on_close(environ, time.perf_counter() - started)  # keep gunicorn's sendfile
            return body
        return _TimedBody(body, environ, started, self.on_close)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: app lines and gunicorn access lines alike."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
        }
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            entry.update(_access_fields(record.args))
        else:
            entry["message"] = record.getMessage()
            environ = _current.get()
            if environ is not None:
                entry["request_id"] = environ.get(ENVIRON_KEY)
                entry["method"] = environ.get("REQUEST_METHOD")
                entry["path"] = safe_path(environ.get("PATH_INFO", ""),
                                          environ.get("QUERY_STRING", ""))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """Fields of an access line from gunicorn's atoms (``glogging.Logger.atoms``)."""
    def atom(key: str) -> Any:
        value = atoms.get(key)
        return None if value in (None, "-") else value

    method, path = atom("m"), safe_path(atom("U") or "", atom("q") or "")
    status = atom("s")
    sent = atom("B")
    micros = atom("D")
    return {
        "message": f"{method} {path} {status}",
        "request_id": atom("{x-request-id}o") or atom("{x-request-id}i"),
        "method": method,
        "path": path,
        "status": int(status) if str(status).isdigit() else status,
        "bytes": int(sent) if sent is not None else None,
        "duration_ms": round(int(micros) / 1000, 3) if micros is not None else None,
        "remote_addr": atom("h"),
    }


def use_json(handlers: Iterable[logging.Handler]) -> None:
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
