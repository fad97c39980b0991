"""Live: real gunicorn installs on one database, told apart only by ``FLASKSTREAM_DB_SCHEMA``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests

from flaskstream import schema
from tests.db.conftest import connect
from tests.events.client import SSEClient
from tests.live import wait_for

pytestmark = [pytest.mark.live, pytest.mark.db]

FAST = {"FLASKSTREAM_SSE_HEARTBEAT": "0.5", "FLASKSTREAM_EVENTS_POLL_SECONDS": "30"}
TUS = {"Tus-Resumable": "1.0.0"}


def applied(url: str, name: str) -> list[list[Any]]:
    con = connect(url, name)
    try:
        return con.run(f"SELECT version, name FROM {schema.SchemaNames(name).qualified('schema_migrations')}")
    finally:
        con.close()


def waiting_on_advisory_lock(url: str) -> bool:
    con = connect(url, "flaskstream")
    try:
        return bool(con.run("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
    finally:
        con.close()


def test_two_workers_starting_on_a_new_schema_migrate_it_once(
        start_live_server: Callable[..., Any], database_url: str,
        fresh_schema: Callable[[], str]) -> None:
    name = fresh_schema()
    first = start_live_server(workers=2, env={"FLASKSTREAM_DB_SCHEMA": name})
    assert requests.get(f"{first.url}/readyz", timeout=5).json() == {"status": "ready", "db": "ok"}
    assert applied(database_url, name) == [[1, "initial"]]
    assert first.log().count("applied migration 0001_initial") == 1
    first.stop()

    second = start_live_server(workers=2, env={"FLASKSTREAM_DB_SCHEMA": name})
    assert requests.get(f"{second.url}/readyz", timeout=5).status_code == 200
    assert "applied migration" not in second.log()
    assert applied(database_url, name) == [[1, "initial"]]


def test_two_schemas_in_one_database_are_two_independent_installs(
        start_live_server: Callable[..., Any], database_url: str,
        fresh_schema: Callable[[], str]) -> None:
    name_a, name_b = fresh_schema(), fresh_schema()
    a = start_live_server(env={**FAST, "FLASKSTREAM_DB_SCHEMA": name_a})
    b = start_live_server(env={**FAST, "FLASKSTREAM_DB_SCHEMA": name_b})
    on_a, on_b = SSEClient(a.port, "/events/news"), SSEClient(b.port, "/events/news")
    try:
        assert on_a.wait_for(b": worker ") and on_b.wait_for(b": worker ")
        sent = requests.post(f"{a.url}/events/news", json={"data": "for-a-only"}, timeout=10)
        assert sent.status_code == 202 and sent.json()["id"] == 1
        assert on_a.wait_for(b"for-a-only")
        own = requests.post(f"{b.url}/events/news", json={"data": "for-b"}, timeout=10)
        assert own.status_code == 202 and own.json()["id"] == 1  # its own sequence
        assert on_b.wait_for(b"for-b")
        assert b"for-a-only" not in on_b.body and b"for-b" not in on_a.body
    finally:
        on_a.close()
        on_b.close()

    # Uploads, tus resources and ETL jobs of one install are not visible to the other.
    created = requests.post(f"{a.url}/uploads/tus/", headers={**TUS, "Upload-Length": "5"}, timeout=10)
    assert created.status_code == 201
    path = created.headers["Location"].split("://", 1)[-1].split("/", 1)[-1]
    assert requests.head(f"{a.url}/{path}", headers=TUS, timeout=10).status_code == 200
    assert requests.head(f"{b.url}/{path}", headers=TUS, timeout=10).status_code == 404
    job = requests.post(f"{a.url}/etl/jobs?job=only-a", data=b"email,age,name\na@x.io,3,A\n",
                        headers={"Content-Type": "text/csv"}, timeout=30)
    assert job.status_code in (200, 201), job.text
    assert requests.get(f"{a.url}/etl/jobs/only-a", timeout=10).status_code == 200
    assert requests.get(f"{b.url}/etl/jobs/only-a", timeout=10).status_code == 404
    assert requests.get(f"{b.url}/etl/export.csv", timeout=10).text.strip() == "id,email,age,name"


def test_one_install_holding_its_publish_lock_does_not_stop_the_other(
        start_live_server: Callable[..., Any], database_url: str,
        fresh_schema: Callable[[], str]) -> None:
    name_a, name_b = fresh_schema(), fresh_schema()
    a = start_live_server(env={**FAST, "FLASKSTREAM_DB_SCHEMA": name_a})
    b = start_live_server(env={**FAST, "FLASKSTREAM_DB_SCHEMA": name_b})
    holder = connect(database_url, name_a)
    result: dict[str, int] = {}
    try:
        holder.run("BEGIN")
        holder.run("SELECT pg_advisory_xact_lock(:k)",
                   k=schema.SchemaNames(name_a).lock_key("events.publish"))

        def publish_on_a() -> None:
            result["a"] = requests.post(f"{a.url}/events/x", json={"data": 1}, timeout=30).status_code

        blocked = threading.Thread(target=publish_on_a)
        blocked.start()
        # B's publishes go through while A's lock is held...
        for _ in range(3):
            assert requests.post(f"{b.url}/events/x", json={"data": 2}, timeout=10).status_code == 202
        assert wait_for(lambda: waiting_on_advisory_lock(database_url))  # ...A's waits for its own
        assert "a" not in result
        holder.run("COMMIT")
        blocked.join(30)
        assert result == {"a": 202}
    finally:
        holder.close()
