"""gunicorn 27.0.1 (and gevent's socket) internals, behind named capabilities.

Capabilities (``tests/adapters/test_gunicorn.py`` pins each on the installed version):

``gunicorn.direct_body``  ``direct_body_reader(environ)``: read a Content-Length body
    straight from the client socket (one copy per chunk, nothing held between reads)
    while keeping gunicorn's ``LengthReader.length`` and its unreader's read-ahead in
    step. Fallback: None, the caller reads ``request.stream`` (three copies per chunk).
``gunicorn.salvage``  ``salvage_buffers(body)``: the bytes gunicorn's ``Body.read``
    had received when an exception interrupted it (in ``Body.buf`` and the unreader's
    ``buf``). Fallback: ``b""`` (the client resends those bytes; nothing is corrupted).
``gunicorn.body_failed``  ``mark_body_failed(environ)``: set ``Body.failed`` so gunicorn
    closes the connection instead of reading the unread rest of a refused body.
    Fallback: nothing; gunicorn reads and discards the rest (slower, still correct).
``gunicorn.peek_socket``  ``peek(sock, n)``: a non-blocking ``MSG_PEEK`` on the raw
    socket under gevent's wrapper (``sock._sock``). Fallback: the same ``recv`` through
    an unpatched ``socket.socket`` on the same descriptor (``gevent.monkey.get_original``).
``gunicorn.worker_app``  ``worker_app(worker)``: the WSGI app a worker loaded
    (``worker.wsgi``), for start-up warnings. Fallback: None (the warning is skipped).
"""

from __future__ import annotations

import contextlib
import io
import socket
from typing import Any

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import IterUnreader
from gunicorn.workers.base import Worker

from flaskstream.adapters.registry import capability


def _check_direct_body() -> str | None:
    reader = LengthReader(IterUnreader([b"abcdef", b"gh"]), 7)
    body = Body(reader)
    if body.reader is not reader or not isinstance(body.buf, io.BytesIO) or body.buf.tell():
        return "Body.reader/Body.buf changed"
    if reader.read(2) != b"ab" or reader.length != 5:
        return "LengthReader.length no longer counts what is left"
    ahead = reader.unreader.take_buffered()
    if ahead != b"cdef":
        return "Unreader.take_buffered does not return the read-ahead"
    reader.unreader.unread(b"f")
    if reader.unreader.read(1) != b"f":
        return "Unreader.unread does not push bytes back"
    return None


def _check_salvage() -> str | None:
    body = Body(LengthReader(IterUnreader([b"abc"]), 10))
    body.read(5)  # the source ends early: what it got stays nowhere we can reach
    reader = body.reader
    if not isinstance(body.buf, io.BytesIO) or not isinstance(reader.unreader.buf, io.BytesIO):
        return "Body.buf / Unreader.buf are no longer BytesIO"
    return None


def _check_body_failed() -> str | None:
    body = Body(LengthReader(IterUnreader([]), 1))
    if getattr(body, "failed", None) is not False:
        return "Body.failed is gone"
    return None


def _check_peek_socket() -> str | None:
    if not _gevent_patched():  # only used under gevent; importing gevent.socket costs ~0.2 s
        return None
    from gevent import socket as gsocket
    from gevent.monkey import get_original

    a, b = gsocket.socketpair()
    try:
        if not isinstance(getattr(a, "_sock", None), get_original("socket", "SocketType")):
            return "gevent's socket no longer wraps _sock"
    finally:
        a.close()
        b.close()
    return None


def _check_worker_app() -> str | None:
    if not callable(getattr(Worker, "load_wsgi", None)):
        return "Worker.load_wsgi is gone"
    return None


DIRECT_BODY = capability("gunicorn.direct_body", _check_direct_body, "request.stream")
SALVAGE = capability("gunicorn.salvage", _check_salvage, "salvage nothing")
BODY_FAILED = capability("gunicorn.body_failed", _check_body_failed, "gunicorn drains the body")
PEEK_SOCKET = capability("gunicorn.peek_socket", _check_peek_socket, "unpatched socket on the fd")
WORKER_APP = capability("gunicorn.worker_app", _check_worker_app, "skip the start-up warning")


class DirectBody:
    """A gunicorn Content-Length request body read straight from its socket.

    Why: gunicorn's ``Body.read`` receives up to 1 MiB ahead and moves every
    chunk through two ``BytesIO`` buffers (three copies), which caps a gevent
    worker at ~750 MB/s *before* any parsing, and keeps up to 1 MiB of
    read-ahead per connection between reads — 100 MiB at 100 uploads. Reading
    ``recv(n)`` ourselves costs one copy and holds nothing between reads.

    It stays in step with gunicorn: bytes gunicorn already read ahead are taken
    first (anything past this body is pushed back), and the ``LengthReader``'s
    remaining length is decremented as we go, so gunicorn's keep-alive logic
    sees exactly what is left (and drains or closes as usual).
    """

    def __init__(self, body: Any, sock: Any) -> None:
        self.reader = body.reader
        self.sock = sock
        ahead = self.reader.unreader.take_buffered()
        if len(ahead) > self.reader.length:
            self.reader.unreader.unread(ahead[self.reader.length:])
            ahead = ahead[:self.reader.length]
        self.reader.length -= len(ahead)
        self.ahead = ahead

    def read(self, size: int) -> bytes:
        if self.ahead:
            data, self.ahead = self.ahead[:size], self.ahead[size:]
            return data
        if self.reader.length <= 0:
            return b""
        data = self.sock.recv(min(size, self.reader.length))
        self.reader.length -= len(data)
        return data


def direct_body_reader(environ: dict[str, Any]) -> DirectBody | None:
    """The direct reader for this request, or None where it does not apply."""
    body, sock = environ.get("wsgi.input"), environ.get("gunicorn.socket")
    if sock is None or not isinstance(body, Body) \
            or not isinstance(getattr(body, "reader", None), LengthReader):
        return None
    if not DIRECT_BODY.ok() or body.buf.tell():
        return None
    return DirectBody(body, sock)


def salvage_buffers(raw_input: Any) -> bytes:
    """The body bytes gunicorn received for a read that was interrupted (best effort).

    gunicorn's ``Body.read`` loops until it has the size asked for, keeping what
    it got so far in ``Body.buf`` and its ``SocketUnreader.buf`` (in that order).
    An exception thrown into the blocked ``recv`` leaves them there. Only the
    fixed-length reader is handled (a chunked body's framing state is not
    recoverable); anything unexpected gives ``b""``. The buffers are emptied, and
    the body marked failed so the connection is not reused.
    """
    reader = getattr(raw_input, "reader", None)
    if not isinstance(raw_input, Body) or not isinstance(reader, LengthReader):
        return b""
    _mark_failed(raw_input)
    if not SALVAGE.ok():
        return b""
    body_buf, unreader = raw_input.buf, reader.unreader
    data = body_buf.getvalue() + unreader.buf.getvalue()
    raw_input.buf = io.BytesIO()
    unreader.buf = io.BytesIO()
    return data[: max(int(reader.length) + len(body_buf.getvalue()), 0)]


def mark_body_failed(environ: dict[str, Any]) -> bool:
    """Make gunicorn close this connection after the response instead of draining the body.

    gunicorn drops a ``Connection: close`` set by the app (hop-by-hop), but it
    never reuses a connection whose body reader is marked ``failed``. True if marked.
    """
    return _mark_failed(environ.get("wsgi.input"))


def _mark_failed(body: Any) -> bool:
    body = getattr(body, "__wrapped__", body)  # errors.py wraps chunked bodies
    if not isinstance(body, Body) or not BODY_FAILED.ok():
        return False
    body.failed = True
    return True


def peek(sock: Any, size: int = 1) -> bytes:
    """``recv(size, MSG_PEEK | MSG_DONTWAIT)`` on the client socket, never waiting.

    gevent's socket would turn EAGAIN into a wait for readability; the raw socket
    it wraps raises ``BlockingIOError`` instead, which is what a peek needs.
    """
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
    if not _gevent_patched():
        return bytes(sock.recv(size, flags))  # a plain socket raises BlockingIOError itself
    from gevent.monkey import get_original

    if PEEK_SOCKET.ok():
        raw = getattr(sock, "_sock", None)
        if isinstance(raw, get_original("socket", "SocketType")):
            return bytes(raw.recv(size, flags))
        PEEK_SOCKET.fail(f"{type(sock).__name__} has no raw _sock")
    plain = get_original("socket", "socket")(fileno=sock.fileno())
    try:
        return bytes(plain.recv(size, flags))
    finally:
        with contextlib.suppress(OSError):
            plain.detach()  # the descriptor stays gunicorn's


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a runtime dependency
        return False
    return bool(monkey.is_module_patched("socket"))


def worker_app(worker: Any) -> Any:
    """The WSGI app ``worker`` loaded, or None where that cannot be known."""
    return getattr(worker, "wsgi", None) if WORKER_APP.ok() else None
