"""One loader run for bench/etl.py, in its own process so its peak RSS is its own.

    python bench/etl_loader.py pipeline|pipeline-dry|naive|insert-sink|typed DATABASE_URL PATH|-

``pipeline`` is flaskstream's load (``run_load``: COPY sink, rejects, jobs) of the
``users`` preset as ``etl load`` does it (the catalog read once, the preset's rules);
``pipeline-table`` the same load through the hand-written ``tables.USERS`` stage
(the presets' path before the catalog took them over, kept for this comparison);
``pipeline-dry`` the same with ``--dry-run`` (every stage, no database writes);
``typed`` is ``etl load --table public.customers`` (catalog read once, TableCsv).
``naive`` is the lesson's pipeline in Python: row-at-a-time generator stages
(``csv.DictReader`` → validate/normalise each row → batch(1000)) into batched
multi-row INSERTs of 1,000 rows with bound parameters. ``insert-sink`` keeps
flaskstream's columnar stages and swaps only the sink for those INSERTs.
Prints one JSON line: the summary plus ``peak_rss_mib``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pg8000.native  # noqa: E402

from flaskstream import db, schema  # noqa: E402
from flaskstream.etl.pipeline import Progress, read_chunks  # noqa: E402
from flaskstream.etl.tables import USERS, Invalid, convert_value, csv_copy_blocks  # noqa: E402

NAIVE_BATCH = 1000


class UrlDatabase:
    """The two things run_load needs from flaskstream.db.Database."""

    def __init__(self, url: str) -> None:
        self.kwargs = db.connect_kwargs(url)

    def new_connection(self) -> pg8000.native.Connection:
        return schema.attach(pg8000.native.Connection(**self.kwargs), schema.SchemaNames("flaskstream"))


def naive_rows(source, progress: Progress):
    """Row-at-a-time stages: DictReader → validate each row (the per-value rules)."""
    text = io.TextIOWrapper(source, encoding="utf-8-sig", errors="replace", newline="")
    for record in csv.DictReader(text):
        progress.rows_read += 1
        try:
            yield [convert_value(c, record.get(c.name) or "") for c in USERS.columns]
        except Invalid:
            continue


def naive(url: str, source, columnar: bool) -> dict:
    """Validated rows, then INSERT ... VALUES (...) x 1000 in one transaction."""
    con = pg8000.native.Connection(**db.connect_kwargs(url))
    progress = Progress()
    size = os.fstat(source.fileno()).st_size
    started = time.monotonic()
    names = USERS.column_names
    width = len(names)

    def statement(rows: int) -> str:
        tuples = ",".join(
            "(" + ",".join(f"${r * width + c + 1}" for c in range(width)) + ")" for r in range(rows))
        return f"INSERT INTO flaskstream.users ({', '.join(names)}) VALUES {tuples}"

    full = statement(NAIVE_BATCH)
    pending: list = []
    con.run("BEGIN")
    if columnar:
        rows = (None if v == "\\N" else v for block in csv_copy_blocks(
            read_chunks(source, progress), USERS, progress=progress)
            for line in block.text.splitlines() for v in line.split("\t"))
    else:
        rows = (v for values in naive_rows(source, progress) for v in values)
    for value in rows:
        pending.append(value)
        if len(pending) == NAIVE_BATCH * width:
            con.execute_unnamed(full, pending)
            progress.rows_loaded += NAIVE_BATCH
            pending = []
    if pending:
        con.execute_unnamed(statement(len(pending) // width), pending)
        progress.rows_loaded += len(pending) // width
    con.run("COMMIT")
    con.close()
    seconds = time.monotonic() - started
    if not columnar:
        progress.bytes_read = size
    return {"status": "done", "bytes": progress.bytes_read, "rows_read": progress.rows_read,
            "rows_loaded": progress.rows_loaded, "rows_rejected": progress.rows_read
            - progress.rows_loaded, "seconds": round(seconds, 3),
            "rows_per_s": round(progress.rows_read / seconds),
            "mb_per_s": round(progress.bytes_read / seconds / 1e6, 2)}


def main() -> None:
    kind, url, path = sys.argv[1:4]
    source = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    if kind in ("naive", "insert-sink"):
        result = naive(url, source, columnar=kind == "insert-sink")
    else:
        from flaskstream.etl.anytable import TableCsv
        from flaskstream.etl.catalog import describe_table
        from flaskstream.etl.jobs import run_load
        from flaskstream.etl.presets import PRESETS
        from flaskstream.etl.sink import LoadOptions

        table: Any = USERS
        if kind != "pipeline-table":
            con = pg8000.native.Connection(**db.connect_kwargs(url))
            table = TableCsv(describe_table(con, "public.customers")) if kind == "typed" else \
                TableCsv(describe_table(con, "flaskstream.users"), None, PRESETS["users"])
            con.close()
        result = run_load(UrlDatabase(url), source, table,
                          LoadOptions(dry_run=kind == "pipeline-dry"), source_name=path)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
