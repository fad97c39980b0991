"""A site's own tables in ``public`` and the proof that flaskstream left them alone.

The names are flaskstream's own table names on purpose (``users``, ``events``,
``uploads``, ``requests``), shaped as a web application would have them: a query
that forgot its schema would hit these and fail, or worse, succeed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pg8000.native

from flaskstream import db

SITE_TABLES = ("users", "events", "uploads", "requests")
SITE_SQL = [
    """CREATE TABLE IF NOT EXISTS public.users (
        id serial PRIMARY KEY, email text NOT NULL UNIQUE, display_name text,
        password_hash text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS public.events (
        id serial PRIMARY KEY, title text NOT NULL, starts_at timestamptz NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS public.uploads (
        id serial PRIMARY KEY, owner_id integer REFERENCES public.users (id), path text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS public.requests (
        id bigserial PRIMARY KEY, user_id integer, body text)""",
]
SITE_ROWS = {
    "users": ("INSERT INTO public.users (email, display_name, password_hash) VALUES "
              "('Ada@Example.com', 'Ada', 'pbkdf2$1'), ('bob@example.com', NULL, 'pbkdf2$2'), "
              "('carol@example.com', 'Carol', 'pbkdf2$3')"),
    "events": ("INSERT INTO public.events (title, starts_at) VALUES "
               "('launch', '2026-01-02T03:04:05Z'), ('retro', '2026-02-03T04:05:06Z')"),
    "uploads": "INSERT INTO public.uploads (owner_id, path) VALUES (1, '/srv/a.png'), (2, '/srv/b.pdf')",
    "requests": "INSERT INTO public.requests (user_id, body) VALUES (1, 'please'), (3, 'thanks')",
}


def pg_dump_binary() -> str:
    """pgserver ships the PostgreSQL client binaries next to its server."""
    import pgserver

    shipped = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump"
    found = str(shipped) if shipped.exists() else shutil.which("pg_dump")
    assert found, "pg_dump not found (neither in pgserver nor on PATH)"
    return found


def dump_public(url: str) -> bytes:
    """``pg_dump --schema=public`` of the database at ``url`` (schema and rows)."""
    return subprocess.run([pg_dump_binary(), "--schema=public", f"--dbname={url}"],
                          check=True, capture_output=True, timeout=120).stdout


def create_site_tables(url: str) -> None:
    con = pg8000.native.Connection(**db.connect_kwargs(url))
    try:
        for statement in SITE_SQL:
            con.run(statement)
        for table, insert in SITE_ROWS.items():
            if not con.run(f"SELECT 1 FROM public.{table} LIMIT 1"):
                con.run(insert)
    finally:
        con.close()


@contextmanager
def guarded(url: str) -> Iterator[bytes]:
    """Site tables first; on the way out, ``public`` must dump byte for byte the same."""
    create_site_tables(url)
    before = dump_public(url)
    assert b"password_hash" in before and b"Ada@Example.com" in before
    yield before
    after = dump_public(url)
    assert after == before, "flaskstream changed the site's public schema (pg_dump differs)"
