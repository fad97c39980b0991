"""kill -9 the PostgreSQL postmaster under SSE and upload load, then start it again.

Afterwards: the pool and the LISTEN connection have recovered (``/healthz``
and publishes work again within seconds), every SSE client — still connected
or reconnecting with ``Last-Event-ID`` as EventSource does, one of them first
connecting during the outage — has every event exactly once and in order, and
never got a status that makes EventSource give up, and the uploads are all-or-nothing: every upload
answered 201 is listed with its bytes, nothing else is listed or stored, and no
staging file is left; those refused during the outage mostly answered 503
``DATABASE_UNAVAILABLE`` (a retry), not 500. An ETL load in flight fails, and since the database was
down when it failed, its job row may not say so at once: its lease runs out and
a janitor marks it ``failed`` once the database is back.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest
import requests

from tests.etl.helpers import query, users_csv
from tests.events.client import SSEClient
from tests.fault.conftest import (
    RECOVERY_SECONDS,
    FaultDatabase,
    healthy,
    listed,
    raw_request,
    staging,
    stored_files,
)
from tests.live import LiveServer, wait_for

# ~10 s: a PostgreSQL restart and a lease to run out
pytestmark = [pytest.mark.live, pytest.mark.db, pytest.mark.slow]
CHANNEL = "fault"


def publish(server: LiveServer, n: int) -> int:
    response = requests.post(f"{server.url}/events/{CHANNEL}", timeout=5,
                             json={"event": "n", "data": {"n": n}, "id": f"n{n}"})
    assert response.status_code == 202, response.text
    return response.json()["id"]


class Follower:
    """An SSE client that reconnects with ``Last-Event-ID`` whenever its stream ends."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.seen: list[tuple[str, int]] = []
        self.statuses: list[int | None] = []
        self.client = self._open("0")

    def _open(self, last_id: str) -> SSEClient:
        client = SSEClient(self.server.port, f"/events/{CHANNEL}",
                           headers={"Last-Event-ID": last_id}, timeout=5)
        return client

    def collect(self, want: int, timeout: float) -> list[tuple[str, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = [e for e in self.client.wait_events(want, timeout=0.5) if e.type == "n"]
            got = [(e.last_event_id, json.loads(e.data)["n"]) for e in events]
            if self.client.closed or len(self.seen) + len(got) >= want:
                self.statuses.append(self.client.status)
                self.seen += got
                self.client.close()
                if len(self.seen) >= want:
                    return self.seen
                last = self.seen[-1][0] if self.seen else "0"
                try:
                    self.client = self._open(last)
                except OSError:
                    time.sleep(0.2)
        return self.seen


class Uploader(threading.Thread):
    """PUTs small uploads in a loop; remembers what the server said it stored."""

    def __init__(self, server: LiveServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.stored: dict[str, str] = {}  # id -> sha256 of what was sent
        self.statuses: list[int] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            data = os.urandom(64 * 1024 + n)
            n += 1
            try:
                response = requests.put(f"{self.server.url}/uploads/f{n}.bin", data=data,
                                        timeout=10)
            except requests.RequestException:
                continue
            self.statuses.append(response.status_code)
            if response.status_code == 201:
                assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
                self.stored[response.json()["id"]] = hashlib.sha256(data).hexdigest()


def test_postmaster_killed_under_sse_and_upload_load(clean: LiveServer, fault_db: FaultDatabase
                                                     ) -> None:
    server = clean
    followers = [Follower(server) for _ in range(4)]
    before = [publish(server, n) for n in range(3)]
    uploader = Uploader(server)
    uploader.start()
    head = (b"POST /uploads HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 50000000\r\n\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n")
    in_flight = raw_request(server, head, os.urandom(1 << 20))  # mid-body across the outage
    load = raw_request(server, b"POST /etl/jobs?job=outage&batch_size=2000 HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: text/csv\r\nContent-Length: 900000000\r\n\r\n",
                       users_csv(20_000))
    try:
        assert wait_for(lambda: len(uploader.stored) >= 3, timeout=10)
        assert wait_for(lambda: (query(fault_db.url, "SELECT rows_loaded FROM flaskstream.etl_jobs WHERE "
                                       "id = 'outage'") or [[0]])[0][0] > 0, timeout=10)
        fault_db.kill_postmaster()
        time.sleep(1.0)  # requests meet the dead database
        assert not healthy(server)
        followers.append(Follower(server))  # connects during the outage: must get a 200
        fault_db.restart()
        restarted = time.monotonic()
        assert wait_for(lambda: healthy(server), timeout=RECOVERY_SECONDS, interval=0.1), \
            server.log()
        recovered = time.monotonic() - restarted
        count = len(uploader.stored)
        assert wait_for(lambda: len(uploader.stored) > count + 2, timeout=RECOVERY_SECONDS)
    finally:
        uploader.stop.set()
        uploader.join(15)
        in_flight.close()
        load.close()
    after = [publish(server, n) for n in range(3, 6)]
    assert before + after == sorted(before + after)
    expected = [(str(event_id), n) for n, event_id in enumerate(before + after)]
    for follower in followers:
        assert follower.collect(6, timeout=15) == expected, follower.statuses
        assert set(follower.statuses) <= {200}, follower.statuses  # EventSource never gives up
    assert wait_for(lambda: not staging(server), timeout=5), staging(server)
    on_server = {u["id"]: u["sha256"] for u in listed(server)}
    assert on_server == uploader.stored  # every 201 is there with its bytes; nothing else
    # An upload that could not get a connection was told to retry (503 + Retry-After), not
    # that the server failed; only one whose pooled connection died mid-query is a 500.
    assert 503 in uploader.statuses and set(uploader.statuses) <= {201, 500, 503}, \
        uploader.statuses
    assert stored_files(server) == set(uploader.stored)
    assert recovered < RECOVERY_SECONDS
    assert wait_for(lambda: query(fault_db.url, "SELECT status FROM flaskstream.etl_jobs WHERE id = 'outage'")
                    == [["failed"]], timeout=2 + 0.5 + RECOVERY_SECONDS)
    assert query(fault_db.url, "SELECT count(*) FROM flaskstream.users") == [[0]]
    # Recorded by the load itself if its retry on a new connection met the database back
    # up, else by the janitor once the lease ran out, which also announces it.
    if "lease expired" in query(fault_db.url, "SELECT error FROM flaskstream.etl_jobs")[0][0]:
        assert query(fault_db.url, "SELECT count(*) FROM flaskstream.events WHERE channel = 'etl.outage' "
                     "AND event = 'failed'") == [[1]]
