"""Contract tests: what ``flaskstream.adapters.gunicorn`` assumes of gunicorn 27.0.1 (and
gevent's socket), pinned on real objects, and each capability's public fallback.

A gunicorn upgrade that moves ``Body.buf``, ``LengthReader.length``, the unreader's
push-back, ``Body.failed`` or ``Worker.wsgi`` fails here first, by name.
"""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import IterUnreader, SocketUnreader, Unreader

from flaskstream import adapters
from flaskstream.adapters import gunicorn as ga
from tests.live import ROOT

# gunicorn.peek_socket is checked only under gevent: see test_peek_under_gevent_...
CAPABILITIES = ["gunicorn.direct_body", "gunicorn.salvage", "gunicorn.body_failed",
                "gunicorn.worker_app"]


@pytest.mark.parametrize("name", CAPABILITIES)
def test_each_start_up_check_holds_on_the_installed_gunicorn(name: str) -> None:
    cap = adapters.registered()[name]
    assert cap.check() is None
    assert cap.ok()


def test_length_reader_counts_what_is_left_and_the_unreader_pushes_back() -> None:
    reader = LengthReader(IterUnreader([b"0123456789", b"NEXT"]), 8)
    body = Body(reader)
    assert body.reader is reader and isinstance(body.buf, io.BytesIO) and body.buf.tell() == 0
    assert reader.read(3) == b"012"
    assert reader.length == 5  # decremented by what was handed out
    assert reader.unreader.take_buffered() == b"3456789"  # read-ahead, source untouched
    assert reader.unreader.take_buffered() == b""
    reader.unreader.unread(b"89")
    assert reader.unreader.read(2) == b"89"
    assert reader.unreader.read() == b"NEXT"


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    server.settimeout(5)  # a reader that loses count blocks: fail instead of hanging
    yield client, server
    client.close()
    server.close()


def _environ(server: socket.socket, length: int, ahead: bytes) -> dict[str, Any]:
    unreader = SocketUnreader(server)
    unreader.unread(ahead)  # what gunicorn read past the headers
    return {"wsgi.input": Body(LengthReader(unreader, length)), "gunicorn.socket": server}


def test_direct_body_reads_exactly_the_body_and_leaves_the_next_request(sockets) -> None:
    client, server = sockets
    client.sendall(b"56789GET / HTTP/1.1\r\n")
    environ = _environ(server, 10, b"01234")
    direct = ga.direct_body_reader(environ)
    assert isinstance(direct, ga.DirectBody)
    got = b""
    while chunk := direct.read(4):
        got += chunk
    assert got == b"0123456789"
    body = environ["wsgi.input"]
    assert body.reader.length == 0  # gunicorn sees the body as fully read
    assert body.reader.unreader.read() == b"GET / HTTP/1.1\r\n"  # the rest stays gunicorn's


def test_direct_body_pushes_back_read_ahead_past_the_body(sockets) -> None:
    _, server = sockets
    environ = _environ(server, 3, b"abcNEXT")
    direct = ga.direct_body_reader(environ)
    assert direct is not None and direct.read(10) == b"abc" and direct.read(10) == b""
    assert environ["wsgi.input"].reader.unreader.read() == b"NEXT"


def test_direct_body_does_not_apply_to_chunked_or_started_bodies(sockets) -> None:
    _, server = sockets
    chunked = Body(ChunkedReader(None, SocketUnreader(server)))
    assert ga.direct_body_reader({"wsgi.input": chunked, "gunicorn.socket": server}) is None
    started = _environ(server, 10, b"0123456789")
    started["wsgi.input"].buf.write(b"x")  # Body.read kept bytes: too late to bypass it
    assert ga.direct_body_reader(started) is None
    assert ga.direct_body_reader({"wsgi.input": io.BytesIO(b"x")}) is None


def test_direct_body_disabled_falls_back_and_logs_once(sockets, caplog) -> None:
    _, server = sockets
    adapters.reset_all("gunicorn.direct_body")
    with caplog.at_level(logging.WARNING, "flaskstream.adapters"):
        assert ga.direct_body_reader(_environ(server, 3, b"abc")) is None
        assert ga.direct_body_reader(_environ(server, 3, b"abc")) is None
    assert [r.getMessage() for r in caplog.records].count(
        "adapter gunicorn.direct_body: disabled by ADAPTERS_DISABLE; using the public fallback "
        "(request.stream)") == 1


class _Interrupted(Exception):
    pass


class _Source(Unreader):
    """A real gunicorn Unreader whose source is interrupted after its pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__()
        self.pieces = pieces

    def chunk(self, size_hint: int | None = None) -> bytes:
        if not self.pieces:
            raise _Interrupted()
        return self.pieces.pop(0)


def _interrupted_body() -> Body:
    body = Body(LengthReader(_Source([b"abc", b"defg"]), 100))
    with pytest.raises(_Interrupted):
        body.read(50)
    return body


def test_an_interrupted_read_leaves_its_bytes_in_body_buf_and_unreader_buf() -> None:
    body = _interrupted_body()
    assert body.buf.getvalue() + body.reader.unreader.buf.getvalue() == b"abcdefg"
    assert body.failed is True  # gunicorn marks a body whose read raised


def test_salvage_hands_the_bytes_back_once_and_fallback_hands_nothing() -> None:
    body = _interrupted_body()
    assert ga.salvage_buffers(body) == b"abcdefg"
    assert ga.salvage_buffers(body) == b""
    adapters.reset_all("gunicorn.salvage")
    fresh = Body(LengthReader(IterUnreader([b"abc"]), 10))
    assert ga.salvage_buffers(fresh) == b""
    assert fresh.failed is True  # the connection is still not reused


def test_gunicorn_closes_instead_of_draining_a_body_marked_failed() -> None:
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234"
    parser = RequestParser(Config(), iter([request]), ("127.0.0.1", 1))
    message = next(parser)
    environ = {"wsgi.input": message.body}
    assert message.body.failed is False
    assert ga.mark_body_failed(environ) is True
    assert parser.finish_body() is False  # gunicorn will close, not read the rest


def test_a_chunked_body_wrapped_by_errors_py_is_still_marked_failed() -> None:
    """errors.py wraps chunked bodies to catch unreadable chunks; an over-limit chunked
    upload must still close the connection rather than be drained to its end."""
    from flaskstream.errors import _BodyReader

    request = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n"
    parser = RequestParser(Config(), iter([request]), ("127.0.0.1", 1))
    message = next(parser)
    environ: dict[str, Any] = {}
    environ["wsgi.input"] = _BodyReader(message.body, environ)
    assert ga.mark_body_failed(environ) is True
    assert message.body.failed is True


def test_body_failed_disabled_leaves_the_body_to_gunicorns_drain() -> None:
    adapters.reset_all("gunicorn.body_failed")
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n01234"
    parser = RequestParser(Config(), iter([request]), ("127.0.0.1", 1))
    message = next(parser)
    assert ga.mark_body_failed({"wsgi.input": message.body}) is False
    assert parser.finish_body() is True  # drained: correct, just more reading


def test_peek_on_a_plain_socket_does_not_consume_or_wait(sockets) -> None:
    client, server = sockets
    server.settimeout(None)  # blocking, as gunicorn's are: MSG_DONTWAIT alone must not wait
    with pytest.raises(BlockingIOError):
        ga.peek(server)
    client.sendall(b"x")
    assert ga.peek(server) == b"x" and server.recv(1) == b"x"
    client.close()
    assert ga.peek(server) == b""


PEEK_UNDER_GEVENT = """
from gevent import monkey; monkey.patch_all()
import socket, sys
from flaskstream import adapters
from flaskstream.adapters import gunicorn as ga
adapters.reset_all(sys.argv[1])
a, b = socket.socketpair()
assert ga.PEEK_SOCKET.ok() is (sys.argv[1] == "")
try:
    ga.peek(b)
    raise SystemExit("peek waited or returned on an empty socket")
except BlockingIOError:
    pass
a.sendall(b"x")
assert ga.peek(b) == b"x" and b.recv(1) == b"x"
a.close()
assert ga.peek(b) == b""
b.close()
print("ok")
"""


@pytest.mark.parametrize("disabled", ["", "gunicorn.peek_socket"])
def test_peek_under_gevent_on_the_raw_socket_and_on_the_fallback(disabled: str) -> None:
    out = subprocess.run([sys.executable, "-c", PEEK_UNDER_GEVENT, disabled], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_worker_wsgi_is_the_loaded_app_and_alive_pid_connections_exist() -> None:
    from gunicorn.app.base import BaseApplication
    from gunicorn.workers.ggevent import GeventWorker

    def wsgi(environ: dict, start_response: Any) -> list[bytes]:
        return []

    class App(BaseApplication):
        def load_config(self) -> None:
            pass

        def load(self) -> Any:
            return wsgi

    app = App()
    worker = GeventWorker(0, 1, [], app, 30, app.cfg, logging.getLogger("test"))
    try:
        assert worker.alive is True and worker.worker_connections == app.cfg.worker_connections
        assert hasattr(worker, "pid")
        worker.load_wsgi()
        assert ga.worker_app(worker) is wsgi
        adapters.reset_all("gunicorn.worker_app")
        assert ga.worker_app(worker) is None
    finally:
        worker.tmp.close()
