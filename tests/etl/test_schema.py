"""The users table's shape, and the one-time upgrade of a 0.1.0 database."""

from __future__ import annotations

from collections.abc import Iterator

import pg8000.native
import pytest

from flaskstream import db

pytestmark = pytest.mark.db

OLD_USERS = """CREATE TABLE users (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    age   integer CHECK (age BETWEEN 0 AND 150),
    name  text
)"""


@pytest.fixture
def con(clean_db: str) -> Iterator[pg8000.native.Connection]:
    con = pg8000.native.Connection(**db.connect_kwargs(clean_db))
    yield con
    con.run("DROP VIEW IF EXISTS users_emails")
    con.run("DROP TABLE IF EXISTS users CASCADE")
    db.apply_schema(con)  # the session's database gets today's table back
    con.close()


def shape(con: pg8000.native.Connection) -> tuple[str, int]:
    collation = con.run("SELECT c.collname FROM pg_attribute a JOIN pg_collation c "
                        "ON c.oid = a.attcollation WHERE a.attrelid = 'users'::regclass "
                        "AND a.attname = 'email'")[0][0]
    cache = con.run("SELECT seqcache FROM pg_sequence WHERE seqrelid = "
                    "pg_get_serial_sequence('users', 'id')::regclass")[0][0]
    return collation, cache


def test_new_database_has_the_bulk_load_shape(con: pg8000.native.Connection) -> None:
    assert shape(con) == ("C", 100)


def test_a_0_1_0_table_is_upgraded_once_with_its_rows(con: pg8000.native.Connection) -> None:
    con.run("DROP TABLE users CASCADE")
    con.run(OLD_USERS)
    con.run("INSERT INTO users (email, age) VALUES ('b@x.io', 1), ('a@x.io', 2)")
    assert shape(con) == ("default", 1)
    db.apply_schema(con)
    assert shape(con) == ("C", 100)
    assert con.run("SELECT email FROM users ORDER BY email") == [["a@x.io"], ["b@x.io"]]
    with pytest.raises(pg8000.native.DatabaseError, match="23505"):  # still unique
        con.run("INSERT INTO users (email) VALUES ('a@x.io')")
    db.apply_schema(con)  # idempotent
    assert shape(con) == ("C", 100)


def test_a_view_on_email_keeps_the_old_collation_without_failing_start_up(
        con: pg8000.native.Connection) -> None:
    con.run("DROP TABLE users CASCADE")
    con.run(OLD_USERS)
    con.run("CREATE VIEW users_emails AS SELECT email FROM users")
    db.apply_schema(con)  # must not raise: the ALTER is refused, with a warning
    assert shape(con) == ("default", 100)
