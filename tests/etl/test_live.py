"""End to end against a real gunicorn (gevent worker) and PostgreSQL."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.etl.helpers import query, users_csv
from tests.live import wait_for

pytestmark = [pytest.mark.live, pytest.mark.db]


def wait_for_job(url: str, job: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = requests.get(f"{url}/etl/jobs/{job}", timeout=5)
        if resp.status_code == 200 and resp.json()["status"] != "running":
            return resp.json()
        time.sleep(0.1)
    raise AssertionError(f"job {job} still running")


@pytest.mark.parametrize("chunked", [False, True])
def test_client_disconnect_mid_post_rolls_back(live_server, database_url, chunked):
    query(database_url, "TRUNCATE flaskstream.users, flaskstream.etl_jobs CASCADE")
    body = users_csv(120_000)  # ~4.7 MB sent of a declared 100 MB
    host, port = "127.0.0.1", live_server.port
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 100000000"
    if chunked:
        body = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                        for i in range(0, len(body), 65536))
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"POST /etl/jobs?job=gone&batch_size=10000 HTTP/1.1\r\n"
                     b"Host: x\r\nContent-Type: text/csv\r\n" + framing + b"\r\n\r\n")
        sock.sendall(body)
        deadline = time.monotonic() + 20  # until the server has loaded some batches
        while time.monotonic() < deadline:
            job = requests.get(f"{live_server.url}/etl/jobs/gone", timeout=5).json()
            if job.get("rows_loaded", 0) >= 20_000:
                break
            time.sleep(0.05)
        assert job["rows_loaded"] >= 20_000, job
    job = wait_for_job(live_server.url, "gone")
    assert job["status"] == "failed" and job["error"], job
    assert query(database_url, "SELECT count(*) FROM flaskstream.users") == [[0]]
    assert requests.get(f"{live_server.url}/healthz", timeout=5).status_code == 200


def test_streamed_chunked_upload_and_export_with_flat_memory(live_server, database_url):
    query(database_url, "TRUNCATE flaskstream.users, flaskstream.etl_jobs CASCADE")
    rows, per_chunk = 400_000, 20_000

    def body():
        yield b"email,age,name\n"
        for start in range(0, rows, per_chunk):
            yield "".join(f"u{i}@example.com,{i % 150},Name {i}\n"
                          for i in range(start, start + per_chunk)).encode()

    (pid, before), = live_server.worker_rss().items()
    resp = requests.post(f"{live_server.url}/etl/jobs?job=big", data=body(),
                         headers={"Content-Type": "text/csv"}, timeout=120)
    assert resp.status_code == 201, resp.text
    assert resp.json()["rows_loaded"] == rows
    with requests.get(f"{live_server.url}/etl/export.csv", stream=True, timeout=60) as out:
        assert out.headers["Content-Type"] == "text/csv; charset=utf-8"
        chunks = out.iter_content(65536)
        first = next(chunks)
        assert first.startswith(b"id,email,age,name\n")
        total = len(first) + sum(len(c) for c in chunks)
    assert total > rows * 25
    growth = live_server.worker_rss()[pid] - before
    assert growth < 64 * 1024 * 1024, f"worker grew {growth / 2**20:.1f} MiB"


def test_progress_reaches_an_sse_subscriber(live_server, database_url):
    query(database_url, "TRUNCATE flaskstream.users, flaskstream.etl_jobs CASCADE")
    resp = requests.post(f"{live_server.url}/etl/jobs?job=sse-1", data=users_csv(30_000),
                         headers={"Content-Type": "text/csv"}, timeout=60)
    assert resp.status_code == 201
    events = []
    with requests.get(f"{live_server.url}/events/etl.sse-1?lastEventId=0", stream=True,
                      timeout=10) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        name = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and name:
                events.append((name, line.split(":", 1)[1].strip()))
                if name in ("done", "error"):
                    break
    assert events[0][0] == "progress" and events[-1][0] == "done"
    assert '"rows_loaded":30000' in events[-1][1].replace(" ", "")


def test_job_status_is_visible_from_the_other_worker(start_live_server, clean_db):
    """GET /etl/jobs/<id> reads etl_jobs, so a worker that did not run the job answers it.

    The worker that ran the load is frozen (SIGSTOP) before the GET, so the
    other one must answer: no reliance on how the kernel spreads connections.
    """
    import os
    import signal

    database_url = clean_db
    live = start_live_server(workers=2)
    assert wait_for(lambda: len(live.worker_pids()) == 2)
    resp = requests.post(f"{live.url}/etl/jobs?job=two-workers", data=users_csv(500),
                         headers={"Content-Type": "text/csv"}, timeout=60)
    assert resp.status_code == 201, resp.text
    ran_in = int(query(database_url, "SELECT worker FROM flaskstream.etl_jobs WHERE id = 'two-workers'")
                 [0][0].rsplit(":", 1)[1])
    assert ran_in in live.worker_pids()
    os.kill(ran_in, signal.SIGSTOP)
    try:
        for _ in range(3):  # fresh connections: each must be accepted by the other worker
            job = requests.get(f"{live.url}/etl/jobs/two-workers", timeout=10,
                               headers={"Connection": "close"}).json()
            assert (job["status"], job["rows_loaded"]) == ("done", 500), job
            assert job["worker"].endswith(f":{ran_in}")  # the frozen worker ran it
    finally:
        os.kill(ran_in, signal.SIGCONT)
