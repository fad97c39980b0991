"""Declarative table descriptions and the validate/normalise stage.

A table is a tuple of ``Column(name, type, required, normalise, ...)``. Loads
(``etl load``, ``POST /etl/jobs``) read every table from the catalog, the
presets included (``rules.py``), and so does the access-log pipeline
(``logs.py``: the ``requests`` preset); the hand-written ``USERS`` remains for
the naive and ``pipeline-table`` benchmarks and their tests, with the helpers
``pgtypes`` shares.

Validation is columnar: for a block of records each column is converted with
C-level ``map`` calls (``str.strip``, ``str.lower``, a compiled regex,
``str.isdecimal``, ``int``) and only the few values that fail the fast test go
through the per-value ``convert_value``, which gives the exact reason. The
output is COPY text format, values escaped, NULL as ``\\N``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from flaskstream.errorbase import FixedError
from flaskstream.etl.bounds import Bounds
from flaskstream.etl.pipeline import (
    DEFAULT_FIELD_SIZE_LIMIT,
    CopyBlock,
    Progress,
    RecordBlock,
    Reject,
    csv_text,
    decode,
    gunzip_if_needed,
    read_records,
    take_header,
)

Normaliser = Callable[[str], str]
TYPES = ("text", "int", "email")
# Plausible, not RFC 5322: one @, no spaces, a dot in the domain, 254 characters at most.
EMAIL_PATTERN = r"[^@\s\"(),:;<>\[\]\\]+@[^@\s\"(),:;<>\[\]\\]+\.[^@\s\"(),:;<>\[\]\\.]+"
EMAIL_RE = re.compile(EMAIL_PATTERN)
# A run of valid lines, matched in one call (atomic and possessive: see pgtypes.ColumnCodec)
_EMAIL_RUN = re.compile(f"(?:(?>{EMAIL_PATTERN})\n)*+")
_SMALL_RANGE = 100_000  # int columns with fewer values than this validate by dict lookup
MAX_EMAIL = 254
_SPECIALS = ("\\", "\t", "\n", "\r")


class Invalid(ValueError):
    """A value that cannot be loaded; the message is the reject reason."""


class HeaderError(FixedError):
    """The header cannot feed the table (missing required columns)."""

    code, status = "BAD_HEADER", 422


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "text"  # one of TYPES
    required: bool = False
    normalise: tuple[Normaliser, ...] = (str.strip,)
    min: int | None = None
    max: int | None = None
    max_length: int | None = None
    aliases: tuple[str, ...] = ()  # other header names accepted for this column

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"unknown column type {self.type!r}")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()  # conflict target of upsert mode

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


USERS = Table("users", (
    Column("email", "email", required=True, normalise=(str.strip, str.lower)),
    Column("age", "int", required=True, min=0, max=150),
    Column("name", "text", max_length=1000),
), key=("email",))


def _shorten(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def convert_value(column: Column, raw: str) -> str | int | None:
    """Normalise and check one value; raise ``Invalid`` with the reject reason."""
    value = raw
    for fn in column.normalise:
        value = fn(value)
    if value == "":
        if column.required:
            raise Invalid(f"{column.name}: required")
        return None
    if column.type == "int":
        sign = value[:1] in "+-"
        if not value[sign:].isdecimal() or not value[sign:]:
            raise Invalid(f"{column.name}: not an integer: {_shorten(value)}")
        if len(value) > 19:  # beyond bigint; also keeps int() away from huge strings
            raise Invalid(f"{column.name}: out of range {column.min}..{column.max}")
        number = int(value)
        if (column.min is not None and number < column.min) or \
                (column.max is not None and number > column.max):
            raise Invalid(f"{column.name}: {number} out of range {column.min}..{column.max}")
        return number
    if column.type == "email" and (len(value) > MAX_EMAIL or not EMAIL_RE.fullmatch(value)):
        raise Invalid(f"{column.name}: not a plausible email address: {_shorten(value)}")
    if column.max_length is not None and len(value) > column.max_length:
        raise Invalid(f"{column.name}: longer than {column.max_length} characters")
    return value


def _positions(values: list, target: object) -> list[int]:
    """Indices of ``target`` in ``values`` (``list.index`` scans in C)."""
    out, i = [], -1
    try:
        while True:
            i = values.index(target, i + 1)
            out.append(i)
    except ValueError:
        return out


@functools.lru_cache(maxsize=16)
def _int_strings(lo: int, hi: int) -> dict[str, str]:
    """Canonical decimal strings of lo..hi: one dict lookup checks syntax and range."""
    return {str(i): str(i) for i in range(lo, hi + 1)}


def _email_failures(values: list[str]) -> list[int]:
    """Indices of implausible addresses."""
    return run_misfits(EMAIL_RE, _EMAIL_RUN, values)


def run_misfits(pattern: re.Pattern[str], run: re.Pattern[str], values: list[str],
                newline_free: bool = False) -> list[int]:
    """Indices of values ``pattern`` does not fully match, scanning the joined column
    with one ``run`` (a run of matching lines) call per stretch of valid values: a
    regex call per value costs more than the match. Shared by ``pgtypes``.
    ``newline_free``: the caller knows no value holds a line break (skips a count)."""
    text = "\n".join(values) + "\n"
    if not newline_free and text.count("\n") != len(values):  # a value holds one: one by one
        return _positions(list(map(pattern.fullmatch, values)), None)
    bad: list[int] = []
    pos = index = 0
    while True:
        end = run.match(text, pos).end()  # type: ignore[union-attr]
        index += text.count("\n", pos, end)
        if end >= len(text):
            return bad
        bad.append(index)
        pos = text.index("\n", end) + 1
        index += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def encode_column(column: Column, raws: Sequence[str], errors: dict[int, list[str]]) -> list[str]:
    """COPY text for one column of a block; failures go to ``errors[row]``."""
    values: list = list(raws)
    for fn in column.normalise:
        values = list(map(fn, values))
    slow: list[int] = []  # rows the fast checks could not settle
    # Holds None where a fast check failed; every such row is in ``slow`` and is
    # overwritten below, so what is returned is all str.
    out: list[Any]
    lo, hi = column.min, column.max
    if column.type == "int" and lo is not None and hi is not None and hi - lo < _SMALL_RANGE:
        out = list(map(_int_strings(lo, hi).get, values))  # None: not canonical or out of range
        slow = _positions(out, None)
    elif column.type == "int":
        slow = _positions(list(map(str.isdecimal, values)), False)
        if values and max(map(len, values)) > 18:
            slow = sorted(set(slow).union(i for i, v in enumerate(values) if len(v) > 18))
        digits = values
        if slow:
            digits = list(values)
            for i in slow:
                digits[i] = "0"
        numbers = list(map(int, digits))
        if numbers and ((lo is not None and min(numbers) < lo) or
                        (hi is not None and max(numbers) > hi)):
            slow = sorted(set(slow).union(
                i for i, n in enumerate(numbers)
                if (lo is not None and n < lo) or (hi is not None and n > hi)))
        out = list(map(str, numbers))
    else:
        limit: int | None
        if column.type == "email":
            slow = _email_failures(values)
            limit = MAX_EMAIL
        else:
            slow = _positions(values, "")
            limit = column.max_length
        if limit is not None and values and max(map(len, values)) > limit:
            slow = sorted(set(slow).union(i for i, v in enumerate(values) if len(v) > limit))
        out = values
        joined = "".join(values)
        if any(ch in joined for ch in _SPECIALS):
            out = list(map(_escape, values))
    for i in slow:
        try:
            value = convert_value(column, raws[i])
        except Invalid as exc:
            errors.setdefault(i, []).append(str(exc))
            out[i] = ""  # the row is dropped; keep the column joinable
            continue
        out[i] = "\\N" if value is None else _escape(str(value))
    return out


@dataclass(frozen=True)
class Mapping:
    """Which record field feeds each table column (None: absent, loaded as NULL)."""

    table: Table
    indices: tuple[int | None, ...]
    width: int  # fields per record, from the header


def map_header(table: Table, header: Sequence[str]) -> Mapping:
    """Match header names (trimmed, case-insensitive, aliases) to table columns.

    Raises ``HeaderError`` naming every missing required column — before any write.
    """
    names = [h.strip().lower() for h in header]
    indices: list[int | None] = []
    missing = []
    for column in table.columns:
        index = None
        for candidate in (column.name, *column.aliases):
            if candidate.lower() in names:
                index = names.index(candidate.lower())
                break
        if index is None and column.required:
            missing.append(column.name)
        indices.append(index)
    if missing:
        found = ", ".join(h.strip() for h in header) or "(nothing)"
        raise HeaderError(f"header is missing required column(s) {', '.join(missing)} "
                          f"for table {table.name}; found: {found}")
    return Mapping(table, tuple(indices), len(header))


def _undecodable_reason(record: list[str]) -> str | None:
    for value in record:
        if "\x00" in value:
            return "NUL byte in field"
        if not value.isascii():
            for ch in value:
                if "\udc80" <= ch <= "\udcff":
                    return f"undecodable byte 0x{ord(ch) - 0xDC00:02x} (wrong --encoding?)"
    return None


def validate(blocks: Iterable[RecordBlock], mapping: Mapping,
             progress: Progress | None = None) -> Iterator[CopyBlock]:
    """Records → COPY text of the valid rows + rejects with line and reason."""
    table, width = mapping.table, mapping.width
    for block in blocks:
        records, lines = block.records, block.lines
        rejects: list[Reject] = list(block.rejects)
        if list(map(len, records)).count(width) != len(records) or \
                (progress is not None and progress.dirty):
            kept, kept_lines = [], []
            for record, line in zip(records, lines, strict=True):
                if not record:
                    continue  # blank line: not a row
                reason = _undecodable_reason(record) if progress and progress.dirty else None
                if reason is None and len(record) != width:
                    reason = f"expected {width} fields, found {len(record)}"
                if reason is None:
                    kept.append(record)
                    kept_lines.append(line)
                else:
                    rejects.append(Reject(line, reason, csv_text(record)))
            records, lines = kept, kept_lines
        errors: dict[int, list[str]] = {}
        text = ""
        if records:
            fields = list(zip(*records, strict=True))
            columns: list[Sequence[str]] = []
            for column, index in zip(table.columns, mapping.indices, strict=True):
                if index is None:
                    columns.append(("\\N",) * len(records))
                else:
                    columns.append(encode_column(column, fields[index], errors))
            rows = list(map("\t".join, zip(*columns, strict=True)))
            if errors:
                for i in sorted(errors, reverse=True):
                    del rows[i]
                for i in sorted(errors):
                    rejects.append(Reject(lines[i], "; ".join(errors[i]), csv_text(records[i])))
                lines = [line for i, line in enumerate(lines) if i not in errors]
            if rows:
                text = "\n".join(rows) + "\n"
        if len(rejects) > 1:
            rejects.sort(key=lambda r: r.line)
        if progress is not None:
            progress.rows_read += len(lines) + len(rejects)
        yield CopyBlock(text, lines, rejects, block.end_line, block.position)


def csv_copy_blocks(chunks: Iterable[bytes], table: Table, *, encoding: str = "utf-8",
                    progress: Progress | None = None,
                    field_size_limit: int = DEFAULT_FIELD_SIZE_LIMIT,
                    line_base: int = 0, base_offset: int = 0,
                    bounds: Bounds | None = None) -> Iterator[CopyBlock]:
    """The whole CSV pipeline, top to bottom: bytes → validated COPY text blocks.

    The header is read and mapped (``HeaderError`` for a missing required
    column) when the first block is asked for, before the sink writes anything.
    ``line_base``/``base_offset`` shift line numbers and byte offsets (resuming).
    ``bounds`` caps gzip inflation, line length and fields per record (bounds.py).
    """
    progress = progress if progress is not None else Progress()
    bounds = bounds or Bounds()
    texts = decode(gunzip_if_needed(chunks, bounds=bounds), encoding, progress,
                   max_line=bounds.max_line)
    records = read_records(texts, field_size_limit=field_size_limit, encoding=encoding,
                           line_base=line_base, base_offset=base_offset, bounds=bounds)
    header, blocks = take_header(records)
    if header is None:
        return
    yield from validate(blocks, map_header(table, header), progress)
