"""Fixtures for the schema tests: scratch databases and fresh schemas on the session server."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pg8000.native
import pytest

from flaskstream import db, schema


def database_url_for(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name`` (query, host and user kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin(url: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(**db.connect_kwargs(url))


@pytest.fixture
def scratch_db(database_url: str) -> Iterator[str]:
    """An empty database of its own on the session server (dropped afterwards)."""
    name = f"fs_scratch_{secrets.token_hex(4)}"
    con = admin(database_url)
    try:
        con.run(f'CREATE DATABASE "{name}"')
        yield database_url_for(database_url, name)
    finally:
        con.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        con.close()


@pytest.fixture
def fresh_schema(database_url: str) -> Iterator[Callable[[], str]]:
    """Factory of schema names not yet in the session database; dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"fs_t_{secrets.token_hex(4)}")
        return made[-1]

    yield make
    con = admin(database_url)
    try:
        for name in made:
            con.run(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        con.close()


def connect(url: str, schema_name: str) -> pg8000.native.Connection:
    """A connection registered as belonging to the install in ``schema_name``."""
    return schema.attach(admin(url), schema.SchemaNames(schema_name))
