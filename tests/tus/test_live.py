"""tus against a real gunicorn (2 gevent workers) and the real tuspy client.

The interruption tests break the connection with ``BreakingProxy`` (a TCP proxy
that cuts or stalls after N bytes), freeze a worker with SIGSTOP, or kill one
with SIGKILL; each time a *new* tuspy client resumes from the server's offset,
and the stored SHA-256 must equal the source's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from tests.live import LiveServer
from tests.tus.proxy import BreakingProxy

pytestmark = [pytest.mark.live, pytest.mark.slow]

TOKEN = "tus-live-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TUS = {"Tus-Resumable": "1.0.0", **AUTH}
OCTETS = "application/offset+octet-stream"
MiB = 1 << 20
BIG = 200 * MiB + 12345  # not a multiple of any chunk size


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "FLASKSTREAM_API_TOKEN": TOKEN,
        "FLASKSTREAM_TUS_MAX_SIZE": str(256 * MiB),
        "FLASKSTREAM_TUS_LOCK_LEASE": "3",
        "FLASKSTREAM_TUS_LOCK_POLL": "0.2",
        "FLASKSTREAM_TUS_LOCK_WAIT": "8",
        "FLASKSTREAM_TUS_CHECKPOINT_BYTES": str(16 * MiB),
    }
    live = LiveServer(tmp_path_factory.mktemp("tus-live"), env=env, workers=2,
                      database_url=database_url)
    with live:
        yield live


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("tus-src") / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = BIG
        while left:
            block = os.urandom(min(left, 4 * MiB))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return path, digest.hexdigest()


def uploader(base: str, path: Path, **kwargs: Any) -> Any:
    client = tus_client.TusClient(base + "/uploads/tus/", headers=dict(AUTH))
    return client.uploader(file_path=str(path), metadata={"filename": path.name,
                                                         "filetype": "application/octet-stream"},
                           **kwargs)


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def head(server: LiveServer, uid: str) -> requests.Response:
    return requests.head(f"{server.url}/uploads/tus/{uid}", headers=TUS, timeout=30)


def stored(server: LiveServer, uid: str) -> dict[str, Any]:
    response = requests.get(f"{server.url}/uploads/{uid}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def staging_size(server: LiveServer, database_url: str) -> Any:
    """Size of an upload's staging file (found through its row)."""
    import pg8000.native

    from flaskstream import db

    def size(uid: str) -> int:
        con = pg8000.native.Connection(**db.connect_kwargs(database_url))
        try:
            name = con.run("SELECT staging_name FROM tus_uploads WHERE id = :id", id=uid)[0][0]
        finally:
            con.close()
        return (server.instance_path / "uploads" / ".staging" / name).stat().st_size

    return size


class RssSampler(threading.Thread):
    """Peak RSS growth of the server's workers while an upload runs."""

    def __init__(self, server: LiveServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.base = server.worker_rss()
        self.peak = dict(self.base)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for pid, rss in self.server.worker_rss().items():
                self.peak[pid] = max(self.peak.get(pid, 0), rss)

    def growth(self) -> int:
        self.stop.set()
        self.join()
        return max(self.peak[pid] - self.base.get(pid, self.peak[pid]) for pid in self.peak)


def done_event(server: LiveServer, uid: str) -> str:
    """The ``done`` event replayed from ``uploads.<id>`` over SSE."""
    with requests.get(f"{server.url}/events/uploads.{uid}", params={"lastEventId": "0"},
                      stream=True, timeout=10) as response:
        assert response.status_code == 200
        event = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "done":
                return line.split(":", 1)[1].strip()
    raise AssertionError("no done event")


def test_tuspy_uploads_200mb_with_flat_memory(server: LiveServer, big_file: tuple[Path, str]
                                              ) -> None:
    path, digest = big_file
    sampler = RssSampler(server)
    sampler.start()
    up = uploader(server.url, path)
    up.upload()
    growth = sampler.growth()
    uid = upload_id(up.url)
    body = stored(server, uid)
    assert body["sha256"] == digest and body["size"] == BIG
    assert body["filename"] == "big.bin"
    assert growth < 32 * MiB, f"worker RSS grew {growth / MiB:.1f} MiB"
    listed = requests.get(f"{server.url}/uploads", timeout=10).json()
    assert uid in {f["id"] for f in listed["uploads"]}
    ranged = requests.get(f"{server.url}/uploads/{uid}/content",
                          headers={"Range": "bytes=-100"}, timeout=10)
    assert ranged.status_code == 206
    with open(path, "rb") as f:
        f.seek(-100, os.SEEK_END)
        assert ranged.content == f.read()
    assert f'"sha256":"{digest}"' in done_event(server, uid).replace(" ", "")
    # the tus resource reports completion
    response = head(server, uid)
    assert response.headers["Upload-Offset"] == response.headers["Upload-Length"] == str(BIG)


def test_tuspy_resumes_after_connection_cut(server: LiveServer, big_file: tuple[Path, str],
                                            staging_size: Any) -> None:
    path, digest = big_file
    cut_at = 90 * MiB
    with BreakingProxy(server.port, cut_at, mode="cut") as proxy:
        first = uploader(proxy.url, path)
        with pytest.raises((TusUploadFailed, TusCommunicationError)):
            first.upload()
        assert proxy.broken.is_set()
    uid = upload_id(first.url)
    # the bytes that reached the server are kept: all but the PATCH's headers, at most
    deadline = time.monotonic() + 10
    while (offset := int(head(server, uid).headers["Upload-Offset"])) == 0 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cut_at - MiB < offset < cut_at
    assert staging_size(uid) == offset
    second = uploader(server.url, path, url=f"{server.url}/uploads/tus/{uid}")
    assert second.offset == offset  # a new client asked the server where to resume
    second.upload()
    assert stored(server, uid)["sha256"] == digest


def test_takeover_from_a_client_that_vanished(server: LiveServer, tmp_path: Path) -> None:
    """The server never learns the first client is gone; the resuming client takes over."""
    path = tmp_path / "stall.bin"
    data = os.urandom(40 * MiB + 3)
    path.write_bytes(data)
    with BreakingProxy(server.port, 24 * MiB, mode="stall") as proxy:
        first = uploader(proxy.url, path)
        with pytest.raises((TusUploadFailed, TusCommunicationError)):
            first.upload()
        uid = upload_id(first.url)
        time.sleep(0.5)  # the server's PATCH is now blocked reading a silent socket
        started = time.monotonic()
        second = uploader(server.url, path, url=f"{server.url}/uploads/tus/{uid}")
        took = time.monotonic() - started
        # the stalled PATCH committed every body byte the server had received
        assert 24 * MiB - 4096 < second.offset < 24 * MiB
        assert took < 3, "HEAD waited for a lease instead of taking over"
        second.upload()
    assert stored(server, uid)["sha256"] == hashlib.sha256(data).hexdigest()


def test_two_workers_share_an_upload(server: LiveServer) -> None:
    """Half the upload through one worker, the rest through the other (SIGSTOP steers)."""
    w1, w2 = server.worker_pids()[:2]
    data = os.urandom(3 * MiB + 1)
    half = len(data) // 2
    os.kill(w2, signal.SIGSTOP)
    try:
        created = requests.post(f"{server.url}/uploads/tus/", headers={
            **TUS, "Upload-Length": str(len(data))}, timeout=10)
        url = server.url + created.headers["Location"]
        first = requests.patch(url, data=data[:half], headers={
            **TUS, "Upload-Offset": "0", "Content-Type": OCTETS}, timeout=10)
        assert first.status_code == 204
    finally:
        os.kill(w2, signal.SIGCONT)
    os.kill(w1, signal.SIGSTOP)
    try:
        offset = requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"]
        assert offset == str(half)
        rest = requests.patch(url, data=data[half:], headers={
            **TUS, "Upload-Offset": offset, "Content-Type": OCTETS}, timeout=10)
        assert rest.status_code == 204 and rest.headers["Upload-Offset"] == str(len(data))
    finally:
        os.kill(w1, signal.SIGCONT)
    assert stored(server, upload_id(url))["sha256"] == hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def stalled_on_first_worker(server: LiveServer, path: Path, stall_at: int
                            ) -> Iterator[tuple[Any, int, int]]:
    """A tuspy upload of ``path`` whose connection stalls after ``stall_at`` bytes.

    The second worker is SIGSTOPped first, so the first one takes the PATCH and is
    left blocked reading the silent socket. Yields ``(uploader, first_pid,
    second_pid)`` inside the proxy; on exit every worker still alive is SIGCONTinued.
    """
    w1, w2 = server.worker_pids()[:2]
    os.kill(w2, signal.SIGSTOP)
    try:
        with BreakingProxy(server.port, stall_at, mode="stall") as proxy:
            first = uploader(proxy.url, path)
            with pytest.raises((TusUploadFailed, TusCommunicationError)):
                first.upload()
            yield first, w1, w2
    finally:
        for pid in (w1, w2):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_frozen_worker_is_waited_out_and_cannot_write_after(server: LiveServer, tmp_path: Path,
                                                            staging_size: Any) -> None:
    """A holder that stops answering loses its lease; when it wakes it writes nothing."""
    path = tmp_path / "frozen.bin"
    data = os.urandom(8 * MiB)
    path.write_bytes(data)
    with stalled_on_first_worker(server, path, 5 * MiB) as (first, w1, w2):
        time.sleep(0.3)
        os.kill(w1, signal.SIGSTOP)  # frozen mid-PATCH, lease held, nothing committed
        os.kill(w2, signal.SIGCONT)
        uid = upload_id(first.url)
        started = time.monotonic()
        second = uploader(server.url, path, url=f"{server.url}/uploads/tus/{uid}")
        assert time.monotonic() - started >= 1.5  # waited for the lease to run out
        assert second.offset == 0  # the frozen PATCH's bytes were never confirmed
        assert staging_size(uid) == 0
        second.upload(stop_at=4 * MiB)
        os.kill(w1, signal.SIGCONT)  # wakes, finds its lease gone, touches nothing
        time.sleep(1.0)
        assert int(head(server, uid).headers["Upload-Offset"]) == 4 * MiB
        second.upload()
    assert stored(server, uid)["sha256"] == hashlib.sha256(data).hexdigest()


def test_killed_worker_loses_only_unconfirmed_bytes(server: LiveServer, tmp_path: Path,
                                                    staging_size: Any) -> None:
    """SIGKILL mid-PATCH: HEAD reports the last fsync'd checkpoint; the tail is cut; resume works."""
    path = tmp_path / "killed.bin"
    data = os.urandom(60 * MiB + 7)
    path.write_bytes(data)
    with stalled_on_first_worker(server, path, 40 * MiB) as (first, w1, _w2):
        time.sleep(0.5)
        os.kill(w1, signal.SIGKILL)
        psutil.Process(w1).wait(timeout=5) if psutil.pid_exists(w1) else None
    uid = upload_id(first.url)
    offset = int(head(server, uid).headers["Upload-Offset"])
    assert 16 * MiB <= offset < 40 * MiB  # checkpoints every 16 MiB were durable
    assert staging_size(uid) == offset  # unconfirmed tail truncated
    second = uploader(server.url, path, url=f"{server.url}/uploads/tus/{uid}")
    assert second.offset == offset
    second.upload()
    assert stored(server, uid)["sha256"] == hashlib.sha256(data).hexdigest()


# --- protocol errors against the live server ------------------------------------------------


def create(server: LiveServer, length: int, **headers: str) -> str:
    response = requests.post(f"{server.url}/uploads/tus/", headers={
        **TUS, "Upload-Length": str(length), **headers}, timeout=10)
    assert response.status_code == 201, response.text
    return server.url + response.headers["Location"]


def patch(url: str, offset: int, body: bytes, **headers: str) -> requests.Response:
    return requests.patch(url, data=body, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS, **headers}, timeout=10)


def error_code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


def test_live_protocol_errors(server: LiveServer) -> None:
    url = create(server, 11)
    # checksum mismatch: 460, chunk discarded
    wrong = base64.b64encode(hashlib.sha1(b"hello there").digest()).decode()
    response = patch(url, 0, b"hello world", **{"Upload-Checksum": f"sha1 {wrong}"})
    assert response.status_code == 460 and error_code(response) == "TUS_CHECKSUM_MISMATCH"
    assert requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"] == "0"
    # offset mismatch: 409
    assert patch(url, 0, b"hello").status_code == 204
    response = patch(url, 0, b"hello")
    assert response.status_code == 409 and error_code(response) == "TUS_OFFSET_MISMATCH"
    # wrong content type: 415
    response = requests.patch(url, data=b" world", headers={
        **TUS, "Upload-Offset": "5", "Content-Type": "application/octet-stream"}, timeout=10)
    assert response.status_code == 415 and error_code(response) == "TUS_CONTENT_TYPE"
    # unknown version: 412 with Tus-Version, request not processed
    response = requests.patch(url, data=b" world", headers={
        **AUTH, "Tus-Resumable": "0.2.2", "Upload-Offset": "5", "Content-Type": OCTETS}, timeout=10)
    assert response.status_code == 412 and response.headers["Tus-Version"] == "1.0.0"
    assert requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"] == "5"
    # oversize: 413 at creation, and a body longer than the upload
    response = requests.post(f"{server.url}/uploads/tus/", headers={
        **TUS, "Upload-Length": str(256 * MiB + 1)}, timeout=10)
    assert response.status_code == 413 and error_code(response) == "TUS_MAX_SIZE_EXCEEDED"
    assert patch(url, 5, b" world!").status_code == 413
    # writes need the token; OPTIONS advertises the extensions without one
    assert requests.post(f"{server.url}/uploads/tus/", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "1"}, timeout=10).status_code == 401
    options = requests.options(f"{server.url}/uploads/tus/", timeout=10)
    assert options.status_code == 204 and "Tus-Resumable" in options.headers
    assert options.headers["Tus-Max-Size"] == str(256 * MiB)
    # termination: 204, then 410 on every method
    assert patch(url, 5, b" world").status_code == 204
    uid = upload_id(url)
    assert requests.delete(url, headers=TUS, timeout=10).status_code == 204
    assert requests.head(url, headers=TUS, timeout=10).status_code in (404, 410)
    assert patch(url, 11, b"").status_code in (404, 410)
    assert requests.get(f"{server.url}/uploads/{uid}", timeout=10).status_code == 404


def test_cors_exposes_tus_headers(start_live_server: Any) -> None:
    live = start_live_server(env={"FLASKSTREAM_CORS_ALLOWED_ORIGINS": '["https://app.example"]'})
    origin = {"Origin": "https://app.example"}
    preflight = requests.options(f"{live.url}/uploads/tus/", headers={
        **origin, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "tus-resumable,upload-offset,upload-checksum"}, timeout=10)
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert all(h in allowed for h in ("tus-resumable", "upload-offset", "upload-checksum"))
    created = requests.post(f"{live.url}/uploads/tus/", headers={
        **origin, "Tus-Resumable": "1.0.0", "Upload-Length": "3"}, timeout=10)
    exposed = {h.strip().lower() for h in created.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"location", "upload-offset", "upload-expires", "tus-resumable", "upload-length",
            "upload-metadata"} <= exposed


def test_expiry_on_the_live_server(start_live_server: Any) -> None:
    live = start_live_server(env={"FLASKSTREAM_TUS_EXPIRATION_SECONDS": "1",
                                  "FLASKSTREAM_TUS_JANITOR_INTERVAL": "0.5"})
    base = f"{live.url}/uploads/tus/"
    tus = {"Tus-Resumable": "1.0.0"}
    created = requests.post(base, headers={**tus, "Upload-Length": "10"}, timeout=10)
    assert "Upload-Expires" in created.headers
    url = live.url + created.headers["Location"]
    staging = live.instance_path / "uploads" / ".staging"
    assert len(list(staging.glob("tus-*.part"))) == 1
    # trigger the janitor in this worker with any tus request, then wait it out
    requests.options(base, timeout=10)
    deadline = time.monotonic() + 10
    while list(staging.glob("tus-*.part")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(staging.glob("tus-*.part")), "the janitor did not remove the expired upload"
    assert requests.head(url, headers=tus, timeout=10).status_code == 410
    response = requests.patch(url, data=b"x", headers={**tus, "Upload-Offset": "0",
                                                       "Content-Type": OCTETS}, timeout=10)
    assert response.status_code == 410 and error_code(response) == "GONE"


def test_idle_patch_keeps_its_bytes_and_lets_go(start_live_server: Any) -> None:
    """A client that stops sending mid-body: after the idle timeout the server keeps the
    bytes it got, closes the connection, and the upload can be resumed."""
    import socket

    live = start_live_server(env={"FLASKSTREAM_UPLOAD_IDLE_TIMEOUT": "1",
                                  "FLASKSTREAM_TUS_LOCK_POLL": "0.2"})
    tus = {"Tus-Resumable": "1.0.0"}
    created = requests.post(f"{live.url}/uploads/tus/", headers={**tus, "Upload-Length": "5000"},
                            timeout=10)
    path = created.headers["Location"]
    data = os.urandom(5000)
    with socket.create_connection(("127.0.0.1", live.port)) as sock:
        sock.sendall((f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                      f"Upload-Offset: 0\r\nContent-Type: {OCTETS}\r\nContent-Length: 5000\r\n\r\n"
                      ).encode() + data[:1200])
        sock.settimeout(10)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    head_offset = requests.head(live.url + path, headers=tus, timeout=10).headers["Upload-Offset"]
    assert head_offset == "1200"
    rest = requests.patch(live.url + path, data=data[1200:], headers={
        **tus, "Upload-Offset": "1200", "Content-Type": OCTETS}, timeout=10)
    assert rest.status_code == 204
    assert stored(live, upload_id(path))["sha256"] == hashlib.sha256(data).hexdigest()
