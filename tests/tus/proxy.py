"""A TCP proxy that breaks connections on purpose, like a train's Wi-Fi.

Each accepted connection is forwarded to the target. Once a connection has
carried ``limit`` bytes from the client:

- ``mode="cut"``: both sides are closed — the server sees the body end early.
- ``mode="stall"``: the client side is closed but the server side is kept open
  and silent — the server's request hangs as it would for a client that vanished
  without a FIN/RST reaching the server (a dead NAT, a phone gone out of range).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class BreakingProxy:
    def __init__(self, target_port: int, limit: int, mode: str = "cut") -> None:
        assert mode in ("cut", "stall")
        self.target_port = target_port
        self.limit = limit
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.broken = threading.Event()
        self._held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        sent = 0
        try:
            while True:
                data = client.recv(1 << 16)
                if not data:
                    upstream.shutdown(socket.SHUT_WR)
                    return
                if sent + len(data) >= self.limit:
                    upstream.sendall(data[: self.limit - sent])
                    self._break(client, upstream)
                    return
                upstream.sendall(data)
                sent += len(data)
        except OSError:
            self._close(client, upstream)

    def _down(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(1 << 16):
                client.sendall(data)
        except OSError:
            pass
        if not self.broken.is_set():
            self._close(client)

    def _break(self, client: socket.socket, upstream: socket.socket) -> None:
        self.broken.set()
        # RST the client so its send fails at once instead of filling buffers.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self._close(client)
        if self.mode == "cut":
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)  # close() alone waits for the other thread
            self._close(upstream)
        else:
            self._held.append(upstream)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._close(self.listener, *self._held)

    def __enter__(self) -> BreakingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
