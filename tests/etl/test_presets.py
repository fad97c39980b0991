"""The presets as rules over catalog tables (etl/presets.py, etl/rules.py), judged by the pure core.

``USERS_TABLE`` is ``flaskstream.users`` as ``catalog.describe_table`` reads it
(checked against the real catalog in ``test_the_catalog_reads_users_as_the_tests_assume``).
"""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaskstream.etl import presets, rules
from flaskstream.etl.anytable import TableCsv
from flaskstream.etl.mapping import TableColumn, TargetTable
from flaskstream.etl.pgtypes import SMALL_RANGE, ColumnCodec, PgType
from flaskstream.etl.pipeline import Progress
from flaskstream.etl.tables import HeaderError, Invalid
from tests.etl.helpers import query

USERS_TABLE = TargetTable("flaskstream", "users", (
    TableColumn("id", PgType("int8"), "bigint", not_null=True, identity="always"),
    TableColumn("email", PgType("text"), "text", not_null=True),
    TableColumn("age", PgType("int4"), "integer"),
    TableColumn("name", PgType("text"), "text"),
), primary_key=("id",), unique_keys=(("id",), ("email",)))


def load(data: bytes) -> tuple[list[list[str]], list[tuple[int, str]], TableCsv]:
    """COPY rows and (line, reason) rejects of ``data`` loaded into the users preset."""
    loader = TableCsv(USERS_TABLE, None, presets.USERS)
    rows, rejects = [], []
    for block in loader.blocks(iter([data]), progress=Progress()):
        rows.extend(line.split("\t") for line in block.text.splitlines())
        rejects.extend((r.line, r.reason) for r in block.rejects)
    return rows, rejects, loader


@pytest.mark.parametrize(("row", "reason"), [
    (' A@X.IO ,7, Ann ', None),
    ('a@x.io,0,', None), ('a@x.io,150,', None), ('a@x.io,+7,', None), ('a@x.io,0x10,', None),
    ('a@x.io,-1,', "age: -1 out of range 0..150"), ('a@x.io,151,', "age: 151 out of range 0..150"),
    ('a@x.io,9999999999,', "age: '9999999999' out of range for integer"),
    ('a@x.io,abc,', "age: not a valid integer: 'abc'"), ('a@x.io,,', "age: required"),
    ('a@x.io,"",', "age: not a valid integer: ''"),
    (',7,', "email: required"), ('"",7,', "email: required"), ('  ,7,', "email: required"),
    ('nope,7,', "email: not a plausible email address: 'nope'"),
    ('a b@x.io,7,', "email: not a plausible email address: 'a b@x.io'"),
    ('a@' + 'x' * 249 + '.io,7,', None),  # 254 characters
    ('a@' + 'x' * 250 + '.io,7,', "email: longer than 254 characters"),
    ('a@x.io,7,' + 'n' * 1000, None), ('a@x.io,7,' + 'n' * 1001, "name: longer than 1000 characters"),
    (',200,', "email: required; age: 200 out of range 0..150"),
])
def test_the_users_rules_judge_each_value(row: str, reason: str | None) -> None:
    rows, rejects, _ = load(f"email,age,name\n{row}\n".encode())
    assert rejects == ([] if reason is None else [(2, reason)])
    if reason is None and row.startswith(" A@"):
        assert rows == [["a@x.io", "7", "Ann"]]  # trimmed, email lower-cased


def test_a_preset_skips_extra_fields_and_names_a_missing_required_one() -> None:
    rows, rejects, loader = load(b"Shoe,EMAIL,Age\n9,B@x.io,3\n")
    assert rows == [["b@x.io", "3"]] and rejects == []
    assert loader.copy_target(upsert=True).key == ("email",)  # the preset's key, not id
    with pytest.raises(HeaderError) as info:
        load(b"mail,age\nx@y.io,1\n")
    assert str(info.value) == ("header is missing required column(s) email for table users; "
                               "found: mail, age")
    assert info.value.code == "BAD_HEADER"


def test_an_empty_file_into_a_preset_loads_nothing_without_an_error() -> None:
    rows, rejects, loader = load(b"")
    assert (rows, rejects) == ([], [])
    assert loader.copy_target().columns == ("email", "age", "name")


def test_a_rule_on_a_column_the_table_lacks_is_a_bug_not_bad_input() -> None:
    preset = presets.Preset("users", (("mail", (rules.Required(),)),))
    with pytest.raises(ValueError, match="no column"):
        preset.apply(USERS_TABLE)


CODECS = {
    "age 0..150 (dict lookup)": ColumnCodec("c", PgType("int4"), rules=(rules.IntRange(0, 150),)),
    "bytes 0.. (regex run, range)": ColumnCodec("c", PgType("int8"), rules=(rules.IntRange(0),)),
    "100.. past SMALL_RANGE (regex run, range)": ColumnCodec(
        "c", PgType("int4"), rules=(rules.IntRange(100, 100 + SMALL_RANGE),)),
    "email": ColumnCodec("c", PgType("text"), rules=(rules.Required(), *rules.PLAUSIBLE_EMAIL)),
    "short text": ColumnCodec("c", PgType("text"), rules=(rules.MaxLength(3),)),
}


VALUE = st.one_of(
    st.integers(-10 ** 20, 10 ** 20).map(str),
    st.integers(-200, 1200).map(str),
    st.sampled_from(["", " 5", "+5", "05", "0x1f", "1_000", "-0", "a@b.co", "A@b.co", "a@b",
                     "a@@b.co", "a b@c.de", "x" * 250 + "@b.co", "abcd", "ab\\c", "é@x.io"]),
    st.text("ab@.-1 \\é", max_size=8),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(CODECS)), values=st.lists(VALUE, max_size=40))
def test_the_block_fast_paths_judge_as_the_exact_check(name: str, values: list[Any]) -> None:
    """A block through the fast paths (dict lookup, one regex over the joined
    column, the range and length scans) accepts and rejects exactly what the
    per-value check does, and writes the same COPY text."""
    codec = CODECS[name]
    errors: dict[int, list[str]] = {}
    out = codec.encode(values, errors)
    for i, value in enumerate(values):
        try:
            expected = codec.convert(value)
        except Invalid as exc:
            assert errors.get(i) == [str(exc)], (i, value)
            continue
        assert i not in errors and out[i] == expected, (i, value, out[i])


@pytest.mark.db
def test_the_catalog_reads_users_as_the_tests_assume(clean_db: str) -> None:
    import pg8000.native

    from flaskstream import db, schema
    from flaskstream.etl.catalog import describe_table

    con = schema.attach(pg8000.native.Connection(**db.connect_kwargs(clean_db)),
                        schema.SchemaNames("flaskstream"))
    try:
        table = describe_table(con, "flaskstream.users")
    finally:
        con.close()
    assert table.columns == USERS_TABLE.columns and table.primary_key == ("id",)


@pytest.mark.db
def test_the_requests_preset_loads_a_csv_with_its_rules(runner: Any, clean_db: str,
                                                        tmp_path: Any) -> None:
    src = tmp_path / "requests.csv"
    src.write_text(
        "time,remote_addr,method,path,protocol,status,bytes,referrer,agent\n"
        "2026-12-01T10:00:00+00:00,10.0.0.1,GET,/a,HTTP/1.1,200,12,,curl\n"
        "2026-12-01T10:00:01+00:00,10.0.0.1,GET,/b,HTTP/1.1,99,12,,curl\n"
        "2026-12-01T10:00:02+00:00,10.0.0.1,GET,/c,HTTP/1.1,200,-1,,curl\n"
        "yesterday,10.0.0.1,GET,/d,HTTP/1.1,200,1,,curl\n"
        "2026-12-01T10:00:03+00:00,10.0.0.1,,/e,HTTP/1.1,200,1,,curl\n")
    result = runner.invoke(args=["etl", "load", str(src), "--table", "requests", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.splitlines()[0])
    assert (summary["table"], summary["rows_loaded"], summary["rows_rejected"]) == ("requests", 1, 4)
    reasons = [r for [r] in query(clean_db, "SELECT reason FROM flaskstream.etl_rejects "
                                            "ORDER BY line")]
    assert reasons[:2] == ["status: 99 out of range 100..999",
                           "bytes: -1 out of range 0..9223372036854775807"]
    assert [r.split(":")[0] for r in reasons[2:]] == ["time", "method"]
    assert query(clean_db, "SELECT path, status FROM flaskstream.requests") == [["/a", 200]]
    src.write_text("time,path,status\n2026-12-01T10:00:00Z,/a,200\n")
    result = runner.invoke(args=["etl", "load", str(src), "--table", "requests"])
    assert result.exit_code == 1
    assert "header is missing required column(s) method for table requests" in result.output


def test_valid_users_rows_never_reach_the_per_value_check() -> None:
    """The preset's email and age columns keep the block fast paths (one regex
    run over the joined emails, a dict lookup for 0..150): the exact check runs
    only for the values they do not settle."""
    data = "email,age,name\n" + "".join(f"U{i}@X.io,{i % 151},n{i}\n" for i in range(3000)) + \
        "bad,7,x\n"
    with mock.patch.object(ColumnCodec, "convert", autospec=True,
                           side_effect=ColumnCodec.convert) as convert:
        rows, rejects, _ = load(data.encode())
    assert len(rows) == 3000 and rejects == [(3002, "email: not a plausible email address: 'bad'")]
    # the bad email, and name (text: no fast path of its own, but no per-value check either)
    assert [(call.args[0].name, call.args[1]) for call in convert.call_args_list] == \
        [("email", "bad")]
