"""The access-log pipeline judged by the ``requests`` preset (etl/logs.py through
``anytable.TableCsv`` + ``presets.REQUESTS``): one declaration of the table's rules.

``REQUESTS_TABLE`` is ``flaskstream.requests`` as ``catalog.describe_table`` reads it
(checked against the real catalog in ``test_the_catalog_reads_requests_as_the_tests_assume``).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from flaskstream.etl import presets
from flaskstream.etl.anytable import TableCsv
from flaskstream.etl.logs import FIELDS, log_copy_blocks, parse_line
from flaskstream.etl.mapping import TableColumn, TargetTable
from flaskstream.etl.pgtypes import PgType
from flaskstream.etl.pipeline import Progress
from tests.etl.helpers import query

REQUESTS_TABLE = TargetTable("flaskstream", "requests", (
    TableColumn("id", PgType("int8"), "bigint", not_null=True, identity="always"),
    TableColumn("time", PgType("timestamptz"), "timestamp with time zone", not_null=True),
    TableColumn("remote_addr", PgType("text"), "text"),
    TableColumn("method", PgType("text"), "text", not_null=True),
    TableColumn("path", PgType("text"), "text", not_null=True),
    TableColumn("protocol", PgType("text"), "text"),
    TableColumn("status", PgType("int4"), "integer", not_null=True),
    TableColumn("bytes", PgType("int8"), "bigint"),
    TableColumn("referrer", PgType("text"), "text"),
    TableColumn("agent", PgType("text"), "text"),
), primary_key=("id",), unique_keys=(("id",),))

GOOD = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 ' \
    '"http://x/" "Mozilla/4.08"'


def log_line(when: str = "10/Oct/2000:13:55:36 -0700", method: str = "GET",
             status: str = "200", size: str = "2326") -> str:
    return f'10.0.0.1 - - [{when}] "{method} /p HTTP/1.1" {status} {size} "-" "curl/8"'


def load(text: str) -> tuple[list[str], list[tuple[int, str]]]:
    """COPY rows and (line, reason) rejects of an access log loaded into the preset."""
    loader = TableCsv(REQUESTS_TABLE, None, presets.REQUESTS)
    rows, rejects = [], []
    for block in log_copy_blocks(iter([text.encode()]), loader, progress=Progress()):
        rows.extend(block.text.splitlines())
        rejects.extend((r.line, r.reason) for r in block.rejects)
    return rows, rejects


@pytest.mark.parametrize(("line", "reason"), [
    (GOOD, None),
    (log_line(size="-"), None),
    ("garbage line", "not a Combined/Common Log Format line"),
    (log_line(when="10/Foo/2000:13:55:36 -0700"), "bad timestamp: '10/Foo/2000:13:55:36 -0700'"),
    # the two the hand-written table let through to the server's COPY:
    (log_line(when="31/Feb/2024:13:55:36 +0000"), "time: date out of range: '2024-02-31T13:55:36+00:00'"),
    (log_line(when="10/Oct/2000:25:55:36 +0000"), "time: time out of range: '2000-10-10T25:55:36+00:00'"),
    (log_line(status="099"), "status: 99 out of range 100..999"),
    (log_line(method="M" * 33), "method: longer than 32 characters"),
    (log_line(size="99999999999999999999"), "bytes: '99999999999999999999' out of range for bigint"),
])
def test_each_log_line_is_judged_by_the_requests_preset(line: str, reason: str | None) -> None:
    rows, rejects = load(f"{GOOD}\n{line}\n\n{GOOD}\n")
    assert rejects == ([] if reason is None else [(2, reason)])
    assert len(rows) == (3 if reason is None else 2)
    assert rows[0] == "2000-10-10T13:55:36-07:00\t127.0.0.1\tGET\t/a.gif\tHTTP/1.0\t200\t2326\t" \
        "http://x/\tMozilla/4.08"


def test_a_log_and_the_same_fields_as_a_csv_load_alike() -> None:
    """The log pipeline and ``etl load --table requests`` share the rules: the same
    records give the same COPY text and the same rejects (no second validator)."""
    lines = [GOOD, log_line(size="-"), log_line(status="099"), log_line(method="M" * 33),
             log_line(when="31/Feb/2024:13:55:36 +0000"), log_line(when="01/Mar/2024:00:00:00 +1400")]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for line in lines:
        parsed = parse_line(line)
        assert isinstance(parsed, list)
        writer.writerow(parsed)
    loader = TableCsv(REQUESTS_TABLE, None, presets.REQUESTS)
    as_csv = list(loader.blocks(iter([out.getvalue().encode()]), progress=Progress()))
    rows, rejects = load("\n".join(lines) + "\n")
    assert rows == "".join(b.text for b in as_csv).splitlines() and len(rows) == 3
    assert rejects == [(r.line - 1, r.reason) for b in as_csv for r in b.rejects]  # - the header


@pytest.mark.db
def test_the_catalog_reads_requests_as_the_tests_assume(clean_db: str) -> None:
    import pg8000.native

    from flaskstream import db, schema
    from flaskstream.etl.catalog import describe_table

    con = schema.attach(pg8000.native.Connection(**db.connect_kwargs(clean_db)),
                        schema.SchemaNames("flaskstream"))
    try:
        table = describe_table(con, "flaskstream.requests")
    finally:
        con.close()
    assert table.columns == REQUESTS_TABLE.columns and table.primary_key == ("id",)


@pytest.mark.db
def test_etl_logs_rejects_in_the_core_what_the_server_used_to(runner: Any, clean_db: str,
                                                              tmp_path: Any) -> None:
    log = tmp_path / "access.log"
    log.write_text(f"{GOOD}\n{log_line(when='31/Feb/2024:13:55:36 +0000')}\ngarbage\n"
                   f"{log_line(status='099')}\n{log_line(size='-')}\n")
    result = runner.invoke(args=["etl", "logs", str(log), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.splitlines()[0])
    assert (summary["table"], summary["rows_loaded"], summary["rows_rejected"]) == ("requests", 2, 3)
    assert query(clean_db, "SELECT line, reason FROM flaskstream.etl_rejects ORDER BY line") == [
        [2, "time: date out of range: '2024-02-31T13:55:36+00:00'"],
        [3, "not a Combined/Common Log Format line"],
        [4, "status: 99 out of range 100..999"]]
    assert query(clean_db, "SELECT count(*) FROM flaskstream.requests") == [[2]]
