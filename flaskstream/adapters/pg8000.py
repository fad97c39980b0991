"""pg8000 1.31.6 internals, behind named capabilities.

pg8000 keeps its socket and the server's transaction status on the connection
object, under private names, and offers no public accessor for either (the
DB-API class's ``_in_transaction`` is private too). Capabilities
(``tests/adapters/test_pg8000.py`` pins each, on a real connection):

``pg8000.raw_socket``  ``raw_socket(con)``: the connection's socket (``con._usock``),
    to wait on it for LISTEN/NOTIFY and to see mid-COPY that the server has spoken.
    Fallback: None; the listener then waits its poll interval between reads and a
    COPY with a bad row sends its whole batch before the error is read (slower,
    still correct).
``pg8000.buffered_input``  ``has_buffered_input(con)``: whether pg8000's read buffer
    (``con._sock``, a ``BufferedRWPair``) holds bytes the socket will not signal.
    Fallback: False; a notification that arrived with the end of a query then waits
    for the next poll (later, never lost).
``pg8000.transaction_status``  ``in_transaction(con)``: the status byte of the last
    ReadyForQuery (``con._transaction_status``). Fallback: True, so a returned
    connection is always rolled back (one round trip more, harmless when idle).

The static parts are checked at start-up; the instance attributes are checked on
the first connection each capability sees, and a surprise there switches it off
(logged once) instead of raising.
"""

from __future__ import annotations

import io
import socket
from typing import Any

from pg8000 import core
from pg8000.native import Connection

from flaskstream.adapters.registry import capability

IDLE = core.IDLE


def _check_raw_socket() -> str | None:
    if not issubclass(Connection, core.CoreConnection):
        return "pg8000.native.Connection is no longer a CoreConnection"
    return None


def _check_buffered_input() -> str | None:
    if not hasattr(io.BufferedRWPair, "peek"):
        return "BufferedRWPair has no peek"
    return _check_raw_socket()


def _check_transaction_status() -> str | None:
    if not callable(getattr(core.CoreConnection, "handle_READY_FOR_QUERY", None)):
        return "CoreConnection.handle_READY_FOR_QUERY is gone"
    if (core.IDLE, core.IN_TRANSACTION, core.IN_FAILED_TRANSACTION) != (b"I", b"T", b"E"):
        return "transaction status bytes changed"
    return None


RAW_SOCKET = capability("pg8000.raw_socket", _check_raw_socket, "poll without a socket")
BUFFERED_INPUT = capability("pg8000.buffered_input", _check_buffered_input,
                            "assume nothing buffered")
TRANSACTION_STATUS = capability("pg8000.transaction_status", _check_transaction_status,
                                "always roll back")


def raw_socket(con: Any) -> socket.socket | None:
    """The socket under ``con`` (to select on), or None where it cannot be had."""
    if not RAW_SOCKET.ok():
        return None
    sock = getattr(con, "_usock", None)
    if isinstance(sock, socket.socket):
        return sock
    RAW_SOCKET.fail(f"{type(con).__name__}._usock is {type(sock).__name__}")
    return None


def has_buffered_input(con: Any) -> bool:
    """True if pg8000's read buffer already holds bytes the socket will not signal.

    A notification that arrives together with the end of our last query is read
    into pg8000's buffered reader but not parsed, and then the socket is not
    readable any more: waiting on it would sit until the next poll. Peek at the
    buffer with the socket made non-blocking for the moment (a raw read then
    returns nothing instead of waiting).
    """
    usock = raw_socket(con)
    if usock is None or not BUFFERED_INPUT.ok():
        return False
    buffered = getattr(con, "_sock", None)
    if not callable(getattr(buffered, "peek", None)):
        BUFFERED_INPUT.fail(f"{type(con).__name__}._sock has no peek")
        return False
    timeout = usock.gettimeout()
    try:
        usock.settimeout(0)
        return bool(buffered.peek(1))  # type: ignore[union-attr]
    except (BlockingIOError, InterruptedError, TimeoutError):
        return False
    finally:
        usock.settimeout(timeout)


def in_transaction(con: Any) -> bool:
    """True unless the server last said it is idle (outside any transaction).

    Unlike the old inline ``getattr(con, "_transaction_status", b"I") != b"I"``, a fresh
    connection (status None until its first query) counts as idle.
    """
    if not TRANSACTION_STATUS.ok():
        return True
    status = getattr(con, "_transaction_status", _MISSING)
    if status is None:  # pg8000 clears it after the start-up: no query has run yet
        return False
    if isinstance(status, bytes) and len(status) == 1:
        return status != IDLE
    TRANSACTION_STATUS.fail(f"{type(con).__name__}._transaction_status is {status!r}")
    return True


_MISSING = object()
