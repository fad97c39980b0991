"""Shared fixtures, flaskr style: ``app``, ``client``, ``runner``; plus a real
PostgreSQL for the session and real gunicorn servers for end-to-end tests.

PostgreSQL: ``DATABASE_URL`` when set, else one embedded server (pgserver) in a
temporary folder, owned by this pytest process and stopped at the end. Every
test that uses the database starts from empty tables (``clean_db``).

flaskstream is a guest there (issue 14): before anything else the session database
gets a site's own ``public.users``, ``public.events``, ``public.uploads`` and
``public.requests`` with rows (``tests/db/site.py``), and at the end of the session
``pg_dump --schema=public`` must be byte-identical to what it was before: the
whole suite then proves that nothing outside flaskstream's schema was touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from flaskstream import create_app, db, embedded, schema
from tests.db import site
from tests.live import LiveServer

KEEP_TABLES = {"flaskstream_meta", "schema_migrations"}


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        with site.guarded(url):
            yield url
        return
    base = Path(tempfile.mkdtemp(prefix="fs-pg-"))
    pgdata = base / "pgdata"
    url = embedded.ensure_running(pgdata, own=True)
    try:
        with site.guarded(url):
            yield url
    finally:
        embedded.stop(pgdata)
        shutil.rmtree(base, ignore_errors=True)


def truncate_all(url: str, schema_name: str = schema.DEFAULT_SCHEMA) -> None:
    """Empty every flaskstream table of ``schema_name`` (migrating it first)."""
    import pg8000.native

    names = schema.SchemaNames(schema_name)
    con = schema.attach(pg8000.native.Connection(**db.connect_kwargs(url)), names)
    try:
        db.apply_schema(con)
        tables = [r[0] for r in con.run(
            "SELECT tablename FROM pg_tables WHERE schemaname = :s", s=schema_name)]
        tables = [names.qualified(t) for t in tables if t not in KEEP_TABLES]
        if tables:
            con.run("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE")
    finally:
        con.close()


@pytest.fixture
def clean_db(database_url: str) -> str:
    truncate_all(database_url)
    return database_url


@pytest.fixture
def app_config(tmp_path: Path, clean_db: str) -> dict[str, Any]:
    """Override to change settings of the ``app`` fixture in a test module."""
    return {
        "TESTING": True,
        "DATABASE_URL": clean_db,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "UPLOAD_DIR": str(tmp_path / "uploads"),
    }


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app(app_config)
    yield app
    db.get_database(app).close_all()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture(scope="module")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One gunicorn (1 gevent worker) per test module, on the session database.

    Modules that need other settings build their own with ``start_live_server``.
    """
    truncate_all(database_url)
    server = LiveServer(tmp_path_factory.mktemp("live"), database_url=database_url)
    with server:
        yield server


@pytest.fixture
def start_live_server(database_url: str, tmp_path: Path) -> Iterator[Any]:
    """Factory: ``start_live_server(workers=2, env={...})`` → a started LiveServer."""
    servers: list[LiveServer] = []

    def start(*, workers: int = 1, env: dict[str, str] | None = None,
              database_url_: str | None = database_url, instance: Path | None = None) -> LiveServer:
        path = instance or tmp_path / f"live{len(servers)}"
        server = LiveServer(path, env=env, workers=workers, database_url=database_url_)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


# --- object storage (issue 16): one moto S3 server for the session, started on demand ---


@pytest.fixture(scope="session")
def s3_bucket() -> Iterator[Any]:
    """A bucket on a real S3 API (moto's server on 127.0.0.1); see tests/storage/moto.py."""
    from tests.storage.moto import start_moto

    server, bucket = start_moto()
    try:
        yield bucket
    finally:
        server.stop()
