"""Where flaskstream's objects live: one PostgreSQL schema, named by ``DB_SCHEMA``.

flaskstream is a guest in the database it is pointed at: every table, sequence and
index it creates is in its own schema (default ``flaskstream``), and every SQL
statement names them qualified (``"flaskstream"."events"``) instead of trusting
the connection's ``search_path`` (a site's ``public.events`` must never be read or
written by mistake). The advisory-lock keys and the NOTIFY channel derive from the
schema name too, so two installs in one database (two schemas) never see each
other's events, leases or locks.

Each connection ``flaskstream.db`` opens is registered here with its app's
``SchemaNames`` (``attach``); code that is handed a connection asks ``of(con)``.
The schema is resolved once per app and per connection; nothing is formatted
from user input (the name is validated when the app is created).
"""

from __future__ import annotations

import hashlib
import re
import weakref
from dataclasses import dataclass
from typing import Any

DEFAULT_SCHEMA = "flaskstream"
# Lower-case unquoted identifiers only: the same name then works quoted or not, in
# SQL, in psql and in a NOTIFY channel (≤ 63 bytes, with "_events" appended).
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}\Z")
_OBJECT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
RESERVED = frozenset({"public", "information_schema"})


def check_schema_name(value: object) -> str:
    """The ``DB_SCHEMA`` setting, or ValueError saying what a valid one looks like.

    ``public`` is refused: flaskstream shares it with the site, which is exactly
    what the schema of its own is for. ``pg_*`` names are the server's.
    """
    if not isinstance(value, str) or not _SCHEMA_NAME.match(value):
        raise ValueError(f"DB_SCHEMA must be 1-48 of a-z 0-9 _ (not starting with a digit), "
                         f"got {value!r}")
    if value in RESERVED or value.startswith("pg_"):
        raise ValueError(f"DB_SCHEMA {value!r} is reserved; pick a schema of flaskstream's own")
    return value


@dataclass(frozen=True)
class SchemaNames:
    """Qualified names, lock keys and channel names of one install."""

    schema: str

    def __post_init__(self) -> None:
        check_schema_name(self.schema)

    @property
    def quoted(self) -> str:
        return f'"{self.schema}"'

    def qualified(self, name: str) -> str:
        """``"schema"."name"`` for one of flaskstream's own objects (a fixed name in code)."""
        if not _OBJECT_NAME.match(name):
            raise ValueError(f"not one of flaskstream's object names: {name!r}")
        return f'{self.quoted}."{name}"'

    def lock_key(self, purpose: str) -> int:
        """A bigint advisory-lock key for ``purpose`` in this schema.

        Derived by hashing so that two schemas never share a key; 8 bytes of
        BLAKE2b make an accidental clash with another application's key unlikely.
        """
        digest = hashlib.blake2b(f"flaskstream:{self.schema}:{purpose}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    def channel(self, purpose: str) -> str:
        """A NOTIFY/LISTEN channel name: ``<schema>_<purpose>`` (``flaskstream_events``)."""
        name = f"{self.schema}_{purpose}"
        if not _OBJECT_NAME.match(name):
            raise ValueError(f"not a channel name: {name!r}")
        return name


_attached: weakref.WeakKeyDictionary[Any, SchemaNames] = weakref.WeakKeyDictionary()


def attach(con: Any, names: SchemaNames) -> Any:
    """Register the install ``con`` belongs to (done by ``flaskstream.db`` on connect)."""
    _attached[con] = names
    return con


def of(con: Any) -> SchemaNames:
    """The names of the install that opened ``con``.

    A connection flaskstream did not open has no install: guessing the default
    schema could read or write another install's tables, so it is an error.
    """
    try:
        return _attached[con]
    except (KeyError, TypeError):
        raise LookupError("connection was not opened by flaskstream.db "
                          "(use db.get_database(app).new_connection() or schema.attach)") from None


def qualified(con: Any, name: str) -> str:
    """``"schema"."name"`` in the install of ``con``: ``schema.qualified(con, "uploads")``."""
    return of(con).qualified(name)
