"""A 0.1.x database (everything in ``public``) moves into the schema once, rows and ids kept.

The 0.1 database is built from the 0.1 schema files themselves (fixtures/schema_0_1,
copied from commit bf59122), in a scratch database of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pg8000.native
import pytest
from flask import Flask

from flaskstream import create_app, db, migrate, schema
from flaskstream.events import store
from tests.db import site
from tests.db.conftest import admin, connect

pytestmark = pytest.mark.db

FIXTURES = Path(__file__).parent / "fixtures" / "schema_0_1"
ORDER_0_1 = ("core", "etl", "events", "tus", "uploads")  # schema.sql, then */schema.sql sorted
OURS = set(migrate.TABLES_0_1)
TUS_ID = "fedcba9876543210fedcba9876543210"


def build_0_1(url: str) -> None:
    """A 0.1 install with rows in every table, and one table of the site's own."""
    con = admin(url)
    try:
        for name in ORDER_0_1:
            for statement in migrate.split_sql((FIXTURES / f"{name}.sql").read_text()):
                con.run(statement)
        con.run("INSERT INTO users (email, age, name) VALUES ('a@x.io', 1, 'A'), ('b@x.io', 2, 'B')")
        con.run("INSERT INTO requests (time, method, path, status) VALUES (now(), 'GET', '/', 200)")
        for i in range(5):
            con.run("INSERT INTO events (channel, event, data) VALUES ('news', 'm', :d)", d=f"e{i}")
        con.run("DELETE FROM events WHERE id <= 2")  # retention had run: ids 3..5 are left
        con.run("INSERT INTO events_pruned (channel, through_id) VALUES ('news', 2)")
        con.run("INSERT INTO etl_jobs (id, table_name, status, rows_read, rows_loaded, rows_rejected) "
                "VALUES ('j-old', 'users', 'done', 3, 2, 1)")
        con.run("INSERT INTO etl_rejects (job_id, line, reason, text) VALUES ('j-old', 3, 'age', 'c,x')")
        con.run("INSERT INTO uploads (id, filename, size, sha256, content_type) "
                "VALUES ('0123456789abcdef0123456789abcdef', 'a.txt', 3, 'abc', 'text/plain')")
        con.run("INSERT INTO tus_uploads (id, upload_length, filename, content_type, staging_name, expires) "
                f"VALUES ('{TUS_ID}', 10, 'b.bin', 'application/octet-stream', 'tus-t1', "
                "now() + interval '1 day')")
        con.run("CREATE TABLE public.customers (id serial PRIMARY KEY, name text)")
        con.run("INSERT INTO public.customers (name) VALUES ('acme')")
    finally:
        con.close()


def tables_in(con: pg8000.native.Connection, nspname: str) -> set[str]:
    return {r[0] for r in con.run("SELECT tablename FROM pg_tables WHERE schemaname = :s", s=nspname)}


@pytest.fixture
def app_on(tmp_path: Path) -> Iterator[list[Flask]]:
    apps: list[Flask] = []
    yield apps
    for app in apps:
        db.get_database(app).close_all()


def start(url: str, tmp_path: Path, apps: list[Flask]) -> Flask:
    """What a worker does at start-up: its first connection applies what is pending."""
    app = create_app({"TESTING": True, "DATABASE_URL": url, "INSTANCE_PATH": str(tmp_path / "i")})
    apps.append(app)
    assert app.test_client().get("/readyz").status_code == 200
    return app


def test_a_0_1_database_moves_into_the_schema_once_with_every_row_and_id(
        scratch_db: str, tmp_path: Path, app_on: list[Flask]) -> None:
    build_0_1(scratch_db)
    app = start(scratch_db, tmp_path, app_on)
    con = connect(scratch_db, "flaskstream")
    try:
        assert tables_in(con, "public") == {"customers"}
        assert OURS | {"schema_migrations"} <= tables_in(con, "flaskstream")
        # No sequence of ours is left behind in public either.
        assert con.run("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = 'public' AND relkind = 'S'") == [["customers_id_seq"]]
        assert con.run("SELECT id, email FROM flaskstream.users ORDER BY id") == [
            [1, "a@x.io"], [2, "b@x.io"]]
        assert [r[0] for r in con.run("SELECT id FROM flaskstream.events ORDER BY id")] == [3, 4, 5]
        assert store.pruned_through(con, ["news"]) == 2
        # Sequences moved with their tables: new ids continue after the old ones.
        new_id, created = store.insert_event(con, "news", "after", "m", None)
        assert created and new_id == 6
        con.run("INSERT INTO flaskstream.users (email) VALUES ('c@x.io')")
        assert con.run("SELECT id FROM flaskstream.users WHERE email = 'c@x.io'")[0][0] > 2
        assert con.run("SELECT status, rows_loaded, lease_expires, request_id FROM flaskstream.etl_jobs") \
            == [["done", 2, None, None]]
        assert con.run("SELECT value FROM flaskstream.flaskstream_meta WHERE key = 'schema'") == [["1"]]
        assert con.run("SELECT version, name FROM flaskstream.schema_migrations") == [[1, "initial"]]
    finally:
        con.close()
    client = app.test_client()
    assert client.get("/etl/jobs/j-old").get_json()["rows_rejected"] == 1
    assert client.get("/uploads/0123456789abcdef0123456789abcdef").status_code == 200
    assert client.head(f"/uploads/tus/{TUS_ID}", headers={"Tus-Resumable": "1.0.0"}).status_code == 200

    # The second start applies nothing and moves nothing.
    con = connect(scratch_db, "flaskstream")
    try:
        assert migrate.upgrade(con, schema.SchemaNames("flaskstream")) == []
        assert con.run("SELECT count(*) FROM flaskstream.events")[0][0] == 4
    finally:
        con.close()


def test_a_second_schema_does_not_take_the_install_twice(
        scratch_db: str, tmp_path: Path) -> None:
    build_0_1(scratch_db)
    for name in ("flaskstream", "other_install"):
        con = connect(scratch_db, name)
        try:
            migrate.upgrade(con, schema.SchemaNames(name))
        finally:
            con.close()
    con = admin(scratch_db)
    try:
        assert con.run("SELECT count(*) FROM flaskstream.users")[0][0] == 2
        assert con.run("SELECT count(*) FROM other_install.users")[0][0] == 0
    finally:
        con.close()


def test_a_site_table_with_our_name_stays_even_beside_flaskstream_meta(
        scratch_db: str, tmp_path: Path, app_on: list[Flask]) -> None:
    build_0_1(scratch_db)
    con = admin(scratch_db)
    try:  # the site's users, not 0.1's: a same name is not a proof of ownership
        con.run("DROP TABLE public.users")
        con.run(site.SITE_SQL[0])
        con.run(site.SITE_ROWS["users"])
    finally:
        con.close()
    before = site.dump_public(scratch_db)
    start(scratch_db, tmp_path, app_on)
    con = admin(scratch_db)
    try:
        assert tables_in(con, "public") == {"customers", "users"}
        assert con.run("SELECT count(*) FROM public.users")[0][0] == 3
        assert con.run("SELECT count(*) FROM flaskstream.users")[0][0] == 0
        assert con.run("SELECT count(*) FROM flaskstream.events")[0][0] == 3
    finally:
        con.close()
    after = site.dump_public(scratch_db)
    assert b"password_hash" in after
    assert b"CREATE TABLE public.users" in after and b"CREATE TABLE public.events" not in after
    assert before.count(b"Ada@Example.com") == after.count(b"Ada@Example.com") == 1


def test_site_tables_named_like_ours_without_flaskstream_meta_are_untouched(
        scratch_db: str, tmp_path: Path, app_on: list[Flask]) -> None:
    site.create_site_tables(scratch_db)
    before = site.dump_public(scratch_db)
    app = start(scratch_db, tmp_path, app_on)
    assert site.dump_public(scratch_db) == before
    client = app.test_client()
    assert client.post("/events/news", json={"data": "hello"}).status_code == 202
    assert client.get("/uploads").get_json()["uploads"] == []
    assert site.dump_public(scratch_db) == before
    con = admin(scratch_db)
    try:
        assert con.run("SELECT data FROM flaskstream.events") == [["hello"]]
        assert con.run("SELECT count(*) FROM public.events")[0][0] == 2
    finally:
        con.close()
