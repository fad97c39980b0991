"""Numbered, forward-only schema migrations, recorded in ``<schema>.schema_migrations``.

Migrations are the files ``flaskstream/migrations/NNNN_name.sql``, applied in
order, each in one transaction together with its row in ``schema_migrations``
(version, name, applied_at): a migration is applied completely or not at all, and
never twice. ``upgrade`` holds a session advisory lock (its key derives from the
schema name) while it works, so workers starting together, or ``flask db upgrade``
beside a running server, apply each migration exactly once; the others wait, then
find nothing pending.

Why files plus one Python step rather than a migration library: the project's
driver is pg8000 and every statement must be qualified with the configured schema;
Alembic and yoyo want SQLAlchemy or a DB-API URL of their own and a search_path,
and would be a second place that knows how to connect. What is needed here is a
loop, a table and a lock.

Inside a migration ``search_path`` is ``pg_catalog`` only, so a statement that
forgot ``@schema@.`` fails instead of creating an object in the site's ``public``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flaskstream.errorbase import FixedError
from flaskstream.schema import SchemaNames

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql\Z")
PLACEHOLDER = "@schema@"

# The tables of a 0.1.x install (as created by flaskstream/*/schema.sql up to 0.1,
# commit bf59122) with the columns each had: a table in `public` is taken along only
# if it has them all, so a site table that merely shares a name stays where it is.
TABLES_0_1: dict[str, tuple[str, ...]] = {
    "flaskstream_meta": ("key", "value"),
    "users": ("id", "email", "age", "name"),
    "requests": ("id", "time", "remote_addr", "method", "path", "protocol", "status",
                 "bytes", "referrer", "agent"),
    "etl_jobs": ("id", "table_name", "mode", "source", "status", "error", "bytes_read",
                 "rows_read", "rows_loaded", "rows_rejected", "rows_committed",
                 "checkpoint_line", "checkpoint_offset", "worker", "created_at",
                 "updated_at", "finished_at"),
    "etl_rejects": ("job_id", "line", "reason", "text"),
    "events": ("id", "channel", "event", "data", "idem_key", "created_at"),
    "events_pruned": ("channel", "through_id", "pruned_at"),
    "tus_uploads": ("id", "upload_length", "upload_offset", "metadata", "filename",
                    "content_type", "staging_name", "state", "created", "updated",
                    "expires", "lock_token", "lock_expires", "release_requested"),
    "uploads": ("id", "filename", "size", "sha256", "content_type", "field", "created"),
}


class MigrationError(FixedError):
    """The schema could not be brought up to date; nothing of the failed migration was
    applied. Until it is, the database is not usable by this install: 503."""

    code, status = "SCHEMA_NOT_CURRENT", 503


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    def statements(self, names: SchemaNames) -> list[str]:
        text = self.path.read_text(encoding="utf-8").replace(PLACEHOLDER, names.quoted)
        return split_sql(text)


def _from_server(exc: BaseException) -> bool:
    return bool(exc.args) and isinstance(exc.args[0], dict)


def server_message(exc: BaseException) -> str:
    """The server's own message of a pg8000 error (its first arg is the fields), else str()."""
    if _from_server(exc) and exc.args[0].get("M"):
        return str(exc.args[0]["M"])
    return str(exc).strip() or type(exc).__name__


def available(directory: Path | None = None) -> list[Migration]:
    """The migration files in order; numbering must run 1, 2, 3... without gaps."""
    found = []
    for path in (directory or MIGRATIONS_DIR).glob("*.sql"):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must be NNNN_name.sql: {path.name}")
        found.append(Migration(int(match[1]), match[2], path))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError("migrations must be numbered 1, 2, 3... without gaps or repeats: "
                             + ", ".join(m.label for m in found))
    return found


def split_sql(text: str) -> list[str]:
    """Split on ``;`` at line ends (migration files keep to that).

    Statements that contain ``;`` inside (function bodies) end with ``$$;`` and
    are kept whole by splitting only on lines that end the statement.
    """
    statements: list[str] = []
    current: list[str] = []
    in_body = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("--") and not current:
            continue
        current.append(line)
        if stripped.count("$$") % 2 == 1:
            in_body = not in_body
        if stripped.endswith(";") and not in_body:
            statements.append("\n".join(current).strip())
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return [s for s in statements if s]


def applied(con: Any, names: SchemaNames) -> dict[int, datetime]:
    """version → applied_at of what this schema has (empty before the first upgrade)."""
    if con.run("SELECT to_regclass(:t) IS NULL", t=names.qualified("schema_migrations"))[0][0]:
        return {}
    rows = con.run(f"SELECT version, applied_at FROM {names.qualified('schema_migrations')}")
    return {int(v): at for v, at in rows}


def status(con: Any, names: SchemaNames) -> list[tuple[Migration, datetime | None]]:
    """Every known migration with when it was applied (None: pending)."""
    done = applied(con, names)
    return [(m, done.get(m.version)) for m in available()]


def pending(con: Any, names: SchemaNames) -> list[Migration]:
    done = applied(con, names)
    return [m for m in available() if m.version not in done]


def upgrade(con: Any, names: SchemaNames) -> list[Migration]:
    """Apply what is pending, in order, under the schema's lock; return what was applied.

    ``con`` must be outside a transaction. Nothing pending → no lock is taken.
    """
    if not pending(con, names):
        return []
    key = names.lock_key("migrations")
    con.run("SELECT pg_advisory_lock(:k)", k=key)
    try:
        try:
            _create_schema(con, names)
        except Exception as exc:
            if not _from_server(exc):
                raise
            raise MigrationError(f"cannot create schema {names.schema}: {server_message(exc)}") from exc
        done = applied(con, names)  # again: another process may have run them meanwhile
        ran = []
        for migration in available():
            if migration.version not in done:
                _apply(con, names, migration)
                ran.append(migration)
    except BaseException:
        # A broken connection refuses the unlock; its session's end releases the lock.
        with contextlib.suppress(Exception):
            con.run("SELECT pg_advisory_unlock(:k)", k=key)
        raise
    con.run("SELECT pg_advisory_unlock(:k)", k=key)
    return ran


def _create_schema(con: Any, names: SchemaNames) -> None:
    """The schema (if missing) and its ``schema_migrations`` table.

    Existence is checked first: ``CREATE SCHEMA IF NOT EXISTS`` needs CREATE on the
    database even when the schema is there, which a least-privilege role whose
    schema was made for it by the DBA does not have.
    """
    if not con.run("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :s", s=names.schema):
        con.run(f"CREATE SCHEMA {names.quoted}")
        log.info("created schema %s", names.schema)
    if con.run("SELECT to_regclass(:t) IS NULL", t=names.qualified("schema_migrations"))[0][0]:
        con.run(f"CREATE TABLE {names.qualified('schema_migrations')} ("
                "version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())")


def _apply(con: Any, names: SchemaNames, migration: Migration) -> None:
    con.run("BEGIN")
    try:
        con.run("SET LOCAL search_path TO pg_catalog")
        before = BEFORE.get(migration.version)
        if before is not None:
            before(con, names)
        for statement in migration.statements(names):
            con.run(statement)
        con.run(f"INSERT INTO {names.qualified('schema_migrations')} (version, name) "
                "VALUES (:v, :n)", v=migration.version, n=migration.name)
        con.run("COMMIT")
    except Exception as exc:
        # A connection out of step with the server (see db.Connection) refuses this;
        # the caller then discards it, which rolls back just the same.
        with contextlib.suppress(Exception):
            con.run("ROLLBACK")
        raise MigrationError(f"migration {migration.label} failed in schema "
                             f"{names.schema}: {server_message(exc)}") from exc
    log.info("applied migration %s in schema %s", migration.label, names.schema)


def adopt_0_1(con: Any, names: SchemaNames) -> list[str]:
    """Move a 0.1.x install's tables from ``public`` into the schema (part of 0001).

    An install is recognised by ``public.flaskstream_meta``, never by table names
    alone. ``ALTER TABLE ... SET SCHEMA`` keeps every row, index, constraint and
    owned sequence (so ids and event ids continue where they were). Returns the
    tables moved; a table without the 0.1 columns is the site's and stays.
    """
    if con.run("SELECT to_regclass('public.flaskstream_meta') IS NULL")[0][0]:
        return []
    moved = []
    for table, columns in TABLES_0_1.items():
        have = {r[0] for r in con.run(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass(:t) "
            "AND attnum > 0 AND NOT attisdropped", t=f'public."{table}"')}
        if not have:
            continue
        if not set(columns) <= have:
            log.warning("public.%s is not flaskstream's (columns differ); left in place", table)
            continue
        con.run(f'ALTER TABLE public."{table}" SET SCHEMA {names.quoted}')
        moved.append(table)
    if moved:
        log.warning("moved the 0.1 install's tables from public into schema %s: %s",
                    names.schema, ", ".join(moved))
    return moved


BEFORE: dict[int, Callable[[Any, SchemaNames], object]] = {1: adopt_0_1}
