"""The pure core of loads into any table (etl/anytable.py): dialects, NULL vs empty, blocks."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaskstream.etl.anytable import (
    SENTINEL,
    BadDialect,
    CsvDialect,
    TableCsv,
    mark_quoted_empty,
)
from flaskstream.etl.bounds import InputError
from flaskstream.etl.mapping import TableColumn, TargetTable
from flaskstream.etl.pgtypes import ColumnCodec, PgType
from flaskstream.etl.pipeline import Progress

TABLE = TargetTable("s", "t", (
    TableColumn("id", PgType("int4"), "integer", not_null=True),
    TableColumn("name", PgType("text"), "text"),
    TableColumn("spot", None, "point"),  # a type the core leaves to the server
))


def values(data: bytes, dialect: CsvDialect | None = None, pieces: int = 1) -> list[list]:
    """The COPY text the core makes of ``data``, split into ``pieces`` chunks."""
    size = max(1, len(data) // pieces)
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    loader = TableCsv(TABLE, dialect)
    out = []
    for block in loader.blocks(iter(chunks)):
        out.extend(line.split("\t") for line in block.text.splitlines())
    return out


@pytest.mark.parametrize(("text", "expected"), [
    ('a,"",b\n', f"a,{SENTINEL},b\n"),
    ('"",x\n', f"{SENTINEL},x\n"),
    ('x,""\r\n', f"x,{SENTINEL}\r\n"),
    ('"a"",""b",""\n', f'"a"",""b",{SENTINEL}\n'),  # "" inside a quoted field is a quote
    ('"""",x\n', '"""",x\n'),  # a field holding one quote
    ('ab""c,d\n', 'ab""c,d\n'),  # quotes mid-field are literal, as csv reads them
])
def test_quoted_empty_fields_are_marked_and_nothing_else(text, expected):
    assert "".join(mark_quoted_empty([text], CsvDialect())) == expected


def test_quote_state_carries_across_pieces():
    pieces = ['1,"multi\n', 'line ""quoted"" ",""\n', '2,"",""\n']
    assert "".join(mark_quoted_empty(pieces, CsvDialect())) == \
        f'1,"multi\nline ""quoted"" ",{SENTINEL}\n2,{SENTINEL},{SENTINEL}\n'


def test_a_quoted_empty_field_is_an_empty_string_and_an_unquoted_one_null():
    data = b'id,name,spot\n1,"","(1,2)"\n2,,\n3, "" ,\n'
    assert values(data) == [["1", "", "(1,2)"], ["2", "\\N", "\\N"], ["3", '""', "\\N"]]


def test_random_records_keep_null_and_empty_apart_at_every_chunking():
    rng = random.Random(14)
    names: list[str | None] = [None, "", "plain", 'a "quoted" word', "with,comma", "two\nlines",
                               '""', ","]
    rows, expected = ["id,name,spot"], []
    for i in range(300):
        name = rng.choice(names)
        cell = "" if name is None else '"' + name.replace('"', '""') + '"'
        rows.append(f"{i},{cell},")
        expected.append([str(i), "\\N" if name is None else name.replace("\n", "\\n"), "\\N"])
    data = ("\n".join(rows) + "\n").encode()
    for pieces in (1, 7, 50, len(data)):
        assert values(data, pieces=pieces) == expected, pieces


@pytest.mark.parametrize("dialect", [CsvDialect(), CsvDialect(escape="\\")])
def test_a_quoted_empty_first_seen_blocks_after_the_start_is_still_an_empty_string(dialect):
    """The encoder looks for quoted empties only once one was marked: the first
    may come many blocks and pieces into the input."""
    rows = ["id,name,spot", *(f"{i},n{i}," for i in range(20_000)), '20000,"",', "20001,,"]
    data = ("\n".join(rows) + "\n").encode()
    out = values(data, dialect, pieces=40)
    assert out[-2:] == [["20000", "", "\\N"], ["20001", "\\N", "\\N"]]
    assert out[:2] == [["0", "n0", "\\N"], ["1", "n1", "\\N"]] and len(out) == 20_002


def test_multi_line_fields_keep_each_bad_value_on_its_own_row_and_line():
    """The column scans skip their line-break check for blocks of one-line records
    only: a block holding a multi-line field is judged value by value."""
    table = TargetTable("s", "j", (TableColumn("id", PgType("int4"), "integer", not_null=True),
                                   TableColumn("doc", PgType("jsonb"), "jsonb")))
    rows = ["id,doc"]
    for i in range(3000):
        doc = f'"{{""a"":{chr(10) if i % 7 == 0 else ""} {i}}}"'
        rows.append(f"{'x' if i % 11 == 5 else i},{doc if i % 13 else '{bad'}")
    progress = Progress()
    blocks = list(TableCsv(table).blocks(iter([("\n".join(rows) + "\n").encode()]),
                                         progress=progress))
    rejects = [(r.line, r.reason.split(":")[0]) for b in blocks for r in b.rejects]
    line, expected, loaded = 2, [], []
    for i in range(3000):
        reasons = (["id"] if i % 11 == 5 else []) + ([] if i % 13 else ["doc"])
        if reasons:
            expected.append((line, reasons[0]))
        else:
            loaded.append(line)
        line += 2 if i % 7 == 0 and i % 13 else 1
    assert rejects == expected
    assert [n for b in blocks for n in b.lines] == loaded


def test_a_wide_table_parses_in_smaller_blocks_so_memory_stays_bounded():
    """A block's parsed records cost per field: 40 short columns in blocks of 4,096
    rows peaked at 30 MiB of Python objects for 3 MB of CSV; sized by fields, ~7."""
    columns = tuple(TableColumn(f"c{i}", PgType("int4"), "integer") for i in range(40))
    rows = (",".join(str((r * 7 + i) % 1000) for i in range(40)) for r in range(20_000))
    data = (",".join(c.name for c in columns) + "\n" + "\n".join(rows) + "\n").encode()
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    tracemalloc.start()
    try:
        loaded = sum(len(b.lines) for b in TableCsv(TargetTable("s", "w", columns)).blocks(
            iter(chunks)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded == 20_000
    assert peak < 15 << 20, peak


def test_a_quoted_empty_field_is_an_empty_string_for_typed_columns_too():
    """``""`` is not NULL for a column the fast path trims lazily either: an empty
    integer or date is refused, as COPY's CSV mode would; ``,,`` is NULL."""
    table = TargetTable("s", "t", (TableColumn("id", PgType("int4"), "integer"),
                                   TableColumn("d", PgType("date"), "date")))
    blocks = list(TableCsv(table).blocks(iter([
        b'id,d\n1,""\n"",2024-01-01\n,\n 4 , 2024-01-02 \n"  ",x\n'])))
    assert "".join(b.text for b in blocks) == "\\N\t\\N\n4\t2024-01-02\n"
    assert [(r.line, r.reason) for b in blocks for r in b.rejects] == [
        (2, "d: not an ISO date (YYYY-MM-DD): ''"), (3, "id: not a valid integer: ''"),
        (6, "d: not an ISO date (YYYY-MM-DD): 'x'")]


LAZY_TABLE = TargetTable("s", "z", (
    TableColumn("n", PgType("int2"), "smallint", not_null=True),
    TableColumn("d", PgType("date"), "date"),
    TableColumn("b", PgType("bool"), "boolean"),
    TableColumn("e", PgType("enum", labels=("free", "pro")), "tier"),
))
_CELLS = st.sampled_from(["", '""', '"  "', " ", "7", " 7 ", "\t7", "x", "1e3", "99999",
                          "2024-01-02", " 2024-01-02", "2024-02-30", "t", " yes ", "maybe",
                          "pro", " free", "Pro", "NA", " NA "])


@settings(max_examples=150, deadline=None, database=None)
@given(rows=st.lists(st.lists(_CELLS, min_size=4, max_size=4), min_size=1, max_size=40),
       null=st.sampled_from(["", "NA"]))
def test_lazy_trimming_judges_exactly_as_trimming_first(rows, null):
    """Columns with a fast path strip only the values it does not settle; the
    COPY text and every reject are those of stripping every value first."""
    data = ("n,d,b,e\n" + "".join(",".join(r) + "\n" for r in rows)).encode()
    original = ColumnCodec.__init__

    def run(lazy: bool) -> tuple[str, list]:
        def init(codec: ColumnCodec, *args: Any, **kwargs: Any) -> None:
            original(codec, *args, **kwargs)
            assert codec.trims_lazily
            codec.trims_lazily = lazy

        with mock.patch.object(ColumnCodec, "__init__", init):
            blocks = list(TableCsv(LAZY_TABLE, CsvDialect(null=null)).blocks(iter([data])))
        return "".join(b.text for b in blocks), [(r.line, r.reason) for b in blocks for r in b.rejects]

    assert run(True) == run(False)


def test_escape_character_other_than_the_quote():
    dialect = CsvDialect(escape="\\")
    data = b'id,name,spot\n1,"say \\"hi\\"",\n2,"",\n'
    assert values(data, dialect) == [["1", 'say "hi"', "\\N"], ["2", "", "\\N"]]


def test_bad_values_are_rejects_naming_line_column_and_reason():
    loader = TableCsv(TABLE)
    progress = Progress()
    blocks = list(loader.blocks(iter([b"id,name\n1,a\nx,b\n,c\n4,d,extra\n"]), progress=progress))
    rejects = [(r.line, r.reason) for b in blocks for r in b.rejects]
    assert rejects == [(3, "id: not a valid integer: 'x'"), (4, "id: required (NOT NULL)"),
                       (5, "expected 2 fields, found 3")]
    assert progress.rows_read == 4 and blocks[0].lines == [2]


def test_input_holding_the_marker_is_refused_as_a_whole():
    with pytest.raises(InputError):
        values(b"id,name\n1,a\x02\x03b\n")


@pytest.mark.parametrize("kwargs", [
    {"delimiter": ",,"}, {"quote": "\n"}, {"delimiter": '"'}, {"header": False},
    {"columns": ("a",)},
])
def test_unusable_dialects_are_refused(kwargs):
    with pytest.raises(BadDialect):
        CsvDialect(**kwargs)
