"""Exact tests of the pure ETL stages (no database)."""

from __future__ import annotations

import csv
import gzip
import io
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaskstream.etl.pipeline import (
    Batch,
    CopyBlock,
    InputError,
    Progress,
    Reject,
    decode,
    fill_batch,
    gunzip_if_needed,
    read_chunks,
    read_records,
    take_header,
)
from flaskstream.etl.tables import (
    USERS,
    Column,
    HeaderError,
    Invalid,
    Table,
    convert_value,
    csv_copy_blocks,
    map_header,
)


def make_batches(blocks, batch_rows: int, chunk_size: int):
    """Whole batches one after the other, as the sink's loop takes them."""
    it = iter(blocks)
    while True:
        out = Batch()
        for _ in fill_batch(it, out, batch_rows, chunk_size):
            pass
        if out.rows or out.rejects:
            yield out
        if out.exhausted:
            return


def run(data: bytes, table: Table = USERS, chunk: int = 1 << 20, **kw):
    progress = Progress()
    blocks = csv_copy_blocks(read_chunks(io.BytesIO(data), progress, chunk), table,
                             progress=progress, **kw)
    batches = list(make_batches(blocks, batch_rows=7, chunk_size=64))
    text = b"".join(c for b in batches for c in b.chunks).decode()
    lines = [n for b in batches for n in b.lines]
    rejects = [r for b in batches for r in b.rejects]
    return text, lines, rejects, progress


def test_valid_and_invalid_rows_with_exact_reasons_and_lines():
    data = (b"email,age,name\n"
            b" Ann@Example.COM ,42,  Ann  \n"
            b"bob@example.com,abc,Bob\n"
            b"not-an-email,30,\n"
            b",200,Nobody\n"
            b"carol@example.com,0,\n"
            b"dave@example.com,150\n")
    text, lines, rejects, progress = run(data)
    assert text == "ann@example.com\t42\tAnn\ncarol@example.com\t0\t\\N\n"
    assert lines == [2, 6]
    assert rejects == [
        Reject(3, "age: not an integer: 'abc'", "bob@example.com,abc,Bob"),
        Reject(4, "email: not a plausible email address: 'not-an-email'", "not-an-email,30,"),
        Reject(5, "email: required; age: 200 out of range 0..150", ",200,Nobody"),
        Reject(7, "expected 3 fields, found 2", "dave@example.com,150"),
    ]
    assert progress.rows_read == 6


def test_quoted_newlines_keep_line_numbers_and_are_escaped():
    data = (b'email,age,name\r\n'
            b'a@x.io,1,"two\r\nlines"\r\n'
            b'b@x.io,2,"tab\there \\ back"\r\n'
            b'bad,3,"x\ny"\r\n'
            b'c@x.io,4,plain\r\n')
    text, lines, rejects, _ = run(data)
    assert text == ("a@x.io\t1\ttwo\\r\\nlines\n"
                    "b@x.io\t2\ttab\\there \\\\ back\n"
                    "c@x.io\t4\tplain\n")
    assert lines == [2, 4, 7]
    assert [(r.line, r.text) for r in rejects] == [(5, 'bad,3,"x\ny"')]


def test_bom_is_stripped_and_header_is_case_insensitive():
    text, lines, rejects, _ = run("\ufeffEmail , AGE,Name\nz@x.io,5,Zoë\n".encode())
    assert text == "z@x.io\t5\tZoë\n" and rejects == []


def test_undecodable_bytes_reject_only_that_row():
    data = b"email,age,name\na@x.io,1,ok\nb@x.io,2,caf\xe9\nc@x.io,3,nul\x00\nd@x.io,4,fine\n"
    text, lines, rejects, progress = run(data)
    assert text == "a@x.io\t1\tok\nd@x.io\t4\tfine\n"
    assert [(r.line, r.reason) for r in rejects] == [
        (3, "undecodable byte 0xe9 (wrong --encoding?)"), (4, "NUL byte in field")]
    # the original bytes survive in the reject text
    assert rejects[0].text.encode("utf-8", "surrogateescape") == b"b@x.io,2,caf\xe9"
    assert progress.dirty


def test_encoding_option_decodes_latin1():
    text, _, rejects, _ = run(b"email,age,name\nb@x.io,2,caf\xe9\n", encoding="latin-1")
    assert text == "b@x.io\t2\tcafé\n" and rejects == []


def test_unknown_encoding_is_an_input_error():
    with pytest.raises(InputError, match="unknown encoding"):
        run(b"email,age\n", encoding="nope-42")


def test_missing_required_column_is_a_clear_error_before_any_batch():
    gen = csv_copy_blocks(iter([b"name,age\nx,1\n"]), USERS)
    with pytest.raises(HeaderError) as info:
        next(gen)
    assert str(info.value) == ("header is missing required column(s) email for table users; "
                               "found: name, age")


def test_optional_column_may_be_absent_and_extra_columns_are_ignored():
    text, _, _, _ = run(b"id,age,email,extra\n9,7,a@x.io,zzz\n")
    assert text == "a@x.io\t7\t\\N\n"


def test_gzip_input_and_concatenated_members():
    raw = b"email,age\na@x.io,1\n"
    text, _, _, _ = run(gzip.compress(raw) + gzip.compress(b"b@x.io,2\n"), chunk=7)
    assert text == "a@x.io\t1\t\\N\nb@x.io\t2\t\\N\n"


def test_truncated_gzip_is_an_input_error():
    with pytest.raises(InputError, match="truncated"):
        run(gzip.compress(b"email,age\n" * 1000)[:-20])


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n"])
def test_empty_input_yields_nothing(data):
    assert run(data)[:3] == ("", [], [])


def test_blank_lines_are_not_rows():
    text, lines, rejects, progress = run(b"email,age\n\na@x.io,1\n\n")
    assert lines == [3] and rejects == [] and progress.rows_read == 1


def test_oversized_field_is_a_reject_and_limit_is_configurable():
    table = Table("t", (Column("a"), Column("b")))
    data = f"a,b\n1,{'x' * 5000}\n2,ok\n".encode()
    try:
        _, lines, rejects, progress = run(data, table, field_size_limit=1000)
        assert lines == [3]
        assert rejects == [Reject(2, "malformed CSV: field larger than field limit (1000)", "")]
        assert progress.rows_read == 2
        assert run(data, table, field_size_limit=1 << 20)[1] == [2, 3]
    finally:
        csv.field_size_limit(1 << 20)


def test_sql_shaped_values_pass_verbatim():
    name = "Robert'); DROP TABLE users;--"
    text, _, _, _ = run(f'email,age,name\nr@x.io,9,"{name}"\n'.encode())
    assert text == f"r@x.io\t9\t{name}\n"


@pytest.mark.parametrize(("raw", "expected"), [
    (" 7 ", 7), ("+3", 3), ("0", 0), ("150", 150)])
def test_convert_int(raw, expected):
    assert convert_value(USERS.columns[1], raw) == expected


@pytest.mark.parametrize(("raw", "reason"), [
    ("-1", "age: -1 out of range 0..150"), ("1.5", "age: not an integer: '1.5'"),
    ("", "age: required"), ("9" * 30, "age: out of range 0..150")])
def test_convert_int_rejects(raw, reason):
    with pytest.raises(Invalid, match=reason.replace(".", r"\.")):
        convert_value(USERS.columns[1], raw)


def test_decode_cuts_on_line_boundaries_across_chunks():
    pieces = list(decode([b"a,b\r", b"\nc,d\n", b"e,", b"f"]))
    assert "".join(pieces) == "a,b\r\nc,d\ne,f"
    assert all(p.endswith(("\n", "\r")) for p in pieces[:-1])


def test_map_header_aliases():
    table = Table("t", (Column("email", "email", required=True, aliases=("mail",)),))
    assert map_header(table, ["x", "MAIL"]).indices == (1,)


def test_batch_bounds_rows_and_chunks():
    blocks = list(read_records(["a\n" * 10]))
    header, rest = take_header(blocks)
    copy_blocks = [CopyBlock("x\n", [i], []) for i in range(10)]
    out = list(make_batches(copy_blocks, batch_rows=4, chunk_size=4))
    assert [b.rows for b in out] == [4, 4, 2]
    assert all(len(c) <= 4 for b in out for c in b.chunks)
    assert [b.exhausted for b in out] == [False, False, True]
    assert header == ["a"]


def test_gunzip_passes_plain_bytes_through():
    assert b"".join(gunzip_if_needed([b"a", b"bc"])) == b"abc"


cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(cell, st.integers(-5, 200), cell), max_size=30),
       chunk=st.integers(1, 64), crlf=st.booleans())
def test_any_csv_any_split_matches_per_value_reference(rows, chunk, crlf):
    """Columnar fast path == per-value conversion, for every chunking."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(["email", "age", "name"])
    for email, age, name in rows:
        writer.writerow([f"{email}@x.io" if email.isalnum() else email, age, name])
    data = out.getvalue().encode()
    text, lines, rejects, progress = run(data, chunk=chunk)
    expected_rows, expected_rejects = [], []
    reader = csv.reader(io.StringIO(out.getvalue(), newline=""))
    next(reader)
    line = 2
    for record in reader:
        start, line = line, line + 1 + sum(v.count("\n") + v.count("\r") - v.count("\r\n")
                                           for v in record)
        if not record:
            continue
        if len(record) != 3:
            expected_rejects.append((start, f"expected 3 fields, found {len(record)}"))
            continue
        values, errors = [], []
        for column, raw in zip(USERS.columns, record, strict=True):
            try:
                values.append(convert_value(column, raw))
            except Invalid as exc:
                errors.append(str(exc))
        if errors:
            expected_rejects.append((start, "; ".join(errors)))
            continue
        esc = ["\\N" if v is None else str(v).replace("\\", "\\\\").replace("\t", "\\t")
               .replace("\n", "\\n").replace("\r", "\\r") for v in values]
        expected_rows.append(("\t".join(esc), start))
    assert text == "".join(r + "\n" for r, _ in expected_rows)
    assert lines == [n for _, n in expected_rows]
    assert [(r.line, r.reason) for r in rejects] == expected_rejects
    assert progress.rows_read == len(expected_rows) + len(expected_rejects)


def test_positions_give_exact_byte_offsets_for_resuming():
    data = "\ufeffemail,age,name\n".encode() + "".join(
        f"u{i}@x.io,{i % 100},Zoë {i}\n" for i in range(5000)).encode()
    progress = Progress()
    texts = decode(read_chunks(io.BytesIO(data), progress, 1000), "utf-8", progress)
    ends = [(b.end_line, b.position.offset)
            for b in read_records(texts, block_rows=333, encoding="utf-8")]
    raw_lines = data.split(b"\n")
    for end_line, offset in ends:
        assert offset + progress.bom_bytes == len(b"\n".join(raw_lines[:end_line])) + 1


def test_progress_bar_line():
    from flaskstream.etl.cli import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(4_000_000, out)
    data = {"bytes": 1_000_000, "rows_read": 10, "rows_loaded": 9, "rows_rejected": 1}
    bar("progress", data)
    bar("done", data)
    text = out.getvalue()
    assert text.startswith("\r1.0 / 4.0 MB  25%") and "loaded 9  rejects 1" in text
    assert text.endswith("\n") and text.count("\r") == 2


def test_columnar_int_path_accepts_every_form_convert_value_accepts():
    text, lines, rejects, _ = run(b"email,age\na@x.io,007\nb@x.io,+3\nc@x.io, 9 \n"
                                  b"d@x.io,\xd9\xa3\ne@x.io,-0\nf@x.io,151\n")
    assert text == "a@x.io\t7\t\\N\nb@x.io\t3\t\\N\nc@x.io\t9\t\\N\nd@x.io\t3\t\\N\n" \
        "e@x.io\t0\t\\N\n"
    assert [(r.line, r.reason) for r in rejects] == [(7, "age: 151 out of range 0..150")]


def test_email_scan_finds_every_bad_address_among_good_ones():
    emails = [f"u{i}@x.io" if i % 7 else f"bad{i}" for i in range(100)]
    emails[50] = "two\nlines@x.io"
    data = "email,age\n" + "".join(f'"{e}",1\n' for e in emails)
    _, _, rejects, _ = run(data.encode())
    expected = sorted({i for i in range(100) if i % 7 == 0} | {50})
    assert [r.reason.split(":")[0] for r in rejects] == ["email"] * len(expected)


def test_relaxed_gc_nests_and_restores():
    import gc

    from flaskstream.etl.jobs import GC_GEN0_DURING_LOADS, relaxed_gc

    before = gc.get_threshold()
    with relaxed_gc():
        with relaxed_gc():
            assert gc.get_threshold()[0] >= GC_GEN0_DURING_LOADS
        assert gc.get_threshold()[0] >= GC_GEN0_DURING_LOADS
    assert gc.get_threshold() == before


def test_progress_throttle_fires_at_most_once_per_interval(monkeypatch):
    from flaskstream.etl import jobs

    now = [100.0]
    monkeypatch.setattr(jobs, "time", SimpleNamespace(monotonic=lambda: now[0]))
    calls: list[float] = []
    throttled = jobs.Throttle(lambda: calls.append(now[0]), 0.25)
    for step in range(20):  # 20 calls over 0.95 s, every 50 ms
        now[0] = 100.0 + step * 0.05
        throttled()
    assert calls == pytest.approx([100.0, 100.25, 100.5, 100.75])
    throttled(force=True)  # the final event is never swallowed
    assert len(calls) == 5
