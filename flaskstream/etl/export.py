"""Streaming export: ``COPY (SELECT * FROM <table or view>) TO STDOUT`` as CSV.

pg8000's SELECT materialises every row, so exports use COPY TO STDOUT, whose
rows pg8000 hands one CopyData message at a time to ``stream.write``. A
``ChunkWriter`` coalesces them into 256 KiB chunks. The CLI writes them straight
to a file (push); an HTTP response needs a generator (pull), so a producer
thread — a greenlet under gevent — runs the COPY into a bounded queue: memory
stays at a few chunks whatever the table's size, and the first byte goes out
as soon as the first chunk is full.

Only whole tables or views of the ``public`` schema can be exported, by name;
no SQL comes from the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flaskstream import schema
from flaskstream.db import Database, close_quietly
from flaskstream.etl.sink import quote_ident

EXPORT_CHUNK = 256 * 1024
QUEUE_CHUNKS = 4
_DONE = object()


class UnknownRelation(LookupError):
    pass


class Cancelled(Exception):
    """Raised inside pg8000's COPY OUT loop when the consumer went away."""


def exportable(con, name: str) -> bool:
    rows = con.run("SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                   "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :n "
                   "AND c.relkind IN ('r', 'v', 'm', 'p')", n=name, s=schema.of(con).schema)
    return bool(rows)


def export_sql(con: Any, name: str, header: bool = True) -> str:
    """COPY of a table in ``con``'s schema (``exportable`` said it is there)."""
    return (f"COPY (SELECT * FROM {schema.of(con).quoted}.{quote_ident(name)}) TO STDOUT "
            f"WITH (FORMAT csv{', HEADER' if header else ''})")


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


def copy_out(con, sql: str, write: Callable[[bytes], Any]) -> None:
    """Run a COPY TO STDOUT, handing ``write`` chunks of ``EXPORT_CHUNK`` bytes."""
    writer = ChunkWriter(write)
    con.run(sql, stream=writer)
    writer.flush()


def stream_copy_out(database: Database, sql: str, con=None) -> Iterator[bytes]:
    """A generator of COPY OUT chunks (for response bodies).

    Uses ``con`` if given (it is closed at the end), else a new connection.
    Closing the generator early (a client gone) cancels the COPY and drops the
    connection, which pg8000 leaves mid-protocol.
    """
    con = con or database.new_connection()
    chunks: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_CHUNKS)
    cancelled = threading.Event()

    def put(item: Any) -> None:
        while not cancelled.is_set():
            try:
                chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise Cancelled()

    def produce() -> None:
        try:
            copy_out(con, sql, put)
            put(_DONE)
        except Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            try:
                put(exc)
            except Cancelled:
                pass

    producer = threading.Thread(target=produce, name="etl-export", daemon=True)
    producer.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancelled.set()
        producer.join(timeout=5)
        close_quietly(con)
