"""Bounds on one CSV load, whatever the input: records, lines, gzip, text encodings.

A CSV record costs far more memory parsed than as text (``csv.reader`` makes a
list slot per field and a ``str`` per non-empty one): a 1 MiB line of commas
is a list of a million fields. So (issue 12, finding 4):

* physical lines are bounded (``max_line`` characters, ``ETL_MAX_LINE_BYTES``):
  a longer line fails the whole load with 413 ``LIMIT_LINE_BYTES`` — it cannot
  be resynchronised, as its line breaks may be inside quotes;
* a record with more than ``max_fields`` fields (``ETL_MAX_FIELDS``, default
  1,600: PostgreSQL's column limit) is a reject (its line, the reason and a
  shortened text); fields are bounded by ``csv.field_size_limit``;
* blocks are bounded by characters as well as rows, and pieces of text with a
  line over ``NARROW`` characters are parsed one record at a time, so that at
  most about ``block_chars + max_line`` characters of parsed records are alive;
* gzip input may inflate to ``max_inflated`` bytes at a ratio of at most
  ``max_ratio`` (after the first ``RATIO_GRACE`` bytes): 413.

Pure: no Flask, no database driver.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flaskstream.errorbase import FixedError

BLOCK_CHARS = 1 << 20  # characters of text per record block (and its COPY text)
NARROW = BLOCK_CHARS // 256  # pieces whose lines are all this short parse in steps
RATIO_GRACE = 1 << 20  # inflated bytes allowed before the gzip ratio applies
REJECT_TEXT_FIELDS = 32  # fields of an over-wide record kept in its reject
# Text encodings that are not ASCII-compatible in the sense csv needs are still text
# encodings; what is refused is a codec that does not turn bytes into str at all
# (rot13: str→str, hex/base64/zlib: bytes→bytes). See ``text_codec``.
_SAMPLE = 'id,name\r\n1,"x y"\r\n'


class InputError(FixedError):
    """Bad input as a whole (not one row): reported as a clear message, no traceback.

    ``code`` and ``status`` say what the API answers (one error base, raised
    where the fact is known; never sorted by its message).
    """

    code = "BAD_INPUT"
    status = 422


class InputTooLarge(InputError):
    status = 413

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True)
class Bounds:
    """Every bound on one load's input (``None`` = unbounded). Defaults mirror config.py."""

    max_fields: int | None = 1600
    max_line: int | None = 4 << 20
    max_inflated: int | None = 64 << 30
    max_ratio: float | None = 200
    block_chars: int = BLOCK_CHARS


def bounds_from_config(config: Mapping[str, Any]) -> Bounds:
    """The ``ETL_MAX_*`` settings (``None`` or absent: unbounded) as ``Bounds``."""
    get = config.get
    return Bounds(max_fields=get("ETL_MAX_FIELDS"), max_line=get("ETL_MAX_LINE_BYTES"),
                  max_inflated=get("ETL_MAX_INFLATED_BYTES"), max_ratio=get("ETL_MAX_GZIP_RATIO"))


def text_codec(encoding: str) -> str:
    """Python's canonical name for ``encoding`` if it is a text encoding, else ``InputError``.

    ``codecs.lookup`` also finds ``rot13`` (str->str) and ``hex``/``base64``/
    ``zlib`` (bytes->bytes). The marker Python keeps for this
    (``CodecInfo._is_text_encoding``) is private, so instead the codec must
    encode a small CSV sample to bytes and its incremental decoder (what
    ``pipeline.decode`` uses) must give the same text back.
    """
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError):  # ValueError: e.g. an embedded NUL in the name
        raise InputError("unknown encoding") from None
    try:
        data = info.encode(_SAMPLE)[0]
        text = info.incrementaldecoder().decode(data, final=True) \
            if isinstance(data, bytes) else None
    except Exception:  # noqa: BLE001 - fails on a plain ASCII sample: not usable for CSV
        text = None
    if text != _SAMPLE:
        raise InputError(f"{info.name} is not a text encoding")
    return info.name


def line_count(text: str) -> int:
    """Line breaks in ``text`` (LF, CRLF or a lone CR), as ``io.StringIO(newline='')`` splits."""
    n = text.count("\n")
    if "\r" in text:
        n += text.count("\r") - text.count("\r\n")
    return n


def longest_line_over(text: str, limit: int) -> bool:
    """Does any line of ``text`` run past ``limit`` characters (without its break)?

    Hops from line break to line break at most ``limit + 1`` apart with
    ``rfind`` (C speed): about ``len(text) / limit`` calls for ordinary text.
    A lone CR is not seen as a break here; only over-estimates follow from that.
    """
    pos, n = 0, len(text)
    while n - pos > limit:
        nl = text.rfind("\n", pos, pos + limit + 1)
        if nl == -1:
            return True
        pos = nl + 1
    return False


def check_line(text: str, bounds: Bounds) -> bool:
    """``True`` if ``text`` holds a line over ``NARROW``; 413 if over ``max_line``."""
    if not longest_line_over(text, NARROW):
        return False
    if bounds.max_line is not None and longest_line_over(text, bounds.max_line):
        raise InputTooLarge("LIMIT_LINE_BYTES",
                            f"a line is longer than {bounds.max_line} characters")
    return True


@dataclass(frozen=True)
class WideRecord:
    """Stands in for a record with too many fields, so its list is freed at once."""

    lines: int
    fields: int
    text: str

    def __len__(self) -> int:  # for max(map(len, records)) over a block
        return 0


def wide_record(record: list[str]) -> WideRecord:
    joined = ",".join(record)  # C speed, even for a million fields
    lines = 1 + line_count(joined)
    head = io.StringIO()
    # "\r\n" as terminator so that fields holding CR/LF are quoted (as pipeline.csv_text)
    csv.writer(head, lineterminator="\r\n").writerow(record[:REJECT_TEXT_FIELDS])
    return WideRecord(lines, len(record), head.getvalue()[:-2] + ",...")


class InflateGuard:
    """Counts gzip input and output; raises 413 past ``max_inflated`` or ``max_ratio``."""

    def __init__(self, bounds: Bounds | None) -> None:
        self.max_inflated = bounds.max_inflated if bounds else None
        self.max_ratio = bounds.max_ratio if bounds else None
        self.compressed = 0
        self.inflated = 0

    def took(self, data: bytes) -> None:
        self.compressed += len(data)

    def gave(self, data: bytes) -> None:
        self.inflated += len(data)
        if self.max_inflated is not None and self.inflated > self.max_inflated:
            raise InputTooLarge("LIMIT_INFLATED_BYTES",
                                f"gzip input inflates past {self.max_inflated} bytes")
        if self.max_ratio is not None and self.inflated > RATIO_GRACE \
                and self.inflated > self.max_ratio * max(self.compressed, 1):
            raise InputTooLarge("LIMIT_GZIP_RATIO",
                                f"gzip input inflates more than {self.max_ratio:g} times")
