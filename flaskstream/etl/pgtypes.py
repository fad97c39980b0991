"""Type-aware validation for loading CSV into any PostgreSQL table (pure).

A ``PgType`` describes a column's type as the catalog has it (base type,
typmod-derived length/precision/scale, enum labels, array element); a
``ColumnCodec`` turns the column's CSV strings into COPY text values, raising
``Invalid(reason)`` for a value the server's input function would refuse, so a
bad value becomes a reject naming line, column and reason before COPY sees it.

Speed comes the way ``tables.py`` gets it: a block's column is checked with
one regex over the joined values (or a C-level ``map`` of a dict lookup) that
proves the common, canonical spellings valid, and only the values that test
does not settle go through the exact per-value check. Valid values are passed
through as written (escaped for COPY; surrounding whitespace dropped where the
server ignores it) - the server parses exactly the text we judged - except
booleans, written ``t``/``f``.

Accepted spellings, and where they differ from PostgreSQL 16's input functions
(stricter only: what is accepted here always loads, the property test in
tests/etl/test_pgtypes.py checks both directions against the real server):

* smallint/integer/bigint: decimal, ``0x``/``0o``/``0b`` and ``_`` separators
  as PostgreSQL 16 reads them; range checked. Exact.
* numeric(p,s): decimal with optional exponent, ``NaN``, ``[+-]inf[inity]``
  (not under a typmod), rounded half away from zero to ``s`` then checked
  against ``p``; numeric_in's exponent, scale and weight limits. Not accepted:
  ``_`` separators, ``0x`` forms, mantissas longer than 1000 characters.
* real/double precision: decimal with exponent, ``NaN``, ``[+-]inf[inity]``;
  overflow and underflow to zero rejected as the server does. Not accepted:
  hex floats and ``nan(...)`` (glibc's strtod reads them). real is rounded via
  double, so a value within half an ulp of real's limits may be judged wrongly.
* boolean: PostgreSQL's spellings (prefixes of true/false/yes/no, on/off, 1/0).
* text, varchar(n), char(n): any text without NUL or undecodable bytes;
  length in characters, trailing spaces beyond ``n`` allowed (the server cuts
  them). Exact.
* date, time, timestamp, timestamptz, interval: see ``pgtime``.
* uuid: 32 hex digits, ``-`` after any group of four, optional braces. Exact.
* json/jsonb: RFC 8259 (no NaN); jsonb also refuses ``\\u0000`` and lone
  surrogate escapes. Not judged: nesting deeper than Python's recursion limit
  (rejected here), jsonb numbers beyond numeric's range.
* bytea: ``\\x`` hex only (whitespace between pairs allowed); the legacy escape
  format is rejected.
* enum: one of the labels, exactly (case and spaces matter). Exact.
* inet/cidr: dotted-quad IPv4 (decimal octets) or IPv6, optional ``/bits``;
  cidr refuses host bits. Not accepted: abbreviated IPv4 (``10/8``, or as an
  IPv6 tail: ``::1.2``), octets written in more than 3 digits or in hex, IPv6
  zone ids.
* arrays: ``{...}`` literals, nested and rectangular up to 6 dimensions,
  quoted elements with backslash escapes, unquoted NULL; each element checked
  with the element type. Not accepted: ``[1:2]=`` bounds decorations.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flaskstream.etl import pgcheck
from flaskstream.etl.pgtime import (
    FAST_DATE,
    FAST_TIMESTAMP,
    FAST_TIMESTAMPTZ,
    check_date,
    check_interval,
    check_time,
    check_timestamp,
)
from flaskstream.etl.rules import IntRange, Lower, Matches, MaxLength, Required, Rule
from flaskstream.etl.tables import Invalid, _escape, _int_strings, _positions, run_misfits

Check = Callable[[str], str]
NULL = "\\N"
SMALL_RANGE = 100_000  # an IntRange narrower than this validates by dict lookup
_TEXTS = ("text", "varchar", "bpchar")
_SPECIALS = ("\\", "\t", "\n", "\r")
# SQL spellings → the catalog's typname
ALIASES = {
    "smallint": "int2", "integer": "int4", "int": "int4", "bigint": "int8",
    "real": "float4", "double precision": "float8", "float": "float8",
    "boolean": "bool", "character varying": "varchar", "character": "bpchar", "char": "bpchar",
    "decimal": "numeric", "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz", "time without time zone": "time",
}
BASE_TYPES = frozenset({
    "int2", "int4", "int8", "numeric", "float4", "float8", "bool", "text", "varchar",
    "bpchar", "date", "time", "timestamp", "timestamptz", "interval", "uuid", "json",
    "jsonb", "bytea", "inet", "cidr", "enum",
})
_TYPE_RE = re.compile(r"\s*([a-z][a-z0-9 ]*?)\s*(?:\(\s*(-?\d+)\s*(?:,\s*(-?\d+)\s*)?\))?\s*((?:\[\])*)\s*",
                      re.I)


class UnsupportedType(ValueError):
    """A column type the core does not validate (the caller decides: pass it
    through to the server, or refuse the table)."""


@dataclass(frozen=True)
class PgType:
    """A column type: ``name`` is a base typname (``BASE_TYPES``) or ``array``."""

    name: str
    length: int | None = None  # varchar(n) / char(n)
    precision: int | None = None  # numeric(p, s)
    scale: int | None = None
    labels: tuple[str, ...] = ()  # enum
    element: PgType | None = None  # array

    def __post_init__(self) -> None:
        if self.name == "array" and self.element is None:
            raise UnsupportedType("an array type needs its element type")
        if self.name != "array" and self.name not in BASE_TYPES:
            raise UnsupportedType(f"type {self.name} is not validated by the loader")


def parse_type(text: str, labels: Sequence[str] = ()) -> PgType:
    """``'numeric(5,2)'``, ``'varchar(10)[]'``, ``'timestamp with time zone'`` → PgType."""
    match = _TYPE_RE.fullmatch(text)
    if match is None:
        raise UnsupportedType(f"cannot read type {text!r}")
    name, first, second, brackets = match.groups()
    name = " ".join(name.lower().split())
    name = ALIASES.get(name, name)
    a = int(first) if first is not None else None
    b = int(second) if second is not None else None
    if name in ("varchar", "bpchar"):
        base = PgType(name, length=a if a is not None else (1 if name == "bpchar" else None))
    elif name == "numeric":
        base = PgType(name, precision=a, scale=(b or 0) if a is not None else None)
    else:
        base = PgType(name, labels=tuple(labels))
    for _ in range(len(brackets) // 2):
        base = PgType("array", element=base)
    return base


def from_typmod(name: str, typmod: int, labels: Sequence[str] = ()) -> PgType:
    """A base type from pg_type.typname and pg_attribute.atttypmod (-1: none).

    varchar/bpchar store n + 4; numeric stores ((p << 16) | (s & 0x7ff)) + 4,
    the scale an 11-bit signed number since PostgreSQL 15.
    """
    if name in ("varchar", "bpchar"):
        return PgType(name, length=typmod - 4 if typmod >= 4 else None)
    if name == "numeric" and typmod >= 4:
        bits = typmod - 4
        return PgType(name, precision=(bits >> 16) & 0xFFFF, scale=((bits & 0x7FF) ^ 1024) - 1024)
    return PgType(name, labels=tuple(labels))


_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Array elements that need no quoting and are valid as they stand (digits fewer
# than the range's bound; text without quotes, braces, commas, backslashes,
# spaces, NUL, and not the word NULL, which is a NULL element: valid for text too).
_ARRAY_ELEMENT = {
    "int2": "-?[0-9]{1,4}", "int4": "-?[0-9]{1,9}", "int8": "-?[0-9]{1,18}",
    "text": '[^{}",\\\\\\s\\x00]+', "varchar": '[^{}",\\\\\\s\\x00]+',
}


_JSON_STRING = '"[^"\\\\\\x00-\\x1f]*"'  # no escapes, no control characters
# Numbers within numeric's range (jsonb stores them as numeric): short exponents.
_JSON_SCALAR = (f"(?:{_JSON_STRING}|-?(?:0|[1-9][0-9]{{0,999}})(?:\\.[0-9]{{1,1000}})?"
                "(?:[eE][+-]?[0-9]{1,3})?"
                "|true|false|null)")
_JSON_PAIR = f"{_JSON_STRING}[ \\t]*:[ \\t]*{_JSON_SCALAR}"
# A flat object of scalars (the common case), [] or a scalar: valid JSON as it stands.
_JSON_FAST = (f"(?:\\{{[ \\t]*(?:{_JSON_PAIR}(?:[ \\t]*,[ \\t]*{_JSON_PAIR})*)?[ \\t]*\\}}"
              f"|\\[[ \\t]*\\]|{_JSON_SCALAR})")


def _fast_pattern(t: PgType) -> str | None:
    """A regex whose match proves a value valid as it stands (no escaping needed)."""
    if t.name in pgcheck.INT_RANGES:  # canonical decimals as long as the range's; see _in_range
        digits = len(str(pgcheck.INT_RANGES[t.name][1]))
        return f"-?(?:[1-9][0-9]{{0,{digits - 1}}}|0)"
    if t.name == "numeric":
        if t.precision is None:
            return r"-?[0-9]{1,30}(?:\.[0-9]{1,30})?"
        scale = t.scale or 0
        whole = t.precision - scale
        if whole < 1 or scale < 0:
            return None
        return f"-?[0-9]{{1,{whole}}}" + (f"(?:\\.[0-9]{{1,{scale}}})?" if scale else "")
    if t.name in ("float4", "float8"):
        return r"-?[0-9]{1,15}(?:\.[0-9]{1,15})?" if t.name == "float8" else r"-?[0-9]{1,6}(?:\.[0-9]{1,6})?"
    if t.name == "uuid":
        return "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    if t.name in ("json", "jsonb"):
        return _JSON_FAST
    if t.name == "inet":  # canonical dotted quads, optional /bits
        return f"{_OCTET}(?:\\.{_OCTET}){{3}}(?:/(?:3[0-2]|[12]?[0-9]))?"
    if t.name == "array" and t.element is not None:
        element = _ARRAY_ELEMENT.get(t.element.name)
        if element is not None and t.element.length is None:  # {a,b}: no quotes, spaces, NULL
            return f"\\{{(?:{element}(?:,{element})*)?\\}}"
    return {"date": FAST_DATE, "timestamp": FAST_TIMESTAMP, "timestamptz": FAST_TIMESTAMPTZ}.get(t.name)


def scalar_check(t: PgType) -> Check:
    """The exact per-value check of a type: returns the COPY value (unescaped)."""
    name = t.name
    if name in pgcheck.INT_RANGES:
        return functools.partial(pgcheck.check_int, name=name)
    if name == "numeric":
        return functools.partial(pgcheck.check_numeric, precision=t.precision, scale=t.scale)
    if name in ("float4", "float8"):
        return functools.partial(pgcheck.check_float, single=name == "float4")
    if name == "bool":
        return pgcheck.check_bool
    if name in ("text", "varchar", "bpchar"):
        return functools.partial(pgcheck.check_text, length=t.length)
    simple: dict[str, Check] = {
        "date": check_date, "time": check_time, "interval": check_interval,
        "timestamp": functools.partial(check_timestamp, with_zone=False),
        "timestamptz": functools.partial(check_timestamp, with_zone=True),
        "uuid": pgcheck.check_uuid, "bytea": pgcheck.check_bytea,
        "json": functools.partial(pgcheck.check_json, binary=False),
        "jsonb": functools.partial(pgcheck.check_json, binary=True),
        "inet": functools.partial(pgcheck.check_inet, cidr=False),
        "cidr": functools.partial(pgcheck.check_inet, cidr=True),
    }
    if name in simple:
        return simple[name]
    if name == "enum":
        return functools.partial(pgcheck.check_enum, labels=frozenset(t.labels))
    assert t.element is not None  # name == "array"
    return functools.partial(pgcheck.check_array, element=scalar_check(t.element))


def _out_of_range(values: list[str], slow: list[int], bounds: tuple[int, int]) -> list[int]:
    """Add the canonical decimals outside ``bounds`` to ``slow``: ``min``/``max``
    over ``map(int, ...)`` in C, a Python scan only when one is out."""
    lo, hi = bounds
    longest = max(map(len, values))
    # Canonical decimals of ``longest`` characters lie in -(10**(longest-1) - 1)..10**longest - 1.
    if longest < len(str(hi)) and lo <= min(0, 1 - 10 ** (longest - 1)):
        return slow
    numbers = values
    if slow:
        numbers = list(values)
        for i in slow:
            numbers[i] = "0"
    ints = list(map(int, numbers))
    if min(ints) >= lo and max(ints) <= hi:
        return slow
    return sorted(set(slow).union(i for i, n in enumerate(ints) if not lo <= n <= hi))


def _int_bounds(t: PgType, rules: Sequence[Rule]) -> tuple[int, int] | None:
    """The narrowest ``IntRange`` of an integer column within its type's range."""
    ranges = [r for r in rules if isinstance(r, IntRange)]
    if not ranges:
        return None
    if t.name not in pgcheck.INT_RANGES:
        raise ValueError(f"an integer range rule on a {t.name} column")
    lo, hi = pgcheck.INT_RANGES[t.name]
    for r in ranges:
        lo, hi = max(lo, lo if r.lo is None else r.lo), min(hi, hi if r.hi is None else r.hi)
    return lo, hi


class ColumnCodec:
    """CSV strings of one column → COPY text values, or reasons.

    ``None`` is SQL NULL (the CSV reader decides what is NULL); a NOT NULL
    column refuses it. Messages start with the column name.
    """

    def __init__(self, name: str, pgtype: PgType, *, not_null: bool = False,
                 rules: Sequence[Rule] = ()) -> None:
        self.name, self.type, self.not_null = name, pgtype, not_null
        self.required = any(isinstance(r, Required) for r in rules)
        self.not_null = not_null or self.required
        self._matches = tuple(r for r in rules if isinstance(r, Matches))
        self._patterns = tuple(re.compile(r.pattern) for r in self._matches)
        self._max_length = min((r.length for r in rules if isinstance(r, MaxLength)), default=None)
        self._range = _int_bounds(pgtype, rules)
        self.lowers = any(isinstance(r, Lower) for r in rules)
        self._type_check = scalar_check(pgtype)
        self.check = self._ruled if rules else self._type_check
        fast = _fast_pattern(pgtype)
        if self._matches:  # the rule's pattern proves a text valid; other types: one by one
            fast = self._matches[0].pattern if pgtype.name in _TEXTS and \
                len(self._matches) == 1 else None
        self._fast = re.compile(fast) if fast else None
        # Atomic and possessive: the run never backtracks into a value it has
        # matched (3x faster on timestamps and JSON). A value it gives up on is
        # only re-checked exactly, never accepted, so this costs no correctness.
        self._run = re.compile(f"(?:(?>{fast})\n)*+") if fast else None
        self._bools = pgcheck.BOOL_WORDS if pgtype.name == "bool" else None
        if pgtype.name == "enum":  # one dict lookup per value settles it, as for booleans
            self._bools = {label: _escape(label) for label in pgtype.labels}
        if self._range is not None and self._range[1] - self._range[0] < SMALL_RANGE:
            self._bools = _int_strings(*self._range)  # canonical decimals in range
        # No fast path accepts a value with surrounding whitespace (an enum label
        # may have some): such a column may be trimmed lazily, see ``encode``.
        self.trims_lazily = (self._fast is not None or self._bools is not None) and \
            all(label == label.strip() for label in pgtype.labels)

    def _ruled(self, value: str) -> str:
        """The type's check, then the column's rules (``rules.py``), in their order."""
        value = self._type_check(value)
        if self.required and value == "":
            raise Invalid("required")
        for rule, pattern in zip(self._matches, self._patterns, strict=True):
            if pattern.fullmatch(value) is None:
                raise Invalid(f"not {rule.what}: {pgcheck._short(value)}")
        if self._max_length is not None and len(value) > self._max_length:
            raise Invalid(f"longer than {self._max_length} characters")
        if self._range is not None:
            number = pgcheck.int_value(value, name=self.type.name)
            if not self._range[0] <= number <= self._range[1]:
                raise Invalid(f"{number} out of range {self._range[0]}..{self._range[1]}")
        return value

    def convert(self, value: str | None) -> str:
        """One value → its COPY text (escaped; ``\\N`` for NULL); ``Invalid`` if bad."""
        if value is None:
            if self.not_null:
                raise Invalid(f"{self.name}: required" + ("" if self.required else " (NOT NULL)"))
            return NULL
        try:
            return _escape(self.check(value))
        except Invalid as exc:
            raise Invalid(f"{self.name}: {exc}") from None

    def encode(self, values: Sequence[str | None], errors: dict[int, list[str]], *,
               nulls: list[int] | None = None,
               prepare: Callable[[str], str | None] | None = None,
               newline_free: bool = False) -> list[str]:
        """COPY text for a block's column; a bad value's reason goes to ``errors[row]``
        and its slot holds ``""`` (the row is dropped, the column stays joinable).
        ``nulls``: where the ``None`` values are, if the caller knows;
        ``newline_free``: no value holds a line break (the caller knows it).

        ``prepare`` (only where ``trims_lazily``): the caller's normalisation
        (trimming, its NULL string), applied only to the values the fast path
        does not settle: a value it settles has no surrounding whitespace, so
        trimming it first would change nothing, and costs ~0.13 us a value.
        """
        out: list[str | None] = list(values)
        if nulls is None:
            nulls = _positions(out, None)
        work: list[str] = out  # type: ignore[assignment]
        if nulls:
            work = list(out)  # type: ignore[arg-type]
            for i in nulls:
                work[i] = "\x00"  # settled by no fast path
        slow: Sequence[int]
        if self._bools is not None:
            out = list(map(self._bools.get, work))
            slow = _positions(out, None)
        elif self._fast is not None and self._run is not None:
            slow = run_misfits(self._fast, self._run, work, newline_free)  # tables.py's scan
            if self.type.name in pgcheck.INT_RANGES and work:
                slow = _out_of_range(work, slow, self._range or pgcheck.INT_RANGES[self.type.name])
        elif self.type.name in ("text", "varchar", "bpchar"):
            slow = pgcheck.text_misfits(work, self.type.length)
            joined = "".join(work)
            if any(ch in joined for ch in _SPECIALS):
                out = list(map(_escape, work))
        else:
            slow = range(len(work))
        limit = self._max_length
        if limit is not None and work and max(map(len, work)) > limit:
            slow = sorted(set(slow).union(i for i, v in enumerate(work) if len(v) > limit))
        for i in slow:
            try:
                value = values[i]
                out[i] = self.convert(prepare(value) if prepare is not None and value is not None
                                      else value)
            except Invalid as exc:
                errors.setdefault(i, []).append(str(exc))
                out[i] = ""
        return out  # type: ignore[return-value]
