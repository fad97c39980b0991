"""Uploads against a real gunicorn (gevent worker): integrity, memory, limits, faults."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.live import LiveServer, wait_for
from tests.uploads.tmpfs import small_tmpfs

pytestmark = [pytest.mark.live, pytest.mark.db]

KiB, MiB, GIB = 1024, 1024 * 1024, 1024 ** 3
FILE_LIMIT = 129 * MiB


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from tests.conftest import truncate_all

    truncate_all(database_url)
    path = tmp_path_factory.mktemp("uploads-live")
    live = LiveServer(path, database_url=database_url, env={
        "FLASKSTREAM_LIMIT_FILE_SIZE": str(FILE_LIMIT),
        "FLASKSTREAM_UPLOAD_IDLE_TIMEOUT": "2",
        "FLASKSTREAM_UPLOAD_DIR": str(path / "uploads"),
    })
    with live:
        yield live


def upload_dir(server: LiveServer) -> Path:
    return server.instance_path / "uploads"


def staging_files(server: LiveServer) -> list[str]:
    staging = upload_dir(server) / ".staging"
    return sorted(os.listdir(staging)) if staging.exists() else []


def stored_files(server: LiveServer) -> set[str]:
    return {p.name for p in upload_dir(server).iterdir() if p.is_file()}



def sizes_around_64k() -> list[int]:
    return [k * 64 * KiB + d for k in (1, 2, 3, 4, 16) for d in range(-8, 9)]


def test_random_files_around_64k_multiples_are_byte_exact(server: LiveServer) -> None:
    rng = __import__("random").Random(64)
    sizes = sizes_around_64k()
    blobs = [rng.randbytes(n) for n in sizes]
    # Multipart, several files per request, as a browser would send them.
    for start in range(0, len(blobs), 17):
        batch = blobs[start:start + 17]
        res = requests.post(server.url + "/uploads", files=[
            ("file", (f"f{start + i}.bin", blob, "application/octet-stream"))
            for i, blob in enumerate(batch)], timeout=60)
        assert res.status_code == 201, res.text
        got = [(f["size"], f["sha256"]) for f in res.json()["files"]]
        assert got == [(len(b), hashlib.sha256(b).hexdigest()) for b in batch]
    # Chunked multipart with awkward chunk sizes, and raw PUT.
    boundary = "liveBoundary0123"
    for n, blob in zip(sizes[::5], blobs[::5], strict=True):
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; "
                f"filename=\"c.bin\"\r\n\r\n").encode() + blob + f"\r\n--{boundary}--\r\n".encode()

        def pieces(body: bytes = body, step: int = 65_531) -> Iterator[bytes]:
            for i in range(0, len(body), step):
                yield body[i:i + step]

        res = requests.post(server.url + "/uploads", data=pieces(), timeout=60,
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert res.status_code == 201, res.text
        assert res.json()["files"][0]["sha256"] == hashlib.sha256(blob).hexdigest()
        put = requests.put(server.url + f"/uploads/raw{n}.bin", data=blob, timeout=60)
        assert put.json()["sha256"] == hashlib.sha256(blob).hexdigest()
        assert requests.get(server.url + put.json()["url"], timeout=60).content == blob
    assert staging_files(server) == []


def peak_rss_during(server: LiveServer, action: object) -> tuple[int, int, object]:
    """(baseline, peak) of the largest worker RSS while ``action()`` runs."""
    baseline = max(server.worker_rss().values())
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, *server.worker_rss().values())
            time.sleep(0.02)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        result = action()  # type: ignore[operator]
    finally:
        stop.set()
        thread.join()
    return baseline, peak, result


@pytest.mark.slow
def test_curl_multipart_1gib_flat_memory(start_live_server: Any, tmp_path: Path) -> None:
    """The issue's own check: ``curl -F file=@big.bin`` of 1 GiB, SHA-256 equal, RSS flat."""
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        block = os.urandom(MiB)
        for i in range(1024):  # every MiB different: a shifted block would hide misplaced data
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            f.write(chunk)
    live = start_live_server(env={"FLASKSTREAM_LIMIT_FILE_SIZE": str(2 * GIB),
                                  "FLASKSTREAM_LIMIT_BODY_SIZE": str(2 * GIB)})
    # Warm up: the first request of a worker imports and connects.
    requests.put(live.url + "/uploads/warm.bin", data=b"w" * MiB, timeout=30)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-sS", "-F", f"file=@{big}", live.url + "/uploads"],
                              capture_output=True, text=True, timeout=300)

    try:
        baseline, peak, result = peak_rss_during(live, run)
        assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
        body = json.loads(result.stdout)  # type: ignore[attr-defined]
        assert body["files"][0]["sha256"] == digest.hexdigest()
        assert body["files"][0]["size"] == GIB
        stored = live.instance_path / "uploads" / body["files"][0]["id"]
        assert stored.stat().st_size == GIB
        assert peak - baseline < 16 * MiB, (baseline, peak)
    finally:
        big.unlink()


def test_over_limit_upload_leaves_nothing_and_stops_early(server: LiveServer) -> None:
    before = stored_files(server)
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        while sent < FILE_LIMIT + 64 * MiB:
            sent += MiB
            yield b"\0" * MiB

    try:
        res = requests.put(server.url + "/uploads/too-big.bin", data=endless(), timeout=60)
        assert res.status_code == 413 and res.json()["error"]["code"] == "LIMIT_FILE_SIZE"
    except requests.ConnectionError:
        pass  # the server may close before the client finished sending: also a refusal
    assert sent < FILE_LIMIT + 32 * MiB  # reading stopped at the limit (+ socket buffers)
    assert wait_for(lambda: staging_files(server) == [])
    assert stored_files(server) == before
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    # A declared Content-Length over the limit is refused before reading a byte.
    res = requests.put(server.url + "/uploads/x.bin", data=b"", timeout=10,
                       headers={"Content-Length": str(FILE_LIMIT + 1)})
    assert res.json()["error"]["code"] == "LIMIT_FILE_SIZE"


def raw_request(server: LiveServer, head: bytes, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head + body)
    return sock


def test_client_disconnect_mid_upload_cleans_up(server: LiveServer) -> None:
    pids = server.worker_pids()
    before = stored_files(server)
    boundary = "dc0123"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"d.bin\"\r\n"
            "\r\n").encode()
    head = (f"POST /uploads HTTP/1.1\r\nHost: x\r\nContent-Length: {50 * MiB}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    sock = raw_request(server, head, part + os.urandom(3 * MiB))
    assert wait_for(lambda: staging_files(server) != [], 5)
    sock.close()
    assert wait_for(lambda: staging_files(server) == [])
    assert stored_files(server) == before
    assert server.worker_pids() == pids
    res = requests.put(server.url + "/uploads/after.txt", data=b"alive", timeout=10)
    assert res.status_code == 201


def test_body_shorter_than_content_length_is_never_stored(server: LiveServer) -> None:
    """gunicorn reports a mid-body disconnect as plain EOF: the declared length must catch it.

    The client half-closes after part of the body (so it can still read the
    answer); for multipart, the part sent is a complete form on its own. A
    chunked body cut inside a chunk is caught by gunicorn's chunk parser.
    """
    before = stored_files(server)
    boundary = "short0123"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"s.bin\""
            "\r\n\r\n").encode() + os.urandom(MiB) + f"\r\n--{boundary}--\r\n".encode()
    heads = [
        f"PUT /uploads/short.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * MiB}\r\n\r\n",
        f"POST /uploads HTTP/1.1\r\nHost: x\r\nContent-Length: {len(form) + 10}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n",
        # Chunked: the body stops inside a chunk that announced 1 MiB.
        "PUT /uploads/short2.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
    bodies = [os.urandom(MiB), form, b"100000\r\n" + os.urandom(64 * KiB)]
    for head, body in zip(heads, bodies, strict=True):
        sock = raw_request(server, head.encode(), body)
        try:
            sock.shutdown(socket.SHUT_WR)
            response = b""
            while data := sock.recv(65536):
                response += data
        finally:
            sock.close()
        assert response.startswith(b"HTTP/1.1 400"), response[:200]
        assert b"CLIENT_DISCONNECTED" in response
    assert wait_for(lambda: staging_files(server) == [])
    assert stored_files(server) == before


def test_idle_upload_gets_408_and_cleanup(server: LiveServer) -> None:
    head = (b"PUT /uploads/slow.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    sock = raw_request(server, head, b"x" * 1000)
    try:
        start = time.monotonic()
        response = b""
        while b"}}" not in response:
            data = sock.recv(65536)
            if not data:
                break
            response += data
        assert response.startswith(b"HTTP/1.1 408"), response[:200]
        assert b"UPLOAD_IDLE_TIMEOUT" in response
        assert 1.5 < time.monotonic() - start < 10
    finally:
        sock.close()
    assert wait_for(lambda: staging_files(server) == [])


def test_disk_full_is_507_under_gunicorn(start_live_server: object, tmp_path: Path) -> None:
    """A real ENOSPC: UPLOAD_DIR on a 4 MiB tmpfs (skipped where mount is not allowed)."""
    with small_tmpfs(tmp_path, "4m") as mount_point:
        live = start_live_server(env={"FLASKSTREAM_UPLOAD_DIR": str(mount_point)})  # type: ignore[operator]
        big = os.urandom(4 * MiB + 512 * KiB)  # the rest after ENOSPC fits the drain
        res = requests.post(live.url + "/uploads", files={"file": ("big.bin", big)}, timeout=30)
        assert res.status_code == 507 and res.json()["error"]["code"] == "INSUFFICIENT_STORAGE"
        res = requests.put(live.url + "/uploads/big.bin", data=big, timeout=30)
        assert res.status_code == 507
        assert [p for p in mount_point.rglob("*") if p.is_file()] == []
        ok = requests.put(live.url + "/uploads/small.bin", data=b"s" * MiB, timeout=30)
        assert ok.status_code == 201
        assert requests.get(live.url + ok.json()["url"], timeout=30).content == b"s" * MiB
        live.stop()
