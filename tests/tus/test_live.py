"""tus against a real gunicorn (2 gevent workers) and the real tuspy client.

The interruption tests break the connection with ``BreakingProxy`` (a TCP proxy
that cuts or stalls after N bytes), freeze a worker with SIGSTOP, or kill one
with SIGKILL; each time a *new* tuspy client resumes from the server's offset,
and the stored SHA-256 must equal the source's.
"""

from __future__ import annotations

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
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from tests.live import LiveServer
from tests.tus.live_support import OCTETS, TUS, MiB, head, stored, upload_id, uploader
from tests.tus.proxy import BreakingProxy

pytestmark = [pytest.mark.live, pytest.mark.slow]

BIG = 200 * MiB + 12345  # not a multiple of any chunk size


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



@pytest.fixture(scope="module")
def staging_size(server: LiveServer, database_url: str) -> Any:
    """Size of an upload's staging file (found through its row)."""
    import pg8000.native

    from flaskstream import db

    def size(uid: str) -> int:
        con = pg8000.native.Connection(**db.connect_kwargs(database_url))
        try:
            name = con.run("SELECT staging_name FROM flaskstream.tus_uploads WHERE id = :id", id=uid)[0][0]
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
