"""Zero-copy ranges (adapters/sendfile.py) in a real gunicorn gevent worker: the fast
path's one-chunk ranges leave by ``os.sendfile`` — byte-exact, counted exactly in
/metrics — a client that stops reading parks only its own greenlet, and whole files
and multi-range answers still stream as before.

That the bytes went file → socket inside the kernel is read from the worker's
``/proc/<pid>/io``: ``sendfile`` adds what it moves to ``wchar``, while ``send`` on a
socket (the ``pread`` path) adds nothing there.
"""

from __future__ import annotations

import http.client
import random
import socket
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.media.conftest import MediaServer
from tests.ops.test_metrics import scrape, value

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(sys.platform != "linux", reason="/proc/<pid>/io is Linux's")]

CHUNK = 256 * 1024  # FLASKSTREAM_MEDIA_CHUNK_SIZE of the media_server fixture


def worker_wchar(server: MediaServer) -> int:
    (pid,) = server.server.worker_pids()
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/<pid>/io")


def media_bytes(server: MediaServer) -> float:
    return value(scrape(server.url), "flaskstream_media_bytes_sent_total")


def random_ranges(size: int, count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` (start, stop) ranges of at most a chunk, the file's last byte included."""
    rng = random.Random(seed)
    spans = [(size - 1, size), (0, 1), (size - CHUNK, size)]
    while len(spans) < count:
        length = rng.choice((1, 100, 65536, CHUNK, rng.randrange(1, CHUNK)))
        start = rng.randrange(0, size - length)
        spans.append((start, start + length))
    return spans


def test_one_chunk_ranges_go_out_by_sendfile_byte_exact_and_counted(
        media_server: MediaServer) -> None:
    blob = media_server.path("blob.bin").read_bytes()
    spans = random_ranges(len(blob), 60, seed=17)
    total = sum(stop - start for start, stop in spans)
    conn = http.client.HTTPConnection(media_server.host, media_server.port, timeout=10)
    conn.request("GET", "/media/blob.bin", headers={"Range": "bytes=0-0"})  # warm the cache
    conn.getresponse().read()
    counted, wchar = media_bytes(media_server), worker_wchar(media_server)
    for start, stop in spans:  # one keep-alive connection: each body must end exactly
        conn.request("GET", "/media/blob.bin", headers={"Range": f"bytes={start}-{stop - 1}"})
        response = conn.getresponse()
        assert response.status == 206
        assert response.getheader("Content-Range") == f"bytes {start}-{stop - 1}/{len(blob)}"
        assert response.read() == blob[start:stop]
    conn.close()
    # Every byte of the bodies went through sendfile (headers and logs are far fewer).
    assert worker_wchar(media_server) - wchar >= total
    assert media_bytes(media_server) - counted == total


def test_a_client_that_stops_reading_parks_only_itself(media_server: MediaServer) -> None:
    blob = media_server.path("blob.bin").read_bytes()
    stalled = socket.create_connection((media_server.host, media_server.port), timeout=10)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = (b"GET /media/blob.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-%d\r\n\r\n"
               % (CHUNK - 1))
    try:
        stalled.sendall(request * 64)  # 16 MiB of answers asked for, none read
        time.sleep(0.3)  # the worker fills the socket and waits for it to drain
        with requests.Session() as other:
            for start in (0, 1 << 20, len(blob) - CHUNK):
                got = other.get(media_server.media_url("blob.bin"), timeout=5,
                                headers={"Range": f"bytes={start}-{start + CHUNK - 1}"})
                assert got.status_code == 206 and got.content == blob[start:start + CHUNK]
            assert other.get(f"{media_server.url}/livez", timeout=5).status_code == 200
        # Reading it now, the stalled client gets its first answer whole and in order.
        stalled.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            head += stalled.recv(4096)
        header, _, body = head.partition(b"\r\n\r\n")
        assert header.startswith(b"HTTP/1.1 206")
        while len(body) < CHUNK:
            body += stalled.recv(65536)
        assert body[:CHUNK] == blob[:CHUNK]
    finally:
        stalled.close()
    assert requests.get(f"{media_server.url}/livez", timeout=5).status_code == 200


def test_whole_files_and_multiple_ranges_still_stream(media_server: MediaServer) -> None:
    blob = media_server.path("blob.bin").read_bytes()
    whole = requests.get(media_server.media_url("blob.bin"), timeout=30)
    assert whole.status_code == 200 and whole.content == blob
    big = requests.get(media_server.media_url("blob.bin"), timeout=30,
                       headers={"Range": f"bytes=5-{5 + 3 * CHUNK}"})  # more than a chunk
    assert big.status_code == 206 and big.content == blob[5:6 + 3 * CHUNK]
    multi = requests.get(media_server.media_url("blob.bin"), timeout=30,
                         headers={"Range": "bytes=0-9,100-199"})
    assert multi.status_code == 206
    assert multi.headers["Content-Type"].startswith("multipart/byteranges")
    assert blob[0:10] in multi.content and blob[100:200] in multi.content
