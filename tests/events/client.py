"""A small raw-socket SSE client for live tests: exact bytes, no buffering surprises.

``requests`` hides chunk boundaries and connection state; these tests need to
hold many sockets, stop reading on purpose and see exactly when the server
closes, so they speak HTTP/1.1 directly and de-chunk the body themselves.
"""

from __future__ import annotations

import socket
import time

from tests.events.sse_parser import Dispatched, ParseResult, parse


class SSEClient:
    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None,
                 rcvbuf: int | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""
        self.body = b""
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.closed = False
        self._head_done = False

    def _pump(self, timeout: float) -> bool:
        """Read once (up to ``timeout``); False when nothing came."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.raw += data
        self._decode()
        return True

    def _decode(self) -> None:
        if not self._head_done:
            head, sep, rest = self.raw.partition(b"\r\n\r\n")
            if not sep:
                return
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            self.status = int(status_line.split()[1])
            for line in header_lines:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self._head_done = True
            self.raw = rest
        while True:
            size_line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                return
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            self.body += rest[:size]
            self.raw = rest[size + 2:]
            if size == 0:
                self.finished = True
                return

    def parsed(self) -> ParseResult:
        return parse(self.body)

    def events(self) -> list[Dispatched]:
        return parse(self.body).events

    def wait_events(self, n: int, timeout: float = 10.0) -> list[Dispatched]:
        deadline = time.monotonic() + timeout
        while len(self.events()) < n and time.monotonic() < deadline and not self.closed:
            self._pump(min(0.5, max(0.01, deadline - time.monotonic())))
        return self.events()

    def wait_for(self, needle: bytes, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.body and time.monotonic() < deadline and not self.closed:
            self._pump(min(0.5, max(0.01, deadline - time.monotonic())))
        return needle in self.body

    def read_until_closed(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._pump(min(0.5, max(0.01, deadline - time.monotonic())))
        return self.closed

    def worker(self) -> int | None:
        """The worker pid from the opening comment (``: worker <pid>``)."""
        for comment in parse(self.body).comments:
            if comment.startswith(" worker "):
                return int(comment.split()[1])
        return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
