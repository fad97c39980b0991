"""ETL jobs: the bookkeeping rows every worker can read, and ``run_load``, the one
place where source → pipeline → sink → rejects → progress are wired together
(the CLI and the HTTP view both call it).

A load uses two connections: a dedicated one for the COPY transaction and a
bookkeeping one in autocommit for ``etl_jobs``/``etl_rejects``, so that a load
that dies (a killed backend, a client gone) is still marked failed, and rejects
recorded so far stay readable. While it runs, the job holds a lease that a
background heartbeat renews (``joblease.py``): a job whose worker was killed is
failed by a janitor instead of staying ``running``.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from flaskstream import logs, metrics
from flaskstream.db import Database, DatabaseError, close_quietly, is_connection_lost, qualified_in
from flaskstream.etl.joblease import JobLease, LeaseLost
from flaskstream.etl.pacing import GC_GEN0_DURING_LOADS, relaxed_gc  # noqa: F401 - re-exported
from flaskstream.etl.pipeline import (
    Batch,
    CopyBlock,
    InputError,
    Progress,
    Reject,
    read_chunks,
)
from flaskstream.etl.prefetch import prefetch
from flaskstream.etl.sink import CopySink, LoadError, LoadOptions
from flaskstream.etl.tables import HeaderError, Table, csv_copy_blocks

log = logging.getLogger(__name__)

JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
JOB_COLUMNS = ("id", "table_name", "mode", "source", "status", "error", "bytes_read",
               "rows_read", "rows_loaded", "rows_rejected", "rows_committed",
               "checkpoint_line", "checkpoint_offset", "worker", "created_at",
               "updated_at", "finished_at")
REJECT_HEADER = ("line", "reason", "text")
BAD_INPUT = (InputError, HeaderError)
DEFAULT_LEASE = 30.0  # ETL_JOB_LEASE when no app is around


class JobExists(Exception):
    pass


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


def get_job(con, job_id: str) -> dict[str, Any] | None:
    rows = con.run(f"SELECT {', '.join(JOB_COLUMNS)} FROM {qualified_in(con, 'etl_jobs')} WHERE id = :id",
                   id=job_id)
    return _row(rows[0]) if rows else None


def recent_jobs(con, limit: int = 20, owner: str | None = None) -> list[dict[str, Any]]:
    rows = con.run(f"SELECT {', '.join(JOB_COLUMNS)} FROM {qualified_in(con, 'etl_jobs')} "
                   "WHERE CAST(:o AS text) IS NULL OR owner = :o "
                   "ORDER BY created_at DESC LIMIT :n", n=limit, o=owner)  # o: mine
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
                    f"INSERT INTO {qualified_in(self.con, 'etl_jobs')} (id, table_name, mode, source, "
                    "worker, request_id, lease_expires) VALUES (:id, :t, :m, :s, :w, :rid, "
                    "clock_timestamp() + :lease * interval '1 second')",
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
            f"UPDATE {qualified_in(self.con, 'etl_jobs')} SET bytes_read = :b, rows_read = :r, "
            "rows_loaded = :l, rows_rejected = :j, status = COALESCE(:st, status), "
            "error = COALESCE(:e, error), rows_committed = COALESCE(:c, rows_committed), "
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
                         "FROM STDIN", stream=[text.encode("utf-8")])


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


class Throttle:
    """Calls ``fn`` at most every ``interval`` seconds (plus when forced)."""

    def __init__(self, fn: Callable[[], None], interval: float = 0.25) -> None:
        self.fn = fn
        self.interval = interval
        self.last = 0.0

    def __call__(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            self.fn()


def summary(job_id: str | None, table: Table, options: LoadOptions, progress: Progress,
            status: str, seconds: float, error: LoadError | Exception | None = None,
            committed: int = 0) -> dict[str, Any]:
    loaded = progress.rows_loaded if status == "done" else committed
    out: dict[str, Any] = {
        "job": job_id, "table": table.name, "mode": options.mode, "status": status,
        "dry_run": options.dry_run, "bytes": progress.bytes_read,
        "rows_read": progress.rows_read, "rows_loaded": loaded,
        "rows_rejected": progress.rows_rejected, "seconds": round(seconds, 3),
        "rows_per_s": round(progress.rows_read / seconds) if seconds > 0 else 0,
        "mb_per_s": round(progress.bytes_read / seconds / 1e6, 2) if seconds > 0 else 0,
    }
    if error is not None:
        out["error"] = {"code": error_code(error), "message": error_message(error)}
    return out


def error_code(exc: BaseException) -> str:
    if isinstance(exc, LoadError):
        return exc.code
    if isinstance(exc, HeaderError):
        return "BAD_HEADER"
    if isinstance(exc, InputError):
        return "BAD_INPUT"
    if isinstance(exc, LeaseLost):
        return exc.code
    if is_connection_lost(exc):
        return "DATABASE_CONNECTION_LOST"
    if isinstance(exc, DatabaseError):
        return "DATABASE_ERROR"
    return "LOAD_FAILED"


def error_message(exc: BaseException) -> str:
    if isinstance(exc, DatabaseError) and exc.args and isinstance(exc.args[0], dict):
        fields = exc.args[0]
        return f"database: {fields.get('M', exc)}"
    text = str(exc).strip() or type(exc).__name__
    if is_connection_lost(exc) and not isinstance(exc, DatabaseError):
        return f"connection lost: {text}"
    return text


def run_load(database: Database | None, source: IO[bytes] | Iterable[bytes], table: Table,
             options: LoadOptions, *, job_id: str | None = None, source_name: str = "-",
             encoding: str = "utf-8", field_size_limit: int = 1 << 20,
             rejects: RejectsFile | None = None, store_rejects: int = 10_000,
             on_progress: Callable[[str, dict[str, Any]], None] | None = None,
             on_connect: Callable[[Any], None] | None = None,
             parser: Callable[..., Iterator[CopyBlock]] = csv_copy_blocks,
             parser_options: dict[str, Any] | None = None,
             progress_interval: float = 0.25, lease: float | None = None) -> dict[str, Any]:
    """Load ``source`` into ``table``; return the summary (``status`` done/failed).

    The job row holds a lease of ``lease`` seconds (default: the app's
    ``ETL_JOB_LEASE``), renewed in the background while the load runs.

    Never raises for bad input or a failed load: the summary carries the error
    (``BaseException``s such as KeyboardInterrupt still propagate, after rollback).
    ``on_progress(event, data)`` gets ``progress`` events at most every
    ``progress_interval`` seconds, then one ``done`` or ``error``. A dry run needs no database at all.
    """
    progress = Progress()
    started = time.monotonic()
    chunks: Iterable[bytes] = (
        read_chunks(source, progress) if hasattr(source, "read")  # type: ignore[arg-type]
        else _counted(source, progress))  # type: ignore[arg-type]
    notify = on_progress or (lambda event, data: None)
    recorder: JobRecorder | None = None
    job_lease: JobLease | None = None
    con = book = None
    committed = [0]

    def snapshot() -> dict[str, Any]:
        elapsed = max(time.monotonic() - started, 1e-9)
        return {"bytes": progress.bytes_read, "rows_read": progress.rows_read,
                "rows_loaded": progress.rows_loaded, "rows_rejected": progress.rows_rejected,
                "rows_per_s": round(progress.rows_read / elapsed)}

    last_tick: list[dict[str, Any]] = [{}]

    def tick() -> None:
        if job_lease is not None:
            job_lease.check()  # a janitor failed the job while we were frozen: stop
        now = snapshot()
        if {**now, "rows_per_s": 0} == {**last_tick[0], "rows_per_s": 0}:
            return  # nothing moved (a stalled input): no repeated event or row update
        last_tick[0] = now
        notify("progress", now)
        if recorder is not None:
            recorder.update(progress)

    throttled = Throttle(tick, progress_interval)

    def note_rejects(batch_rejects: list[Reject]) -> None:
        if rejects is not None:
            rejects.write(batch_rejects)
        if recorder is not None:
            recorder.add_rejects(batch_rejects)

    def checkpoint(batch: Batch) -> None:
        committed[0] = progress.rows_loaded
        if recorder is not None:
            offset = batch.position.offset + progress.bom_bytes if batch.position else None
            recorder.update(progress, committed=committed[0], line=batch.end_line, offset=offset)

    try:
        if not options.dry_run:
            assert database is not None
            book = database.new_connection()
            book.run("SET application_name = 'flaskstream-etl-jobs'")
            job_id = job_id or new_job_id()
            recorder = JobRecorder(book, job_id, store_rejects=store_rejects,
                                   lease=configured_lease() if lease is None else lease,
                                   reconnect=database.new_connection)
            recorder.create(table.name, options.mode, source_name)
            job_lease = JobLease(book, recorder.lock, job_id, recorder.lease).start()
        blocks = parser(chunks, table, encoding=encoding, progress=progress,
                        field_size_limit=field_size_limit, **(parser_options or {}))
        first = next(blocks, None)  # header checked here: before any write
        blocks = itertools.chain([first] if first is not None else [],
                                 prefetch(blocks, on_idle=throttled, idle_interval=progress_interval)
                                 if first is not None else blocks)
        if not options.dry_run:
            assert database is not None
            con = database.new_connection()
            if on_connect is not None:
                on_connect(con)
        sink = CopySink(con, table, options, progress, on_rejects=note_rejects,
                        on_progress=throttled, on_commit=checkpoint)
        with relaxed_gc():
            sink.load(blocks)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a summary
        if not isinstance(exc, (*BAD_INPUT, LoadError, JobExists, DatabaseError, LeaseLost)) and \
                not is_connection_lost(exc):
            log.exception("ETL load %s failed", job_id)
        progress.rows_loaded = committed[0]  # the rest was rolled back
        result = summary(job_id, table, options, progress, "failed",
                         time.monotonic() - started, exc, committed[0])
        if isinstance(exc, JobExists):
            result["error"]["code"] = "JOB_EXISTS"
            return result
        _finish(recorder, job_lease, progress, "failed", result["error"]["message"])
        notify("error", {**snapshot(), "error": result["error"]})
        return result
    except BaseException:
        progress.rows_loaded = committed[0]
        _finish(recorder, job_lease, progress, "failed", "interrupted")
        raise
    else:
        result = summary(job_id, table, options, progress, "done", time.monotonic() - started)
        _finish(recorder, job_lease, progress, "done", None)
        notify("done", {**snapshot(), "status": "done"})
        return result
    finally:
        if job_lease is not None:
            job_lease.stop()
        for connection in (con, book, recorder.con if recorder else None):
            if connection is not None:
                close_quietly(connection)
        if rejects is not None:
            rejects.close()


def _finish(recorder: JobRecorder | None, job_lease: JobLease | None, progress: Progress,
            status: str, error: str | None) -> None:
    """Stop renewing the lease and record the outcome (or leave it to the lease)."""
    if job_lease is not None:
        job_lease.stop()
    metrics.etl_finished(status, progress.rows_loaded, progress.rows_rejected)
    if recorder is None:
        return
    try:
        recorder.finish(progress, status, error)
    except Exception:  # noqa: BLE001 - bookkeeping must not hide the load's own outcome
        log.warning("could not record job %s as %s; its lease will run out and a janitor "
                    "will fail it", recorder.job_id, status, exc_info=True)


def configured_lease() -> float:
    """``ETL_JOB_LEASE`` of the current app (CLI and HTTP loads run in an app context)."""
    from flask import current_app, has_app_context
    if has_app_context():
        return float(current_app.config.get("ETL_JOB_LEASE", DEFAULT_LEASE))
    return DEFAULT_LEASE


def _counted(chunks: Iterable[bytes], progress: Progress) -> Iterator[bytes]:
    for chunk in chunks:
        progress.bytes_read += len(chunk)
        yield chunk

