"""The rows of ETL jobs: ``etl_jobs`` (one per load) and ``etl_rejects``, written
through an autocommit bookkeeping connection so that every worker can read a
job while it runs and after it died; and the rejects CSV file of a CLI load.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable
from typing import IO, Any

from flaskstream import logs
from flaskstream.db import DatabaseError, close_quietly, qualified_in
from flaskstream.errorbase import FixedError
from flaskstream.etl.pipeline import Progress, Reject

JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
JOB_COLUMNS = ("id", "table_name", "mode", "source", "status", "error", "bytes_read",
               "rows_read", "rows_loaded", "rows_rejected", "rows_committed",
               "checkpoint_line", "checkpoint_offset", "worker", "created_at",
               "updated_at", "finished_at")
REJECT_HEADER = ("line", "reason", "text")
DEFAULT_LEASE = 30.0  # ETL_JOB_LEASE when no app is around


class JobExists(FixedError):
    """The job id is taken (``--job`` / ``?job=`` names an existing job)."""

    code, status = "JOB_EXISTS", 409


def new_job_id() -> str:
    return secrets.token_hex(8)


def valid_job_id(job_id: str) -> bool:
    return bool(JOB_ID_RE.fullmatch(job_id))


def _row(values: list[Any]) -> dict[str, Any]:
    job = dict(zip(JOB_COLUMNS, values, strict=True))
    for key in ("created_at", "updated_at", "finished_at"):
        if job[key] is not None:
            job[key] = job[key].isoformat()
    job["table"] = job.pop("table_name")
    return job


def _jobs(con: Any) -> str:
    """The etl_jobs table of ``con``'s install, schema-qualified."""
    return qualified_in(con, "etl_jobs")


def get_job(con, job_id: str) -> dict[str, Any] | None:
    rows = con.run(f"SELECT {', '.join(JOB_COLUMNS)} FROM {_jobs(con)} WHERE id = :id", id=job_id)
    return _row(rows[0]) if rows else None


def recent_jobs(con, limit: int = 20, owner: str | None = None) -> list[dict[str, Any]]:
    rows = con.run(f"SELECT {', '.join(JOB_COLUMNS)} FROM {_jobs(con)} WHERE CAST(:o AS text) IS NULL "
                   "OR owner = :o ORDER BY created_at DESC LIMIT :n", n=limit, o=owner)  # o: mine
    return [_row(r) for r in rows]


def copy_text_field(value: str) -> str:
    """A str as one COPY text field (undecodable bytes shown as \\xNN)."""
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r").replace("\x00", "\\\\x00"))


class JobRecorder:
    """Writes one job's row and rejects through an autocommit connection.

    The connection is shared with the job's lease heartbeat (another greenlet or
    thread), so every query holds ``lock``.
    """

    def __init__(self, con, job_id: str, *, store_rejects: int = 10_000,
                 lease: float = DEFAULT_LEASE, reconnect: Callable[[], Any] | None = None) -> None:
        self.con = con
        self.reconnect = reconnect
        self.job_id = job_id
        self.store_rejects = store_rejects
        self.stored = 0
        self.lease = float(lease)
        self.lock = threading.Lock()

    def create(self, table: str, mode: str, source: str) -> None:
        try:
            with self.lock:
                self.con.run(
                    f"INSERT INTO {_jobs(self.con)} (id, table_name, mode, source, worker, request_id, "
                    "lease_expires) "
                    "VALUES (:id, :t, :m, :s, :w, :rid, clock_timestamp() + :lease * interval '1 second')",
                    id=self.job_id, t=table, m=mode, s=source[:500],
                    w=f"{socket.gethostname()}:{os.getpid()}", rid=logs.request_id(), lease=self.lease)
        except DatabaseError as exc:
            if (exc.args[0] or {}).get("C") == "23505":
                raise JobExists(f"job {self.job_id} exists already") from None
            raise

    def update(self, progress: Progress, *, status: str | None = None, error: str | None = None,
               committed: int | None = None, line: int | None = None,
               offset: int | None = None) -> None:
        with self.lock:
            self._update(progress, status, error, committed, line, offset)

    def _update(self, progress: Progress, status: str | None, error: str | None,
                committed: int | None, line: int | None, offset: int | None) -> None:
        self.con.run(
            f"UPDATE {_jobs(self.con)} SET bytes_read = :b, rows_read = :r, rows_loaded = :l, "
            "rows_rejected = :j, status = COALESCE(:st, status), error = COALESCE(:e, error), "
            "rows_committed = COALESCE(:c, rows_committed), "
            "checkpoint_line = COALESCE(:cl, checkpoint_line), "
            "checkpoint_offset = COALESCE(:co, checkpoint_offset), updated_at = now(), "
            "finished_at = CASE WHEN :st IN ('done', 'failed') THEN now() END, "
            "lease_expires = CASE WHEN :st IN ('done', 'failed') THEN NULL "
            "ELSE lease_expires END WHERE id = :id",
            b=progress.bytes_read, r=progress.rows_read, l=progress.rows_loaded,
            j=progress.rows_rejected, st=status, e=error, c=committed, cl=line, co=offset,
            id=self.job_id)

    def finish(self, progress: Progress, status: str, error: str | None) -> None:
        """Record the outcome; if the connection broke, once more on a new one. If that
        fails too (the database is down), the caller's lease runs out instead."""
        try:
            self.update(progress, status=status, error=error)
            return
        except Exception:
            if self.reconnect is None:
                raise
        fresh = self.reconnect()
        with self.lock:
            broken, self.con = self.con, fresh
        close_quietly(broken)
        self.update(progress, status=status, error=error)

    def add_rejects(self, rejects: list[Reject]) -> None:
        room = self.store_rejects - self.stored
        if room <= 0:
            return
        rejects = rejects[:room]
        self.stored += len(rejects)
        text = "".join(f"{self.job_id}\t{r.line}\t{copy_text_field(r.reason)}\t"
                       f"{copy_text_field(r.text)}\n" for r in rejects)
        with self.lock:
            self.con.run(f"COPY {qualified_in(self.con, 'etl_rejects')} (job_id, line, reason, text) "
                         "FROM STDIN",
                         stream=[text.encode("utf-8")])


class RejectsFile:
    """The rejects CSV: line, reason, original text (original bytes kept)."""

    def __init__(self, path: str | None, stream: IO[str] | None = None) -> None:
        self.path = path
        self.file = stream
        if stream is None and path:
            self.file = open(path, "w", encoding="utf-8", errors="surrogateescape",  # noqa: SIM115
                             newline="")
        self.writer = csv.writer(self.file) if self.file else None
        if self.writer:
            self.writer.writerow(REJECT_HEADER)

    def write(self, rejects: list[Reject]) -> None:
        if self.writer:
            self.writer.writerows((r.line, r.reason, r.text) for r in rejects)

    def close(self) -> None:
        if self.file is not None and self.path:
            self.file.close()
