"""ETL job leases: renewed while a load runs, failed by the janitor when nobody renews them.

Against the real PostgreSQL, without gunicorn: ``run_load`` renews through a
real thread here (a greenlet under gevent), and the janitor pass is called
directly. The kill -9 versions are in ``tests/fault/``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flaskstream import db, janitors
from flaskstream.etl import joblease
from flaskstream.etl.jobs import run_load
from flaskstream.etl.sink import LoadOptions
from flaskstream.etl.tables import USERS
from tests.etl.helpers import query, users_csv
from tests.live import wait_for

pytestmark = pytest.mark.db


def job_row(url: str, job: str) -> dict[str, Any]:
    rows = query(url, "SELECT status, error, lease_expires IS NOT NULL, "
                 "lease_expires > clock_timestamp() FROM flaskstream.etl_jobs WHERE id = :id", id=job)
    status, error, has_lease, lease_live = rows[0]
    return {"status": status, "error": error, "has_lease": has_lease, "lease_live": lease_live}


def failed_events(url: str, job: str) -> list[str]:
    return [r[0] for r in query(url, "SELECT data FROM flaskstream.events WHERE channel = :c AND "
                                "event = 'failed' ORDER BY id", c=f"etl.{job}")]


def slow_source(gate: threading.Event, rows: int = 5000) -> Iterator[bytes]:
    """A CSV body that stalls (like a slow client) until ``gate`` is set; more rows than
    one parser block, so the load is past its header check and waiting in the pipeline."""
    yield users_csv(rows)
    gate.wait(30)


def start_load(app: Flask, job: str, source: Any, lease: float) -> tuple[threading.Thread, dict]:
    out: dict[str, Any] = {}

    def run() -> None:
        with app.app_context():
            out["summary"] = run_load(db.get_database(app), source, USERS, LoadOptions(),
                                      job_id=job, lease=lease, progress_interval=0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_stalled_load_keeps_renewing_its_lease(app: Flask, clean_db: str) -> None:
    gate = threading.Event()
    thread, out = start_load(app, "stalled", slow_source(gate), lease=1.2)
    try:
        assert wait_for(lambda: query(clean_db, "SELECT 1 FROM flaskstream.etl_jobs WHERE id = 'stalled'"))
        time.sleep(2.5)  # twice the lease: only renewals keep it alive
        assert job_row(clean_db, "stalled")["lease_live"]
        assert janitors.fail_expired_jobs(app) == []
        assert job_row(clean_db, "stalled")["status"] == "running"
    finally:
        gate.set()
        thread.join(30)
    assert out["summary"]["status"] == "done", out
    row = job_row(clean_db, "stalled")
    assert (row["status"], row["has_lease"]) == ("done", False)  # a finished job holds no lease


def test_a_job_whose_worker_died_is_failed_once_with_a_failed_event(app: Flask, clean_db: str
                                                                    ) -> None:
    """The row a SIGKILLed worker leaves: running, lease in the past (and one from before leases)."""
    query(clean_db, "INSERT INTO flaskstream.etl_jobs (id, table_name, worker, lease_expires) VALUES "
          "('dead', 'users', 'host-a:4242', clock_timestamp() - interval '1 second')")
    query(clean_db, "INSERT INTO flaskstream.etl_jobs (id, table_name, worker, updated_at) VALUES "
          "('old', 'users', 'host-a:4243', now() - interval '1 hour')")
    query(clean_db, "INSERT INTO flaskstream.etl_jobs (id, table_name, worker, lease_expires) VALUES "
          "('alive', 'users', 'host-b:1', clock_timestamp() + interval '1 minute')")
    assert sorted(janitors.fail_expired_jobs(app)) == ["dead", "old"]
    dead = job_row(clean_db, "dead")
    assert dead["status"] == "failed" and not dead["has_lease"]
    assert "lease expired" in dead["error"] and "host-a:4242" in dead["error"]
    assert job_row(clean_db, "alive")["status"] == "running"
    assert janitors.fail_expired_jobs(app) == []  # once
    (event,) = failed_events(clean_db, "dead")
    assert '"code":"LEASE_EXPIRED"' in event.replace(" ", "")
    assert query(clean_db, "SELECT finished_at IS NOT NULL FROM flaskstream.etl_jobs WHERE id = 'dead'") == [
        [True]]


def test_publish_failure_changes_nothing_and_the_next_pass_retries(app: Flask, clean_db: str
                                                                   ) -> None:
    query(clean_db, "INSERT INTO flaskstream.etl_jobs (id, table_name, lease_expires) VALUES "
          "('retry', 'users', clock_timestamp() - interval '1 second')")

    def broken(job_id: str, data: dict[str, Any]) -> None:
        raise ConnectionError("event bus down")

    with db.get_database(app).connection() as con, pytest.raises(ConnectionError):
        joblease.fail_expired(con, broken, grace=30)
    assert job_row(clean_db, "retry")["status"] == "running"
    assert janitors.fail_expired_jobs(app) == ["retry"]
    assert len(failed_events(clean_db, "retry")) == 1


def terminate_bookkeeping(url: str) -> None:
    query(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
          "WHERE application_name = 'flaskstream-etl-jobs'")


def test_a_broken_bookkeeping_connection_still_records_the_outcome(app: Flask, clean_db: str
                                                                   ) -> None:
    def source() -> Iterator[bytes]:
        yield users_csv(50)
        terminate_bookkeeping(clean_db)  # the job row's connection dies mid-load
        yield users_csv(50, start=50)[len(b"email,age,name\n"):]

    thread, out = start_load(app, "rebooked", source(), lease=30)
    thread.join(30)
    summary = out["summary"]
    assert summary["status"] == "failed", summary  # its progress could not be written
    row = job_row(clean_db, "rebooked")  # at once, on a new connection: not after the lease
    assert (row["status"], row["error"], row["has_lease"]) == (
        "failed", summary["error"]["message"], False)
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[0]]


def test_a_failure_that_could_not_be_recorded_ends_up_failed(app: Flask, clean_db: str,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """The bookkeeping connection dies and the database refuses new ones just before the
    load fails (as when it is down at that moment; the real kill is in tests/fault/): the
    row cannot say failed, but its lease runs out and the janitor does."""
    database = db.get_database(app)
    down = threading.Event()
    connect = database.new_connection

    def new_connection(**extra: Any) -> Any:
        if down.is_set():
            raise ConnectionRefusedError(111, "Connection refused")
        return connect(**extra)

    monkeypatch.setattr(database, "new_connection", new_connection)

    def source() -> Iterator[bytes]:
        yield users_csv(50)
        terminate_bookkeeping(clean_db)
        down.set()
        raise RuntimeError("input broke")

    thread, out = start_load(app, "unrecorded", source(), lease=0.5)
    thread.join(30)
    down.clear()
    assert out["summary"]["status"] == "failed"
    assert job_row(clean_db, "unrecorded")["status"] == "running"  # the outcome was lost
    assert wait_for(lambda: janitors.fail_expired_jobs(app) == ["unrecorded"], timeout=5,
                    interval=0.1)
    assert job_row(clean_db, "unrecorded")["status"] == "failed"
    assert len(failed_events(clean_db, "unrecorded")) == 1


def test_a_frozen_load_whose_job_was_failed_stops_and_never_flips_back(app: Flask, clean_db: str
                                                                        ) -> None:
    gate = threading.Event()
    thread, out = start_load(app, "frozen", slow_source(gate), lease=0.6)
    try:
        assert wait_for(lambda: query(clean_db, "SELECT 1 FROM flaskstream.etl_jobs WHERE id = 'frozen'"))
        # As if the worker had been frozen past its lease and another worker's janitor ran:
        # the lease is expired and failed in one transaction, so no renewal slips in between
        # (the heartbeat's UPDATE waits for the row lock, then finds the job failed).
        with db.get_database(app).connection() as con:
            con.run("BEGIN")
            con.run("UPDATE flaskstream.etl_jobs SET lease_expires = clock_timestamp() - interval '1 second' "
                    "WHERE id = 'frozen'")
            assert joblease.fail_expired(con, lambda job_id, data: None, grace=30) == ["frozen"]
        time.sleep(1.0)  # the next renewal (every 0.2 s) finds the lease gone
    finally:
        gate.set()
        thread.join(10)
    assert out["summary"]["status"] == "failed"
    assert out["summary"]["error"]["code"] == "LEASE_LOST"
    assert job_row(clean_db, "frozen")["status"] == "failed"
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[0]]


def test_flask_janitor_run_does_one_pass(app: Flask, runner, clean_db: str) -> None:
    query(clean_db, "INSERT INTO flaskstream.etl_jobs (id, table_name, worker, lease_expires) VALUES "
          "('cron', 'users', 'h:1', clock_timestamp() - interval '1 second')")
    result = runner.invoke(args=["janitor", "run"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("1 ETL jobs failed (lease expired), 0 staging files removed")
    assert job_row(clean_db, "cron")["status"] == "failed"
