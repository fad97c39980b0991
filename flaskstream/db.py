"""PostgreSQL access: one place that knows how to connect.

pg8000 is pure Python, so under gunicorn's gevent worker (which monkey-patches
sockets before the app is imported) every query yields to other greenlets.
Each worker process keeps a small LIFO pool of ``pg8000.native.Connection``;
``connection()`` borrows one for a ``with`` block — use it in generators, whose
bodies run after the request context is gone — and ``get_db()`` borrows one for
the rest of a request (returned in ``teardown_appcontext``).

Everything flaskstream creates lives in its own schema (``DB_SCHEMA``, see
``flaskstream/schema.py``); every connection opened here is registered with the
app's ``SchemaNames``, and the first one a process opens applies the pending
migrations (``flaskstream/migrate.py``) under an advisory lock, so two workers
starting together do not race.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.native
from flask import Flask, current_app, g
from pg8000.exceptions import DatabaseError, InterfaceError

from flaskstream import embedded, metrics, migrate
from flaskstream import schema as schema_names
from flaskstream.adapters import pg8000 as pg8000_adapter
from flaskstream.errorbase import FixedError, FlaskstreamError

log = logging.getLogger(__name__)

__all__ = ["Connection", "DatabaseError", "InterfaceError", "UnencodableText", "connection",
           "get_db", "qualified", "qualified_in", "reusable"]


class Connection(pg8000.native.Connection):
    """pg8000's native connection that knows whether it is in step with the server.

    pg8000 can fail after part of a query went out (a lone surrogate that UTF-8
    cannot encode, a killed greenlet, a gevent timeout, a socket timeout): the
    server's reply is then unread, and the next query on the connection would
    read it as its own (one client's upload record handed to another). Text
    that cannot be encoded is refused before anything is sent
    (``check_encodable``); for everything else there is the flag. Only a
    ``DatabaseError`` built from the server's ErrorResponse is raised after
    pg8000 has read up to ReadyForQuery, so only then is the connection still
    usable. ``in_step`` is cleared when a query starts and set again only when
    it returns or fails with such an error; a connection out of step refuses
    every further query, so even code that swallowed the error cannot reuse it.
    Prepared statements (``prepare``) are not tracked: flaskstream uses ``run``.
    """

    in_step = True

    def run(self, sql: str, stream: Any = None, types: Any = None, **params: Any) -> Any:
        if not self.in_step:
            raise InterfaceError("connection is out of step with the server and was discarded")
        check_encodable(sql, params.values())  # before a byte goes out: the connection stays in step
        self.in_step = False
        try:
            rows = super().run(sql, stream=stream, types=types, **params)
        except DatabaseError as exc:
            self.in_step = is_server_error(exc)
            raise
        self.in_step = True
        return rows

    def close(self) -> None:
        self.in_step = False
        super().close()


class UnencodableText(FixedError, ValueError):
    """A query's text or parameter holds a code point UTF-8 cannot encode (a lone
    surrogate): refused before anything is sent. Bad input: a ``ValueError`` and a 400."""

    code, status = "UNENCODABLE_TEXT", 400


class DatabaseUnavailable(FlaskstreamError, InterfaceError):
    """No connection to be had (refused, dropped while connecting, none free in time):
    503 + ``Retry-After``, the client may retry. An ``InterfaceError`` still, so code
    that handles a lost connection (listeners, ``is_connection_lost``) is unchanged."""

    def __init__(self, message: str) -> None:
        super().__init__("DATABASE_UNAVAILABLE", 503, message, {"Retry-After": "2"})


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_encodable(sql: str, values: Iterable[Any]) -> None:
    """Raise ``UnencodableText`` if ``sql`` or a str (or list of str) value holds a lone
    surrogate. pg8000 would find out while encoding BIND, after PARSE went out."""
    pending: list[Any] = [sql, *values]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise UnencodableText("text with a lone surrogate cannot be stored")
        elif isinstance(value, (list, tuple)):
            pending.extend(value)


def is_server_error(exc: BaseException) -> bool:
    """A pg8000 ``DatabaseError`` made from the server's ErrorResponse (read to the end),
    and not one after which the server drops the session (08xxx, 57Pxx)."""
    code = sqlstate(exc)
    return type(exc) is DatabaseError and code is not None and not code.startswith(("08", "57P"))


def reusable(con: Any, exc: BaseException | None = None) -> bool:
    """May ``con`` serve another query after ``exc`` (None: after normal use)?

    The narrow, explicit case: the connection is in step (see ``Connection``)
    and nothing but an ordinary ``Exception`` was raised (a server error read to
    the end, or an application error between queries). A killed greenlet or a
    gevent timeout may have interrupted code that holds protocol state, so
    those discard the connection whatever the flag says. A connection of any
    other class (plain pg8000) is never trusted.
    """
    if not isinstance(con, Connection) or not con.in_step:
        return False
    return exc is None or isinstance(exc, Exception)


def connect_kwargs(url: str) -> dict[str, Any]:
    """pg8000 keyword arguments for a ``postgresql://`` URL.

    Supports ``postgresql://user:pw@host:port/db`` and the unix-socket forms
    ``postgresql://user@/db?host=/run/postgresql`` (libpq style: host is a
    directory holding ``.s.PGSQL.<port>``).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {parts.scheme}://...")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    kwargs: dict[str, Any] = {"user": unquote(parts.username or "postgres")}
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    database = unquote(parts.path.lstrip("/")) or query.get("dbname")
    if database:
        kwargs["database"] = database
    host = query.get("host") or (unquote(parts.hostname) if parts.hostname else None)
    port = int(query.get("port") or parts.port or 5432)
    if host and host.startswith("/"):
        kwargs["unix_sock"] = f"{host.rstrip('/')}/.s.PGSQL.{port}"
    else:
        kwargs["host"] = host or "localhost"
        kwargs["port"] = port
    return kwargs


def apply_schema(con: Connection) -> list[migrate.Migration]:
    """Apply the pending migrations on ``con`` (opened by a ``Database``); what ran."""
    return migrate.upgrade(con, schema_names.of(con))


class Database:
    """Per-process connection pool for one app."""

    def __init__(self, app: Flask) -> None:
        self.configured_url: str | None = app.config["DATABASE_URL"]
        self.pgdata = embedded.pgdata_path(app.instance_path)
        self.pool_size = int(app.config["DB_POOL_SIZE"])
        self.timeout = float(app.config["DB_CONNECT_TIMEOUT"])
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = metrics.PoolSlots(self.pool_size)  # a BoundedSemaphore that is counted
        self.names = schema_names.SchemaNames(schema_names.check_schema_name(app.config["DB_SCHEMA"]))
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    @property
    def embedded(self) -> bool:
        return not self.configured_url

    def url(self) -> str:
        """The URL to connect to, starting the embedded server on first need."""
        if self.configured_url:
            return self.configured_url
        return embedded.ensure_running(self.pgdata)

    def new_connection(self, **extra: Any) -> Connection:
        """A fresh, unpooled connection (listeners, COPY sinks that outlive a request).

        Pending migrations are applied on the first connection this process makes.
        """
        con = self.raw_connection(**extra)
        if not self._schema_ready:
            try:
                self.ensure_schema(con)
            except BaseException:
                close_quietly(con)
                raise
        return con

    def raw_connection(self, **extra: Any) -> Connection:
        """A fresh connection of this install that applies nothing (``flask db status``)."""
        return schema_names.attach(self._connect(**extra), self.names)

    def _connect(self, **extra: Any) -> Connection:
        kwargs = connect_kwargs(self.url())
        kwargs.setdefault("timeout", self.timeout)
        # The process id lets an operator (and the tests) tell workers apart in
        # pg_stat_activity.
        kwargs["application_name"] = f"flaskstream:{os.getpid()}"
        kwargs.update(extra)
        return Connection(**kwargs)

    def ensure_schema(self, con: Connection | None = None) -> None:
        """Apply pending migrations once per process (on ``con``, or a connection of its own)."""
        with self._schema_lock:
            if self._schema_ready:
                return
            own = con is None
            target = self.raw_connection() if con is None else con
            try:
                apply_schema(target)
            finally:
                if own:
                    close_quietly(target)
            self._schema_ready = True

    def acquire(self) -> Connection:
        if not self._slots.acquire(timeout=30):
            raise DatabaseUnavailable("no database connection free within 30 s")
        try:
            while True:  # skip idle connections that fell out of step (never handed out)
                try:
                    con = self._idle.get_nowait()
                except queue.Empty:
                    return self.new_connection()
                if reusable(con):
                    return con
                close_quietly(con)
        except BaseException as exc:
            self._slots.release()
            if refused_connection(exc):
                raise DatabaseUnavailable("the database cannot be reached right now") from exc
            raise

    def release(self, con: Connection, *, broken: bool = False) -> None:
        """Return ``con`` to the idle list, or close it if broken or out of step."""
        if not broken and reusable(con):
            try:
                if pg8000_adapter.in_transaction(con):
                    con.run("ROLLBACK")
                self._idle.put(con)
                return
            except Exception:  # noqa: BLE001 - one that cannot roll back is dropped
                pass
        close_quietly(con)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Borrow a pooled connection; it is rolled back (if left in a transaction)
        and returned, or discarded if the connection broke."""
        con = self.acquire()
        broken = False
        try:
            yield con
        except BaseException as exc:
            broken = not reusable(con, exc)
            raise
        finally:
            try:
                self.release(con, broken=broken)
            finally:
                self._slots.release()

    def close_all(self) -> None:
        while True:
            try:
                close_quietly(self._idle.get_nowait())
            except queue.Empty:
                return


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a pg8000 DatabaseError (its first arg is the server's fields)."""
    if isinstance(exc, DatabaseError) and exc.args and isinstance(exc.args[0], dict):
        return exc.args[0].get("C")
    return None


def refused_connection(exc: BaseException) -> bool:
    """Does ``exc``, raised while connecting, say the server cannot give a connection now?
    Sockets refused/reset/timed out, or the server's refusal by SQLSTATE class: 08
    connection, 53 resources (too many connections), 57P shutting down or starting up.
    Anything else (a migration's SQL error) is a bug: 500."""
    return isinstance(exc, (InterfaceError, OSError)) \
        or (sqlstate(exc) or "").startswith(("08", "53", "57P"))


def is_connection_lost(exc: BaseException) -> bool:
    """Does ``exc`` say the connection itself failed (for error codes and messages)?

    Not the test for reuse: that is ``reusable(con, exc)``, which also discards a
    connection after an encoding error that left it out of step.
    """
    if isinstance(exc, (InterfaceError, OSError, TimeoutError, GeneratorExit)):
        return True
    if not isinstance(exc, Exception):
        # GreenletExit (a killed greenlet), gevent.Timeout, KeyboardInterrupt: they can
        # land in the middle of a query, leaving the server's reply unread — the next
        # borrower would read it as its own (seen with a killed tus lease watcher).
        return True
    code = sqlstate(exc) or ""
    return code.startswith(("08", "57P"))  # connection exception, operator intervention


def close_quietly(con: Connection) -> None:
    try:
        con.close()
    except Exception:  # noqa: BLE001 - closing a dead socket may fail in many ways
        pass


def qualified_in(con: Connection, name: str) -> str:
    """``"<schema>"."name"`` in the install that opened ``con`` (see ``flaskstream.schema``)."""
    return schema_names.qualified(con, name)


def qualified(name: str, app: Flask | None = None) -> str:
    """``"<DB_SCHEMA>"."name"`` for one of flaskstream's objects, in the current app."""
    return get_database(app).names.qualified(name)


def get_database(app: Flask | None = None) -> Database:
    return (app or current_app).extensions["flaskstream.db"]


def connection() -> Any:
    """``with db.connection() as con:`` — a pooled connection of the current app."""
    return get_database().connection()


def get_db() -> Connection:
    """A connection held for the rest of this request (flaskr's ``get_db``)."""
    if "db_cm" not in g:
        cm = get_database().connection()
        g.db = cm.__enter__()
        g.db_cm = cm
    return g.db


def close_db(exc: BaseException | None = None) -> None:
    cm = g.pop("db_cm", None)
    g.pop("db", None)
    if cm is not None:
        cm.__exit__(type(exc) if exc else None, exc, None)


def check_health() -> str:
    """"ok", or a short reason the database cannot be used right now."""
    try:
        with connection() as con:
            con.run("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is a degraded database
        return migrate.server_message(exc).splitlines()[0][:200]  # the server's words, no repr


def init_app(app: Flask) -> None:
    app.extensions["flaskstream.db"] = Database(app)
    app.teardown_appcontext(close_db)
