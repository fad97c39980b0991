"""kill -9 the gevent worker mid-request: nothing partial survives, the service recovers.

Each test starts a request with a raw socket (so the test decides how much of
the body exists), waits until the worker is visibly inside it (a staging file,
a job row, an exported chunk), SIGKILLs the worker and checks what is left once
gunicorn's new worker answers.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import requests

from tests.etl.helpers import query, users_csv
from tests.fault.conftest import (
    RECOVERY_SECONDS,
    kill_worker,
    listed,
    raw_request,
    staging,
    stored_files,
)
from tests.live import LiveServer, wait_for

pytestmark = [pytest.mark.live, pytest.mark.db]
MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


def test_mid_multipart_upload_leaves_no_file_row_or_staging(clean: LiveServer) -> None:
    server = clean
    head = (b"POST /uploads HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=BOUNDARY\r\n"
            b"Content-Length: 104857600\r\n\r\n"
            b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n")
    sock = raw_request(server, head, os.urandom(3 * MiB))
    try:
        assert wait_for(lambda: any(p.stat().st_size > MiB for p in staging(server)), timeout=10)
        (part,) = staging(server)
        dead, seconds = kill_worker(server)
        assert str(dead) in part.name  # the file names its writer
    finally:
        sock.close()
    assert seconds < RECOVERY_SECONDS
    assert wait_for(lambda: not staging(server), timeout=5), staging(server)  # the janitor's work
    assert listed(server) == [] and stored_files(server) == set()


def test_a_slow_live_upload_survives_the_staging_janitor(clean: LiveServer) -> None:
    """The janitor sweeps every 0.3 s; a body trickling in for longer than that is kept."""
    server = clean
    data = os.urandom(256 * 1024)

    def trickle():
        for i in range(0, len(data), 32 * 1024):
            yield data[i:i + 32 * 1024]
            wait_for(lambda: False, timeout=0.25)  # 8 pieces over ~2 s: many sweeps

    response = requests.put(f"{server.url}/uploads/slow.bin", data=trickle(), timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert server.worker_pids() and not staging(server)


def test_mid_tus_patch_keeps_only_durable_bytes_and_resumes(clean: LiveServer, fault_db
                                                            ) -> None:
    server = clean
    data = os.urandom(8 * MiB)
    created = requests.post(f"{server.url}/uploads/tus/", timeout=10, headers={
        **TUS, "Upload-Length": str(len(data))})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    uid = location.rstrip("/").rsplit("/", 1)[1]
    head = (f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    sock = raw_request(server, head, data[:3 * MiB])
    try:
        durable = "SELECT upload_offset FROM flaskstream.tus_uploads WHERE id = :id"
        assert wait_for(lambda: query(fault_db.url, durable, id=uid)[0][0] >= MiB, timeout=10)
        committed = query(fault_db.url, durable, id=uid)[0][0]  # a checkpoint (fsync'd) is in
        kill_worker(server)
    finally:
        sock.close()
    status = requests.head(f"{server.url}{location}", headers=TUS, timeout=15)
    assert status.status_code == 200, status.text
    offset = int(status.headers["Upload-Offset"])
    assert committed <= offset <= 3 * MiB  # checkpoints survived, nothing unsent is claimed
    assert listed(server) == []  # an unfinished upload is never listed
    done = requests.patch(f"{server.url}{location}", data=data[offset:], timeout=30, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
    assert done.status_code == 204, done.text
    (upload,) = listed(server)
    assert upload["id"] == uid and upload["sha256"] == hashlib.sha256(data).hexdigest()


def test_mid_etl_load_the_job_fails_by_lease_and_nothing_is_loaded(clean: LiveServer,
                                                                  fault_db) -> None:
    server = clean
    body = users_csv(200_000)
    head = (b"POST /etl/jobs?job=killed&batch_size=5000 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: text/csv\r\nContent-Length: 500000000\r\n\r\n")
    sock = raw_request(server, head, body)
    try:
        assert wait_for(lambda: (query(fault_db.url, "SELECT rows_loaded FROM flaskstream.etl_jobs WHERE "
                                       "id = 'killed'") or [[0]])[0][0] >= 5000, timeout=20)
        dead, _ = kill_worker(server)
    finally:
        sock.close()
    assert wait_for(lambda: requests.get(f"{server.url}/etl/jobs/killed", timeout=5)
                    .json()["status"] != "running", timeout=2 + 0.5 + RECOVERY_SECONDS)
    job = requests.get(f"{server.url}/etl/jobs/killed", timeout=5).json()
    assert job["status"] == "failed" and "lease expired" in job["error"], job
    assert job["worker"].endswith(f":{dead}")
    assert query(fault_db.url, "SELECT count(*) FROM flaskstream.users") == [[0]]
    with requests.get(f"{server.url}/events/etl.killed?lastEventId=0", stream=True,
                      timeout=10) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line == "event: failed":
                break
        else:
            raise AssertionError("no failed event")


def test_mid_export_releases_the_backend_and_exports_again(clean: LiveServer, fault_db) -> None:
    server = clean
    query(fault_db.url, "INSERT INTO flaskstream.users (email, age, name) "
          "SELECT 'u' || i || '@x.io', i % 100, repeat('n', 50) FROM generate_series(1, 300000) AS i")
    with requests.get(f"{server.url}/etl/export.csv", stream=True, timeout=30) as export:
        assert export.status_code == 200
        next(export.iter_content(65536))
        dead, _ = kill_worker(server)
    backends = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                f"'flaskstream:{dead}'")
    assert wait_for(lambda: query(fault_db.url, backends) == [[0]], timeout=10)
    with requests.get(f"{server.url}/etl/export.csv", stream=True, timeout=60) as again:
        lines = sum(chunk.count(b"\n") for chunk in again.iter_content(1 << 20))
    assert lines == 300_001
