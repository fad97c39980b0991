"""Loading a site's own table (``--table public.customers``), on the real server.

``public.customers`` has 16 columns of 14 types, among them a default, an
identity ALWAYS primary key, a CHECK, a unique and a generated column. Each
test creates it and drops it afterwards (``truncate_all`` empties public tables,
so other tests never see rows of ours).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.etl.helpers import query

pytestmark = pytest.mark.db

CUSTOMERS = """
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
);
"""
HEADER = "email,name,age,balance,score,active,born,seen,token,extra,ip,tags,tier,note"
GOOD = [
    'ann@x.io,Ann,30,12.50,1.5,yes,2001-02-03,2024-05-06 07:08:09+00,'
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,"{""k"": 1}",10.0.0.1,"{a,b}",pro,hi',
    'bob@x.io,"",41,0,,f,1999-12-31,,,,::1,{},free,',  # name '' (quoted), score NULL
    'cy@x.io,,0,3,-2e3,true,,,,[],,,,',
]
BAD = [  # (line offset, the row, the reason's start)
    ('dan@x.io,Dan,abc,1,1,t,,,,,,,,', "age: "),
    ('eve@x.io,Eve,1,1,1,maybe,,,,,,,,', "active: "),
    ('fay@x.io,Fay,1,1,1,t,2023-02-30,,,,,,,', "born: "),
    ('gus@x.io,Gus,1,1,1,t,,,not-a-uuid,,,,,', "token: "),
    ('hal@x.io,Hal,1,1,1,t,,,,{bad,,,,', "extra: "),
    ('ida@x.io,Ida,1,1,1,t,,,,,300.1.1.1,,,', "ip: "),
    ('jo@x.io,Jo,1,1,1,t,,,,,,,gold,', "tier: "),
    ('kim@x.io,Kim,1,1,1,t,,,,,,,,much too long', "note: "),
    ('lee@x.io,Lee,1,123456789.123,1,t,,,,,,,,', "balance: "),
    ('mo@x.io,Mo,200,1,1,t,,,,,,,,', "new row for relation"),  # CHECK: the server's word
    ('ann@x.io,Ann again,5,1,1,t,,,,,,,,', "duplicate key value"),  # UNIQUE: the server's
    (',NoMail,5,1,1,t,,,,,,,,', "email: required"),
]


@pytest.fixture
def customers(clean_db: str) -> Iterator[str]:
    query(clean_db, "DROP TABLE IF EXISTS public.customers")
    query(clean_db, "DROP TYPE IF EXISTS public.customer_tier")
    for statement in CUSTOMERS.split(";"):
        if statement.strip():
            query(clean_db, statement)
    yield clean_db
    query(clean_db, "DROP TABLE public.customers")
    query(clean_db, "DROP TYPE public.customer_tier")


def customers_csv() -> bytes:
    rows = [HEADER, *GOOD, *(row for row, _ in BAD)]
    return ("\n".join(rows) + "\n").encode()


def load(runner: Any, path: Path | str, *args: str) -> tuple[Any, dict[str, Any] | None]:
    result = runner.invoke(args=["etl", "load", str(path), "--json", *args])
    first = result.output.splitlines()[0] if result.output else ""
    return result, json.loads(first) if first.startswith("{") else None


def rows(url: str) -> list[list[Any]]:
    return query(url, "SELECT email, name, age, balance::text, score, active, born::text, "
                      "token::text, extra::text, host(ip), tags, tier::text, note, email_lc "
                      "FROM public.customers ORDER BY email")


def test_a_site_table_loads_every_good_row_and_rejects_every_bad_value(runner, customers,
                                                                       tmp_path):
    src = tmp_path / "customers.csv"
    src.write_bytes(customers_csv())
    rejects = tmp_path / "rejects.csv"
    result, summary = load(runner, src, "--table", "public.customers", "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    assert summary is not None and summary["table"] == "public.customers"
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == \
        (len(GOOD) + len(BAD), len(GOOD), len(BAD))
    assert rows(customers) == [
        ["ann@x.io", "Ann", 30, "12.50", 1.5, True, "2001-02-03",
         "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", '{"k": 1}', "10.0.0.1", ["a", "b"], "pro", "hi",
         "ann@x.io"],
        ["bob@x.io", "", 41, "0.00", None, False, "1999-12-31", None, None, "::1", [], "free",
         None, "bob@x.io"],  # quoted "" is an empty string; the empty note is NULL, not 'none'
        ["cy@x.io", None, 0, "3.00", -2000.0, True, None, None, "[]", None, None, None, None,
         "cy@x.io"],
    ]
    # written as found: the server's (CHECK, UNIQUE) after the batch, the core's before
    found = sorted(list(csv.reader(io.StringIO(rejects.read_text())))[1:], key=lambda r: int(r[0]))
    first_bad = 2 + len(GOOD)  # the header is line 1
    assert [int(line) for line, _, _ in found] == list(range(first_bad, first_bad + len(BAD)))
    for (line, reason, text), (row, expected) in zip(found, BAD, strict=True):
        assert reason.startswith(expected), (line, reason)
        assert next(csv.reader([text])) == next(csv.reader([row]))


def test_a_missing_column_takes_its_default_and_mapping_renames(runner, customers, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"E-Mail;Age\n ZOE@X.IO ;7\n")
    result, summary = load(runner, src, "--table", "public.customers", "--delimiter", ";",
                           "--map", "E-Mail=email", "--lower", "email")
    assert result.exit_code == 0, result.output
    assert query(customers, "SELECT email, age, balance::text, active, note, id > 0 "
                            "FROM public.customers") == [["zoe@x.io", 7, "0.00", True, "none", True]]


@pytest.mark.parametrize(("data", "args", "code"), [
    (b"email,shoe_size\na@x.io,9\n", (), "unknown column"),
    (b"name,age\nA,1\n", (), "NOT NULL"),
    (b"email,id\na@x.io,1\n", (), "identity ALWAYS"),
])
def test_a_header_that_cannot_feed_the_table_loads_nothing(runner, customers, tmp_path,
                                                          data, args, code):
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    result, summary = load(runner, src, "--table", "public.customers", *args)
    assert result.exit_code == 1
    assert summary is not None and summary["status"] == "failed"
    assert summary["error"]["code"] in ("UNKNOWN_COLUMN", "MISSING_COLUMN", "UNWRITABLE_COLUMN")
    assert query(customers, "SELECT count(*) FROM public.customers") == [[0]]
    assert query(customers, "SELECT status FROM flaskstream.etl_jobs") == [["failed"]]


def test_ignore_extra_headerless_null_string_and_skip_lines(runner, customers, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"exported by crm\n\n"
                    b"a@x.io|NA|1|x\n"
                    b"b@x.io|'NA'|2|y\n")
    result, summary = load(runner, src, "--table", "public.customers", "--no-header",
                           "--columns", "email,name,age,junk", "--ignore-extra", "--delimiter", "|",
                           "--quote", "'", "--null", "NA", "--skip-lines", "2")
    assert result.exit_code == 0, result.output
    # --null NA: unquoted NA is NULL; quoted 'NA' too (documented: quoting marks only "")
    assert query(customers, "SELECT email, name, age FROM public.customers ORDER BY 1") == \
        [["a@x.io", None, 1], ["b@x.io", None, 2]]


def test_no_trim_keeps_spaces_and_trim_is_the_default(runner, customers, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"email,name\n a@x.io ,  Ann  \n")
    assert load(runner, src, "--table", "public.customers")[0].exit_code == 0
    src.write_bytes(b"email,name\nb@x.io,  Bob  \n")
    assert load(runner, src, "--table", "public.customers", "--no-trim")[0].exit_code == 0
    assert query(customers, "SELECT email, name FROM public.customers ORDER BY 1") == \
        [["a@x.io", "Ann"], ["b@x.io", "  Bob  "]]


def test_upsert_on_the_primary_key_or_a_named_unique_index(runner, customers, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"email,age\na@x.io,1\nb@x.io,2\n")
    assert load(runner, src, "--table", "public.customers")[0].exit_code == 0
    src.write_bytes(b'email,age,tier,balance,tags\na@x.io,10,pro,1.5,"{x,y}"\nc@x.io,3,,,\n')
    result, summary = load(runner, src, "--table", "public.customers", "--mode", "upsert",
                           "--key", "email")  # the stage has the target's types (enum, array)
    assert result.exit_code == 0, result.output
    # c's empty balance is NULL for a NOT NULL column: a reject, as COPY would refuse it
    # (a default fills a column the CSV lacks, not an empty field)
    assert summary is not None and summary["rows_rejected"] == 1
    assert query(customers, "SELECT reason FROM flaskstream.etl_rejects") == [
        ["balance: required (NOT NULL)"]]
    assert query(customers, "SELECT email, age, tier::text, balance::text, tags "
                            "FROM public.customers ORDER BY 1") == \
        [["a@x.io", 10, "pro", "1.50", ["x", "y"]], ["b@x.io", 2, None, "0.00", None]]
    result, summary = load(runner, src, "--table", "public.customers", "--mode", "upsert",
                           "--key", "age")
    assert result.exit_code == 1 and summary is not None
    assert summary["error"]["code"] == "BAD_KEY"


def test_encodings_latin1_and_utf16_with_bom(runner, customers, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes("email,name\nl@x.io,Zoë\n".encode("latin-1"))
    assert load(runner, src, "--table", "public.customers", "--encoding", "latin-1")[0].exit_code == 0
    src.write_bytes("email,name\nu@x.io,Ŝam\n".encode("utf-16"))  # BOM first
    result, _ = load(runner, src, "--table", "public.customers", "--encoding", "utf-16")
    assert result.exit_code == 0, result.output
    assert query(customers, "SELECT email, name FROM public.customers ORDER BY 1") == \
        [["l@x.io", "Zoë"], ["u@x.io", "Ŝam"]]


def test_an_invalid_utf8_header_is_recorded_as_failed_not_left_running(runner, clean_db,
                                                                        tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"em\xffail,age\na@x.io,1\n")
    result, summary = load(runner, src)  # the users preset: BAD_HEADER quoting the byte
    assert result.exit_code == 1 and summary is not None
    assert summary["error"]["code"] == "BAD_HEADER" and "\\xff" in summary["error"]["message"]
    [[status, error]] = query(clean_db, "SELECT status, error FROM flaskstream.etl_jobs")
    assert status == "failed" and "\\xff" in error


def test_an_unknown_table_and_a_bad_name_are_clear_errors(runner, clean_db, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"a\n1\n")
    result, _ = load(runner, src, "--table", "public.no_such")
    assert result.exit_code == 1 and "no table public.no_such" in result.output
    result, _ = load(runner, src, "--table", "a.b.c")
    assert result.exit_code == 1 and "not a table name" in result.output
    assert query(clean_db, "SELECT count(*) FROM flaskstream.etl_jobs") == [[0]]


# --- over HTTP: only the tables of ETL_TABLES ------------------------------------------


def post(client: Any, body: bytes, query_string: str) -> Any:
    return client.post(f"/etl/jobs?{query_string}", data=body,
                       headers={"Content-Type": "text/csv"})


def test_http_refuses_a_table_not_listed(client, customers):
    resp = post(client, customers_csv(), "table=public.customers")
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == "TABLE_NOT_ALLOWED"
    assert query(customers, "SELECT count(*) FROM public.customers") == [[0]]
    assert query(customers, "SELECT count(*) FROM flaskstream.etl_jobs") == [[0]]


def test_http_loads_a_listed_table_with_dialect_arguments(app, client, customers):
    app.config["ETL_TABLES"] = ["users", "requests", "public.customers"]
    resp = post(client, customers_csv(), "table=public.customers")
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert (body["rows_loaded"], body["rows_rejected"]) == (len(GOOD), len(BAD))
    rejects = client.get(f"/etl/jobs/{body['job']}/rejects").get_data(as_text=True)
    reasons = [r[1] for r in csv.reader(io.StringIO(rejects))][1:]
    assert [r.split(":")[0] for r in reasons[:3]] == ["age", "active", "born"]
    resp = post(client, b"x@x.io;;3\n", "table=public.customers&no_header=1"
                "&columns=email,name,age&delimiter=;")
    assert resp.status_code == 201, resp.get_json()
    assert query(customers, "SELECT name, age FROM public.customers WHERE email = 'x@x.io'") \
        == [[None, 3]]
    resp = post(client, b"email,shoe\na@x.io,1\n", "table=public.customers")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "UNKNOWN_COLUMN"
    resp = post(client, b"email\n", "table=public.customers&delimiter=ab")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "BAD_DIALECT"


# --- export: any readable table from the CLI, listed ones over HTTP, ?columns= ---------


def test_export_any_table_from_the_cli_with_columns(runner, customers, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"email,age\nb@x.io,2\na@x.io,1\n")
    assert load(runner, src, "--table", "public.customers")[0].exit_code == 0
    result = runner.invoke(args=["etl", "export", "--table", "public.customers",
                                 "--columns", "age,email"])
    assert result.exit_code == 0, result.output
    assert sorted(result.output.splitlines()) == ["1,a@x.io", "2,b@x.io", "age,email"]
    result = runner.invoke(args=["etl", "export", "--table", "public.customers",
                                 "--columns", "email,shoe"])
    assert result.exit_code == 1 and "no column(s) 'shoe'" in result.output


def test_export_over_http_only_listed_tables_with_columns(app, client, customers):
    query(customers, "INSERT INTO public.customers (email, age) VALUES ('a@x.io', 1)")
    resp = client.get("/etl/export.csv?table=public.customers")
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "TABLE_NOT_ALLOWED"
    app.config["ETL_TABLES"] = ["users", "public.customers"]
    resp = client.get("/etl/export.csv?table=public.customers&columns=email,age,email_lc")
    assert resp.status_code == 200
    assert resp.get_data(as_text=True).splitlines() == ["email,age,email_lc", "a@x.io,1,a@x.io"]
    resp = client.get("/etl/export.csv?table=public.customers&columns=password")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "UNKNOWN_COLUMN"


def test_csv_options_work_for_the_presets_and_keep_their_rules(runner, client, clean_db,
                                                                tmp_path):
    """The presets are catalog tables with extra rules: a dialect option no longer
    turns them away, and the rules (lower-cased plausible email, age 0..150, age
    required) still judge every row, over the CLI and over HTTP."""
    src = tmp_path / "in.csv"
    src.write_bytes(b"junk line\nEMAIL;Age;shoe\n A@X.io ;1;9\nnope;2;9\nb@x.io;151;9\n"
                    b"c@x.io;NA;9\n")
    result, summary = load(runner, src, "--delimiter", ";", "--skip-lines", "1", "--null", "NA")
    assert result.exit_code == 0, result.output
    assert summary is not None and (summary["rows_loaded"], summary["rows_rejected"]) == (1, 3)
    reasons = [r for [r] in query(clean_db, "SELECT reason FROM flaskstream.etl_rejects "
                                            "ORDER BY line")]
    assert reasons == ["email: not a plausible email address: 'nope'",
                       "age: 151 out of range 0..150", "age: required"]
    resp = post(client, b"d@x.io|3\n", "table=users&no_header=1&columns=email,age&delimiter=|")
    assert resp.status_code == 201, resp.get_json()
    assert query(clean_db, "SELECT email, age FROM flaskstream.users ORDER BY email") == \
        [["a@x.io", 1], ["d@x.io", 3]]
    resp = post(client, b"email\n", "table=users&delimiter=ab")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "BAD_DIALECT"
