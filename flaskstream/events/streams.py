"""Open streams and their per-subscriber queues (no Flask, no database).

``Stream`` is what admission counts and shutdown ends; ``Subscriber`` adds the
bounded queue the worker's listener fills. Both are woken through one
``threading.Event`` (a gevent event under monkey-patching), so a stream sleeps
without a greenlet or timer of its own beyond the heartbeat wait.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple


class Stream:
    """An open streaming response: admission counting, shutdown, disconnect wake-ups."""

    __slots__ = ("kind", "wake", "reason", "peer_check", "sock", "__weakref__")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.wake = threading.Event()
        self.reason: str | None = None  # set once: "shutdown", "slow", "disconnect"
        self.peer_check = False  # the client socket became readable: EOF or stray bytes
        self.sock: Any = None  # the client socket, when the server exposes it

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.wake.set()

    def finish(self, *, close: bool = False) -> None:
        """At shutdown, stop the server waiting for a next request on this connection.

        gunicorn decides keep-alive when the response starts; a stream that began
        before SIGTERM would otherwise hold the worker for ``keepalive`` seconds
        after its last byte. Shutting the read side makes that wait see EOF at once;
        the final chunk still goes out. ``close=True`` does it whatever the reason.
        """
        if (close or self.reason == "shutdown") and self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def abort(self) -> None:
        """Shut the client socket down so a write blocked on a full socket fails now.

        A stream stuck in ``sendall`` to a client that stopped reading never gets
        back to its loop to see ``reason``; without this it would hold its
        greenlet until TCP gives up (many minutes). Bytes already written still
        reach the client before the FIN.
        """
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait(self, timeout: float) -> bool:
        """Sleep until woken or ``timeout``; True if woken."""
        woken = self.wake.wait(timeout)
        self.wake.clear()
        return woken


class Delivery(NamedTuple):
    """An event ready for the wire: encoded once per worker, not once per subscriber."""

    id: int
    payload: bytes


class Subscriber(Stream):
    """A stream that receives channel events through a bounded queue."""

    __slots__ = ("channels", "queue", "maxsize")

    def __init__(self, channels: Iterable[str], maxsize: int) -> None:
        super().__init__("subscribe")
        self.channels = tuple(channels)
        self.queue: deque[Delivery] = deque()
        self.maxsize = maxsize

    def offer(self, event: Delivery) -> bool:
        """Queue without ever blocking the caller; on overflow the stream ends."""
        if self.reason is not None:
            return False
        if len(self.queue) >= self.maxsize:
            self.queue.clear()
            self.end("slow")
            self.abort()
            return False
        self.queue.append(event)
        self.wake.set()
        return True
