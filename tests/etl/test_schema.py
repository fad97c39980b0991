"""The users table's shape: built for bulk loads by the first migration."""

from __future__ import annotations

import pg8000.native
import pytest

from flaskstream import db

pytestmark = pytest.mark.db


def test_new_database_has_the_bulk_load_shape(clean_db: str) -> None:
    con = pg8000.native.Connection(**db.connect_kwargs(clean_db))
    try:
        collation = con.run("SELECT c.collname FROM pg_attribute a JOIN pg_collation c "
                            "ON c.oid = a.attcollation WHERE a.attrelid = 'flaskstream.users'::regclass "
                            "AND a.attname = 'email'")[0][0]
        cache = con.run("SELECT seqcache FROM pg_sequence WHERE seqrelid = "
                        "pg_get_serial_sequence('flaskstream.users', 'id')::regclass")[0][0]
    finally:
        con.close()
    assert (collation, cache) == ("C", 100)
