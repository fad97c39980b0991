"""A connection that failed mid-query never serves another query (issue 12, finding 1).

pg8000 can fail after part of a query went out: an encoding error (a lone
surrogate, after Parse/Describe were sent), a greenlet killed while it waits
for the reply, a gevent timeout, a socket timeout. The reply is then
unread, and a pooled connection reused afterwards hands the next borrower the
previous query's rows. These tests inject a failure at every I/O call of one
query (pg8000's module-level ``_read``/``_write``/``_flush``), in both shapes a
caller can give it: the error leaves the ``with`` block, or the caller catches
it inside and carries on. Then 100 concurrent borrowers must each read back
exactly their own answer, and no backend may be left behind.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import gevent
import pg8000.core
import pytest
from flask import Flask
from greenlet import GreenletExit

from flaskstream import db
from tests.live import wait_for

PROBE_SQL = "SELECT CAST(:v AS text), pg_backend_pid()"
IO_NAMES = ("_read", "_write", "_flush")

FAILURES: dict[str, Callable[[], BaseException]] = {
    "killed greenlet": GreenletExit,
    "gevent timeout": gevent.Timeout,
    "socket timeout": socket.timeout,
    # What pg8000 raises when BIND cannot be encoded, after PARSE/DESCRIBE went out
    # (text is checked before sending now; any other unencodable value would do this).
    "encoding error": lambda: UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
}


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "DB_POOL_SIZE": 4}


@contextmanager
def fail_at(point: int, failure: Callable[[], BaseException]) -> Iterator[list[int]]:
    """Make pg8000's ``point``-th socket call (counting from 0) raise ``failure()``."""
    originals = {name: getattr(pg8000.core, name) for name in IO_NAMES}
    calls = [0]

    def wrap(name: str) -> Callable[..., Any]:
        def io(*args: Any) -> Any:
            calls[0] += 1
            if calls[0] - 1 == point:
                raise failure()
            return originals[name](*args)
        return io

    for name in IO_NAMES:
        setattr(pg8000.core, name, wrap(name))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(pg8000.core, name, fn)


def io_points(database: db.Database) -> int:
    """How many socket calls one probe query makes (each is a place to fail)."""
    with database.connection() as con, fail_at(-1, RuntimeError) as calls:
        con.run(PROBE_SQL, v="count")
    assert calls[0] >= 4
    return calls[0]


def borrowers_read_their_own(database: db.Database, n: int = 100) -> None:
    def borrow(i: int) -> list[Any]:
        with database.connection() as con:
            return con.run("SELECT CAST(:i AS int), CAST(:t AS text)", i=i, t=f"answer-{i}")

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(borrow, range(n)))
    assert answers == [[[i, f"answer-{i}"]] for i in range(n)]


def backends(database: db.Database) -> set[int]:
    """Backend pids of this process's connections (its application_name)."""
    with database.connection() as con:
        name = con.run("SELECT current_setting('application_name')")[0][0]
        return {r[0] for r in con.run(
            "SELECT pid FROM pg_stat_activity WHERE application_name = :n", n=name)}


def assert_no_backend_left(database: db.Database) -> None:
    probe = database.new_connection()
    try:
        name = probe.run("SELECT current_setting('application_name')")[0][0]
        database.close_all()
        assert wait_for(lambda: probe.run(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"
            " AND pid <> pg_backend_pid()", n=name)[0][0] == 0)
    finally:
        db.close_quietly(probe)


@pytest.mark.parametrize("caught_inside", [False, True], ids=["raised", "swallowed"])
@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_failure_at_any_point_of_a_query_never_reaches_another_borrower(
        app: Flask, kind: str, caught_inside: bool) -> None:
    database = db.get_database(app)
    points = io_points(database)
    for point in range(points):
        with pytest.raises(BaseException) as info:  # noqa: PT011 - any of FAILURES, or wrapped
            with database.connection() as con:
                try:
                    with fail_at(point, FAILURES[kind]):
                        con.run(PROBE_SQL, v=f"poison-{point}")
                except BaseException:
                    if not caught_inside:
                        raise
                    # The caller swallowed it and carried on: the connection refuses.
                    with pytest.raises(db.InterfaceError):
                        con.run("SELECT 1")
                    raise RuntimeError("swallowed") from None
        assert info.type is (RuntimeError if caught_inside else type(FAILURES[kind]()))
    borrowers_read_their_own(database)
    assert_no_backend_left(database)


def test_text_utf8_cannot_encode_is_refused_before_anything_is_sent(app: Flask) -> None:
    """The issue's case: ``"\ud800"`` used to fail in BIND after PARSE/DESCRIBE were sent.
    Now nothing goes out: the same connection answers its next query correctly."""
    database = db.get_database(app)
    for bad in ({"v": "bad \ud800 text"}, {"v": "\udfff"}):
        with database.connection() as con:
            with pytest.raises(db.UnencodableText):
                con.run(PROBE_SQL, **bad)
            assert con.in_step
            assert con.run("SELECT CAST(:v AS text)", v="mine") == [["mine"]]
    with database.connection() as con, pytest.raises(db.UnencodableText):
        con.run("SELECT CAST(:v AS text[])", v=["ok", "x\ud800"])  # arrays too
    borrowers_read_their_own(database)
    assert_no_backend_left(database)


def test_a_server_error_read_to_the_end_keeps_the_connection(app: Flask) -> None:
    """The one reusable case: the pool keeps a connection after a plain SQL error."""
    database = db.get_database(app)
    with database.connection() as con:
        first = con.run("SELECT pg_backend_pid()")[0][0]
    with pytest.raises(db.DatabaseError), database.connection() as con:
        con.run("SELECT CAST(:v AS int)", v="not a number")
    with database.connection() as con:
        assert con.run("SELECT pg_backend_pid()")[0][0] == first
    borrowers_read_their_own(database, 20)


def test_acquire_skips_idle_connections_that_fell_out_of_step(app: Flask) -> None:
    """``acquire`` loops past idle connections it must not hand out (it used to return
    the first one whatever its state) and closes them."""
    database = db.get_database(app)
    cons = [database.acquire() for _ in range(3)]
    pids = [con.run("SELECT pg_backend_pid()")[0][0] for con in cons]
    for con in cons:  # idle is LIFO: cons[2] comes back first
        database.release(con)
        database._slots.release()  # noqa: SLF001 - the slot acquire() took
    cons[1].in_step = cons[2].in_step = False  # as if code outside the pool had hidden a failure
    with database.connection() as con:
        assert con is cons[0]
        assert con.run("SELECT pg_backend_pid()")[0][0] == pids[0]
    assert wait_for(lambda: not backends(database) & {pids[1], pids[2]})
