"""Finding 5 of issue 12 against a live gunicorn: an anonymous HEAD cannot stop a tus writer.

Before: with ``API_TOKEN`` set, a HEAD without the token asked for the upload's
lease, and the PATCH in flight was interrupted at its next renewal with
``423 UPLOAD_TAKEN_OVER``. Now only a request with the token may take over; an
anonymous HEAD reads the committed offset and the PATCH completes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.live import LiveServer
from tests.tus.live_support import AUTH, OCTETS, TOKEN, MiB, stored

pytestmark = [pytest.mark.live, pytest.mark.db, pytest.mark.slow]

ANONYMOUS = {"Tus-Resumable": "1.0.0"}
PIECES, PIECE = 40, 64 * 1024  # 2.5 MiB sent over ~4 s, so many renewals happen meanwhile


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"FLASKSTREAM_API_TOKEN": TOKEN, "FLASKSTREAM_TUS_LOCK_LEASE": "3",
           "FLASKSTREAM_TUS_LOCK_POLL": "0.2", "FLASKSTREAM_TUS_LOCK_WAIT": "8",
           "FLASKSTREAM_TUS_MAX_SIZE": str(64 * MiB)}
    with LiveServer(tmp_path_factory.mktemp("hostile-tus"), env=env,
                    database_url=database_url) as live:
        yield live


class SlowPatch(threading.Thread):
    """A PATCH of the whole upload whose body trickles in; keeps the server's answer."""

    def __init__(self, server: LiveServer, path: str, data: bytes) -> None:
        super().__init__(daemon=True)
        self.server, self.path, self.data = server, path, data
        self.answer = b""

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=30) as sock:
            sock.sendall((f"PATCH {self.path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                          f"Authorization: {AUTH['Authorization']}\r\nUpload-Offset: 0\r\n"
                          f"Content-Type: {OCTETS}\r\nContent-Length: {len(self.data)}\r\n"
                          "Connection: close\r\n\r\n").encode())
            try:
                for i in range(0, len(self.data), PIECE):
                    sock.sendall(self.data[i:i + PIECE])
                    time.sleep(0.1)
            except OSError:  # the server answered early and closed: its answer is read below
                pass
            while chunk := sock.recv(65536):
                self.answer += chunk


@pytest.mark.parametrize("anonymous", [ANONYMOUS, {**ANONYMOUS, "Authorization": "Bearer no"}],
                         ids=["no-token", "wrong-token"])
def test_anonymous_heads_do_not_take_over_a_patch_in_flight(server: LiveServer,
                                                            anonymous: dict[str, str]) -> None:
    data = os.urandom(PIECES * PIECE)
    created = requests.post(f"{server.url}/uploads/tus/", headers={
        **ANONYMOUS, **AUTH, "Upload-Length": str(len(data))}, timeout=10)
    assert created.status_code == 201
    path = created.headers["Location"]
    patch = SlowPatch(server, path, data)
    patch.start()
    heads = []
    while patch.is_alive():
        response = requests.head(server.url + path, headers=anonymous, timeout=10)
        heads.append((response.status_code, int(response.headers["Upload-Offset"])))
        time.sleep(0.05)
    patch.join()
    status_line, _, rest = patch.answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 204"), patch.answer[:300]
    assert f"Upload-Offset: {len(data)}".encode() in rest
    assert len(heads) >= 20, "the HEADs did not overlap the PATCH"
    assert {status for status, _ in heads} == {200}
    assert all(0 <= offset <= len(data) for _, offset in heads)
    upload_id = path.rsplit("/", 1)[1]
    assert stored(server, upload_id)["sha256"] == hashlib.sha256(data).hexdigest()
    assert requests.head(server.url + path, headers=anonymous, timeout=10
                         ).headers["Upload-Offset"] == str(len(data))
