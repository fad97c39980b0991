"""Migrations: applied once, in order, one transaction each, under a lock; ``flask db``."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from flaskstream import create_app, db, migrate, schema
from tests.db.conftest import connect

pytestmark = pytest.mark.db


def app_for(url: str, schema_name: str, tmp_path: Path) -> Flask:
    return create_app({"TESTING": True, "DATABASE_URL": url, "DB_SCHEMA": schema_name,
                       "INSTANCE_PATH": str(tmp_path / f"i-{schema_name}")})


def versions(url: str, schema_name: str) -> list[tuple[int, str]]:
    con = connect(url, schema_name)
    try:
        return [(v, n) for v, n in con.run(
            f"SELECT version, name FROM {schema.SchemaNames(schema_name).qualified('schema_migrations')} "
            "ORDER BY version")]
    finally:
        con.close()


def test_a_new_schema_is_created_and_migrated_once(database_url: str,
                                                   fresh_schema: Callable[[], str]) -> None:
    name = fresh_schema()
    names = schema.SchemaNames(name)
    con = connect(database_url, name)
    try:
        assert [m.label for m in migrate.pending(con, names)] == ["0001_initial"]
        ran = migrate.upgrade(con, names)
        assert [m.label for m in ran] == ["0001_initial"]
        tables = {r[0] for r in con.run("SELECT tablename FROM pg_tables WHERE schemaname = :s", s=name)}
        assert tables == {"schema_migrations", "flaskstream_meta", "users", "requests", "etl_jobs",
                          "etl_rejects", "events", "events_pruned", "tus_uploads", "uploads", "auth_revoked"}
        (applied_at,) = con.run(f"SELECT applied_at FROM {names.qualified('schema_migrations')}")[0]
        assert migrate.upgrade(con, names) == []  # the second start applies nothing
        assert con.run(f"SELECT applied_at FROM {names.qualified('schema_migrations')}") == [[applied_at]]
        # Every sequence and index went into the schema with its table.
        assert con.run("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = :s AND c.relkind = 'S'", s=name)[0][0] >= 3
    finally:
        con.close()


def test_workers_starting_together_apply_each_migration_once(
        database_url: str, fresh_schema: Callable[[], str]) -> None:
    name = fresh_schema()
    names = schema.SchemaNames(name)
    start = threading.Barrier(4)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        con = connect(database_url, name)
        try:
            start.wait()
            results.append([m.label for m in migrate.upgrade(con, names)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            con.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(results) == [[], [], [], ["0001_initial"]]
    assert versions(database_url, name) == [(1, "initial")]


def test_a_failing_migration_leaves_nothing_behind(
        database_url: str, fresh_schema: Callable[[], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One transaction each; and an unqualified name is an error, never an object in public."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    shutil.copy(migrate.MIGRATIONS_DIR / "0001_initial.sql", directory)
    (directory / "0002_broken.sql").write_text(
        "CREATE TABLE @schema@.half_done (x int);\nCREATE TABLE forgot_the_schema (x int);\n")
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", directory)
    name = fresh_schema()
    names = schema.SchemaNames(name)
    con = connect(database_url, name)
    try:
        with pytest.raises(migrate.MigrationError, match="0002_broken"):
            migrate.upgrade(con, names)
        assert versions(database_url, name) == [(1, "initial")]
        assert con.run("SELECT to_regclass(:t)", t=names.qualified("half_done")) == [[None]]
        assert con.run("SELECT to_regclass('public.forgot_the_schema')") == [[None]]
        assert [m.label for m in migrate.pending(con, names)] == ["0002_broken"]
        # The lock was let go: another session can take it at once.
        other = connect(database_url, name)
        try:
            assert other.run("SELECT pg_try_advisory_lock(:k)", k=names.lock_key("migrations")) == [[True]]
        finally:
            other.close()
    finally:
        con.close()


def test_migration_files_are_numbered_without_gaps(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="without gaps"):
        migrate.available(tmp_path)
    (tmp_path / "0002_B.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="NNNN_name"):
        migrate.available(tmp_path)
    assert [m.label for m in migrate.available()][0] == "0001_initial"


def test_flask_db_status_and_upgrade(database_url: str, fresh_schema: Callable[[], str],
                                     tmp_path: Path) -> None:
    name = fresh_schema()
    app = app_for(database_url, name, tmp_path)
    runner = app.test_cli_runner()
    try:
        status = runner.invoke(args=["db", "status"])
        assert status.exit_code == 1, status.output
        assert f"schema {name}" in status.output
        assert "0001_initial" in status.output and "pending" in status.output
        assert versions_or_none(database_url, name) is None  # status applied nothing

        upgrade = runner.invoke(args=["db", "upgrade"])
        assert upgrade.exit_code == 0, upgrade.output
        assert "applied 0001_initial" in upgrade.output
        assert versions(database_url, name) == [(1, "initial")]

        again = runner.invoke(args=["db", "upgrade"])
        assert again.exit_code == 0 and "nothing to apply" in again.output
        status = runner.invoke(args=["db", "status"])
        assert status.exit_code == 0, status.output
        assert "pending" not in status.output and "applied" in status.output
    finally:
        db.get_database(app).close_all()


def versions_or_none(url: str, schema_name: str) -> list[tuple[int, str]] | None:
    con = connect(url, schema_name)
    try:
        if con.run("SELECT 1 FROM pg_namespace WHERE nspname = :s", s=schema_name):
            return versions(url, schema_name)
        return None
    finally:
        con.close()


def test_flask_db_reports_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    app = create_app({"TESTING": True, "INSTANCE_PATH": str(tmp_path / "i"), "DB_CONNECT_TIMEOUT": 1,
                      "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    for command in ("status", "upgrade"):
        result = app.test_cli_runner().invoke(args=["db", command])
        assert result.exit_code == 1
        assert result.output.startswith("Error: database:"), result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize("bad", ["public", "pg_flaskstream", "information_schema", "Flask", "a-b",
                                 "1abc", "", "x" * 49, 'fs"; DROP SCHEMA public; --'])
def test_the_schema_setting_is_validated(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DB_SCHEMA"):
        create_app({"TESTING": True, "DB_SCHEMA": bad, "INSTANCE_PATH": str(tmp_path / "i")})


def test_readyz_says_schema_current_from_the_migrations_table(
        database_url: str, fresh_schema: Callable[[], str], tmp_path: Path) -> None:
    name = fresh_schema()
    app = app_for(database_url, name, tmp_path)
    client = app.test_client()
    try:
        assert client.get("/readyz").status_code == 200
        con = connect(database_url, name)
        try:
            con.run(f"DELETE FROM {schema.SchemaNames(name).qualified('schema_migrations')}")
        finally:
            con.close()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "schema not current" in response.get_json()["db"]
    finally:
        db.get_database(app).close_all()


def test_names_lock_keys_and_channels_derive_from_the_schema() -> None:
    a, b = schema.SchemaNames("flaskstream"), schema.SchemaNames("flaskstream_b")
    assert a.qualified("events") == '"flaskstream"."events"'
    assert a.channel("events") == "flaskstream_events"  # what 0.1 listened on
    assert b.channel("events") != a.channel("events")
    keys = {n.lock_key(p) for n in (a, b) for p in ("migrations", "events.publish")}
    assert len(keys) == 4
    assert all(-(2 ** 63) <= k < 2 ** 63 for k in keys)
    with pytest.raises(ValueError):
        a.qualified('events"; DROP TABLE users; --')


def test_a_connection_flaskstream_did_not_open_has_no_schema(database_url: str) -> None:
    from tests.db.conftest import admin

    con = admin(database_url)
    try:
        with pytest.raises(LookupError):
            schema.of(con)
    finally:
        con.close()


def test_publishes_notify_only_their_own_schema_s_channel(
        database_url: str, fresh_schema: Callable[[], str]) -> None:
    from flaskstream.events import store

    name_a, name_b = fresh_schema(), fresh_schema()
    publisher, listener = connect(database_url, name_a), connect(database_url, name_b)
    try:
        for con, name in ((publisher, name_a), (listener, name_b)):
            migrate.upgrade(con, schema.SchemaNames(name))
        listener.run(f'LISTEN "{store.notify_channel(listener)}"')
        listener.run(f'LISTEN "{store.notify_channel(publisher)}"')
        store.insert_event(publisher, "news", "hello", None, None)
        listener.run("SELECT 1")  # pg8000 reads notifications while a query runs
        channels = {n[1] for n in listener.notifications}
        assert channels == {f"{name_a}_events"}
    finally:
        publisher.close()
        listener.close()
