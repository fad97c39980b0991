"""ETL job leases: a ``running`` job is running only while its worker says so.

Why: a load runs inside one request (or one ``flask etl load``). A worker
killed mid-load (SIGKILL, OOM, a lost host) runs no ``finally``, and a load
whose last write failed (the database was down at that moment) could not
record its outcome; either way the row said ``running`` for good. Like a tus
upload's lease (``tus/store.py``), the job row carries ``lease_expires``, which
the running load renews in the background (``leases.Heartbeat``, every third of
the lease); ``fail_expired``, run by a janitor on every worker and at start-up
(``flaskstream/janitors.py``), marks jobs whose lease ran out ``failed`` with
the reason and publishes a ``failed`` event on ``etl.<id>``.

A frozen worker that wakes after its job was failed finds the lease gone at its
next renewal and stops the load (``LeaseLost``): the job never flips back.

Functions take a pg8000.native connection and plain callables (no flask);
times come from the database clock so workers on different hosts agree.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flaskstream import schema
from flaskstream.errorbase import FixedError
from flaskstream.leases import SECONDS, Heartbeat

log = logging.getLogger(__name__)

EXPIRED_CODE = "LEASE_EXPIRED"
FAILED_EVENT = "failed"


class LeaseLost(FixedError):
    """This process no longer holds the job (a janitor failed it while we were frozen)."""

    code, status = "LEASE_LOST", 500


def _jobs(con: Any) -> str:
    return schema.qualified(con, "etl_jobs")


def renew(con: Any, job_id: str, lease: float) -> bool:
    """Push the lease back; False if the job is no longer ``running`` (lease lost)."""
    rows = con.run(f"UPDATE {_jobs(con)} SET lease_expires = clock_timestamp() + :lease {SECONDS} "
                   "WHERE id = :id AND status = 'running' RETURNING 1",
                   id=job_id, lease=float(lease))
    return bool(rows)


class JobLease:
    """Renews one running job's lease in the background through a shared connection.

    The bookkeeping connection is also used by the load itself, so every use of
    it goes through ``lock`` (one query at a time on a pg8000 connection).
    """

    def __init__(self, con: Any, lock: threading.Lock, job_id: str, lease: float) -> None:
        self.con = con
        self.lock = lock
        self.job_id = job_id
        self.lease = float(lease)
        self.lost = False
        self._heartbeat = Heartbeat(self._beat, max(self.lease / 3, 0.05),
                                    name=f"etl-lease-{job_id}")

    def start(self) -> JobLease:
        self._heartbeat.start()
        return self

    def stop(self) -> None:
        self._heartbeat.stop()

    def _beat(self) -> bool:
        with self.lock:
            held = renew(self.con, self.job_id, self.lease)
        if not held:
            self.lost = True
            log.warning("ETL job %s lost its lease (failed by a janitor); stopping the load",
                        self.job_id)
        return held

    def check(self) -> None:
        """Raise ``LeaseLost`` once a renewal found the job no longer ours."""
        if self.lost:
            raise LeaseLost(f"job {self.job_id} was failed while its worker was unresponsive")


def expired_message(worker: str | None) -> str:
    return (f"lease expired: the worker running the job ({worker or 'unknown'}) stopped "
            "renewing it (it was killed, or could not record the outcome)")


def fail_expired(con: Any, publish: Callable[[str, dict[str, Any]], Any], *,
                 grace: float, limit: int = 100) -> list[str]:
    """Mark ``running`` jobs whose lease ran out as ``failed``; return their ids.

    Rows written before leases existed (``lease_expires`` NULL) count as expired
    ``grace`` seconds after their last update. The ``failed`` event is published
    (idempotently, key ``failed``) before the rows change, inside the transaction
    that locks them (``SKIP LOCKED``: janitors of several workers share the
    work): if publishing fails nothing changes and the next pass retries, so
    every failed job gets its event at least once.
    """
    con.run("BEGIN")
    try:
        rows = con.run(
            f"SELECT id, worker, rows_committed FROM {_jobs(con)} WHERE status = 'running' AND "
            f"COALESCE(lease_expires, updated_at + :grace {SECONDS}) < clock_timestamp() "
            "ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED",
            grace=float(grace), limit=limit)
        for job_id, worker, committed in rows:
            publish(job_id, {"status": "failed", "rows_committed": committed,
                             "error": {"code": EXPIRED_CODE, "message": expired_message(worker)}})
        if rows:
            con.run(
                f"UPDATE {_jobs(con)} AS j SET status = 'failed', lease_expires = NULL, "
                "error = f.error, updated_at = now(), finished_at = now() "
                "FROM unnest(CAST(:ids AS text[]), CAST(:errors AS text[])) AS f(id, error) "
                "WHERE j.id = f.id", ids=[r[0] for r in rows],
                errors=[expired_message(r[1]) for r in rows])
        con.run("COMMIT")
    except BaseException:
        try:
            con.run("ROLLBACK")
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise
    return [r[0] for r in rows]
