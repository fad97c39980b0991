"""Finding 3 of issue 12 against a live gunicorn: exports cannot exhaust the database.

Before: every export opened a connection closed only by its generator's
``finally``, which a HEAD never runs; 300 HEADs held 96 of 100 backends and
other requests got 500 ``too many clients``, and so did 110 clients that never
read. Now an export takes one of ``ETL_MAX_EXPORTS`` slots (one more is a 503
with ``Retry-After``), a HEAD opens nothing, and an export whose client stops
reading gives its connection back after ``ETL_EXPORT_STALL_TIMEOUT``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import truncate_all
from tests.etl.helpers import query
from tests.live import LiveServer, wait_for

pytestmark = [pytest.mark.live, pytest.mark.db, pytest.mark.slow]

TOKEN = "hostile-export-token"
MAX_EXPORTS = 4
STALL = 5
POOL = 3
ROWS = 300_000  # ~15 MB of CSV: more than the socket buffers of a client that does not read
MiB = 1 << 20


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    truncate_all(database_url)
    query(database_url, "INSERT INTO flaskstream.users (email, age, name) SELECT 'user' || g || "
                        "'@example.com', g % 100, 'User number ' || g "
                        "FROM generate_series(1, :n) g", n=ROWS)
    env = {"FLASKSTREAM_API_TOKEN": TOKEN, "FLASKSTREAM_ETL_MAX_EXPORTS": str(MAX_EXPORTS),
           "FLASKSTREAM_ETL_EXPORT_STALL_TIMEOUT": str(STALL),
           "FLASKSTREAM_DB_POOL_SIZE": str(POOL)}
    with LiveServer(tmp_path_factory.mktemp("hostile-exports"), env=env,
                    database_url=database_url) as live:
        yield live


def backends(server: LiveServer, url: str) -> int:
    (pid,) = server.worker_pids()
    return query(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n",
                 n=f"flaskstream:{pid}")[0][0]


@pytest.fixture
def baseline(server: LiveServer, database_url: str) -> int:
    """The most connections the worker holds with no export running: its pool and listener."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: requests.get(f"{server.url}/etl/jobs", timeout=10), range(32)))
    assert wait_for(lambda: backends(server, database_url) <= POOL + 1, timeout=30)
    return POOL + 1


class Sampler(threading.Thread):
    """The worker's peak backend count, and whether /healthz kept answering, meanwhile."""

    def __init__(self, server: LiveServer, url: str) -> None:
        super().__init__(daemon=True)
        self.server, self.url = server, url
        self.peak, self.health = 0, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = max(self.peak, backends(self.server, self.url))
            self.health.append(requests.get(f"{self.server.url}/healthz", timeout=10).status_code)

    def stop(self) -> Sampler:
        self.done.set()
        self.join()
        return self


def test_300_heads_hold_no_connection(server: LiveServer, database_url: str, baseline: int
                                      ) -> None:
    sampler = Sampler(server, database_url)
    sampler.start()

    def head(_: int) -> int:
        response = requests.head(f"{server.url}/etl/export.csv?table=users", timeout=30)
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        return response.status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(head, range(300)))
    sampler.stop()
    assert statuses == [200] * 300
    assert sampler.peak <= baseline, f"HEADs opened connections: {sampler.peak} > {baseline}"
    assert set(sampler.health) == {200}
    assert backends(server, database_url) <= baseline
    with requests.get(f"{server.url}/etl/export.csv", stream=True, timeout=60) as response:
        assert sum(chunk.count(b"\n") for chunk in response.iter_content(MiB)) == ROWS + 1


def request_export(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # small, before connecting
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /etl/export.csv?table=users HTTP/1.1\r\nHost: x\r\n"
                 b"Connection: close\r\n\r\n")
    return sock


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the bytes after them (all of a small 503's body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, rest


def test_110_clients_that_never_read(server: LiveServer, database_url: str, baseline: int
                                     ) -> None:
    (pid,) = server.worker_pids()
    rss_before = server.worker_rss()[pid]
    sampler = Sampler(server, database_url)
    sampler.start()
    socks = [request_export(server.port) for _ in range(110)]
    try:
        # Other requests keep working meanwhile, and the stalled COPYs are given up
        # while their clients are still connected.
        assert wait_for(lambda: backends(server, database_url) > baseline, timeout=STALL - 1)
        assert requests.get(f"{server.url}/etl/jobs", timeout=10).status_code == 200
        assert wait_for(lambda: backends(server, database_url) <= baseline, timeout=STALL + 15)
        sampler.stop()
        assert sampler.peak <= baseline + MAX_EXPORTS, sampler.peak
        assert set(sampler.health) == {200}
        rss_growth = server.worker_rss()[pid] - rss_before
        assert rss_growth < 64 * MiB, f"{rss_growth / MiB:.1f} MiB"
        answers = [read_head(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    ok = [a for a in answers if a[0] == 200]
    busy = [a for a in answers if a[0] == 503]
    assert len(ok) + len(busy) == 110
    assert MAX_EXPORTS <= len(ok) <= 2 * MAX_EXPORTS, len(ok)
    for _, headers, body in busy:
        assert headers["retry-after"] == "2"
        assert json.loads(body)["error"]["code"] == "EXPORTS_BUSY"
    with requests.get(f"{server.url}/etl/export.csv", stream=True, timeout=60) as response:
        assert sum(chunk.count(b"\n") for chunk in response.iter_content(MiB)) == ROWS + 1
    assert backends(server, database_url) <= baseline


def test_beyond_the_limit_is_503_and_a_closed_client_frees_its_slot(
        server: LiveServer, database_url: str, baseline: int) -> None:
    holders = [request_export(server.port) for _ in range(MAX_EXPORTS)]
    for sock in holders:
        assert read_head(sock)[0] == 200  # streaming, then reading no more
    busy = requests.get(f"{server.url}/etl/export.csv", timeout=10)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
    assert busy.json() == {"error": {"code": "EXPORTS_BUSY",
                                     "message": "too many exports in progress; retry shortly"}}
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    for sock in holders:
        sock.close()
    # Closing (not the stall timeout) gives the connections back.
    assert wait_for(lambda: backends(server, database_url) <= baseline, timeout=STALL - 1)
    assert requests.head(f"{server.url}/etl/export.csv", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/etl/export.csv?table=etl_jobs",
                        timeout=10).status_code == 403
    assert requests.get(f"{server.url}/etl/export.csv?table=%00", timeout=10).status_code == 400
