"""/livez and /readyz: in-process contract, and readiness draining under a real gunicorn."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
from flask.testing import FlaskClient

from flaskstream import ops
from tests.events.client import SSEClient
from tests.live import wait_for

pytestmark = [pytest.mark.db]


def test_livez_needs_no_database(app_config: dict) -> None:
    from flaskstream import create_app, db

    app = create_app({**app_config, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
                      "DB_CONNECT_TIMEOUT": 1})
    client = app.test_client()
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["status"] == "unavailable" and ready.json["db"]
    assert client.get("/healthz").status_code == 503  # its contract, unchanged
    db.get_database(app).close_all()


def test_readyz_is_ready_with_a_database_and_no_store(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "db": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/healthz").json == {"status": "ok", "db": "ok"}


def test_readyz_says_draining_as_soon_as_the_probe_does(client: FlaskClient) -> None:
    state = {"draining": False}
    ops.set_draining_probe(client.application, lambda: state["draining"])
    assert client.get("/readyz").status_code == 200
    state["draining"] = True
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json == {"status": "draining"}
    assert client.get("/livez").status_code == 200  # alive while it drains


@pytest.mark.live
def test_readyz_turns_503_before_a_sigtermed_workers_streams_end(start_live_server) -> None:
    server = start_live_server(workers=1, env={"FLASKSTREAM_SHUTDOWN_DRAIN_SECONDS": "1.5",
                                               "FLASKSTREAM_SSE_HEARTBEAT": "30"})
    worker = server.worker_pids()[0]
    streams = [SSEClient(server.port, "/events/drain") for _ in range(3)]
    for stream in streams:
        assert stream.wait_for(b": worker ", 10)
    probe = requests.Session()  # a kept-alive connection: it stays on this worker
    assert probe.get(server.url + "/readyz", timeout=5).status_code == 200

    os.kill(worker, signal.SIGTERM)
    statuses: list[int] = []

    def draining() -> bool:
        statuses.append(probe.get(server.url + "/readyz", timeout=5).status_code)
        return statuses[-1] == 503

    assert wait_for(draining, timeout=5, interval=0.01), statuses
    for stream in streams:
        stream.wait_for(b"retry:", timeout=0.05)  # read what has come, if anything
        assert not stream.closed, "a stream ended before /readyz said 503"
    started = time.monotonic()
    for stream in streams:
        assert stream.read_until_closed(10), "the draining worker kept its streams"
        assert b"retry:" in stream.body.split(b"\n\n", 1)[1]  # ended by the app, with a retry
        stream.close()
    assert time.monotonic() - started < 5  # well within graceful_timeout
    probe.close()


def test_draining_probe_reads_alive_and_falls_back_to_sigterm() -> None:
    from flaskstream.adapters.gunicorn_lifecycle import draining_probe

    class Worker:
        alive = True

    worker = Worker()
    probe = draining_probe(worker)
    assert probe() is False
    worker.alive = False  # what gunicorn sets on SIGTERM and after max_requests
    assert probe() is True

    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        fallback = draining_probe(object())  # no alive flag: follow the signal
        assert fallback() is False
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_for(fallback, timeout=2)
        assert calls == [signal.SIGTERM]  # the worker's own handler still runs
    finally:
        signal.signal(signal.SIGTERM, previous)
