"""The COPY sink: validated COPY text into PostgreSQL through pg8000.

One transaction per load (all-or-nothing) unless ``commit_every`` asks for
checkpoints. Each batch is one ``COPY ... FROM STDIN`` under a savepoint, its
stream a generator that pulls the pipeline lazily (parsing overlaps the
server's inserts). Three pg8000 facts shape the code (see the design brief):

* each item of the stream is one CopyData message, so items are ~256 KiB chunks;
* pg8000 reads no reply until the stream ends: after every chunk the stream
  peeks at the socket and stops early once the server has spoken (an error),
  so a bad row costs at most a chunk, not the rest of the batch;
* an exception raised inside the stream leaves the connection broken (no
  CopyFail): the stream catches everything, records it and stops; the load then
  rolls back and re-raises it.

A row the server refuses (a duplicate key, a constraint) is isolated the way
pgloader does it: roll back to the batch's savepoint, copy the rows before it
(known good), record it as a reject, and go on with the rest in pieces that
start small and double while they succeed.
"""

from __future__ import annotations

import re
import select
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flaskstream import schema
from flaskstream.adapters import pg8000 as pg8000_adapter
from flaskstream.db import DatabaseError, reusable
from flaskstream.errorbase import FixedError
from flaskstream.etl.mapping import CopyTarget
from flaskstream.etl.pipeline import COPY_CHUNK_SIZE, Batch, CopyBlock, Progress, Reject, csv_text, fill_batch
from flaskstream.etl.tables import Table

MODES = ("insert", "upsert")
RETRY_FIRST_PIECE = 8
_COPY_LINE = re.compile(r"COPY [^,]+, line (\d+)")


class LoadError(FixedError):
    """A load that stopped; ``code`` is stable for APIs, the message is for people."""

    code, status = "LOAD_FAILED", 422


class TooManyErrors(LoadError):
    code = "TOO_MANY_ERRORS"


@dataclass
class LoadOptions:
    mode: str = "insert"
    batch_rows: int = 250_000
    chunk_size: int = COPY_CHUNK_SIZE
    max_errors: int | None = None  # abort when more rows than this are rejected
    max_error_ratio: float | None = None  # ... or when rejected/read passes this
    commit_every: int | None = None  # commit (and checkpoint) every N rows
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_PRESET_TYPES = {"int": "bigint", "text": "text", "email": "text"}


def preset_target(table: Table, con: Any = None) -> CopyTarget:
    """A hand-written table of ``tables.py`` (``USERS``, for the benchmarks and
    their tests; ``etl load`` and ``etl logs`` read the presets from the catalog):
    flaskstream's own, in ``con``'s schema (no connection: a dry run, which sends nothing)."""
    relation = quote_ident(table.name) if con is None else schema.qualified(con, table.name)
    return CopyTarget(relation, tuple(table.column_names), table.key,
                      tuple(_PRESET_TYPES[c.type] for c in table.columns), table.name)


def unescape_copy_row(row: bytes) -> list[str]:
    """COPY text format row → field values (``\\N`` → empty), for reject texts."""
    out = []
    for value in row.decode("utf-8").split("\t"):
        if value == "\\N":
            out.append("")
            continue
        out.append(re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(
            m.group(1), m.group(1)), value))
    return out


def server_reason(exc: DatabaseError) -> str:
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    reason = fields.get("M") or str(exc)
    if fields.get("D"):
        reason += f" ({fields['D']})"
    return reason


def error_copy_line(exc: DatabaseError) -> int | None:
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    match = _COPY_LINE.search(fields.get("W", ""))
    return int(match.group(1)) if match else None


class CopySink:
    """Loads CopyBlocks into ``table`` over one pg8000 connection."""

    def __init__(self, con, table: Table | CopyTarget, options: LoadOptions, progress: Progress, *,
                 on_rejects: Callable[[list[Reject]], None] | None = None,
                 on_progress: Callable[[], None] | None = None,
                 on_commit: Callable[[Batch], None] | None = None) -> None:
        self.con = con
        self.target = target = table if isinstance(table, CopyTarget) else preset_target(table, con)
        self.options = options
        self.progress = progress
        self.on_rejects = on_rejects or (lambda rejects: None)
        self.on_progress = on_progress or (lambda: None)
        self.on_commit = on_commit or (lambda batch: None)
        columns = ", ".join(map(quote_ident, target.columns))
        relation = target.relation
        if options.mode == "upsert":
            if not target.key:
                raise ValueError(f"table {target.label} has no key to upsert on")
            relation = "etl_stage"
        self.copy_sql = f"COPY {relation} ({columns}) FROM STDIN"
        self._since_commit = 0

    # --- the load ------------------------------------------------------------

    def load(self, blocks: Iterator[CopyBlock]) -> None:
        """Consume every block; on any failure roll back and raise."""
        blocks = iter(blocks)
        if self.options.dry_run:
            self._dry_run(blocks)
            return
        con = self.con
        con.run("BEGIN")
        try:
            if self.options.mode == "upsert":
                self._create_stage()
            while True:
                batch = Batch()
                self._copy_batch(blocks, batch)
                if self.options.mode == "upsert":
                    self._merge_stage()
                self.progress.rows_loaded += batch.rows
                self._since_commit += batch.rows
                self.on_progress()
                if self.options.commit_every and self._since_commit >= self.options.commit_every:
                    con.run("COMMIT")
                    self._since_commit = 0
                    self.on_commit(batch)
                    con.run("BEGIN")
                if batch.exhausted:
                    break
            if self.options.mode == "upsert":
                con.run("DROP TABLE IF EXISTS pg_temp.etl_stage")
            con.run("COMMIT")
        except BaseException as exc:
            if reusable(con, exc):  # else the reply is unread: the caller closes it
                try:
                    con.run("ROLLBACK")
                except Exception:  # noqa: BLE001 - the original error matters more
                    pass
            raise

    def _dry_run(self, blocks: Iterator[CopyBlock]) -> None:
        for block in blocks:
            self._note_rejects(block.rejects)
            self.progress.rows_loaded += len(block.lines)
            self.on_progress()

    def _note_rejects(self, rejects: list[Reject]) -> None:
        if not rejects:
            return
        self.progress.rows_rejected += len(rejects)
        self.on_rejects(rejects)
        self._check_error_budget()

    def _check_error_budget(self) -> None:
        p, o = self.progress, self.options
        if o.max_errors is not None and p.rows_rejected > o.max_errors:
            raise TooManyErrors(f"{p.rows_rejected} rows rejected, more than --max-errors "
                                f"{o.max_errors}; nothing was loaded")
        if o.max_error_ratio is not None and p.rows_read >= 100 and \
                p.rows_rejected > o.max_error_ratio * p.rows_read:
            raise TooManyErrors(f"{p.rows_rejected} of {p.rows_read} rows rejected, more than "
                                f"{o.max_error_ratio:.1%}; nothing was loaded")

    # --- one batch -----------------------------------------------------------

    def _stream(self, blocks: Iterator[CopyBlock], batch: Batch, failure: list) -> Iterator[bytes]:
        """The COPY stream: never raises (see the module docstring)."""
        sock = pg8000_adapter.raw_socket(self.con)
        seen = 0
        try:
            for chunk in fill_batch(blocks, batch, self.options.batch_rows,
                                    self.options.chunk_size):
                if len(batch.rejects) > seen:
                    self._note_rejects(batch.rejects[seen:])
                    seen = len(batch.rejects)
                yield chunk
                self.on_progress()
                if sock is not None and select.select([sock], [], [], 0)[0]:
                    return  # the server spoke mid-COPY: an error; stop sending
            if len(batch.rejects) > seen:
                self._note_rejects(batch.rejects[seen:])
        except BaseException as exc:  # noqa: BLE001 - re-raised by _copy_batch
            failure.append(exc)

    def _copy_batch(self, blocks: Iterator[CopyBlock], batch: Batch) -> None:
        con = self.con
        con.run("SAVEPOINT etl_batch")
        failure: list[BaseException] = []
        error: DatabaseError | None = None
        try:
            con.run(self.copy_sql, stream=self._stream(blocks, batch, failure))
        except DatabaseError as exc:
            if not reusable(con, exc):
                raise
            error = exc
        if failure:
            raise failure[0]
        if error is not None:
            con.run("ROLLBACK TO SAVEPOINT etl_batch")
            self._isolate(batch, error)
        con.run("RELEASE SAVEPOINT etl_batch")

    def _copy_piece(self, rows: list[bytes]) -> DatabaseError | None:
        con = self.con
        con.run("SAVEPOINT etl_piece")
        try:
            con.run(self.copy_sql, stream=[b"\n".join(rows) + b"\n"])
        except DatabaseError as exc:
            if not reusable(con, exc):
                raise
            con.run("ROLLBACK TO SAVEPOINT etl_piece")
            return exc
        con.run("RELEASE SAVEPOINT etl_piece")
        return None

    def _isolate(self, batch: Batch, error: DatabaseError) -> None:
        """Reload ``batch`` without the rows the server refuses (pgloader's retry)."""
        rows = b"".join(batch.chunks).split(b"\n")[:-1]
        lines = batch.lines
        batch.chunks = []
        kept: list[int] = []
        bad: int | None = self._bad_index(error, 0, len(rows))
        i, step = 0, RETRY_FIRST_PIECE
        reason = server_reason(error)
        while True:
            if bad is not None:
                if bad > i:  # rows before the bad one went in fine: copy them again
                    failed = self._copy_piece(rows[i:bad])
                    if failed is None:
                        kept.extend(range(i, bad))
                        i = bad
                    else:
                        bad, reason = self._bad_index(failed, i, bad), server_reason(failed)
                    continue
                self._note_rejects([Reject(lines[bad], reason,
                                           csv_text(unescape_copy_row(rows[bad])))])
                i, bad, step = bad + 1, None, RETRY_FIRST_PIECE
            if i >= len(rows):
                break
            end = min(len(rows), i + step)
            failed = self._copy_piece(rows[i:end])
            if failed is None:
                kept.extend(range(i, end))
                i, step = end, step * 2
            else:
                bad, reason = self._bad_index(failed, i, end), server_reason(failed)
        batch.lines = type(lines)("q", (lines[k] for k in kept))

    def _bad_index(self, error: DatabaseError, start: int, end: int) -> int:
        """Index (in the batch) of the row an error names; re-raise if it names none."""
        line = error_copy_line(error)
        if line is None or not 1 <= line <= end - start:
            raise error
        return start + line - 1

    # --- upsert ------------------------------------------------------------

    def _create_stage(self) -> None:
        t = self.target
        columns = ", ".join(f"{quote_ident(name)} {sql_type}"
                            for name, sql_type in zip(t.columns, t.stage_types, strict=True))
        self.con.run("DROP TABLE IF EXISTS pg_temp.etl_stage")
        self.con.run("CREATE TEMP TABLE etl_stage (etl_row bigint GENERATED ALWAYS AS IDENTITY, "
                     f"{columns}) ON COMMIT DELETE ROWS")

    def _merge_stage(self) -> None:
        """Stage → target; within one batch the last row for a key wins."""
        names = [quote_ident(c) for c in self.target.columns]
        keys = [quote_ident(c) for c in self.target.key]
        key = ", ".join(keys)
        updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names if n not in keys)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        cols = ", ".join(names)
        self.con.run(
            f"INSERT INTO {self.target.relation} ({cols}) "
            f"SELECT DISTINCT ON ({key}) {cols} FROM etl_stage ORDER BY {key}, etl_row DESC "
            f"ON CONFLICT ({key}) {action}")
        self.con.run("TRUNCATE etl_stage")
