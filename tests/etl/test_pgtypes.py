"""Exact cases of the type-aware core (flaskstream/etl/pgtypes.py).

Every expectation below was checked against PostgreSQL 16's input functions;
``REJECT`` marks a value the core refuses. Values PostgreSQL takes but the core
refuses on purpose are in ``STRICTER`` (documented in pgtypes' docstring).
"""

from __future__ import annotations

import pytest

from flaskstream.etl.pgtypes import (
    ColumnCodec,
    PgType,
    UnsupportedType,
    from_typmod,
    parse_type,
)
from flaskstream.etl.tables import Invalid

REJECT = None
MOOD = ("sad", "ok", "happy")

CASES = [
    # integers: whitespace, sign, PostgreSQL 16's 0x/0o/0b and _ separators, range
    ("integer", " 12 ", "12"), ("integer", "+5", "+5"), ("integer", "0x1F", "0x1F"),
    ("integer", "1_000", "1_000"), ("integer", "010", "010"), ("integer", "\v5\f", "5"),
    ("integer", "\u0663", REJECT), ("integer", "1__0", REJECT), ("integer", "_1", REJECT),
    ("integer", "", REJECT), ("integer", "1.0", REJECT), ("integer", "2147483648", REJECT),
    ("integer", "-2147483648", "-2147483648"), ("smallint", "32768", REJECT),
    ("smallint", "-0x8000", "-0x8000"), ("bigint", "9223372036854775808", REJECT),
    ("bigint", "0" * 5000 + "7", "0" * 5000 + "7"),
    # numeric
    ("numeric", "-NaN", REJECT), ("numeric", "+inf", "+inf"), ("numeric", "1e", REJECT),
    ("numeric", ".5e-3", ".5e-3"), ("numeric", "5.", "5."), ("numeric", "- 1", REJECT),
    ("numeric(5,2)", "inf", REJECT), ("numeric(5,2)", "NaN", "NaN"),
    ("numeric(5,2)", "999.995", REJECT), ("numeric(5,2)", "-999.994", "-999.994"),
    ("numeric(3,-1)", "1234", "1234"), ("numeric(3,-1)", "9995", REJECT),
    ("numeric(2,3)", "0.005", "0.005"), ("numeric(2,3)", "0.0995", REJECT),
    # floating point
    ("double precision", "1e400", REJECT), ("double precision", "1e-320", "1e-320"),
    ("double precision", "1e-400", REJECT), ("double precision", "  nan", "nan"),
    ("double precision", "-Infinity", "-Infinity"), ("double precision", ".", REJECT),
    ("double precision", "5.", "5."), ("double precision", "1_0", REJECT),
    ("real", "1e39", REJECT), ("real", "1e-46", REJECT), ("real", "1e-45", "1e-45"),
    ("real", "3.4028235e38", "3.4028235e38"),
    # boolean: PostgreSQL's spellings, written as t/f
    ("boolean", "tr", "t"), ("boolean", "  YES", "t"), ("boolean", "1 ", "t"), ("boolean", "of", "f"),
    ("boolean", "o", REJECT), ("boolean", "01", REJECT), ("boolean", "truee", REJECT),
    # text: length in characters; trailing spaces beyond n are cut by the server
    ("varchar(3)", "abcde", REJECT), ("varchar(3)", "abc  ", "abc  "), ("varchar(3)", "äöü", "äöü"),
    ("char(3)", "ab   x", REJECT), ("text", "a\x00b", REJECT), ("text", "a\udcffb", REJECT),
    ("text", "tab\there", "tab\there"),
    # dates and times (ISO forms)
    ("date", "0000-01-01", REJECT), ("date", "2020-02-30", REJECT), ("date", "2020-02-29", "2020-02-29"),
    ("date", "2021-02-29", REJECT), ("date", " 2020-01-01 ", "2020-01-01"), ("date", "2020-1-5", "2020-1-5"),
    ("date", "-infinity", "-infinity"), ("date", "01/02/2020", REJECT),
    ("time", "24:00", "24:00"), ("time", "24:00:00.1", REJECT), ("time", "23:59:60", "23:59:60"),
    ("time", "23:59:60.5", REJECT), ("time", "12:30:60.5", "12:30:60.5"),
    ("time", "23:59:59.9999999", "23:59:59.9999999"), ("time", "7:05", "7:05"), ("time", "12:60", REJECT),
    ("timestamp", "2020-01-01", "2020-01-01"), ("timestamp", "2020-01-01 24:00", "2020-01-01 24:00"),
    ("timestamp", "2020-01-01T12:00:00.5", "2020-01-01T12:00:00.5"),
    ("timestamp", "2020-01-01 12:00+02", REJECT),
    ("timestamptz", "2020-01-01 12:00+16", REJECT),
    ("timestamptz", "2020-01-01 12:00+15:59", "2020-01-01 12:00+15:59"),
    ("timestamptz", "2020-01-01 12:00+1559", "2020-01-01 12:00+1559"),
    ("timestamptz", "2020-01-01T12:00Z", "2020-01-01T12:00Z"),
    ("timestamptz", "2020-01-01 12:00+05:60", REJECT),
    ("timestamptz", "2020-01-01 12:00+2", "2020-01-01 12:00+2"),
    ("timestamptz", "2020-01-01T", REJECT), ("timestamptz", "infinity", "infinity"),
    ("timestamptz", "2020-01-01 12:00 Europe/Paris", REJECT),
    ("interval", "P1Y2M3DT4H5M6.5S", "P1Y2M3DT4H5M6.5S"), ("interval", "1 day ago", "1 day ago"),
    ("interval", "2 hours 3 mins", "2 hours 3 mins"), ("interval", "1 day 2 days", REJECT),
    ("interval", "@ 1 day", "@ 1 day"), ("interval", "P", REJECT), ("interval", "3 MS 2 usec", "3 MS 2 usec"),
    ("interval", "1d2h", "1d2h"), ("interval", "1mon+2d", "1mon+2d"), ("interval", "0W0D", REJECT),
    ("interval", "1d-2h", REJECT), ("interval", "1 days2 hours", REJECT),
    # uuid, json, bytea
    ("uuid", "{a0eebc99-9c0b4ef8-bb6d-6bb9bd380a11}", "{a0eebc99-9c0b4ef8-bb6d-6bb9bd380a11}"),
    ("uuid", "A0EEBC999C0B4EF8BB6D6BB9BD380A11", "A0EEBC999C0B4EF8BB6D6BB9BD380A11"),
    ("uuid", " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", REJECT),
    ("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", REJECT),
    ("json", '"\\u0000"', '"\\u0000"'), ("jsonb", '"\\u0000"', REJECT), ("json", '"\\ud800"', '"\\ud800"'),
    ("jsonb", '"\\ud800"', REJECT), ("json", "NaN", REJECT), ("json", " 1 ", " 1 "), ("json", "\f1", REJECT),
    ("json", "[1,2", REJECT), ("json", "1" * 5000, "1" * 5000),
    ("bytea", "\\x 01 02 ", "\\x 01 02 "), ("bytea", "\\x0", REJECT), ("bytea", "\\X01", REJECT),
    # network addresses
    ("inet", "010.1.1.1", "010.1.1.1"), ("inet", "10.1.1.1/33", REJECT), ("inet", "::1%eth0", REJECT),
    ("inet", "10.1.1.1/8", "10.1.1.1/8"), ("inet", "::ffff:1.2.3.4", "::ffff:1.2.3.4"),
    ("inet", "256.1.1.1", REJECT), ("inet", " 10.1.1.1", REJECT), ("inet", "::1/129", REJECT),
    ("cidr", "10.1.1.1/8", REJECT), ("cidr", "10.0.0.0/8", "10.0.0.0/8"), ("cidr", "2001:db8::1/32", REJECT),
    # arrays
    ("text[]", '{a, "b c" ,NULL}', '{a, "b c" ,NULL}'), ("integer[]", "{{1,2},{3}}", REJECT),
    ("integer[]", "{}", "{}"), ("integer[]", " { 1 , 2 } ", " { 1 , 2 } "), ("integer[]", "{1,,2}", REJECT),
    ("integer[]", '{"1"}', '{"1"}'), ("integer[]", "{ null }", "{ null }"), ("integer[]", '{"NULL"}', REJECT),
    ("integer[]", "{1,x}", REJECT), ("text[]", '{"a"b}', REJECT), ("text[]", "{}x", REJECT),
    ("text[]", "{{a},{b}}", "{{a},{b}}"), ("text[]", "{{},{}}", REJECT),
    ("text[]", "{{{{{{{a}}}}}}}", REJECT), ("text[]", "{{{{{{a}}}}}}", "{{{{{{a}}}}}}"),
    ("boolean[]", "{t,yes}", "{t,yes}"), ("varchar(2)[]", "{ab,abc}", REJECT),
]
# Accepted by PostgreSQL, refused here on purpose (pgtypes' docstring says why).
STRICTER = [("interval", "PT"), ("interval", "1 day 02:00"), ("integer[]", "[1:2]={1,2}"),
            ("date", "today"), ("date", "10000-01-01"), ("cidr", "10/8"), ("inet", "::1.2"),
            ("numeric", "1_000"),
            ("double precision", "0x10"), ("bytea", "abc"), ("timestamp", "2020-01-01 12:00+02")]


def codec(type_text: str, *, not_null: bool = False) -> ColumnCodec:
    labels = MOOD if type_text.startswith("enum") else ()
    return ColumnCodec("c", parse_type(type_text, labels), not_null=not_null)


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@pytest.mark.parametrize(("type_text", "value", "expected"), CASES)
def test_value(type_text: str, value: str, expected: str | None) -> None:
    c = codec(type_text)
    if expected is None:
        with pytest.raises(Invalid, match="^c: "):
            c.convert(value)
    else:
        assert c.convert(value) == escape(expected)


@pytest.mark.parametrize(("type_text", "value"), STRICTER)
def test_documented_stricter_forms_are_rejected(type_text: str, value: str) -> None:
    with pytest.raises(Invalid):
        codec(type_text).convert(value)


@pytest.mark.parametrize("value", ["ok", "sad"])
def test_enum_labels_exactly(value: str) -> None:
    assert codec("enum").convert(value) == value
    for wrong in (value.upper(), value + " ", ""):
        with pytest.raises(Invalid, match="not one of the labels"):
            codec("enum").convert(wrong)


def test_enum_array() -> None:
    element = PgType("enum", labels=MOOD)
    c = ColumnCodec("moods", PgType("array", element=element))
    assert c.convert("{ok,sad}") == "{ok,sad}"
    with pytest.raises(Invalid, match="moods: array element"):
        c.convert("{ok,meh}")


def test_null_and_not_null() -> None:
    assert codec("integer").convert(None) == "\\N"
    with pytest.raises(Invalid, match="c: required"):
        codec("integer", not_null=True).convert(None)


def test_parse_type_spellings() -> None:
    assert parse_type("character varying(10)") == PgType("varchar", length=10)
    assert parse_type("CHAR") == PgType("bpchar", length=1)
    assert parse_type("numeric(7, 2)") == PgType("numeric", precision=7, scale=2)
    assert parse_type("numeric(7)") == PgType("numeric", precision=7, scale=0)
    assert parse_type("timestamp with time zone") == PgType("timestamptz")
    assert parse_type("int[][]") == PgType("array", element=PgType("array", element=PgType("int4")))
    with pytest.raises(UnsupportedType):
        parse_type("point")


def test_from_typmod() -> None:
    assert from_typmod("varchar", 14) == PgType("varchar", length=10)
    assert from_typmod("varchar", -1) == PgType("varchar")
    assert from_typmod("numeric", (5 << 16 | 2) + 4) == PgType("numeric", precision=5, scale=2)
    assert from_typmod("numeric", (3 << 16 | (-1 & 0x7FF)) + 4) == PgType("numeric", precision=3, scale=-1)
    assert from_typmod("numeric", -1) == PgType("numeric")


ENCODE_TYPES = ["integer", "smallint", "bigint", "numeric(6,2)", "numeric", "real", "double precision",
                "boolean", "text", "varchar(4)", "date", "timestamp", "timestamptz", "uuid", "json",
                "interval", "integer[]"]
BLOCK = ["1", "-20", "007", " 3 ", "", "abc", "99999", "2020-01-02", "2020-02-30 10:00",
         "2021-03-04 05:06:07.5+02", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "true", "no",
         "1234.5", "1e5", "tab\tand\\back", "x\ny", "{1,2}", '{"a": 1}', "1 day", None,
         "12345678901234567890"]


@pytest.mark.parametrize("type_text", ENCODE_TYPES)
def test_columnar_encode_matches_value_by_value(type_text: str) -> None:
    """The fast paths settle only what the exact check would accept as it stands."""
    c = codec(type_text)
    errors: dict[int, list[str]] = {}
    out = c.encode(BLOCK, errors)
    for i, value in enumerate(BLOCK):
        try:
            expected = c.convert(value)
        except Invalid as exc:
            assert errors[i] == [str(exc)] and out[i] == ""
        else:
            assert i not in errors and out[i] == expected


def test_columnar_encode_large_clean_block_uses_fast_path() -> None:
    values = [str(i) for i in range(-5000, 5000)]
    errors: dict[int, list[str]] = {}
    assert codec("integer").encode(values, errors) == values and not errors
    stamps = [f"2026-12-{d:02d} 10:{m:02d}:00+01" for d in range(1, 29) for m in range(60)]
    assert codec("timestamptz").encode(stamps, errors) == stamps and not errors


@pytest.mark.parametrize(("type_text", "over", "under"), [
    ("smallint", "32768", "-32769"), ("integer", "2147483648", "-2147483649"),
    ("bigint", "9223372036854775808", "-9223372036854775809")])
def test_columnar_int_range_in_canonical_form(type_text: str, over: str, under: str) -> None:
    """Canonical decimals as long as the range's bounds pass the fast regex; the range
    check after it must still catch the ones just outside."""
    low, high = str(int(under) + 1), str(int(over) - 1)
    errors: dict[int, list[str]] = {}
    out = codec(type_text).encode(["1", over, low, under, high, "x"], errors)
    assert out[0] == "1" and out[2] == low and out[4] == high
    assert sorted(errors) == [1, 3, 5] and "out of range" in errors[1][0] and "out of range" in errors[3][0]


def test_columnar_escapes_text_and_reports_rows() -> None:
    errors: dict[int, list[str]] = {}
    out = codec("varchar(5)", not_null=True).encode(["a\tb", None, "toolong", "c\\d"], errors)
    assert out[0] == "a\\tb" and out[3] == "c\\\\d"
    assert errors == {1: ["c: required (NOT NULL)"], 2: ["c: longer than 5 characters"]}
