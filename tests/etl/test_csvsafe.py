"""The excel-safe cell rule and its streaming CSV form (pure, exact bytes)."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaskstream.etl.csvsafe import FormulaGuard, excel_safe, neutralise_cell


@pytest.mark.parametrize(("value", "expected"), [
    ("=1+2", "'=1+2"),
    ("+1", "'+1"),
    ("-5", "'-5"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"),
    ("\r=x", "'\r=x"),
    ("", ""),
    ("a=1", "a=1"),
    ("'=x", "'=x"),
    (" =x", " =x"),
    ("é=", "é="),
])
def test_neutralise_cell(value: str, expected: str) -> None:
    assert neutralise_cell(value) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (b"id,f\n1,=1+2\n", b"id,f\n1,'=1+2\n"),
    (b"+1,-2,@SUM(A1),\tx\n", b"'+1,'-2,'@SUM(A1),'\tx\n"),
    (b'1,"=HYPERLINK(""http://x""),y"\n', b'1,"\'=HYPERLINK(""http://x""),y"\n'),
    (b'"\r=1","\n-2"\n', b'"\'\r=1","\n-2"\n'),  # CR first is a trigger, LF first is not
    (b',"",x\n', b',"",x\n'),  # NULL (unquoted empty) and "" stay what they were
    (b'"""=x""",y\n', b'"""=x""",y\n'),  # the value starts with a quote, not with =
    (b"=a,b\n", b"'=a,b\n"),  # the header is cells too
    (b"a=1,b-2,c@d\n", b"a=1,b-2,c@d\n"),  # only the first character counts
    ("é=,=é\n".encode(), "é=,'=é\n".encode()),
    (b"a\r\n=b\r\n", b"a\r\n'=b\r\n"),  # CRLF record ends: the CR is no cell's start
    (b'"a\nb",=c\n"=d"\n', b'"a\nb",\'=c\n"\'=d"\n'),  # a quoted line break is inside a cell
    (b"=x", b"'=x"),  # no final newline
])
def test_formula_guard_exact_bytes(raw: bytes, expected: bytes) -> None:
    assert FormulaGuard().feed(raw) == expected


SAMPLE = (b'id,"=name",note\n1,=1+2,"+q,""x"""\n2,,""\n3,"@a\nb",-4\n'
          b'4,\t5,"\r-x"\r\n5,"""=y""",z=1\n')


def test_every_split_position_gives_the_same_bytes() -> None:
    whole = FormulaGuard().feed(SAMPLE)
    assert whole.count(b"'") == 7
    for i in range(len(SAMPLE) + 1):
        for j in range(i, len(SAMPLE) + 1, 7):
            guard = FormulaGuard()
            assert guard.feed(SAMPLE[:i]) + guard.feed(SAMPLE[i:j]) + guard.feed(SAMPLE[j:]) \
                == whole, (i, j)
    assert b"".join(excel_safe(SAMPLE[k:k + 1] for k in range(len(SAMPLE)))) == whole


cells = st.text(alphabet=st.sampled_from(list("=+-@\t\r\n\",'aé ")), max_size=6)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(cells, min_size=1, max_size=4), min_size=1, max_size=6),
       cut=st.lists(st.integers(1, 9), max_size=30))
def test_guarded_csv_reads_back_as_the_neutralised_cells(rows: list[list[str]],
                                                         cut: list[int]) -> None:
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\n").writerows(rows)
    raw = text.getvalue().encode()
    pieces, at = [], 0
    for size in cut:
        pieces.append(raw[at:at + size])
        at += size
    pieces.append(raw[at:])
    out = b"".join(excel_safe(pieces)).decode()
    back = list(csv.reader(io.StringIO(out, newline="")))
    expected = list(csv.reader(io.StringIO(text.getvalue(), newline="")))
    assert back == [[neutralise_cell(value) for value in row] for row in expected]
