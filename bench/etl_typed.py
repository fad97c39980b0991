"""The typed-table half of bench/etl.py: a site's own ``public.customers``
(16 columns, 14 types: identity ALWAYS primary key, a unique email, a CHECK on
age, defaults, a generated column), 1M rows of CSV with 2% bad values the core
judges (a non-integer age, an impossible date, a bad uuid, a bad inet), loaded
by ``flask etl load --table public.customers``'s code path and by ``psql \\copy``
of the valid rows pre-cleaned into the same table, in one run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pg8000.native

from flaskstream import db, schema

TABLE = "public.customers"
DDL = """
DROP TABLE IF EXISTS public.customers;
DROP TYPE IF EXISTS public.customer_tier;
CREATE TYPE public.customer_tier AS ENUM ('free', 'pro');
CREATE TABLE public.customers (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email    varchar(254) NOT NULL UNIQUE,
    name     text,
    age      smallint CHECK (age BETWEEN 0 AND 150),
    balance  numeric(10,2) NOT NULL DEFAULT 0,
    score    double precision,
    active   boolean NOT NULL DEFAULT true,
    born     date,
    seen     timestamptz,
    token    uuid,
    extra    jsonb,
    ip       inet,
    tags     text[],
    tier     public.customer_tier,
    note     varchar(10) DEFAULT 'none',
    email_lc text GENERATED ALWAYS AS (lower(email)) STORED
)
"""
COLUMNS = ("email", "name", "age", "balance", "score", "active", "born", "seen", "token",
           "extra", "ip", "tags", "tier", "note")


def create(url: str) -> None:
    con = schema.attach(pg8000.native.Connection(**db.connect_kwargs(url)), schema.SchemaNames("flaskstream"))
    try:
        db.apply_schema(con)  # flaskstream's own tables (etl_jobs) too
        for statement in DDL.split(";"):
            if statement.strip():
                con.run(statement)
    finally:
        con.close()


def truncate(url: str) -> None:
    con = pg8000.native.Connection(**db.connect_kwargs(url))
    try:
        con.run("TRUNCATE public.customers RESTART IDENTITY")
        con.run("CHECKPOINT")
    finally:
        con.close()


def row(i: int, rng: random.Random, invalid: float) -> tuple[str, str | None]:
    """One CSV line and, when valid, its pre-cleaned COPY text line."""
    values = [f"c{i}@example.com", f" Customer {i} ", str(i % 120), f"{i % 100000}.{i % 100:02d}",
              f"{(i % 1000) / 8}", "t" if i % 3 else "f",
              f"19{50 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
              f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} 12:{i % 60:02d}:00+00",
              f"{i:08x}-0000-4000-8000-{i * 7919 % 10**12:012d}", f'{{"n": {i}}}',
              f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "{a,b}",
              "pro" if i % 5 == 0 else "free", f"n{i % 1000}"]
    cells = list(values)
    cells[9] = '"' + values[9].replace('"', '""') + '"'
    cells[11] = f'"{values[11]}"'
    r = rng.random()
    if r < invalid:
        bad = int(r / invalid * 4)
        cells[(2, 6, 8, 10)[bad]] = ("x", "2023-02-30", "nope", "300.1.1.1")[bad]
        return ",".join(cells) + "\n", None
    values[1] = values[1].strip()
    return ",".join(cells) + "\n", "\t".join(values) + "\n"


def write_inputs(folder: Path, rows: int, invalid: float) -> tuple[Path, Path, int]:
    rng = random.Random(43)
    csv_path, clean_path = folder / "customers.csv", folder / "customers-clean.tsv"
    valid = 0
    with open(csv_path, "w") as raw, open(clean_path, "w") as clean:
        raw.write(",".join(COLUMNS) + "\n")
        for start in range(0, rows, 10_000):
            lines = [row(i, rng, invalid) for i in range(start, min(rows, start + 10_000))]
            raw.write("".join(line for line, _ in lines))
            good = [c for _, c in lines if c]
            valid += len(good)
            clean.write("".join(good))
    return csv_path, clean_path, valid


def big_input(total_bytes: int, invalid: float) -> Iterator[bytes]:
    """~total_bytes of customers CSV, never stored: a template block of 20,000 rows
    stamped with a block number in every email (the column is unique)."""
    rng = random.Random(8)
    template = "".join(row(i, rng, invalid)[0].replace("@example.com", "@b@@@@@@@@.example.com", 1)
                       for i in range(20_000)).encode()
    yield (",".join(COLUMNS) + "\n").encode()
    sent, block = 0, 0
    while sent < total_bytes:
        data = template.replace(b"@@@@@@@@", b"%08d" % block)
        block += 1
        sent += len(data)
        yield data


def psql_copy(clean: Path) -> str:
    return f"\\copy {TABLE} ({', '.join(COLUMNS)}) FROM '{clean}'"
