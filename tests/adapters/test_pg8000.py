"""Contract tests: what ``flaskstream.adapters.pg8000`` assumes of pg8000 1.31.6, pinned on
real connections to the session's PostgreSQL, and each capability's public fallback.
"""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Iterator

import pg8000.native
import pytest
from flask import Flask
from pg8000.exceptions import DatabaseError

from flaskstream import adapters, db
from flaskstream.adapters import pg8000 as pa

pytestmark = pytest.mark.db


@pytest.fixture
def con(database_url: str) -> Iterator[pg8000.native.Connection]:
    connection = pg8000.native.Connection(**db.connect_kwargs(database_url))
    yield connection
    db.close_quietly(connection)


@pytest.mark.parametrize("name", ["pg8000.raw_socket", "pg8000.buffered_input",
                                  "pg8000.transaction_status"])
def test_each_start_up_check_holds_on_the_installed_pg8000(name: str) -> None:
    cap = adapters.registered()[name]
    assert cap.check() is None
    assert cap.ok()


def test_raw_socket_is_the_connections_socket_and_signals_a_notification(
        con: pg8000.native.Connection, database_url: str) -> None:
    sock = pa.raw_socket(con)
    assert isinstance(sock, socket.socket)
    con.run("LISTEN adapter_contract")
    assert select.select([sock], [], [], 0)[0] == []
    other = pg8000.native.Connection(**db.connect_kwargs(database_url))
    try:
        other.run("NOTIFY adapter_contract, 'hello'")
    finally:
        other.close()
    assert select.select([sock], [], [], 5)[0] == [sock]
    # The buffered reader has not seen it yet; peeking pulls it in without blocking.
    assert pa.has_buffered_input(con) is True
    assert select.select([sock], [], [], 0)[0] == []  # now only pg8000's buffer holds it
    assert pa.has_buffered_input(con) is True
    assert sock.gettimeout() == con._usock.gettimeout()  # restored
    con.run("SELECT 1")
    assert [n[1:] for n in con.notifications] == [("adapter_contract", "hello")]
    assert pa.has_buffered_input(con) is False  # and it returns at once when nothing is there


def test_transaction_status_follows_begin_error_and_rollback(con: pg8000.native.Connection) -> None:
    assert con._transaction_status is None  # pg8000 clears it after the start-up
    assert pa.in_transaction(con) is False
    con.run("SELECT 1")
    assert con._transaction_status == b"I" and pa.in_transaction(con) is False
    con.run("BEGIN")
    assert pa.in_transaction(con) is True
    with pytest.raises(DatabaseError):
        con.run("SELECT 1/0")
    assert con._transaction_status == b"E" and pa.in_transaction(con) is True
    con.run("ROLLBACK")
    assert pa.in_transaction(con) is False


def test_disabled_capabilities_take_their_public_fallbacks(con: pg8000.native.Connection) -> None:
    adapters.reset_all("pg8000")
    assert pa.raw_socket(con) is None
    assert pa.has_buffered_input(con) is False
    assert pa.in_transaction(con) is True  # unknown: always roll back


def test_a_surprise_at_use_switches_the_capability_off_once(caplog) -> None:
    class NotPg8000:
        _usock = "not a socket"
        _transaction_status = "I"

    with caplog.at_level(logging.WARNING, "flaskstream.adapters"):
        assert pa.raw_socket(NotPg8000()) is None
        assert pa.in_transaction(NotPg8000()) is True
        assert pa.raw_socket(NotPg8000()) is None
    assert not pa.RAW_SOCKET.ok() and not pa.TRANSACTION_STATUS.ok()
    assert len(caplog.records) == 2


@pytest.mark.parametrize("disabled", ["", "pg8000.transaction_status"])
def test_a_pooled_connection_comes_back_outside_any_transaction(app: Flask, disabled: str) -> None:
    adapters.reset_all(disabled)
    database = db.get_database(app)
    con = database.acquire()
    con.run("BEGIN")
    con.run("CREATE TEMPORARY TABLE left_open (v int)")
    database.release(con)
    again = database.acquire()
    try:
        assert again is con  # the same connection, reused
        assert again.run("SELECT count(*) FROM pg_tables WHERE tablename = 'left_open'") == [[0]]
        assert again.run("SELECT now() = statement_timestamp()") == [[True]]  # not in a txn
    finally:
        database.release(again)
