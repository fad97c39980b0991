"""Byte ranges and conditional requests, RFC 9110 — the pure core of the media pattern.

No Flask and no I/O: :func:`evaluate` takes the request method, its headers and
what we know of the file (size, strong ETag, Last-Modified) and returns a
:class:`Decision` — the status to answer with and, for 206, the byte ranges.
The blueprint (``views.py``) only turns that decision into a response.

Modelled on Starlette's range helpers, with the places where peers diverge
from the RFC written down next to the rule:

* preconditions run in RFC 9110 §13.2.2 order, *before* Range is looked at
  (werkzeug's ``send_file`` skips 304/412 when a Range is present);
* a syntactically invalid Range, or an unknown unit, is ignored → 200
  (§14.2 "MAY ignore"; Starlette answers 400, the Node seed 416);
* several ranges → ``multipart/byteranges`` in the requested order, with
  overlapping or nearly adjacent ranges coalesced (§14.6);
* more than ``max_ranges`` specs, or specs adding up past the file size →
  the full 200 (nginx's rule, the "Apache Killer" defence);
* If-Range needs a *strong* ETag match or an exact date (a weak tag never
  matches; ``send`` compares substrings).

Ranges are half-open ``(start, stop)`` pairs of byte offsets throughout;
Content-Range shows them inclusive.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, mktime_tz, parsedate_tz

ByteRange = tuple[int, int]

#: Ranges closer than this are merged: a multipart part header costs about as much.
COALESCE_GAP = 80
#: Digit strings longer than this stand for "bigger than any file" (no big-int work).
MAX_DIGITS = 18
HUGE = 10**MAX_DIGITS


class RangeNotSatisfiable(Exception):
    """No range-spec overlaps the file: answer 416 with ``Content-Range: bytes */size``."""


@dataclass(frozen=True)
class Decision:
    """What to answer: ``status`` is 200, 206, 304, 412 or 416.

    ``ranges`` holds the (coalesced, requested-order) ranges of a 206; more than
    one means ``multipart/byteranges``.
    """

    status: int
    ranges: tuple[ByteRange, ...] = field(default=())

    @property
    def multipart(self) -> bool:
        return self.status == 206 and len(self.ranges) > 1


# --- validators -----------------------------------------------------------------


def make_etag(inode: int, size: int, mtime_ns: int) -> str:
    """A strong ETag from the stat snapshot: any rewrite changes size or mtime_ns,
    and a replace-by-rename changes the inode."""
    return f'"{inode:x}-{size:x}-{mtime_ns:x}"'


@functools.lru_cache(maxsize=1024)
def http_date(timestamp: float) -> str:
    """IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT`` (cached: files keep their mtime)."""
    return formatdate(timestamp, usegmt=True)


def parse_http_date(value: str | None) -> int | None:
    """Seconds since the epoch for any of the three HTTP-date forms; None if invalid."""
    if not value or len(value) > 64:
        return None
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        return mktime_tz(parsed)
    except (OverflowError, ValueError):
        return None


def parse_etags(value: str) -> list[str] | None:
    """Entity-tags of an If-Match/If-None-Match list, ``["*"]`` for ``*``.

    One linear scan (commas may sit inside quotes). Returns None when the list
    is malformed; callers treat that as "no tag matches".
    """
    text = value.strip()
    if text == "*":
        return ["*"]
    tags: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        if text.startswith("W/", i):
            i += 2
        if i >= n or text[i] != '"':
            return None
        close = text.find('"', i + 1)
        if close < 0:
            return None
        i = close + 1
        tags.append(text[start:i])
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            return None
    return tags


def strong_match(a: str, b: str) -> bool:
    """RFC 9110 §8.8.3.2: both strong and the same opaque-tag."""
    return not a.startswith("W/") and not b.startswith("W/") and a == b


def weak_match(a: str, b: str) -> bool:
    """Same opaque-tag, either or both may be weak."""
    return a.removeprefix("W/") == b.removeprefix("W/")


# --- Range ----------------------------------------------------------------------


def _number(digits: str) -> int | None:
    """A non-negative integer from 1*DIGIT; huge values saturate at HUGE.

    Saturating keeps ``bytes=0-18446744073709551615`` (and 10,000-digit numbers)
    cheap and exact in effect: a first-pos past any file is unsatisfiable, a
    last-pos or suffix-length past it is clamped to the file.
    """
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    digits = digits.lstrip("0") or "0"
    return HUGE if len(digits) > MAX_DIGITS else int(digits)


def parse_ranges(header: str, size: int, max_ranges: int = 16) -> list[ByteRange] | None:
    """The satisfiable ranges of a ``Range`` header, clamped to ``size``, as requested.

    Returns None when the header must be ignored (→ 200 with the whole file):
    another unit, any invalid range-spec (§14.1.1, e.g. last-pos < first-pos),
    more than ``max_ranges`` specs, or specs adding up to more than the file.
    Raises :class:`RangeNotSatisfiable` when the syntax is fine but no spec
    overlaps the file (§14.1.3: starts at or past the end, ``-0``).

    Linear in the header: one split, and the loop stops at spec ``max_ranges + 1``.
    """
    unit, sep, range_set = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[ByteRange] = []
    total = 0
    count = 0
    # Empty list elements are allowed by the #rule (RFC 9110 §5.6.1).
    for raw in range_set.split(","):
        spec = raw.strip(" \t")
        if not spec:
            continue
        count += 1
        if count > max_ranges:
            return None
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return None
        if first_text == "":  # suffix-range: the last n bytes
            suffix = _number(last_text)
            if suffix is None:
                return None
            if suffix == 0 or size == 0:
                continue  # unsatisfiable; see the size == 0 note in evaluate()
            start, stop = max(0, size - suffix), size
        else:
            first = _number(first_text)
            last = _number(last_text) if last_text else None
            if first is None or (last_text and last is None):
                return None
            if last is not None and last < first:
                return None  # invalid range-spec → ignore the whole header
            if first >= size:
                continue
            start, stop = first, size if last is None else min(last + 1, size)
        ranges.append((start, stop))
        total += stop - start
    if count == 0:
        return None
    if not ranges:
        raise RangeNotSatisfiable
    if total > size:
        return None
    return ranges


_SINGLE_RANGE = re.compile(r"bytes=([0-9]{1,18})-([0-9]{0,18})")


def single_range(header: str, size: int) -> ByteRange | None:
    """The common ``bytes=first-[last]`` header, decided as ``evaluate`` decides it
    when it is one satisfiable range; None for anything else (then ask ``evaluate``).

    A shortcut for the media fast path: players and range clients send this form
    on nearly every request, and one regex match costs a fraction of the general
    parser (tests/media/test_ranges.py checks the two agree).
    """
    match = _SINGLE_RANGE.fullmatch(header)
    if match is None:
        return None
    first = int(match[1])
    if first >= size:
        return None
    if not match[2]:
        return first, size
    last = int(match[2])
    if last < first:
        return None
    return first, min(last + 1, size)


def coalesce(ranges: Iterable[ByteRange], gap: int = COALESCE_GAP) -> list[ByteRange]:
    """Merge ranges that overlap or lie within ``gap`` bytes of each other.

    §14.6 lets a server coalesce "regardless of the order"; otherwise parts keep
    the requested order, so each merged range sits where its earliest member was.
    """
    indexed = sorted(enumerate(ranges), key=lambda item: item[1])
    merged: list[tuple[int, int, int]] = []  # (first request index, start, stop)
    for index, (start, stop) in indexed:
        if merged and start <= merged[-1][2] + gap:
            first, m_start, m_stop = merged[-1]
            merged[-1] = (min(first, index), m_start, max(m_stop, stop))
        else:
            merged.append((index, start, stop))
    merged.sort()
    return [(start, stop) for _, start, stop in merged]


# --- preconditions --------------------------------------------------------------


def _if_range_allows(value: str, etag: str, last_modified: int | None) -> bool:
    """§13.1.5: a strong ETag match, or a date equal to Last-Modified."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return strong_match(value, etag)
    date = parse_http_date(value)
    return date is not None and last_modified is not None and date == last_modified


def evaluate(
    method: str,
    headers: Mapping[str, str],
    size: int,
    etag: str,
    last_modified: int | None,
    max_ranges: int = 16,
) -> Decision:
    """Decide the response to ``method`` on a file that exists (RFC 9110 §13.2.2).

    ``headers`` is any mapping of request headers (names in any case);
    ``last_modified`` is whole seconds since the epoch, as Last-Modified shows it.
    """
    h = {name.lower(): value for name, value in headers.items()}
    safe = method in ("GET", "HEAD")

    # 1. If-Match, else 2. If-Unmodified-Since → 412.
    if "if-match" in h:
        tags = parse_etags(h["if-match"]) or []
        if not any(tag == "*" or strong_match(tag, etag) for tag in tags):
            return Decision(412)
    elif "if-unmodified-since" in h and last_modified is not None:
        date = parse_http_date(h["if-unmodified-since"])
        if date is not None and last_modified > date:
            return Decision(412)

    # 3. If-None-Match, else 4. If-Modified-Since → 304 (GET/HEAD).
    if "if-none-match" in h:
        tags = parse_etags(h["if-none-match"]) or []
        if any(tag == "*" or weak_match(tag, etag) for tag in tags):
            return Decision(304 if safe else 412)
    elif safe and "if-modified-since" in h and last_modified is not None:
        date = parse_http_date(h["if-modified-since"])
        if date is not None and last_modified <= date:
            return Decision(304)

    # 5. Range, guarded by If-Range. RFC 9110 defines ranges for GET only; HEAD
    # mirrors GET here (§9.3.2 "same header fields"), as nginx and Starlette do.
    header = h.get("range")
    if not safe or header is None:
        return Decision(200)
    if "if-range" in h and not _if_range_allows(h["if-range"], etag, last_modified):
        return Decision(200)
    try:
        ranges = parse_ranges(header, size, max_ranges)
    except RangeNotSatisfiable:
        # A zero-length file has no byte to point at: §14.1.3 calls a non-zero
        # suffix satisfiable there, and the only sensible answer is the empty 200.
        if size == 0 and _has_nonzero_suffix(header):
            return Decision(200)
        return Decision(416)
    if ranges is None:
        return Decision(200)
    return Decision(206, tuple(coalesce(ranges)))


def _has_nonzero_suffix(header: str) -> bool:
    _, _, range_set = header.partition("=")
    for raw in range_set.split(","):
        spec = raw.strip(" \t")
        if spec.startswith("-") and (_number(spec[1:]) or 0) > 0:
            return True
    return False


# --- response framing -----------------------------------------------------------


def content_range(start: int, stop: int, size: int) -> str:
    """``bytes first-last/size`` for the half-open range ``[start, stop)``."""
    return f"bytes {start}-{stop - 1}/{size}"


def unsatisfied_range(size: int) -> str:
    """The Content-Range of a 416."""
    return f"bytes */{size}"


def new_boundary() -> str:
    """An unguessable boundary, so file bytes cannot forge a part delimiter."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class MultipartPlan:
    """The exact bytes around each part of a ``multipart/byteranges`` body.

    The body is, for each ``(head, start, stop)`` in ``parts``: ``head`` then the
    file's bytes ``[start, stop)``; then ``tail``. ``content_length`` is exact.
    """

    boundary: str
    parts: tuple[tuple[bytes, int, int], ...]
    tail: bytes

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return sum(len(head) + stop - start for head, start, stop in self.parts) + len(self.tail)


def plan_multipart(
    ranges: Iterable[ByteRange], size: int, content_type: str, boundary: str | None = None
) -> MultipartPlan:
    """Frame ranges as RFC 9110 §14.6 ``multipart/byteranges`` (CRLF line ends).

    Each part: ``--B CRLF Content-Type CRLF Content-Range CRLF CRLF data``; the
    CRLF before each following delimiter belongs to that delimiter (RFC 2046).
    """
    boundary = boundary or new_boundary()
    parts = []
    for index, (start, stop) in enumerate(ranges):
        head = (
            ("\r\n" if index else "")
            + f"--{boundary}\r\n"
            + f"Content-Type: {content_type}\r\n"
            + f"Content-Range: {content_range(start, stop, size)}\r\n\r\n"
        ).encode("latin-1")
        parts.append((head, start, stop))
    tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
    return MultipartPlan(boundary, tuple(parts), tail)
