"""The grants the README promises are enough, and what happens without them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from flaskstream import create_app, db
from tests.db.conftest import admin

pytestmark = pytest.mark.db


def as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@pytest.fixture
def guest_role(scratch_db: str) -> Iterator[str]:
    """A login role with no privilege but CONNECT and TEMP (PUBLIC's defaults)."""
    name = f"fs_guest_{secrets.token_hex(3)}"
    con = admin(scratch_db)
    try:
        con.run(f'CREATE ROLE "{name}" LOGIN')
        con.run("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # as PostgreSQL 15+ has it
        yield name
    finally:
        con.run(f'DROP OWNED BY "{name}" CASCADE')
        con.close()
        # Roles are cluster-wide: drop it from the server's maintenance database.
        other = admin(urlunsplit(urlsplit(scratch_db)._replace(path="/postgres")))
        try:
            other.run(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            other.close()


def test_a_least_privilege_role_runs_in_a_schema_made_for_it(
        scratch_db: str, guest_role: str, tmp_path: Path) -> None:
    con = admin(scratch_db)
    try:
        con.run(f'CREATE SCHEMA flaskstream AUTHORIZATION "{guest_role}"')
    finally:
        con.close()
    app = create_app({"TESTING": True, "DATABASE_URL": as_user(scratch_db, guest_role),
                      "INSTANCE_PATH": str(tmp_path / "i")})
    try:
        client = app.test_client()
        assert client.get("/readyz").get_json() == {"status": "ready", "db": "ok"}
        assert client.post("/events/news", json={"data": "hi"}).status_code == 202
        loaded = client.post("/etl/jobs?mode=upsert", data=b"email,age,name\na@x.io,3,A\n",
                             headers={"Content-Type": "text/csv"})  # upsert: a TEMP stage table
        assert loaded.status_code == 201, loaded.get_json()
    finally:
        db.get_database(app).close_all()


def test_without_create_on_the_database_the_reason_is_reported(
        scratch_db: str, guest_role: str, tmp_path: Path) -> None:
    app = create_app({"TESTING": True, "DATABASE_URL": as_user(scratch_db, guest_role),
                      "INSTANCE_PATH": str(tmp_path / "i")})
    try:
        health = app.test_client().get("/healthz")
        assert health.status_code == 503
        assert "cannot create schema flaskstream: permission denied for database" in health.get_json()["db"]
        refused = app.test_client().get("/uploads")
        assert refused.status_code == 503
        assert refused.get_json()["error"]["code"] == "SCHEMA_NOT_CURRENT"
        con = admin(scratch_db)
        try:  # and nothing was created anywhere
            assert con.run("SELECT count(*) FROM pg_namespace WHERE nspname = 'flaskstream'") == [[0]]
            assert con.run("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [[0]]
        finally:
            con.close()
        # Granting CREATE on the database is the other way: the schema is then made at start-up.
        con = admin(scratch_db)
        try:
            con.run(f'GRANT CREATE ON DATABASE "{urlsplit(scratch_db).path[1:]}" TO "{guest_role}"')
        finally:
            con.close()
        assert app.test_client().get("/readyz").status_code == 200
    finally:
        db.get_database(app).close_all()
