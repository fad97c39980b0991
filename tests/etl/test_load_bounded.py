"""A load's memory stays bounded when the database is slower than the parser.

The parser runs ahead of the COPY in a helper thread (``etl/prefetch.py``);
what it has parsed but the sink has not sent is held in memory. A trigger
makes the server wait, mid-COPY, for an advisory lock the test holds: the
socket fills, the sink blocks in ``send`` and the parser runs as far ahead as
the load lets it. The input it has pulled by then is the bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest

from flaskstream import db
from flaskstream.etl.anytable import TableCsv
from flaskstream.etl.catalog import describe_table
from flaskstream.etl.jobs import run_load
from flaskstream.etl.sink import LoadOptions
from tests.etl.helpers import query

pytestmark = pytest.mark.db

MiB = 1 << 20
ROWS = 24_000  # ~24 MB of CSV: far more than any bound below
LOCK_KEY = 86_421
STALL_FUNCTION = f"""
CREATE FUNCTION public.wide_rows_stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = 100 THEN  -- wait until the test lets go of its lock
        PERFORM pg_advisory_lock_shared({LOCK_KEY});
        PERFORM pg_advisory_unlock_shared({LOCK_KEY});
    END IF;
    RETURN NEW;
END $$"""


def _pulled_until_stalled(pulled: list[int], done: threading.Event) -> int:
    """Wait until the load stops pulling input (or ends); return what it pulled."""
    last, since = -1, time.monotonic()
    deadline = since + 30
    while time.monotonic() < deadline and not done.is_set():
        if pulled[0] != last:
            last, since = pulled[0], time.monotonic()
        elif time.monotonic() - since > 1.0:
            break
        time.sleep(0.05)
    return pulled[0]


def test_a_stalled_copy_holds_a_few_mib_of_the_input_not_the_queue_of_blocks(app, clean_db):
    query(clean_db, "CREATE TABLE public.wide_rows (id integer NOT NULL, body text)")
    query(clean_db, STALL_FUNCTION)
    query(clean_db, "CREATE TRIGGER stall BEFORE INSERT ON public.wide_rows "
                    "FOR EACH ROW EXECUTE FUNCTION public.wide_rows_stall()")
    try:
        body = "x" * 1000
        data = ("id,body\n" + "".join(f"{i},{body}{i}\n" for i in range(ROWS))).encode()
        pulled = [0]

        def source() -> Iterator[bytes]:
            for i in range(0, len(data), 1 << 16):
                pulled[0] += min(1 << 16, len(data) - i)
                yield data[i:i + (1 << 16)]

        locker = pg8000.native.Connection(**db.connect_kwargs(clean_db))
        locker.run(f"SELECT pg_advisory_lock({LOCK_KEY})")
        con = pg8000.native.Connection(**db.connect_kwargs(clean_db))
        table = TableCsv(describe_table(con, "public.wide_rows"))
        con.close()
        out: dict[str, Any] = {}
        done = threading.Event()

        def load() -> None:
            with app.app_context():
                out["summary"] = run_load(db.get_database(), source(), table, LoadOptions())
            done.set()

        worker = threading.Thread(target=load)
        worker.start()
        try:
            stalled_at = _pulled_until_stalled(pulled, done)
            assert not done.is_set()  # the COPY waits at row 100
        finally:
            locker.run(f"SELECT pg_advisory_unlock({LOCK_KEY})")
            locker.close()
            worker.join(60)
        assert out["summary"]["status"] == "done"
        assert out["summary"]["rows_loaded"] == ROWS
        # The first block, two queued, one being parsed (each ~1 MiB of text), the
        # decoder's 1 MiB read and what the socket holds: measured 5.3 MB. With a
        # queue of eight blocks: 11.6 MB.
        assert stalled_at <= 8 * MiB, stalled_at
        assert query(clean_db, "SELECT count(*), max(id) FROM public.wide_rows") == [[ROWS, ROWS - 1]]
    finally:
        query(clean_db, "DROP TABLE IF EXISTS public.wide_rows")
        query(clean_db, "DROP FUNCTION IF EXISTS public.wide_rows_stall()")
