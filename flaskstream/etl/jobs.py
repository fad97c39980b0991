"""ETL jobs: the bookkeeping rows every worker can read, and ``LoadJob``, the one
place where source → pipeline → sink → rejects → progress are wired together
(the CLI and the HTTP view both call it through ``run_load``).

A load uses two connections: a dedicated one for the COPY transaction and a
bookkeeping one in autocommit for ``etl_jobs``/``etl_rejects``, so that a load
that dies (a killed backend, a client gone) is still marked failed, and rejects
recorded so far stay readable. While it runs, the job holds a lease that a
background heartbeat renews (``joblease.py``): a job whose worker was killed is
failed by a janitor instead of staying ``running``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from flaskstream import metrics
from flaskstream.db import Database, DatabaseError, close_quietly, is_connection_lost
from flaskstream.errorbase import FlaskstreamError
from flaskstream.etl.anytable import TableCsv
from flaskstream.etl.joblease import JobLease
from flaskstream.etl.jobrows import (  # noqa: F401 - re-exported: the CLI and views read jobs here
    DEFAULT_LEASE,
    JobExists,
    JobRecorder,
    RejectsFile,
    get_job,
    new_job_id,
    recent_jobs,
    valid_job_id,
)
from flaskstream.etl.pacing import GC_GEN0_DURING_LOADS, relaxed_gc  # noqa: F401 - re-exported
from flaskstream.etl.pipeline import (
    Batch,
    CopyBlock,
    Progress,
    Reject,
    read_chunks,
)
from flaskstream.etl.prefetch import prefetch
from flaskstream.etl.sink import CopySink, LoadOptions, preset_target
from flaskstream.etl.tables import Table, csv_copy_blocks

log = logging.getLogger(__name__)
BATCH_BYTES = 8 << 20  # COPY text of one batch, at most about (see LoadJob._bound_batches)
# Parsed blocks waiting for the sink, in COPY text (see LoadJob._prefetch_depth): a few
# keep the parser ahead while the COPY is in flight; a queue of eight 1 MiB blocks of
# wide rows held 11.6 MB of input when the server stalled.
PREFETCH_BYTES = 2 << 20
PREFETCH_DEPTH = (2, 8)  # blocks queued, at least and at most


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


def summary(job_id: str | None, table_name: str, options: LoadOptions, progress: Progress,
            status: str, seconds: float, error: BaseException | None = None,
            committed: int = 0) -> dict[str, Any]:
    loaded = progress.rows_loaded if status == "done" else committed
    out: dict[str, Any] = {
        "job": job_id, "table": table_name, "mode": options.mode, "status": status,
        "dry_run": options.dry_run, "bytes": progress.bytes_read,
        "rows_read": progress.rows_read, "rows_loaded": loaded,
        "rows_rejected": progress.rows_rejected, "seconds": round(seconds, 3),
        "rows_per_s": round(progress.rows_read / seconds) if seconds > 0 else 0,
        "mb_per_s": round(progress.bytes_read / seconds / 1e6, 2) if seconds > 0 else 0,
    }
    if error is not None:
        out["error"] = {"code": error_code(error), "message": encodable(error_message(error))}
    return out


def encodable(text: str) -> str:
    """``text`` as UTF-8 can carry it: a surrogate-escaped byte (an undecodable CSV
    header quoted in a message) becomes ``\\xNN``, so the job row and the summary
    JSON can still be written (else the job stays ``running`` until its lease ends)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
        .encode("utf-8", "backslashreplace").decode("utf-8")


def error_code(exc: BaseException) -> str:
    """The error's own code (every flaskstream error carries one), else the database's kind."""
    if isinstance(exc, FlaskstreamError):
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
    if isinstance(exc, FlaskstreamError):
        return exc.message
    text = str(exc).strip() or type(exc).__name__
    if is_connection_lost(exc) and not isinstance(exc, DatabaseError):
        return f"connection lost: {text}"
    return text


Parser = Callable[..., Iterator[CopyBlock]]


class LoadJob:
    """One load, in named steps: ``start`` (job row + lease), ``run`` (header, then
    every batch through the sink), ``checkpoint`` (after each ``--commit-every``
    commit), ``finish`` (record the outcome); ``close`` releases everything, once.

    A dry run needs no database at all. ``on_progress(event, data)`` gets
    ``progress`` events at most every ``progress_interval`` seconds, then one
    ``done`` or ``error``.
    """

    def __init__(self, database: Database | None, table: Table | TableCsv, options: LoadOptions,
                 *, job_id: str | None = None, source_name: str = "-",
                 rejects: RejectsFile | None = None, store_rejects: int = 10_000,
                 on_progress: Callable[[str, dict[str, Any]], None] | None = None,
                 on_connect: Callable[[Any], None] | None = None,
                 progress_interval: float = 0.25, lease: float | None = None) -> None:
        self.database, self.table, self.options = database, table, options
        self.job_id, self.source_name = job_id, source_name
        self.rejects, self.store_rejects = rejects, store_rejects
        self.notify = on_progress or (lambda event, data: None)
        self.on_connect = on_connect
        self.interval = progress_interval
        self.lease = lease
        self.progress = Progress()
        self.started = time.monotonic()
        self.recorder: JobRecorder | None = None
        self.job_lease: JobLease | None = None
        self.con: Any = None
        self.committed = 0
        self.last_tick: dict[str, Any] = {}
        self.throttled = Throttle(self.tick, progress_interval)
        self.status: int | None = None  # HTTP status the error carried, if it did

    # --- steps ----------------------------------------------------------------

    def start(self) -> None:
        """Create the job row (``JobExists`` if taken) and start renewing its lease."""
        if self.options.dry_run:
            return
        assert self.database is not None
        book = self.database.new_connection()
        try:
            book.run("SET application_name = 'flaskstream-etl-jobs'")
        except BaseException:
            close_quietly(book)
            raise
        self.job_id = self.job_id or new_job_id()
        self.recorder = JobRecorder(book, self.job_id, store_rejects=self.store_rejects,
                                    lease=configured_lease() if self.lease is None else self.lease,
                                    reconnect=self.database.new_connection)
        self.recorder.create(self.table.name, self.options.mode, self.source_name)
        self.job_lease = JobLease(book, self.recorder.lock, self.job_id, self.recorder.lease).start()

    def run(self, chunks: Iterable[bytes], parser: Parser, **parser_options: Any) -> None:
        """Parse and load every row; raises whatever stopped the load (rolled back)."""
        blocks = parser(chunks, self.table, progress=self.progress, **parser_options)
        first = next(blocks, None)  # header checked (and mapped) here: before any write
        if first is not None:
            self._bound_batches(first)
            blocks = itertools.chain([first], prefetch(blocks, depth=self._prefetch_depth(first),
                                                       on_idle=self.throttled,
                                                       idle_interval=self.interval))
        if not self.options.dry_run:
            assert self.database is not None
            self.con = self.database.new_connection()
            if self.on_connect is not None:
                self.on_connect(self.con)
        target = self.table.copy_target(self.options.mode == "upsert") \
            if isinstance(self.table, TableCsv) else preset_target(self.table, self.con)
        sink = CopySink(self.con, target, self.options, self.progress,
                        on_rejects=self.note_rejects, on_progress=self.throttled,
                        on_commit=self.checkpoint)
        with relaxed_gc():
            sink.load(blocks)

    def _bound_batches(self, first: CopyBlock) -> None:
        """Fewer rows per batch for wide rows: a batch is kept in memory until it
        commits (for the retry), so its size is bounded in bytes too (``BATCH_BYTES``)."""
        if first.lines and first.text:
            width = max(1, len(first.text) // len(first.lines))
            self.options.batch_rows = max(1000, min(self.options.batch_rows, BATCH_BYTES // width))

    @staticmethod
    def _prefetch_depth(first: CopyBlock) -> int:
        """Blocks the parser may run ahead: ``PREFETCH_BYTES`` of COPY text (eight of
        the presets' ~160 KB blocks; two of 1 MiB blocks of wide rows)."""
        low, high = PREFETCH_DEPTH
        return max(low, min(high, PREFETCH_BYTES // max(1, len(first.text))))

    def checkpoint(self, batch: Batch) -> None:
        """A commit went through: what is loaded so far stays, and a resume starts here."""
        self.committed = self.progress.rows_loaded
        if self.recorder is not None:
            position = batch.position
            offset = position.offset + self.progress.bom_bytes if position else None
            self.recorder.update(self.progress, committed=self.committed, line=batch.end_line,
                                 offset=offset)

    def finish(self, error: BaseException | None) -> dict[str, Any]:
        """Record the outcome (or leave it to the lease), tell the listeners, summarise."""
        status = "done" if error is None else "failed"
        if error is not None:
            self.progress.rows_loaded = self.committed  # the rest was rolled back
        result = summary(self.job_id, self.table.name, self.options, self.progress, status,
                         time.monotonic() - self.started, error, self.committed)
        if isinstance(error, JobExists):
            return result  # the row is another job's: leave it alone
        if self.job_lease is not None:
            self.job_lease.stop()
        metrics.etl_finished(status, self.progress.rows_loaded, self.progress.rows_rejected)
        message = result["error"]["message"] if error is not None else None
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            message = "interrupted"
        self._record(status, message)
        if error is None:
            self.notify("done", {**self.snapshot(), "status": "done"})
        elif isinstance(error, Exception):
            self.notify("error", {**self.snapshot(), "error": result["error"]})
        return result

    def close(self) -> None:
        """The one cleanup: lease, both connections, the rejects file."""
        if self.job_lease is not None:
            self.job_lease.stop()
        for connection in (self.con, self.recorder.con if self.recorder else None):
            if connection is not None:
                close_quietly(connection)
        if self.rejects is not None:
            self.rejects.close()

    def execute(self, source: IO[bytes] | Iterable[bytes], parser: Parser | None = None,
                **parser_options: Any) -> dict[str, Any]:
        """Every step in order; the summary. Never raises for bad input or a failed
        load (``BaseException``s such as KeyboardInterrupt propagate, after rollback)."""
        chunks: Iterable[bytes] = (
            read_chunks(source, self.progress) if hasattr(source, "read")  # type: ignore[arg-type]
            else _counted(source, self.progress))  # type: ignore[arg-type]
        if parser is None:
            parser = self.table.blocks if isinstance(self.table, TableCsv) else csv_copy_blocks
        try:
            self.start()
            self.run(chunks, parser, **parser_options)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a summary
            if not isinstance(exc, EXPECTED) and not is_connection_lost(exc):
                log.exception("ETL load %s failed", self.job_id)
            self.status = http_status(exc)
            return self.finish(exc)
        except BaseException as exc:
            self.finish(exc)
            raise
        else:
            return self.finish(None)
        finally:
            self.close()

    # --- helpers --------------------------------------------------------------

    def _record(self, status: str, message: str | None) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.finish(self.progress, status, message)
        except Exception:  # noqa: BLE001 - bookkeeping must not hide the load's own outcome
            log.warning("could not record job %s as %s; its lease will run out and a janitor "
                        "will fail it", self.recorder.job_id, status, exc_info=True)

    def snapshot(self) -> dict[str, Any]:
        p = self.progress
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {"bytes": p.bytes_read, "rows_read": p.rows_read, "rows_loaded": p.rows_loaded,
                "rows_rejected": p.rows_rejected, "rows_per_s": round(p.rows_read / elapsed)}

    def tick(self) -> None:
        if self.job_lease is not None:
            self.job_lease.check()  # a janitor failed the job while we were frozen: stop
        now = self.snapshot()
        if {**now, "rows_per_s": 0} == {**self.last_tick, "rows_per_s": 0}:
            return  # nothing moved (a stalled input): no repeated event or row update
        self.last_tick = now
        self.notify("progress", now)
        if self.recorder is not None:
            self.recorder.update(self.progress)

    def note_rejects(self, batch_rejects: list[Reject]) -> None:
        if self.rejects is not None:
            self.rejects.write(batch_rejects)
        if self.recorder is not None:
            self.recorder.add_rejects(batch_rejects)


EXPECTED = (FlaskstreamError, DatabaseError)  # failures with a clear message: no traceback logged


def run_load(database: Database | None, source: IO[bytes] | Iterable[bytes],
             table: Table | TableCsv, options: LoadOptions, *,
             parser: Parser | None = None, parser_options: dict[str, Any] | None = None,
             encoding: str = "utf-8", field_size_limit: int = 1 << 20,
             **job_options: Any) -> dict[str, Any]:
    """Load ``source`` into ``table``; return the summary (``status`` done/failed).
    ``job_options`` are ``LoadJob``'s keywords; see ``LoadJob.execute``."""
    return LoadJob(database, table, options, **job_options).execute(
        source, parser, encoding=encoding, field_size_limit=field_size_limit,
        **(parser_options or {}))


def http_status(exc: BaseException) -> int | None:
    """The status an error carries itself (every flaskstream error), if any."""
    return exc.status if isinstance(exc, FlaskstreamError) else None


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

