"""Raw HTTP/1.1 for hostile tests: bytes out exactly as written, the reply parsed.

``requests`` normalises what it sends (header case and order, chunk framing,
percent-encoding); these tests need the malformed request itself on the wire.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.live import LiveServer

TOKEN = "hostile-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @classmethod
    def of(cls, response: Any) -> Reply:
        """A ``requests`` response seen as a Reply (for ``assert_error_shape``)."""
        return cls(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                   response.content)


def exchange(server: LiveServer, request: bytes, *, timeout: float = 10.0,
             max_body: int = 1 << 20, half_close: bool = False,
             until: bytes | None = None) -> Reply:
    """Send ``request`` as is on a new connection; read one reply (at most ``max_body``
    bytes of body: a stream is cut there). ``half_close`` ends the sending side, so
    a body cut short reaches the server as EOF rather than a wait; ``until`` stops
    reading a stream once those bytes have arrived."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = b""
        try:
            while len(body) < max_body and not (until and until in body):
                piece = response.read1(max_body - len(body))
                if not piece:
                    break
                body += piece
        except (http.client.IncompleteRead, TimeoutError, ConnectionError):
            pass  # what arrived is the answer (a stream cut by the timeout)
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def request_bytes(method: str, target: str, headers: dict[str, str] | None = None,
                  body: bytes = b"", *, chunked: bytes | None = None) -> bytes:
    """A request with ``Connection: close``; ``chunked`` is sent raw as the body."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if chunked is not None:
        lines.append("Transfer-Encoding: chunked")
        payload = chunked
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def assert_error_shape(reply: Reply, status: int | None = None) -> dict[str, Any]:
    """The one JSON error shape, without Python internals in the message."""
    assert reply.content_type.startswith("application/json"), (reply.status, reply.body[:200])
    error = reply.json()["error"]
    assert isinstance(error["code"], str) and error["code"].isupper()
    assert isinstance(error["message"], str)
    for leak in ("Traceback", "Error:", "Exception", "Invalid chunk size", "<class",
                 "object at 0x", "codec can't"):
        assert leak not in error["message"], error
    if status is not None:
        assert reply.status == status, (reply.status, error)
    return error


@contextmanager
def token_server(base: Any, database_url: str, **env: str) -> Iterator[LiveServer]:
    """One gunicorn (1 gevent worker) with ``FLASKSTREAM_API_TOKEN`` set."""
    server = LiveServer(base, database_url=database_url,
                        env={"FLASKSTREAM_API_TOKEN": TOKEN, **env})
    with server:
        yield server


__all__ = ["AUTH", "TOKEN", "Reply", "assert_error_shape", "exchange", "pytest",
           "request_bytes", "token_server"]
