"""Bounds on a load's input (issue 12, findings 4 and 8): wide rows, long lines, gzip, encodings.

Pure stages, no database. The live memory test is in ``tests/hostile/test_parsing.py``.
"""

from __future__ import annotations

import csv
import gzip
import io
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaskstream.etl.bounds import NARROW, Bounds, InputError, InputTooLarge, text_codec
from flaskstream.etl.pipeline import codec_name, gunzip_if_needed, read_records
from flaskstream.etl.tables import USERS, csv_copy_blocks

MiB = 1 << 20


def parsed(texts: list[str], bounds: Bounds, **kw) -> tuple[list, list[int], list]:
    records, lines, rejects = [], [], []
    for block in read_records(texts, bounds=bounds, **kw):
        records += block.records
        lines += block.lines
        rejects += block.rejects
    return records, lines, rejects


def test_a_record_over_max_fields_is_a_reject_with_its_line() -> None:
    text = "a,b\n1,2\n" + "," * 9 + "\n3,4\n\"x\ny\"," + ",".join("q" * 10) + "\n5,6\n"
    records, lines, rejects = parsed([text], Bounds(max_fields=5))
    assert records == [["a", "b"], ["1", "2"], ["3", "4"], ["5", "6"]]
    assert lines == [1, 2, 4, 7]
    assert [(r.line, r.reason) for r in rejects] == [
        (3, "10 fields, more than 5 (ETL_MAX_FIELDS)"),
        (5, "11 fields, more than 5 (ETL_MAX_FIELDS)")]
    assert rejects[1].text.startswith('"x\ny",q,q,q,q,q')


def test_records_before_a_malformed_one_stay_in_their_block() -> None:
    """Read in steps, a ``csv.Error`` must not drop the step's earlier records."""
    text = "a,b\n1,2\n3,4\n\"" + "x" * 2000 + "\"\n5,6\n"
    records, lines, rejects = parsed([text], Bounds(), field_size_limit=1000)
    assert (records, lines) == ([["a", "b"], ["1", "2"], ["3", "4"], ["5", "6"]], [1, 2, 3, 5])
    assert [(r.line, r.reason) for r in rejects] == [
        (4, "malformed CSV: field larger than field limit (1000)")]


def test_a_line_over_max_line_fails_the_load_with_413_even_between_short_lines() -> None:
    text = "a,b\n" * 1000 + "x" * 5000 + "\n" + "a,b\n" * 1000
    with pytest.raises(InputTooLarge) as info:
        parsed([text], Bounds(max_line=4999))
    assert (info.value.code, info.value.status) == ("LIMIT_LINE_BYTES", 413)
    assert len(parsed([text], Bounds(max_line=5000))[0]) == 2001


def test_blocks_are_bounded_by_characters() -> None:
    wide = ("," * MiB + "\n") * 6
    narrow = "a,b\n" * 300_000  # 1.2 MB of short rows
    bounds = Bounds()
    for texts in ([wide], [narrow], [narrow[:500_000], wide, narrow[500_000:]]):
        for block in read_records(texts, bounds=bounds):
            chars = sum(len(",".join(r)) + 1 for r in block.records)
            assert chars <= bounds.block_chars + NARROW, chars
            assert all(len(r) <= 1600 for r in block.records)


def test_wide_rows_load_in_memory_bounded_by_the_settings() -> None:
    """The issue's input (96 lines of 1 MiB of commas), uncompressed: memory stays bounded.

    Bound: one parsed record of ``max_line`` characters holds a list slot (8 bytes)
    per field; the text it came from is decoded once (str) and held by csv's
    ``StringIO`` (up to 4 bytes a character); the block's budget is on top. Blocks
    are consumed as the sink does (a block's ``position`` keeps its piece of text).
    """
    body = b"email,age,name\n" + (b"," * MiB + b"\n") * 96 + b"a@b.io,1,A\n"
    line = MiB + 1
    bound = 8 * line + 6 * line + 8 * Bounds().block_chars + 4 * MiB
    chunks = [body[i:i + MiB] for i in range(0, len(body), MiB)]
    tracemalloc.start()
    try:
        rejects, loaded = [], []
        for block in csv_copy_blocks(iter(chunks), USERS):
            rejects += block.rejects
            loaded += block.lines
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r.line for r in rejects] == list(range(2, 98))
    assert all(len(r.text) < 200 for r in rejects)
    assert loaded == [98]
    assert peak < bound, (peak, bound)  # main: ~800 MiB (blocks of 4,096 records)


@settings(max_examples=120, deadline=None)
@given(rows=st.lists(st.lists(st.sampled_from(["", "x", "yy", "a\nb", "q,\"r"]), max_size=9),
                     min_size=1, max_size=60),
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=5),
       block_rows=st.integers(min_value=1, max_value=50))
def test_hypothesis_same_records_and_lines_as_csv_minus_the_wide(rows, cuts, block_rows) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    text = out.getvalue()
    ends = [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    edges = sorted({0, len(text), *(ends[c % len(ends)] for c in cuts)})
    texts = [text[a:b] for a, b in zip(edges, edges[1:], strict=False)]
    want, want_lines, want_rejects, line = [], [], [], 1
    for record in csv.reader(io.StringIO(text, newline="")):
        if len(record) <= 4:
            want.append(record)
            want_lines.append(line)
        else:
            want_rejects.append(line)
        line += 1 + sum(v.count("\n") for v in record)
    records, lines, rejects = parsed(texts, Bounds(max_fields=4), block_rows=block_rows)
    assert records == want and lines == want_lines
    assert [r.line for r in rejects] == want_rejects


def test_gzip_ratio_and_inflated_size_are_bounded() -> None:
    bomb = gzip.compress(b"," * (64 * MiB))
    with pytest.raises(InputTooLarge) as info:
        list(gunzip_if_needed([bomb], bounds=Bounds(max_ratio=200)))
    assert (info.value.code, info.value.status) == ("LIMIT_GZIP_RATIO", 413)
    with pytest.raises(InputTooLarge) as info:
        list(gunzip_if_needed([bomb], bounds=Bounds(max_ratio=None, max_inflated=8 * MiB)))
    assert info.value.code == "LIMIT_INFLATED_BYTES"
    ordinary = b"".join(f"user{i}@example.com,{i % 90},User {i}\n".encode() for i in range(50_000))
    assert b"".join(gunzip_if_needed([gzip.compress(ordinary)], bounds=Bounds())) == ordinary


@pytest.mark.parametrize("name", ["rot13", "rot_13", "hex", "base64", "zlib", "bz2", "uu",
                                  "quopri", "nosuch", "utf-8\x00"])
def test_only_text_encodings_are_accepted(name: str) -> None:
    with pytest.raises(InputError) as info:
        codec_name(name)
    assert "codec" not in str(info.value).lower() or "not a text encoding" in str(info.value)


@pytest.mark.parametrize("name,canonical", [("utf-8", "utf-8"), ("UTF8", "utf-8"),
                                            ("latin-1", "iso8859-1"), ("cp1252", "cp1252"),
                                            ("utf-16", "utf-16"), ("utf-8-sig", "utf-8-sig")])
def test_text_encodings_pass(name: str, canonical: str) -> None:
    assert text_codec(name) == canonical
