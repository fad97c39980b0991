"""Shared helpers for the ETL tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pg8000.native

from flaskstream import db


def users_csv(n: int, *, start: int = 0, bad_every: int = 0) -> bytes:
    """``n`` rows; every ``bad_every``-th row has a non-integer age."""
    lines = ["email,age,name"]
    for i in range(start, start + n):
        age = "x" if bad_every and i % bad_every == bad_every - 1 else str(i % 100)
        lines.append(f"user{i}@example.com,{age},User {i}")
    return ("\n".join(lines) + "\n").encode()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in ``size``-byte pieces, as a socket or a request body would give it."""
    return (data[i:i + size] for i in range(0, len(data), size))


def query(url: str, sql: str, **params: Any) -> list[list[Any]]:
    con = pg8000.native.Connection(**db.connect_kwargs(url))
    try:
        return con.run(sql, **params)
    finally:
        con.close()
