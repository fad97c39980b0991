"""The patterns' behaviour on the private paths and, with every capability switched off
(``FLASKSTREAM_ADAPTERS_DISABLE=all``, as when a start-up check fails after an
upgrade), on the public fallbacks: a real gunicorn, the session's PostgreSQL.

Each test runs twice, once per server: the same answers either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from flaskstream import adapters
from tests.conftest import truncate_all
from tests.etl.helpers import query, users_csv
from tests.events.client import SSEClient
from tests.live import LiveServer, wait_for
from tests.uploads.test_live import peak_rss_during

pytestmark = [pytest.mark.live, pytest.mark.db]

ENV = {"FLASKSTREAM_SSE_HEARTBEAT": "60", "FLASKSTREAM_EVENTS_POLL_SECONDS": "0.5",
       "FLASKSTREAM_LIMIT_BODY_SIZE": str(64 << 20)}
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module", params=["", "all"], ids=["private", "fallback"])
def server(request: pytest.FixtureRequest, database_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    truncate_all(database_url)
    env = {**ENV, "FLASKSTREAM_ADAPTERS_DISABLE": request.param}
    with LiveServer(tmp_path_factory.mktemp("adapters"), env=env,
                    database_url=database_url) as live:
        yield live


def disabled_in_log(server: LiveServer) -> set[str]:
    return {line.split("adapter ", 1)[1].split(":", 1)[0] for line in server.log().splitlines()
            if "using the public fallback" in line}


def test_the_worker_logs_each_switched_off_capability_once(server: LiveServer) -> None:
    names = set(adapters.check_all(("gunicorn", "pg8000")))  # pgserver: not with a database URL
    lines = [line for line in server.log().splitlines() if "using the public fallback" in line]
    if server.env["FLASKSTREAM_ADAPTERS_DISABLE"]:
        # The worker's create_app checks them; with a database URL nobody needs pgserver's.
        assert disabled_in_log(server) == names
        assert len(lines) == len(names)
    else:
        assert lines == []


def test_multipart_and_raw_uploads_arrive_byte_exact_on_one_connection(server: LiveServer) -> None:
    first, second = os.urandom(3 << 20), os.urandom((2 << 20) + 17)
    with requests.Session() as session:  # keep-alive: the body reader must stay in step
        posted = session.post(f"{server.url}/uploads", files={"file": ("a.bin", first)},
                              data={"note": "x"}, timeout=30)
        put = session.put(f"{server.url}/uploads/b.bin", data=second, timeout=30)
        listed = session.get(f"{server.url}/uploads", timeout=10)
    assert posted.status_code == 201 and put.status_code == 201, (posted.text, put.text)
    assert posted.json()["fields"] == {"note": "x"}
    sent = {hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest()}
    got = {posted.json()["files"][0]["sha256"], put.json()["sha256"]}
    assert got == sent
    uid = put.json()["id"]
    assert requests.get(f"{server.url}/uploads/{uid}/content", timeout=30).content == second
    assert listed.status_code == 200


def test_a_large_raw_upload_keeps_worker_memory_flat(server: LiveServer, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        for _ in range(48):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    requests.put(f"{server.url}/uploads/warm.bin", data=b"w" * (1 << 20), timeout=30)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-sS", "-T", str(big), f"{server.url}/uploads/big.bin"],
                              capture_output=True, text=True, timeout=120)

    baseline, peak, result = peak_rss_during(server, run)
    assert json.loads(result.stdout)["sha256"] == digest.hexdigest()  # type: ignore[attr-defined]
    assert peak - baseline < 16 << 20, (baseline, peak)


def test_a_refused_upload_leaves_nothing_and_the_server_serving(server: LiveServer) -> None:
    before = requests.get(f"{server.url}/uploads", timeout=10).json()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"PUT /uploads/big.bin HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n" % (65 << 20) + b"x" * 65536)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split()[1] == b"413"
        length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0]
                     .split(b":")[1])
        while len(body) < length:
            body += sock.recv(65536)
    assert json.loads(body)["error"]["code"] == "LIMIT_BODY_SIZE"
    assert requests.get(f"{server.url}/uploads", timeout=10).json() == before
    staging = Path(server.instance_path) / "uploads" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_tus_upload_in_two_patches_completes_byte_exact(server: LiveServer) -> None:
    data = os.urandom((1 << 20) + 5)
    created = requests.post(f"{server.url}/uploads/tus/", timeout=10,
                            headers={**TUS, "Upload-Length": str(len(data))})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    url = location if location.startswith("http") else server.url + location
    offset = 0
    for piece in (data[:300_001], data[300_001:]):
        patched = requests.patch(url, data=piece, timeout=30, headers={
            **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        assert patched.status_code == 204, patched.text
        offset = int(patched.headers["Upload-Offset"])
    assert offset == len(data)
    uid = url.rstrip("/").rsplit("/", 1)[1]
    record = requests.get(f"{server.url}/uploads/{uid}", timeout=10).json()
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_closed_sse_client_is_released_before_any_heartbeat(server: LiveServer) -> None:
    def stats() -> dict:
        return requests.get(f"{server.url}/events/stats", timeout=5).json()

    client = SSEClient(server.port, "/events/adapters")
    assert client.wait_for(b"retry:", 5)
    assert stats()["open_streams"] == 1
    client.sock.close()  # the heartbeat is 60 s away: only the EOF watch can see this
    assert wait_for(lambda: stats()["open_streams"] == 0, 5)


def test_a_published_event_reaches_its_subscriber(server: LiveServer) -> None:
    client = SSEClient(server.port, "/events/fallback-feed")
    try:
        assert client.wait_for(b"retry:", 5)
        published = requests.post(f"{server.url}/events/fallback-feed", timeout=10,
                                  json={"event": "note", "data": {"n": 1}})
        assert published.status_code == 202
        assert client.wait_for(b'data: {"n":1}', 10)  # the listener polls on the fallback
    finally:
        client.close()


def test_an_etl_load_with_rows_the_server_refuses_loads_the_rest(
        server: LiveServer, database_url: str) -> None:
    body = users_csv(5000) + b"user7@example.com,30,Duplicate\nuser9@example.com,31,Again\n"
    job = f"adapters-{server.port}"
    response = requests.post(f"{server.url}/etl/jobs?job={job}&batch_size=2000", data=body,
                             headers={"Content-Type": "text/csv"}, timeout=60)
    assert response.status_code == 201, response.text
    summary = response.json()
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == (5002, 5000, 2)
    assert query(database_url, "SELECT count(*) FROM flaskstream.users")[0][0] == 5000
    rejects = requests.get(f"{server.url}/etl/jobs/{job}/rejects", timeout=10).text
    assert "Duplicate" in rejects and "Again" in rejects
