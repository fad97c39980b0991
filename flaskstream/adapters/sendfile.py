"""Zero-copy media bodies under gunicorn's gevent worker (gunicorn 27.0.1, gevent 26.9).

Capability ``gunicorn.zero_copy`` (pinned by ``tests/adapters/test_sendfile.py``):
``zero_copy_body(environ, fd, offset, count, release)`` returns a body that
gunicorn sends with ``os.sendfile`` straight from the page cache to the socket,
or None where that does not apply (another server, not gevent, the capability
failed): the caller then reads the bytes itself, as before.

Why not the library path: a ``wsgi.file_wrapper`` body goes through gunicorn's
``Response.sendfile``, which ``lseek``s the descriptor for the offset (racy on
a descriptor the open-file cache shares between greenlets) and calls
``socket.sendfile``; gevent's ``socket.sendfile`` is an 8 KiB ``read`` +
``send`` loop (gevent/_socket3.py: ``os.sendfile`` "is not cooperative"),
slower than the ``pread`` it would replace. ``os.sendfile`` on gevent's
non-blocking socket *is* cooperative when EAGAIN waits on ``wait_write``, which
is what ``send_range`` does. So ``Response.sendfile`` is wrapped once per
process: a ``RangeFile`` body is sent by ``send_range`` at its own offset (the
shared descriptor's position is never used), every other body by gunicorn's
own method, unchanged. Measured in bench/README.md (media, session 4): the
64 KiB range no longer crosses into Python twice (a ``pread`` copy, then a
``send`` copy).

The caller must only hand over ranges whose pages are cached (the
``RWF_NOWAIT`` probe in media/stream.py): ``sendfile`` of a cold page would
wait for the disk on the event loop.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from gunicorn.http import wsgi as gunicorn_wsgi

from flaskstream.adapters.registry import capability


def _check_zero_copy() -> str | None:
    response = gunicorn_wsgi.Response
    missing = [name for name in ("sendfile", "send_headers", "can_sendfile", "is_chunked")
               if not callable(getattr(response, name, None))]
    if missing:
        return f"gunicorn Response lost {', '.join(missing)}"
    if not isinstance(getattr(gunicorn_wsgi, "FileWrapper", None), type):
        return "gunicorn.http.wsgi.FileWrapper is gone"
    if not hasattr(os, "sendfile"):
        return "no os.sendfile on this platform"
    return None


ZERO_COPY = capability("gunicorn.zero_copy", _check_zero_copy, "pread + send")


class RangeShrunk(RuntimeError):
    """The file ended inside the range after the headers went out: gunicorn logs it and
    closes the connection, so the client sees a short body (not an OSError, which
    gunicorn would take for the client's socket failing)."""


class RangeFile(gunicorn_wsgi.FileWrapper):
    """One byte range of a (shared) descriptor, as a ``wsgi.file_wrapper`` body.

    A subclass of gunicorn's ``FileWrapper`` because that is the type gunicorn's
    workers test to call ``Response.sendfile``. Iterated (gunicorn decided not
    to sendfile: TLS, ``sendfile = False``), it yields ``read()``, the caller's
    own read of the range. ``on_sent(n)`` counts the bytes that went out;
    ``close`` runs ``release`` once, whichever way the body went.
    """

    def __init__(self, fd: int, offset: int, count: int, *, release: Callable[[], None],
                 read: Callable[[], bytes], on_sent: Callable[[int], None]) -> None:
        self.filelike = None
        self.fd, self.offset, self.count = fd, offset, count
        self.release: Callable[[], None] | None = release
        self.read = read
        self.on_sent = on_sent

    def __iter__(self) -> Iterator[bytes]:  # type: ignore[override]
        yield self.read()

    def close(self) -> None:
        release, self.release = self.release, None
        if release is not None:
            release()


def send_range(sock: Any, fd: int, offset: int, count: int,
               on_sent: Callable[[int], None]) -> int:
    """``os.sendfile`` ``count`` bytes of ``fd`` from ``offset`` to gevent socket ``sock``,
    waiting cooperatively whenever its buffer is full; the bytes sent.

    A client that stops reading parks only this greenlet (as ``sendall``
    would); ``RangeShrunk`` if the file ends early (the client then sees a short
    body and a closed connection, as with the ``pread`` path).
    """
    from gevent.socket import wait_write

    out = sock.fileno()
    sent = 0
    try:
        while sent < count:
            try:
                n = os.sendfile(out, fd, offset + sent, count - sent)
            except BlockingIOError:
                wait_write(out, timeout=sock.gettimeout())
                continue
            if n == 0:
                raise RangeShrunk(f"file ended at {offset + sent}, {count - sent} bytes short")
            sent += n
    finally:
        on_sent(sent)
    return sent


_original_sendfile: Callable[..., bool] | None = None


def _sendfile(self: Any, respiter: Any) -> bool:
    """``Response.sendfile``: ``RangeFile`` bodies by ``send_range``, others by gunicorn."""
    if not isinstance(respiter, RangeFile):
        assert _original_sendfile is not None
        return _original_sendfile(self, respiter)
    if self.cfg.is_ssl or not self.can_sendfile() or self.is_chunked():
        return False  # gunicorn iterates the body: RangeFile reads it itself
    self.send_headers()
    if not self._omits_body and respiter.count:
        self.sent += send_range(self.sock, respiter.fd, respiter.offset, respiter.count,
                                 respiter.on_sent)
    return True


def _enable() -> bool:
    """Wrap ``Response.sendfile`` once per process (idempotent); True if in place."""
    global _original_sendfile
    if _original_sendfile is None:
        if not ZERO_COPY.ok():
            return False
        _original_sendfile = gunicorn_wsgi.Response.sendfile
        gunicorn_wsgi.Response.sendfile = _sendfile  # type: ignore[method-assign]
    return True


def zero_copy_applies(environ: dict[str, Any]) -> bool:
    """Whether gunicorn's gevent worker serving ``environ`` sends a ``RangeFile`` body
    with ``send_range`` (else the caller sends its bytes itself, as before)."""
    return (environ.get("wsgi.file_wrapper") is gunicorn_wsgi.FileWrapper
            and "gunicorn.socket" in environ and _gevent_patched() and _enable())


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))
