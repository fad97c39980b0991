"""Streaming export: ``COPY (SELECT * FROM <table or view>) TO STDOUT`` as CSV.

pg8000's SELECT materialises every row, so exports use COPY TO STDOUT, whose
rows pg8000 hands one CopyData message at a time to ``stream.write``. A
``ChunkWriter`` coalesces them into 256 KiB chunks. The CLI writes them straight
to a file (push); an HTTP response needs a generator (pull), so a producer
thread — a greenlet under gevent — runs the COPY into a bounded queue: memory
stays at a few chunks whatever the table's size, and the first byte goes out
as soon as the first chunk is full.

An HTTP export holds an unpooled connection for as long as it streams, so the
number of them is bounded per worker (``ExportSlots``, ``ETL_MAX_EXPORTS``: one
more is a 503) and every way a response can end gives its slot and connection
back: a HEAD takes no slot and opens nothing (its body is never read); the
server's ``close()`` of an ``ExportBody`` releases its slot and connection in
every case, the generator never started included; the producer closes the
connection as soon as the COPY ends, fails, is cancelled by a client that
left, or stalls behind a client that stopped reading for ``stall_timeout``
seconds (a blocked socket write never reaches our code).

Only whole tables or views can be exported, by ``[schema.]name`` (unqualified:
flaskstream's own schema for its preset tables ``users``/``requests``, else
``public``); no SQL comes from the caller.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from flaskstream.db import Database, close_quietly
from flaskstream.etl.presets import PRESETS
from flaskstream.etl.sink import quote_ident
from flaskstream.schema import of as names_of

log = logging.getLogger(__name__)

EXPORT_CHUNK = 256 * 1024
QUEUE_CHUNKS = 4
POLL_SECONDS = 0.5  # how often a waiting producer or consumer checks on the other
RETRY_AFTER_SECONDS = 2  # Retry-After of the 503 when every export slot is taken
DEFAULT_SCHEMA = "public"
_DONE = object()
_NAME_PART = re.compile(r"[^\W\d][\w$]*")  # an unquoted SQL identifier (Unicode letters too)
_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


class UnknownRelation(LookupError):
    pass


class Cancelled(Exception):
    """Raised inside pg8000's COPY OUT loop when the consumer went away."""


class ExportStalled(Exception):
    """The consumer took no chunk for ``stall_timeout`` seconds: the COPY was given up."""


# --- what may be exported -----------------------------------------------------------


def valid_relation_name(name: str) -> bool:
    """``name`` or ``schema.name``, each an unquoted identifier of at most 63 bytes.

    Anything else (NUL, quotes, spaces, SQL) is refused before it reaches the
    database or an error message.
    """
    parts = name.split(".")
    return 1 <= len(parts) <= 2 and all(
        _NAME_PART.fullmatch(part) and len(part.encode()) <= _MAX_IDENTIFIER_BYTES
        for part in parts)


def allowed_tables(setting: Any) -> frozenset[str]:
    """``ETL_TABLES``: a JSON list, or a comma-separated string from the environment."""
    if isinstance(setting, str):
        setting = setting.split(",")
    return frozenset(str(name).strip() for name in setting or () if str(name).strip())


def split_name(con: Any, name: str) -> tuple[str, str]:
    """``[schema.]name`` → (schema, relation): an unqualified preset (``users``,
    ``requests``) is flaskstream's own, in ``con``'s schema; any other is ``public``'s."""
    schema, _, relation = name.rpartition(".")
    if not schema:
        schema = names_of(con).schema if relation in PRESETS else DEFAULT_SCHEMA
    return schema, relation


def exportable(con: Any, name: str) -> bool:
    """Whether ``[schema.]name`` is a table, view or materialised view."""
    schema, relation = split_name(con, name)
    rows = con.run("SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                   "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :n "
                   "AND c.relkind IN ('r', 'v', 'm', 'p')", s=schema, n=relation)
    return bool(rows)


def export_sql(con: Any, name: str, header: bool = True, columns: Sequence[str] = ()) -> str:
    """The COPY of ``[schema.]name``, schema-qualified as ``exportable`` checked it;
    ``columns`` (names checked by the caller, e.g. ``targets.export_columns``) or all."""
    schema, relation = split_name(con, name)
    qualified = f"{quote_ident(schema)}.{quote_ident(relation)}"
    selected = ", ".join(map(quote_ident, columns)) if columns else "*"
    return (f"COPY (SELECT {selected} FROM {qualified}) TO STDOUT "
            f"WITH (FORMAT csv{', HEADER' if header else ''})")


# --- COPY OUT ---------------------------------------------------------------------------


class ChunkWriter:
    """The ``stream`` pg8000 writes COPY OUT rows to; emits large chunks."""

    def __init__(self, emit: Callable[[bytes], None], size: int = EXPORT_CHUNK) -> None:
        self.emit = emit
        self.size = size
        self.buffer = bytearray()

    def write(self, data: Any) -> None:
        self.buffer += data
        if len(self.buffer) >= self.size:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.emit(bytes(self.buffer))
            self.buffer.clear()


def copy_out(con: Any, sql: str, write: Callable[[bytes], Any],
             transform: Callable[[bytes], bytes] | None = None) -> None:
    """Run a COPY TO STDOUT, handing ``write`` chunks of ``EXPORT_CHUNK`` bytes."""
    writer = ChunkWriter(write if transform is None else lambda chunk: write(transform(chunk)))
    con.run(sql, stream=writer)
    writer.flush()


# --- bounded HTTP exports ------------------------------------------------------------------


class Slot:
    """One taken export slot; ``release`` is idempotent (several paths end an export)."""

    def __init__(self, free: threading.BoundedSemaphore) -> None:
        self._free: threading.BoundedSemaphore | None = free
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            free, self._free = self._free, None
        if free is not None:
            free.release()


class ExportSlots:
    """At most ``limit`` HTTP exports of this worker hold a database connection."""

    def __init__(self, limit: int) -> None:
        self.limit = max(int(limit), 1)
        self._free = threading.BoundedSemaphore(self.limit)

    def take(self) -> Slot | None:
        """A slot, or None when all are taken (the caller answers 503, never waits)."""
        return Slot(self._free) if self._free.acquire(blocking=False) else None


def stream_copy_out(database: Database, sql: str, slot: Slot | None = None, *,
                    con: Any = None, stall_timeout: float = 60.0,
                    transform: Callable[[bytes], bytes] | None = None) -> Iterator[bytes]:
    """A generator of COPY OUT chunks (for response bodies) on a connection of its own.

    ``con`` (else one opened at the first ``next()``) is closed by the producer
    the moment the COPY ends, fails, is cancelled (the generator was closed) or
    stalls; ``slot`` is released with it. A stalled or broken export raises
    here after the chunks already queued, so the response is cut, never
    silently short.
    """
    if con is None:
        try:
            con = database.new_connection()
        except BaseException:
            if slot is not None:
                slot.release()
            raise
    producer = _Producer(con, sql, slot, stall_timeout, transform)
    producer.thread.start()
    try:
        while (item := producer.take()) is not _DONE:
            yield item
    finally:
        producer.stop()


class _Producer:
    """The thread side of ``stream_copy_out``: runs the COPY and queues its chunks, then
    one outcome (``_DONE`` or the error); the connection is closed and the slot freed
    the moment the COPY ends, whatever the consumer does afterwards."""

    def __init__(self, con: Any, sql: str, slot: Slot | None, stall_timeout: float,
                 transform: Callable[[bytes], bytes] | None) -> None:
        self.con, self.sql, self.slot = con, sql, slot
        self.stall_timeout, self.transform = stall_timeout, transform
        self.chunks: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self.run, name="etl-export", daemon=True)

    def put(self, item: Any, deadline: float | None) -> None:
        while not self.cancelled.is_set():
            try:
                self.chunks.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                if deadline is not None and time.monotonic() >= deadline:
                    raise ExportStalled(f"no chunk taken for {self.stall_timeout:g} s") from None
        raise Cancelled()

    def run(self) -> None:
        outcome: Any = _DONE
        try:
            copy_out(self.con, self.sql,
                     lambda chunk: self.put(chunk, time.monotonic() + self.stall_timeout),
                     self.transform)
        except Cancelled:
            return
        except ExportStalled as exc:
            log.warning("export stopped: %s (a client that does not read)", exc)
            outcome = exc
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            outcome = exc
        finally:
            close_quietly(self.con)  # mid-COPY after an error: never reusable, and not pooled
            if self.slot is not None:
                self.slot.release()
        # The connection is gone: waiting for the consumer now holds nothing but this thread.
        try:
            self.put(outcome, None)
        except Cancelled:
            pass

    def take(self) -> Any:
        """The next chunk or ``_DONE``; the producer's error is raised here."""
        while True:
            try:
                item = self.chunks.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self.thread.is_alive():
                    continue
                raise ExportStalled("the export producer ended without an outcome") from None
            if isinstance(item, BaseException):
                raise item
            return item

    def stop(self) -> None:
        self.cancelled.set()
        self.thread.join(timeout=5)
        if self.thread.is_alive():  # stuck in a read: closing the socket wakes it up
            close_quietly(self.con)


class ExportBody:
    """The body of one export response, given to the server as is (``direct_passthrough``).

    werkzeug does not wrap such a body, so this ``close()`` is what the WSGI
    server calls at the end of every response — after the last chunk, after a
    client went away before the first — and it gives back the slot and the
    connection in every case. (A HEAD gets no ExportBody at all: its body is
    never read.) The connection is opened by the view, so that a database that
    refuses one is an error response, not a cut body.
    """

    def __init__(self, database: Database, sql: str, slot: Slot, con: Any, *,
                 stall_timeout: float, transform: Callable[[bytes], bytes] | None = None) -> None:
        self.database = database
        self.sql = sql
        self.slot = slot
        self.con = con
        self.stall_timeout = stall_timeout
        self.transform = transform
        self._chunks: Iterator[bytes] | None = None
        # A body dropped without close() (an after_request hook that raised) still
        # gives both back when it is collected.
        weakref.finalize(self, _give_back, slot, con)

    def __iter__(self) -> Iterator[bytes]:
        if self._chunks is None:
            self._chunks = stream_copy_out(self.database, self.sql, self.slot, con=self.con,
                                           stall_timeout=self.stall_timeout,
                                           transform=self.transform)
        return self._chunks

    def close(self) -> None:
        try:
            if self._chunks is not None:
                self._chunks.close()  # type: ignore[attr-defined]
        finally:
            # A generator that never started has no producer to close the connection.
            _give_back(self.slot, self.con)


def _give_back(slot: Slot, con: Any) -> None:
    close_quietly(con)
    slot.release()
