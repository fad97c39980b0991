"""/metrics: exact counts after a mixed workload on 2 gunicorn workers, kept across a
SIGKILLed worker; the in-process registry and the token with the test client."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.etl.helpers import query, users_csv
from tests.events.client import SSEClient
from tests.live import LiveServer, wait_for

pytestmark = [pytest.mark.db]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str, **headers: str) -> Samples:
    response = requests.get(url + "/metrics", headers={"Connection": "close", **headers},
                            timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.text)


def test_in_process_registry_counts_and_token(app_config: dict[str, Any]) -> None:
    from flaskstream import create_app, db

    app = create_app({**app_config, "METRICS_TOKEN": "s3cret"})
    client: FlaskClient = app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.json["error"]["code"] == "UNAUTHORIZED"
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    before = parse(client.get("/metrics", headers=auth).get_data(as_text=True))
    for response, status in ((client.put("/uploads/a.bin", data=b"x" * 1234), 201),
                             (client.get("/uploads/nothing"), 404)):
        assert response.status_code == status
        response.close()  # the server's close() is when the duration is taken
    after = parse(client.get("/metrics", headers=auth).get_data(as_text=True))
    assert value(after, "flaskstream_upload_files_total") \
        - value(before, "flaskstream_upload_files_total") == 1
    assert value(after, "flaskstream_upload_bytes_total") \
        - value(before, "flaskstream_upload_bytes_total") == 1234
    count = "flaskstream_request_duration_seconds_count"
    assert value(after, count, blueprint="uploads") - value(before, count, blueprint="uploads") == 2
    db.get_database(app).close_all()


def mixed_workload(server: LiveServer, subscribers: list[SSEClient]) -> None:
    """5 events, 3 stored files + 1 refused upload, 1 tus PATCH, 3 media answers, 1 ETL job."""
    url, close = server.url, {"Connection": "close"}  # new connections spread over workers
    for i in range(5):
        assert requests.post(f"{url}/events/m", json={"data": i}, headers=close,
                             timeout=10).status_code == 202
    for sub in subscribers:
        assert len(sub.wait_events(5, 10)) == 5
    files = {"a": ("a.bin", b"a" * 1000), "b": ("b.bin", b"b" * 2345)}
    assert requests.post(f"{url}/uploads", files=files, headers=close, timeout=10).status_code == 201
    assert requests.put(f"{url}/uploads/c.bin", data=b"c" * 500, headers=close,
                        timeout=10).status_code == 201
    refused = requests.post(f"{url}/uploads", files={"f": (None, "field only")}, headers=close,
                            timeout=10)
    assert refused.json()["error"]["code"] == "NO_FILES"
    tus = {"Tus-Resumable": "1.0.0", **close}
    created = requests.post(f"{url}/uploads/tus/", headers={**tus, "Upload-Length": "300"},
                            timeout=10)
    assert created.status_code == 201
    patched = requests.patch(
        urljoin(url + "/", created.headers["Location"]), data=b"t" * 300, timeout=10,
        headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert patched.status_code == 204
    media = f"{url}/media/sample.opus"
    part = requests.get(media, headers={"Range": "bytes=0-99", **close}, timeout=10)
    assert part.status_code == 206 and len(part.content) == 100
    full = requests.get(media, headers=close, timeout=10)
    assert full.status_code == 200
    cached = requests.get(media, headers={"If-None-Match": full.headers["ETag"], **close},
                          timeout=10)
    assert cached.status_code == 304
    job = requests.post(f"{url}/etl/jobs?table=users", data=users_csv(20, bad_every=5),
                        headers={"Content-Type": "text/csv", **close}, timeout=30)
    assert job.status_code == 201 and job.json()["rows_loaded"] == 16


def assert_workload_counted(samples: Samples, media_size: int, subscribers: int,
                            published: int) -> None:
    expected = {
        "flaskstream_upload_files_total": 3,
        "flaskstream_upload_bytes_total": 3845,
        "flaskstream_tus_bytes_written_total": 300,
        "flaskstream_media_bytes_sent_total": 100 + media_size,
        "flaskstream_etl_rows_loaded_total": 16,
        "flaskstream_etl_rows_rejected_total": 4,
    }
    assert {name: value(samples, name) for name in expected} == expected
    # 5 POSTs to "m", plus the ETL job's progress events on "etl.<id>": every stored event.
    assert value(samples, "flaskstream_events_published_total") == published
    assert value(samples, "flaskstream_events_delivered_total") == 5 * subscribers
    assert value(samples, "flaskstream_upload_failures_total", code="NO_FILES") == 1
    assert value(samples, "flaskstream_etl_jobs_total", status="done") == 1
    for status in ("200", "206", "304"):
        assert value(samples, "flaskstream_media_responses_total", status=status) == 1
    count = "flaskstream_request_duration_seconds_count"
    assert value(samples, count, blueprint="uploads") == 3
    assert value(samples, count, blueprint="tus") == 2
    assert value(samples, count, blueprint="media") == 3
    assert value(samples, count, blueprint="etl") == 1
    assert value(samples, count, blueprint="events") == 5  # the POSTs; streams still open


@pytest.mark.live
@pytest.mark.slow
def test_two_workers_count_exactly_and_a_killed_worker_loses_nothing(
        start_live_server, clean_db: str) -> None:
    server = start_live_server(workers=2, env={"FLASKSTREAM_SSE_HEARTBEAT": "30"})
    subscribers: list[SSEClient] = []
    while len({s.worker() for s in subscribers}) < 2 or len(subscribers) < 4:
        assert len(subscribers) < 40, "the kernel gave every stream to one worker"
        subscribers.append(SSEClient(server.port, "/events/m"))
        assert subscribers[-1].wait_for(b": worker ", 10)
        time.sleep(0.05)
    n = len(subscribers)
    streams_open = lambda: value(scrape(server.url), "flaskstream_streams_open",  # noqa: E731
                                 kind="subscribe")
    assert wait_for(lambda: streams_open() == n), streams_open()
    mixed_workload(server, subscribers)
    media_size = os.path.getsize(Path(__file__).resolve().parents[2] / "media" / "sample.opus")
    published = query(clean_db, "SELECT count(*) FROM flaskstream.events")[0][0]
    assert published > 5
    before = scrape(server.url)
    assert_workload_counted(before, media_size, n, published)
    assert value(before, "flaskstream_db_pool_waiting") == 0

    victim = subscribers[0].worker()
    survivors = [s for s in subscribers if s.worker() != victim]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: victim not in server.worker_pids()
                    and len(server.worker_pids()) == 2, timeout=30)
    # child_exit -> mark_process_dead: the dead worker's streams stop counting ...
    assert wait_for(lambda: streams_open() == len(survivors)), streams_open()
    metrics_dir = Path(server.instance_path) / "prometheus" / str(server.pid)
    assert not (metrics_dir / f"gauge_livesum_{victim}.db").exists()
    # ... and its counters and histograms stay: nothing lost, nothing counted twice.
    assert_workload_counted(scrape(server.url), media_size, n, published)

    assert requests.post(f"{server.url}/events/m", json={"data": "again"},
                         headers={"Connection": "close"}, timeout=10).status_code == 202
    for sub in survivors:
        assert len(sub.wait_events(6, 10)) == 6
    again = scrape(server.url)
    assert value(again, "flaskstream_events_published_total") == published + 1
    assert value(again, "flaskstream_events_delivered_total") == 5 * n + len(survivors)
    for sub in subscribers:
        sub.close()


@pytest.mark.live
@pytest.mark.slow
def test_max_requests_recycling_keeps_every_count_once(start_live_server) -> None:
    server = start_live_server(workers=2, env={
        "GUNICORN_CMD_ARGS": "--max-requests 8 --max-requests-jitter 0"})
    first = set(server.worker_pids())
    sent = 0
    # Until both first workers have reached their 8 requests and been replaced: the
    # kernel may hand one of them few of the connections (a loaded machine skews it).
    deadline = time.monotonic() + 90
    while (sent < 30 or first & set(server.worker_pids())) and time.monotonic() < deadline:
        response = requests.put(f"{server.url}/uploads/r{sent}.bin", data=b"r" * 100,
                                headers={"Connection": "close"}, timeout=30)
        assert response.status_code == 201
        sent += 1
    assert wait_for(lambda: not first & set(server.worker_pids())
                    and len(server.worker_pids()) == 2, timeout=30), \
        f"workers not recycled after {sent} requests"
    samples = scrape(server.url)
    assert value(samples, "flaskstream_upload_files_total") == sent
    assert value(samples, "flaskstream_upload_bytes_total") == 100 * sent
    assert value(samples, "flaskstream_request_duration_seconds_count", blueprint="uploads") \
        == sent
    assert value(samples, "flaskstream_db_pool_in_use") == 0  # retired workers' gauges gone


def test_pool_slots_count_borrowers_and_waiters() -> None:
    import threading

    from prometheus_client import REGISTRY

    from flaskstream import metrics

    def gauge(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    base_use, base_wait = gauge("flaskstream_db_pool_in_use"), gauge("flaskstream_db_pool_waiting")
    slots = metrics.PoolSlots(1)
    assert slots.acquire(timeout=1)
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire(timeout=10)))
    waiter.start()
    assert wait_for(lambda: gauge("flaskstream_db_pool_waiting") == base_wait + 1)
    assert gauge("flaskstream_db_pool_in_use") == base_use + 1
    slots.release()
    waiter.join(5)
    assert got == [True] and gauge("flaskstream_db_pool_waiting") == base_wait
    assert gauge("flaskstream_db_pool_in_use") == base_use + 1  # the waiter holds it now
    assert slots.acquire(timeout=0.01) is False  # a timed-out wait is not a borrow
    assert gauge("flaskstream_db_pool_in_use") == base_use + 1
    slots.release()
    assert (gauge("flaskstream_db_pool_in_use"), gauge("flaskstream_db_pool_waiting")) \
        == (base_use, base_wait)
    with pytest.raises(ValueError):
        slots.release()  # still bounded


def test_broker_counters_that_are_exported() -> None:
    from prometheus_client import REGISTRY

    from flaskstream import metrics

    names = {"listener_reconnects": "flaskstream_listener_reconnects_total",
             "dropped_slow": "flaskstream_events_dropped_total"}
    before = {k: REGISTRY.get_sample_value(v) or 0.0 for k, v in names.items()}
    metrics.count_broker("listener_reconnects")
    metrics.count_broker("dropped_slow", 3)
    metrics.count_broker("replays", 5)  # the broker's own only
    after = {k: REGISTRY.get_sample_value(v) or 0.0 for k, v in names.items()}
    assert {k: after[k] - before[k] for k in names} == {"listener_reconnects": 1,
                                                        "dropped_slow": 3}
