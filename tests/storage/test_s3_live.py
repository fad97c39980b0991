"""Uploads into S3 through a real gunicorn (gevent worker) and moto's S3 server:
curl uploads stored exactly, ranged reads, a cut-off upload leaving nothing, flat memory."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.live import LiveServer, wait_for
from tests.storage.moto import S3Bucket
from tests.uploads.test_live import peak_rss_during

pytestmark = [pytest.mark.live, pytest.mark.db]

MiB, GiB = 1024 * 1024, 1024 ** 3
PART = 5 * MiB


def s3_env(bucket: S3Bucket, url: str, **extra: str) -> dict[str, str]:
    return {"FLASKSTREAM_STORAGE_URL": url, "FLASKSTREAM_STORAGE_PART_SIZE": str(PART), **extra}


@pytest.fixture(scope="module")
def s3_server(database_url: str, s3_bucket: S3Bucket,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    from tests.conftest import truncate_all

    truncate_all(database_url)
    url = s3_bucket.url()
    live = LiveServer(tmp_path_factory.mktemp("s3-live"), database_url=database_url,
                      env=s3_env(s3_bucket, url))
    with live:
        yield live, S3Bucket.prefix_of(url)


def test_curl_upload_into_the_bucket_then_ranges(s3_server: tuple[LiveServer, str],
                                                 s3_bucket: S3Bucket, tmp_path: Path) -> None:
    live, prefix = s3_server
    data = random.Random(3).randbytes(2 * PART + 4321)
    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    done = subprocess.run(["curl", "-sS", "-F", f"file=@{path}", live.url + "/uploads"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)["files"][0]
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert s3_bucket.body(prefix, stored["id"]) == data
    assert not (live.instance_path / "uploads" / stored["id"]).exists()  # not on the disk
    url = live.url + stored["url"]
    for start, stop in [(0, 1), (PART - 3, PART + 3), (len(data) - 100, len(data))]:
        res = requests.get(url, headers={"Range": f"bytes={start}-{stop - 1}"}, timeout=10)
        assert res.status_code == 206 and res.content == data[start:stop]
    assert requests.get(url, timeout=30).content == data
    assert s3_bucket.open_uploads(prefix) == []


def test_a_cut_off_upload_leaves_no_object_and_no_open_multipart_upload(
        s3_server: tuple[LiveServer, str], s3_bucket: S3Bucket) -> None:
    live, prefix = s3_server
    before = s3_bucket.keys(prefix)
    boundary = "cut0123"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"c.bin\"\r\n"
            "\r\n").encode()
    head = (f"POST /uploads HTTP/1.1\r\nHost: x\r\nContent-Length: {50 * MiB}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    sock.sendall(head + part + os.urandom(2 * PART + MiB))  # two parts sent or in flight
    assert wait_for(lambda: s3_bucket.open_uploads(prefix) != [], 20)
    sock.close()
    assert wait_for(lambda: s3_bucket.open_uploads(prefix) == [], 20)
    assert s3_bucket.keys(prefix) == before
    after = requests.put(live.url + "/uploads/after.txt", data=b"alive", timeout=10)
    assert after.status_code == 201, (after.text, live.log())  # once a 500 under load: say why


@pytest.mark.slow
def test_curl_1gib_into_s3_right_sha256_and_flat_memory(
        start_live_server: Any, s3_bucket: S3Bucket, tmp_path: Path) -> None:
    """The issue's check: ``curl -F`` of 1 GiB into S3, SHA-256 right, RSS growth < 32 MiB."""
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        block = os.urandom(MiB)
        for i in range(1024):  # every MiB different: a misplaced part would show
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            f.write(chunk)
    url = s3_bucket.url()
    live = start_live_server(env={
        "FLASKSTREAM_STORAGE_URL": url, "FLASKSTREAM_STORAGE_PART_SIZE": str(8 * MiB),
        "FLASKSTREAM_LIMIT_FILE_SIZE": str(2 * GiB), "FLASKSTREAM_LIMIT_BODY_SIZE": str(2 * GiB)})
    requests.put(live.url + "/uploads/warm.bin", data=os.urandom(9 * MiB), timeout=60)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-sS", "-F", f"file=@{big}", live.url + "/uploads"],
                              capture_output=True, text=True, timeout=900)

    try:
        baseline, peak, result = peak_rss_during(live, run)
        assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
        body = json.loads(result.stdout)["files"][0]  # type: ignore[attr-defined]
        assert body["sha256"] == digest.hexdigest() and body["size"] == GiB
        prefix = S3Bucket.prefix_of(url)
        head = s3_bucket.client.head_object(Bucket="flaskstream-test",
                                            Key=f"{prefix}/{body['id']}")
        assert head["ContentLength"] == GiB
        assert s3_bucket.open_uploads(prefix) == []
        assert peak - baseline < 32 * MiB, (baseline, peak)
        print(f"RSS growth {(peak - baseline) / MiB:.1f} MiB")
    finally:
        big.unlink()


@pytest.mark.slow
def test_eight_uploads_at_once_share_the_buffer_budget(start_live_server: Any,
                                                       s3_bucket: S3Bucket) -> None:
    """8 concurrent 128 MiB uploads into S3: the worker grows < 64 MiB (STORAGE_BUFFER_BUDGET)."""
    live = start_live_server(env={"FLASKSTREAM_STORAGE_URL": s3_bucket.url()})
    requests.put(live.url + "/uploads/warm.bin", data=os.urandom(9 * MiB), timeout=60)
    body = os.urandom(128 * MiB)

    def run() -> list[int]:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda i: requests.put(
                f"{live.url}/uploads/c{i}.bin", data=body, timeout=600).status_code, range(8)))

    baseline, peak, codes = peak_rss_during(live, run)
    assert codes == [201] * 8
    assert peak - baseline < 64 * MiB, (baseline, peak)
    print(f"RSS growth {(peak - baseline) / MiB:.1f} MiB")


def test_a_killed_workers_multipart_upload_is_aborted_by_the_janitor(
        start_live_server: Any, s3_bucket: S3Bucket) -> None:
    """SIGKILL runs no cleanup: the staging janitor of the next worker aborts the orphan."""
    import signal

    url = s3_bucket.url()
    prefix = S3Bucket.prefix_of(url)
    live = start_live_server(env={**s3_env(s3_bucket, url),
                                  "FLASKSTREAM_STORAGE_ORPHAN_TTL": "3",
                                  "FLASKSTREAM_UPLOAD_STAGING_SWEEP_INTERVAL": "1"})
    head = (f"PUT /uploads/killed.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {50 * MiB}\r\n"
            "\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    try:
        sock.sendall(head + os.urandom(2 * PART + MiB))
        assert wait_for(lambda: s3_bucket.open_uploads(prefix) != [], 20)
        for pid in live.worker_pids():
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: s3_bucket.open_uploads(prefix) == [], 30)
        assert s3_bucket.keys(prefix) == []
    finally:
        sock.close()
