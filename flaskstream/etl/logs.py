"""The log pipeline: web server access logs (Combined Log Format) → ``requests``.

The same stages as the CSV load with the parser swapped: bytes → decode →
``parse_log_lines`` (a regex instead of ``csv``) → validate → batch → COPY. An
unparsable line is a reject with its line number, like a bad CSV row.

Validation is the ``requests`` preset's, as ``etl load --table requests`` does
it: the catalog's ``requests`` table with ``presets.REQUESTS``' rules
(``targets.load_target``), judged by ``anytable.TableCsv.encode_records``, so
the table's rules are declared once (and ``time`` is checked as a timestamptz
in the core, not first by the server).

    127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 "http://x/" "Mozilla/4.08"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from flaskstream.etl.anytable import TableCsv
from flaskstream.etl.pipeline import (
    BLOCK_ROWS,
    CopyBlock,
    Position,
    Progress,
    RecordBlock,
    Reject,
    decode,
    gunzip_if_needed,
)

LINE_RE = re.compile(
    r'(?P<addr>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] '
    r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+|-)'
    r'(?: "(?P<referrer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?\s*')
TIME_RE = re.compile(r"(\d{2})/(\w{3})/(\d{4}):(\d{2}:\d{2}:\d{2}) ([+-]\d{2})(\d{2})")
MONTHS = {m: f"{i:02d}" for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# What ``parse_line`` returns, in order: columns of the ``requests`` table.
FIELDS = ("time", "remote_addr", "method", "path", "protocol", "status", "bytes", "referrer",
          "agent")


def iso_time(clf: str) -> str | None:
    """``10/Oct/2000:13:55:36 -0700`` → ``2000-10-10T13:55:36-07:00`` (None if not CLF)."""
    m = TIME_RE.fullmatch(clf)
    if not m or m.group(2) not in MONTHS:
        return None
    day, month, year, clock, tz_h, tz_m = m.groups()
    return f"{year}-{MONTHS[month]}-{day}T{clock}{tz_h}:{tz_m}"


def parse_line(line: str) -> list[str] | str:
    """One log line → the ``requests`` fields in table order, or a reject reason."""
    m = LINE_RE.fullmatch(line)
    if m is None:
        return "not a Combined/Common Log Format line"
    when = iso_time(m["time"])
    if when is None:
        return f"bad timestamp: {m['time'][:40]!r}"
    parts = m["request"].split(" ")
    if len(parts) == 3:
        method, path, protocol = parts
    elif len(parts) == 2:
        (method, path), protocol = parts, ""
    else:
        return f"bad request line: {m['request'][:60]!r}"
    size = m["bytes"]
    return [when, m["addr"], method, path, protocol, m["status"], "" if size == "-" else size,
            "" if m["referrer"] in (None, "-") else m["referrer"], m["agent"] or ""]


def parse_log_lines(texts: Iterable[str], block_rows: int = BLOCK_ROWS) -> Iterator[RecordBlock]:
    """Text → blocks of ``requests`` records; unparsable lines become rejects."""
    line_no = 0
    done = 0
    for text in texts:
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        for start in range(0, len(lines), block_rows):
            records, numbers, rejects = [], [], []
            for raw in lines[start:start + block_rows]:
                line_no += 1
                raw = raw.removesuffix("\r")
                if not raw.strip():
                    continue
                parsed = parse_line(raw)
                if isinstance(parsed, str):
                    rejects.append(Reject(line_no, parsed, raw))
                else:
                    records.append(parsed)
                    numbers.append(line_no)
            yield RecordBlock(records, numbers, rejects, line_no, Position(done, text, len(text)))
        done = Position(done, text, len(text)).offset


def log_copy_blocks(chunks: Iterable[bytes], table: TableCsv, *, encoding: str = "utf-8",
                    progress: Progress | None = None, **_: object) -> Iterator[CopyBlock]:
    """Access-log bytes → COPY text blocks for ``table`` (the ``requests`` preset,
    from ``targets.load_target``); the parser ``jobs.run_load`` drives for ``etl logs``."""
    progress = progress if progress is not None else Progress()
    texts = decode(gunzip_if_needed(chunks), encoding, progress)
    return table.encode_records(parse_log_lines(texts), FIELDS, progress)
