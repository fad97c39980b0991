"""End to end against real gunicorn (gevent workers) and PostgreSQL.

Each test starts the server it needs (``start_live_server``) with a short
heartbeat and poll so that the whole module stays well under a minute.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from flask import Flask

from flaskstream import create_app, db
from flaskstream.events.broker import get_broker, publish
from tests.events.client import SSEClient
from tests.events.sse_parser import parse
from tests.live import ROOT

pytestmark = [pytest.mark.live, pytest.mark.db]

# The poll is a safety net only: with it at 30 s, any missed wake-up (say a
# notification left in pg8000's read buffer) would make these tests time out.
FAST = {"FLASKSTREAM_SSE_HEARTBEAT": "0.5", "FLASKSTREAM_EVENTS_POLL_SECONDS": "30",
        "FLASKSTREAM_SSE_RETRY_MS": "1000", "FLASKSTREAM_SSE_RETRY_JITTER_MS": "2000"}


@pytest.fixture
def api_app(clean_db: str, tmp_path: Path) -> Iterator[Flask]:
    """A second, in-process app on the same database: the Python API's publisher."""
    app = create_app({"DATABASE_URL": clean_db, "INSTANCE_PATH": str(tmp_path / "api")})
    yield app
    get_broker(app).stop()
    db.get_database(app).close_all()


def post(url: str, channel: str, data: object, event: str | None = None) -> int:
    # A new connection each time, so the kernel spreads publishes over the workers.
    response = requests.post(f"{url}/events/{channel}", json={"event": event, "data": data},
                             headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def stats_by_worker(url: str, workers: int, tries: int = 60) -> dict[int, dict]:
    seen: dict[int, dict] = {}
    for _ in range(tries):
        body = requests.get(f"{url}/events/stats", headers={"Connection": "close"}, timeout=5).json()
        seen[body["pid"]] = body
        if len(seen) >= workers:
            break
    return seen


def subscribers_on_both_workers(port: int, path: str, per_worker: int = 2) -> list[SSEClient]:
    """Connect in bursts (one at a time, one idle worker wins every accept)."""
    clients: list[SSEClient] = []
    by_pid: dict[int, int] = {}
    for _ in range(10):
        burst = [SSEClient(port, path) for _ in range(16)]
        for client in burst:
            assert client.wait_for(b": worker ", 5)
            by_pid[client.worker()] = by_pid.get(client.worker(), 0) + 1
        clients.extend(burst)
        if len(by_pid) == 2 and min(by_pid.values()) >= per_worker:
            return clients
        time.sleep(0.3)  # a worker still booting accepts nothing yet
    pytest.fail(f"could not get subscribers on both workers: {by_pid}")


def test_fan_out_across_two_workers_in_order_exactly_once(start_live_server, api_app: Flask) -> None:
    server = start_live_server(workers=2, env=FAST)
    clients = subscribers_on_both_workers(server.port, "/events/fan")
    ids: list[int] = []
    lock = threading.Lock()

    def via_http(n: int) -> None:
        for i in range(n):
            event_id = post(server.url, "fan", {"via": "http", "i": i, "text": "é\nline"}, "m")
            with lock:
                ids.append(event_id)

    def via_api(n: int) -> None:
        with api_app.app_context():
            for i in range(n):
                event_id = publish("fan", {"via": "api", "i": i}, "m")
                with lock:
                    ids.append(event_id)

    threads = [threading.Thread(target=via_http, args=(15,)) for _ in range(2)]
    threads.append(threading.Thread(target=via_api, args=(15,)))
    for t in threads:
        t.start()
    env = {**os.environ, "FLASKSTREAM_DATABASE_URL": api_app.config["DATABASE_URL"],
           "FLASKSTREAM_INSTANCE_PATH": api_app.instance_path}
    cli = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "events", "publish",
                          "fan", '{"via": "cli"}', "--json", "--event", "m"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    for t in threads:
        t.join()
    ids.append(int(cli.stdout.strip().splitlines()[-1]))
    expected = sorted(ids)
    assert len(set(expected)) == 46
    try:
        for client in clients:
            events = client.wait_events(46)
            assert [int(e.last_event_id) for e in events] == expected, client.worker()
            assert {e.type for e in events} == {"m"}
        workers = stats_by_worker(server.url, 2)
        assert len(workers) == 2
        assert all(w["counters"]["delivered"] >= 46 * 2 for w in workers.values())
        assert sum(w["counters"]["published"] for w in workers.values()) == 30
    finally:
        for client in clients:
            client.close()


def test_reconnects_with_last_event_id_miss_nothing(start_live_server) -> None:
    server = start_live_server(workers=2, env=FAST)
    published: list[int] = []
    done = threading.Event()

    def publisher() -> None:
        for i in range(150):
            published.append(post(server.url, "resume", i))
            time.sleep(random.uniform(0, 0.01))
        done.set()

    received: list[int] = []
    last_id = ""  # what EventSource keeps: the last id: field seen, id-only blocks included
    reconnects = 0
    first = SSEClient(server.port, "/events/resume")  # subscribed before the first publish
    assert first.wait_for(b": worker", 5)
    last_id = first.parsed().last_event_id
    first.close()
    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            client = SSEClient(server.port, "/events/resume", headers=headers)
            before = len(received)
            events = client.wait_events(random.randint(1, 8), timeout=1.0)
            received.extend(int(e.last_event_id) for e in events)
            last_id = client.parsed().last_event_id or last_id
            client.close()
            reconnects += 1
            if done.is_set() and len(received) == before and len(received) >= len(published):
                break
            assert reconnects < 300
    finally:
        thread.join()
    assert received == published  # in order, no gap, no duplicate
    assert reconnects >= 20


def test_disconnects_release_everything(start_live_server) -> None:
    # A long heartbeat: release must come from seeing EOF on the socket, not from a write.
    server = start_live_server(workers=1, env={**FAST, "FLASKSTREAM_SSE_HEARTBEAT": "60"})
    worker = psutil.Process(server.worker_pids()[0])

    def open_streams() -> int:
        return requests.get(f"{server.url}/events/stats", timeout=5).json()["open_streams"]

    def cycle(n: int, path: str) -> None:
        clients = [SSEClient(server.port, path) for _ in range(n)]
        for c in clients:
            assert c.wait_for(b"retry:", 5)
        for c in clients:
            c.close()

    cycle(100, "/events/leak")
    time.sleep(0.3)
    base_fds, base_rss = worker.num_fds(), worker.memory_info().rss
    for i in range(50):  # 5,000 connect/disconnect cycles
        cycle(100, "/events/leak" if i % 2 else "/events/tick?interval=0.05")
    deadline = time.monotonic() + 3
    while open_streams() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_streams() == 0
    stats = requests.get(f"{server.url}/events/stats", timeout=5).json()
    assert stats["subscribers"] == 0 and stats["channels"] == {}
    assert stats["counters"]["disconnects"] >= 5000
    assert worker.num_fds() <= base_fds + 5
    assert worker.memory_info().rss - base_rss < 8 * 1024 * 1024

    tokens = SSEClient(server.port, "/stream/tokens?prompt=hello&delay=0.3")
    assert tokens.wait_for(b"You", 5)
    tokens.close()
    deadline = time.monotonic() + 2
    while open_streams() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_streams() == 0
    assert "token stream stopped after" in server.log()


def test_a_client_that_sent_bytes_is_released_at_the_next_heartbeat(start_live_server) -> None:
    """Stray bytes turn off the EOF watch (readable, but not EOF): the heartbeat's failed
    write is then what finds the closed client."""
    server = start_live_server(workers=1, env=FAST)  # heartbeat every 0.5 s

    def stats() -> dict:
        return requests.get(f"{server.url}/events/stats", timeout=5).json()

    client = SSEClient(server.port, "/events/stray")
    assert client.wait_for(b"retry:", 5)
    client.sock.sendall(b"not a request, just bytes\r\n")
    def comments() -> int:
        return len(client.parsed().comments)

    heartbeats = comments()
    deadline = time.monotonic() + 5  # two more heartbeats: the stream lives on after the bytes
    while comments() < heartbeats + 2 and time.monotonic() < deadline and not client.closed:
        client._pump(0.5)
    assert comments() >= heartbeats + 2 and not client.closed
    assert stats()["open_streams"] == 1
    before = stats()["counters"]["disconnects"]
    client.sock.close()
    deadline = time.monotonic() + 5
    while stats()["open_streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = stats()
    assert after["open_streams"] == 0 and after["subscribers"] == 0
    assert after["counters"]["disconnects"] == before + 1


def test_slow_consumer_is_cut_off_and_others_get_everything(start_live_server, api_app: Flask) -> None:
    server = start_live_server(workers=1, env={**FAST, "FLASKSTREAM_SSE_QUEUE_SIZE": "8"})
    slow = SSEClient(server.port, "/events/firehose", rcvbuf=4096)
    fast = SSEClient(server.port, "/events/firehose")
    assert slow.wait_for(b"worker", 5) and fast.wait_for(b"worker", 5)
    payload = "x" * 32768
    ids: list[int] = []
    # The reader only looks for the last event's data (one ``in`` per read): parsing the
    # whole stream after each read (``wait_events``) is quadratic in its 5 MiB, and on a
    # loaded machine made the "fast" client fall 8 events behind and be cut off too.
    reader = threading.Thread(target=lambda: fast.wait_for(b"data: 159:", timeout=60))
    reader.start()
    with api_app.app_context():
        for i in range(160):
            ids.append(publish("firehose", f"{i}:{payload}"))
            if i % 16 == 15:  # the fast reader is a Python thread: let it keep up on a busy
                time.sleep(0.02)  # machine (the slow one reads nothing, so it still overflows)
    reader.join()
    assert [int(e.last_event_id) for e in fast.events()] == ids
    assert slow.read_until_closed(20), "the slow stream was not ended"
    partial = [int(e.last_event_id) for e in slow.events()]
    assert partial == ids[: len(partial)] and len(partial) < len(ids)
    stats = requests.get(f"{server.url}/events/stats", timeout=5).json()
    assert stats["counters"]["dropped_slow"] == 1
    # It comes back from its last id and gets exactly the rest.
    again = SSEClient(server.port, "/events/firehose",
                      headers={"Last-Event-ID": str(partial[-1]) if partial else "0"})
    rest = again.wait_events(len(ids) - len(partial), timeout=20)
    assert partial + [int(e.last_event_id) for e in rest] == ids
    for c in (slow, fast, again):
        c.close()


def test_admission_cap_keeps_the_api_reachable(start_live_server) -> None:
    server = start_live_server(workers=1, env={**FAST, "FLASKSTREAM_SSE_MAX_STREAMS": "5"})
    held = [SSEClient(server.port, "/events/cap") for _ in range(5)]
    for c in held:
        assert c.wait_for(b"worker", 5)
    over = SSEClient(server.port, "/events/cap")
    assert over.read_until_closed(5)
    assert over.status == 200 and over.headers["content-type"].startswith("text/event-stream")
    assert over.parsed().retry is not None and over.events() == []
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert requests.post(f"{server.url}/events/cap", json={"data": 1}, timeout=5).status_code == 202
    for c in held:
        assert c.wait_events(1)[0].data == "1"
    held.pop().close()
    time.sleep(0.3)
    admitted = SSEClient(server.port, "/events/cap")
    assert admitted.wait_for(b"worker", 5) and not admitted.closed
    for c in [*held, admitted, over]:
        c.close()


def test_sigterm_ends_every_stream_promptly_with_jittered_retry(start_live_server) -> None:
    server = start_live_server(workers=2, env={**FAST, "FLASKSTREAM_SSE_HEARTBEAT": "30"})
    clients = [SSEClient(server.port, "/events/bye" if i % 3 else "/events/tick?interval=5")
               for i in range(300)]
    for c in clients:
        assert c.wait_for(b"retry:", 10)
    started = time.monotonic()
    server.stop()
    took = time.monotonic() - started
    retries = set()
    for c in clients:
        assert c.read_until_closed(5)
        after_open = c.body.split(b"\n\n", 1)[1]  # the opening block's retry: does not count
        retries.add(parse(after_open).retry)
        c.close()
    assert None not in retries, "a stream closed without a final retry:"
    assert len(retries) > 10  # jittered
    assert took < 4.0, f"gunicorn took {took:.1f}s to stop"


def test_worker_restart_ends_streams_promptly_and_the_new_worker_serves(start_live_server) -> None:
    """SIGHUP: gunicorn starts a new worker and retires the old one; the old one's streams
    end with a retry: at once (not after graceful_timeout) and come back to the new one."""
    server = start_live_server(workers=1, env={**FAST, "FLASKSTREAM_SSE_HEARTBEAT": "30",
                                               "GUNICORN_GRACEFUL_TIMEOUT": "30"})
    old_pid = server.worker_pids()[0]
    clients = [SSEClient(server.port, "/events/restart") for _ in range(50)]
    for c in clients:
        assert c.wait_for(b": worker", 10)
    started = time.monotonic()
    os.kill(server.pid, signal.SIGHUP)
    for c in clients:
        assert c.read_until_closed(10), "a stream outlived its worker's restart"
        assert parse(c.body.split(b"\n\n", 1)[1]).retry is not None
        c.close()
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 10
    while psutil.pid_exists(old_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == "zombie"
    again = SSEClient(server.port, "/events/restart")
    try:
        assert again.wait_for(b": worker", 10) and again.worker() != old_pid
        event_id = post(server.url, "restart", "after restart")
        assert [int(e.last_event_id) for e in again.wait_events(1)] == [event_id]
    finally:
        again.close()
