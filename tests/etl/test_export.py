"""GET /etl/export.csv with the test client (real PostgreSQL): which tables, bounded slots,
everything released on HEAD, close, stall and error; excel_safe; job privacy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flaskstream import create_app, db
from flaskstream.etl import export as exporting
from tests.etl.helpers import query
from tests.live import wait_for

pytestmark = pytest.mark.db

INTERNAL = ("tus_uploads", "events", "etl_jobs", "etl_rejects", "uploads", "flaskstream_meta")


def backends(url: str) -> int:
    """Connections this process (the test client's app) holds open to PostgreSQL."""
    return query(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n",
                 n=f"flaskstream:{os.getpid()}")[0][0]


def fill_users(url: str, rows: int) -> None:
    query(url, "INSERT INTO flaskstream.users (email, age, name) SELECT 'user' || g || '@example.com', "
               "g % 100, 'User number ' || g FROM generate_series(1, :n) g", n=rows)


@pytest.fixture
def make_app(app_config: dict[str, Any]) -> Iterator[Any]:
    apps: list[Flask] = []

    def make(**settings: Any) -> Flask:
        apps.append(create_app({**app_config, **settings}))
        return apps[-1]

    yield make
    for app in apps:
        db.get_database(app).close_all()


@pytest.mark.parametrize("name", ["users", "requests", "public.users", "Sales_2026.orders$"])
def test_valid_relation_names(name: str) -> None:
    assert exporting.valid_relation_name(name)


@pytest.mark.parametrize("name", ["", "\x00", "users\x00", "a.b.c", '"users"', "users;drop",
                                  "1users", "us ers", ".users", "users.", "x" * 64, "é" * 32])
def test_invalid_relation_names(name: str) -> None:
    assert not exporting.valid_relation_name(name)


def test_allowed_tables_from_a_list_or_the_environment_string() -> None:
    assert exporting.allowed_tables(["users", " requests "]) == {"users", "requests"}
    assert exporting.allowed_tables("users, sales.orders,") == {"users", "sales.orders"}
    assert exporting.allowed_tables(None) == frozenset()


@pytest.mark.parametrize("table", INTERNAL)
def test_internal_tables_are_403(client, table: str) -> None:
    resp = client.get(f"/etl/export.csv?table={table}")
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == "TABLE_NOT_ALLOWED"


@pytest.mark.parametrize("query_string", ["table=%00", "table=users%00", "table=", "table=a.b.c",
                                          "table=%22users%22", "table=users%3Bdrop",
                                          "table=%ED%A0%80", "excel_safe=maybe"])
def test_garbage_is_a_json_400(client, query_string: str) -> None:
    resp = client.get(f"/etl/export.csv?{query_string}")
    assert resp.status_code == 400, resp.data
    error = resp.get_json()["error"]
    assert error["code"] in ("BAD_TABLE_NAME", "BAD_REQUEST")
    assert "\\x" not in error["message"] and "Traceback" not in error["message"]


def test_allowed_but_missing_is_404_and_listed_tables_export(make_app, clean_db) -> None:
    client = make_app(ETL_TABLES=["users", "nope"]).test_client()
    assert client.get("/etl/export.csv?table=nope").get_json()["error"]["code"] == "UNKNOWN_TABLE"
    query(clean_db, "INSERT INTO flaskstream.requests (time, method, path, status) "
                    "VALUES (now(), 'GET', '/', 200)")
    resp = client.get("/etl/export.csv?table=requests")
    assert resp.status_code == 403  # no longer listed
    client = make_app(ETL_TABLES="users,requests").test_client()
    resp = client.get("/etl/export.csv?table=requests")
    assert resp.status_code == 200 and resp.get_data().count(b"\n") == 2


def test_excel_safe_prefixes_formula_cells(client, clean_db) -> None:
    query(clean_db, "INSERT INTO flaskstream.users (email, age, name) VALUES "
                    "('a@x.io', 1, '=HYPERLINK(\"x\")'), ('b@x.io', 2, '-2'),"
                    " ('c@x.io', 3, 'plain'), ('d@x.io', 4, NULL), ('e@x.io', 5, '')")
    plain = client.get("/etl/export.csv?table=users").get_data()
    safe = client.get("/etl/export.csv?table=users&excel_safe=1").get_data()
    assert plain == (b'id,email,age,name\n1,a@x.io,1,"=HYPERLINK(""x"")"\n2,b@x.io,2,-2\n'
                     b'3,c@x.io,3,plain\n4,d@x.io,4,\n5,e@x.io,5,""\n')
    assert safe == (b'id,email,age,name\n1,a@x.io,1,"\'=HYPERLINK(""x"")"\n2,b@x.io,2,\'-2\n'
                    b'3,c@x.io,3,plain\n4,d@x.io,4,\n5,e@x.io,5,""\n')


def test_exports_beyond_the_limit_are_503_until_one_closes(make_app, clean_db) -> None:
    fill_users(clean_db, 50_000)  # several chunks: the first response cannot finish by itself
    client = make_app(ETL_MAX_EXPORTS=2).test_client()
    assert client.get("/healthz").status_code == 200
    base = backends(clean_db)
    first = client.get("/etl/export.csv", buffered=False)
    second = client.get("/etl/jobs/none/rejects")  # a 404 takes no slot
    assert second.status_code == 404
    second = client.get("/etl/export.csv", buffered=False)
    assert next(iter(second.response)).startswith(b"id,email")
    busy = client.get("/etl/export.csv")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
    assert busy.get_json()["error"]["code"] == "EXPORTS_BUSY"
    first.close()  # never iterated: the slot comes back with the response
    second.close()  # mid-stream: the COPY is cancelled and its connection closed
    assert backends(clean_db) == base
    again = client.get("/etl/export.csv")
    assert again.status_code == 200 and again.get_data().count(b"\n") == 50_001


def test_heads_hold_nothing(make_app, clean_db) -> None:
    client = make_app(ETL_MAX_EXPORTS=1).test_client()
    assert client.get("/healthz").status_code == 200
    base = backends(clean_db)
    for _ in range(20):
        resp = client.head("/etl/export.csv?table=users")
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/csv")
        assert resp.get_data() == b""
    assert backends(clean_db) == base
    assert client.get("/etl/export.csv").status_code == 200  # the one slot is free


def test_a_client_that_stops_reading_loses_the_connection(make_app, clean_db) -> None:
    fill_users(clean_db, 100_000)  # ~4 MB: far more than the queue holds
    client = make_app(ETL_MAX_EXPORTS=1, ETL_EXPORT_STALL_TIMEOUT=1).test_client()
    assert client.get("/healthz").status_code == 200
    base = backends(clean_db)
    stalled = client.get("/etl/export.csv", buffered=False)
    chunks = iter(stalled.response)
    assert next(chunks).startswith(b"id,email")
    assert backends(clean_db) == base + 1
    assert wait_for(lambda: backends(clean_db) == base, timeout=10), "stalled COPY kept"
    other = client.get("/etl/export.csv")  # the slot came back without the client
    assert other.status_code == 200 and other.get_data().count(b"\n") == 100_001
    with pytest.raises(exporting.ExportStalled):  # the stalled response is cut, not short
        for _ in chunks:
            pass
    stalled.close()


@pytest.fixture
def failing_view(clean_db: str) -> Iterator[str]:
    # A site's view (in public): unqualified names are flaskstream's own tables.
    query(clean_db, "CREATE VIEW public.boom AS SELECT g, 1 / (g - 60000) AS x "
                    "FROM generate_series(1, 100000) g")
    try:
        yield "public.boom"
    finally:
        query(clean_db, "DROP VIEW public.boom")


def test_an_export_that_fails_mid_way_gives_everything_back(make_app, clean_db,
                                                           failing_view) -> None:
    from pg8000.exceptions import DatabaseError

    client = make_app(ETL_MAX_EXPORTS=1, ETL_TABLES=["users", failing_view]).test_client()
    assert client.get("/healthz").status_code == 200
    base = backends(clean_db)
    resp = client.get(f"/etl/export.csv?table={failing_view}", buffered=False)
    with pytest.raises(DatabaseError):
        for _ in resp.response:
            pass
    resp.close()
    assert backends(clean_db) == base
    assert client.get("/etl/export.csv").status_code == 200


def test_job_addresses_only_with_the_token(make_app, clean_db) -> None:
    app = make_app(API_TOKEN="s3cret")
    client = app.test_client()
    auth = {"Authorization": "Bearer s3cret"}
    resp = client.post("/etl/jobs?job=j1", data=b"email,age\na@x.io,1\n", headers={
        "Content-Type": "text/csv", **auth})
    assert resp.status_code == 201
    for path in ("/etl/jobs/j1", "/etl/jobs"):
        anonymous, admin = client.get(path).get_json(), client.get(path, headers=auth).get_json()
        anonymous, admin = (body["jobs"][0] if "jobs" in body else body
                            for body in (anonymous, admin))
        assert "source" not in anonymous and "worker" not in anonymous
        assert admin["source"].startswith("http:") and ":" in admin["worker"]
        assert {k: v for k, v in admin.items() if k not in ("source", "worker")} == anonymous
        assert anonymous["status"] == "done" and anonymous["rows_loaded"] == 1
    open_client = make_app().test_client()  # no token configured: nothing to hide
    assert "worker" in open_client.get("/etl/jobs/j1").get_json()


def test_cli_export_excel_safe(runner, clean_db, tmp_path) -> None:
    query(clean_db, "INSERT INTO flaskstream.users (email, age, name) VALUES ('a@x.io', 1, '@cmd'), "
                    "('b@x.io', 2, 'ok')")
    out = tmp_path / "safe.csv"
    result = runner.invoke(args=["etl", "export", "--table", "users", "--excel-safe",
                                 "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"id,email,age,name\n1,a@x.io,1,'@cmd\n2,b@x.io,2,ok\n"
    result = runner.invoke(args=["etl", "export", "--table", "users", "--output", str(out)])
    assert out.read_bytes() == b"id,email,age,name\n1,a@x.io,1,@cmd\n2,b@x.io,2,ok\n"


@pytest.fixture
def one_connection_url(clean_db: str) -> Iterator[str]:
    """A database whose owner role may hold one connection: the pool's, and no export's."""
    query(clean_db, "CREATE ROLE fs_export_probe LOGIN CONNECTION LIMIT 1")
    query(clean_db, "CREATE DATABASE fs_export_probe OWNER fs_export_probe")
    base = clean_db.split("://", 1)[1].split("@", 1)[1]  # "/postgres?host=..." or "host:port/db"
    path, _, params = base.partition("?")
    host = path.rsplit("/", 1)[0]
    try:
        yield f"postgresql://fs_export_probe@{host}/fs_export_probe" + (f"?{params}" if params
                                                                       else "")
    finally:
        query(clean_db, "DROP DATABASE fs_export_probe WITH (FORCE)")
        query(clean_db, "DROP ROLE fs_export_probe")


def test_a_refused_connection_is_a_json_503_and_frees_the_slot(make_app, one_connection_url
                                                                ) -> None:
    client = make_app(DATABASE_URL=one_connection_url, DB_POOL_SIZE=1, ETL_MAX_EXPORTS=1
                      ).test_client()
    assert client.get("/healthz").status_code == 200  # the one connection, now pooled
    for _ in range(2):  # the slot came back: the second answer is the same, not EXPORTS_BUSY
        resp = client.get("/etl/export.csv")
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "2"
        assert resp.get_json()["error"]["code"] == "DATABASE_UNAVAILABLE"
