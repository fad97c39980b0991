"""Pure generator stages of the ETL pipeline: bytes in, COPY text batches out.

Each stage is a small generator over the previous one, testable alone, and the
composition reads top to bottom (``tables.csv_copy_blocks``)::

    read_chunks → gunzip_if_needed → decode → read_records → (take_header)
                → validate (tables.py) → batch → sink (sink.py)

No Flask and no database driver here: the sink and the views are the loops
around it. Two choices make it fast in pure Python:

* records travel in **blocks** (a few thousand rows), not one at a time, so the
  per-row work happens inside C loops (``csv.reader``, ``map``, ``zip``,
  ``str.join``) and Python runs once per block;
* text is decoded with ``surrogateescape``: an undecodable byte becomes a lone
  surrogate that the validator turns into a reject for that one row (and the
  rejects file writes the original bytes back), instead of a crash.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flaskstream.etl.bounds import (
    NARROW,
    Bounds,
    InputError,
    InputTooLarge,
    WideRecord,
    check_line,
    line_count,
    text_codec,
    wide_record,
)
from flaskstream.etl.source import (
    CHUNK_SIZE,
    GZIP_MAGIC,
    Progress,
    gunzip_if_needed,
    read_chunks,
    resume_chunks,
)

__all__ = [  # the bytes stages live in source.py; importers find every stage here
    "CHUNK_SIZE", "GZIP_MAGIC", "Batch", "Bounds", "CopyBlock", "InputError", "InputTooLarge",
    "Position", "Progress", "Reject", "RecordBlock", "codec_name", "csv_text", "decode",
    "fill_batch", "gunzip_if_needed", "read_chunks", "read_records", "resume_chunks",
    "take_header",
]

COPY_CHUNK_SIZE = 256 << 10  # target COPY message size
BLOCK_ROWS = 4096  # records per block between stages
DEFAULT_FIELD_SIZE_LIMIT = 1 << 20  # csv's own default is 128 KiB




@dataclass(frozen=True)
class Reject:
    """A row that will not be loaded: where it was, why, and what it said."""

    line: int
    reason: str
    text: str  # the record as CSV (surrogate-escaped bytes where undecodable)


@dataclass
class RecordBlock:
    records: list[list[str]]
    lines: list[int]  # physical line on which each record starts (1-based)
    rejects: list[Reject] = field(default_factory=list)  # records csv could not parse
    end_line: int = 0  # last physical line the block consumed
    position: Position | None = None


@dataclass
class Batch:
    """One bounded COPY: the ``chunks`` of COPY text sent (one row per line), the
    source line of every row, and the rows rejected before the database saw them."""

    chunks: list[bytes] = field(default_factory=list)
    lines: array = field(default_factory=lambda: array("q"))
    rejects: list[Reject] = field(default_factory=list)
    end_line: int = 0  # last physical line consumed when the batch was closed
    position: Position | None = None
    exhausted: bool = False  # no input left after this batch

    @property
    def rows(self) -> int:
        return len(self.lines)


# --- text ---------------------------------------------------------------------


def _has_undecodable(text: str) -> bool:
    if "\x00" in text:
        return True
    if text.isascii():  # O(1) in CPython
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def codec_name(encoding: str) -> str:
    """Python's canonical name for a text ``encoding``; ``InputError`` if unknown or not text."""
    return text_codec(encoding)


def decode(chunks: Iterable[bytes], encoding: str = "utf-8", progress: Progress | None = None,
           max_line: int | None = 64 * CHUNK_SIZE) -> Iterator[str]:
    """Decode bytes to text pieces that end on a line boundary.

    UTF-8 input has its byte order mark stripped. Undecodable bytes become
    lone surrogates (``surrogateescape``) and set ``progress.dirty`` so that the
    validator rejects the rows holding them. A "line" longer than ``max_line``
    with no line break at all is refused as a whole (it is not a CSV).
    """
    name = codec_name(encoding)
    name = "utf-8-sig" if name == "utf-8" else name
    decoder = codecs.getincrementaldecoder(name)(errors="surrogateescape")
    carry = ""
    final = False
    first = True
    it = iter(chunks)
    while not final:
        chunk = next(it, None)
        final = chunk is None
        if first and chunk:
            first = False
            if name == "utf-8-sig" and chunk.startswith(codecs.BOM_UTF8) and progress is not None:
                progress.bom_bytes = len(codecs.BOM_UTF8)
        if progress is not None and chunk:
            progress.bytes_decoded += len(chunk)
        text = carry + decoder.decode(chunk or b"", final=final)
        if progress is not None and not progress.dirty and _has_undecodable(text):
            progress.dirty = True
        if final:
            if text:
                yield text
            return
        cut = text.rfind("\n") + 1
        if cut == 0:
            # Old-Mac files end lines with a lone CR; never cut between CR and LF.
            cut = text.rfind("\r", 0, len(text) - 1) + 1
        if cut == 0:
            if max_line is not None and len(text) > max_line:
                raise InputTooLarge("LIMIT_LINE_BYTES",
                                    f"a line is longer than {max_line} characters")
            carry = text
            continue
        carry = text[cut:]
        yield text[:cut]


# --- records ------------------------------------------------------------------


def _record_lines(record: list[str] | WideRecord) -> int:
    """Physical lines a parsed record spans (1 + line breaks inside quoted fields)."""
    if isinstance(record, WideRecord):
        return record.lines
    n = 1
    for value in record:
        if "\n" in value or "\r" in value:
            n += value.count("\n") + value.count("\r") - value.count("\r\n")
    return n


def csv_text(record: Iterable[str]) -> str:
    """One record as a CSV line without terminator (how rejects quote the original)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(record)  # quotes fields with CR/LF
    return out.getvalue()[:-2]


@dataclass(frozen=True)
class Position:
    """Where a block ended in the decoded byte stream; the offset is computed
    only when asked (checkpoints), because it re-encodes part of a chunk."""

    done: int  # bytes of the texts fully consumed before ``text``
    text: str
    chars: int  # characters of ``text`` consumed
    encoding: str = "utf-8"

    @property
    def offset(self) -> int:
        head = self.text[:self.chars]
        if head.isascii() and self.encoding in _ASCII_COMPATIBLE:
            return self.done + len(head)
        return self.done + len(head.encode(self.encoding, "surrogateescape"))


_ASCII_COMPATIBLE = {"utf-8", "latin-1", "iso8859-1", "cp1252", "ascii", "iso8859-15"}


def read_records(texts: Iterable[str], *, block_rows: int = BLOCK_ROWS,
                 field_size_limit: int = DEFAULT_FIELD_SIZE_LIMIT,
                 dialect: str | type[csv.Dialect] = "excel", encoding: str = "utf-8",
                 base_offset: int = 0, line_base: int = 0,
                 bounds: Bounds | None = None) -> Iterator[RecordBlock]:
    """Parse text into blocks of records with the line each record starts on.

    ``csv.reader`` runs over ``StringIO(newline='')`` pieces, so quoted CR/LF
    are kept as written. Line numbers are arithmetic while no record spans
    lines (the common case, checked once per block) and counted otherwise.
    A record ``csv`` refuses (an oversized field) becomes a reject. Each block
    knows its end ``Position`` (for resumable checkpoints).
    """
    if csv.field_size_limit() != field_size_limit:
        csv.field_size_limit(field_size_limit)  # process-wide in the csv module
    encoding = codec_name(encoding)
    bounds = bounds or Bounds()
    feed = _TextFeed(texts, base_offset, encoding, bounds)
    reader = csv.reader(itertools.chain.from_iterable(feed.sources()), dialect)
    end = 0  # reader line on which the previous block ended (file line = + line_base)
    while True:
        records: list = []
        rejects: list[Reject] = []
        error: csv.Error | None = None
        try:
            _fill_block(reader, feed, records, block_rows, bounds)
        except csv.Error as exc:  # records read before the error stay in the list
            error = exc
        if not records and error is None:
            return
        first = line_base + end + 1
        if error is None and reader.line_num - end == len(records):
            lines = list(range(first, first + len(records)))
        else:
            lines, pos = [], first
            for record in records:
                lines.append(pos)
                pos += _record_lines(record)
            if error is not None:
                rejects.append(Reject(pos, f"malformed CSV: {error}", ""))
        if swap_wide(records, bounds.max_fields) or feed.wide:
            _reject_wide(records, lines, rejects, bounds)
        end = reader.line_num
        sio = feed.sio
        where = Position(feed.done, feed.text, sio.tell() if sio else 0, encoding)
        yield RecordBlock(records, lines, rejects, line_base + end, where)


class _TextFeed:
    """The decoded pieces as ``StringIO``s for ``csv.reader``, and where it is in them.

    Knows the piece being read, the reader line at which it ends and whether it
    holds a line over ``bounds.NARROW`` (then records are read one at a time).
    """

    def __init__(self, texts: Iterable[str], base_offset: int, encoding: str,
                 bounds: Bounds) -> None:
        self.texts, self.encoding, self.bounds = texts, encoding, bounds
        self.done = base_offset  # bytes of the pieces before ``text``
        self.text = ""
        self.sio: io.StringIO | None = None
        self.chars = 0  # characters of the pieces before ``text``
        self.end_line = 0  # reader line_num once ``text`` is read
        self.has_wide_line = False
        self.wide = False  # _fill_block swapped a record of a wide piece in this block

    def sources(self) -> Iterator[io.StringIO]:
        for text in self.texts:
            if self.sio is not None:
                self.done = Position(self.done, self.text, len(self.text), self.encoding).offset
                self.chars += len(self.text)
            self.has_wide_line = check_line(text, self.bounds)
            self.end_line += line_count(text)
            self.text, self.sio = text, io.StringIO(text, newline="")
            yield self.sio

    def position(self) -> int:
        return self.chars + (self.sio.tell() if self.sio else 0)


def _fill_block(reader: Any, feed: _TextFeed, records: list,
                block_rows: int, bounds: Bounds) -> None:
    """Read up to ``block_rows`` records or about ``bounds.block_chars`` characters.

    Records come in steps (``list.extend(islice(...))``: the parsing stays in C,
    and the records read before a ``csv.Error`` stay in the list) sized so that
    a step cannot leave the current piece of text on single-line records nor
    read more than the block's character budget. With a line over ``NARROW``
    in the piece, one record per step, swapped for a ``WideRecord`` at once if
    it is over ``max_fields``; narrow records are at most ``NARROW`` characters,
    so checking them once per block (``swap_wide``) is enough.
    """
    feed.wide = False
    start = feed.position()
    max_fields = bounds.max_fields
    while len(records) < block_rows:
        used = feed.position() - start
        if used >= bounds.block_chars:
            return
        before = len(records)
        wide_piece = feed.has_wide_line
        step = 1 if wide_piece else max(1, min(
            block_rows - before, feed.end_line - reader.line_num,
            (bounds.block_chars - used) // NARROW))
        records.extend(itertools.islice(reader, step))
        got = len(records) - before
        if wide_piece and got and max_fields is not None and len(records[-1]) > max_fields:
            records[-1] = wide_record(records[-1])
            feed.wide = True
        if got < step:
            return


def swap_wide(records: list, max_fields: int | None) -> bool:
    """Replace records over ``max_fields`` by ``WideRecord``s; were there any?"""
    if max_fields is None or not records or max(map(len, records)) <= max_fields:
        return False
    records[:] = [wide_record(r) if len(r) > max_fields else r for r in records]
    return True


def _reject_wide(records: list, lines: list[int], rejects: list[Reject],
                 bounds: Bounds) -> None:
    """Move the ``WideRecord`` stand-ins of a block to its rejects."""
    keep = [i for i, r in enumerate(records) if not isinstance(r, WideRecord)]
    for i, record in enumerate(records):
        if isinstance(record, WideRecord):
            rejects.append(Reject(lines[i], f"{record.fields} fields, more than "
                                  f"{bounds.max_fields} (ETL_MAX_FIELDS)", record.text))
    records[:] = [records[i] for i in keep]
    lines[:] = [lines[i] for i in keep]


def take_header(blocks: Iterable[RecordBlock]) -> tuple[list[str] | None, Iterator[RecordBlock]]:
    """Split off the first non-blank record (the header); None for empty input."""
    it = iter(blocks)
    for block in it:
        for i, record in enumerate(block.records):
            if record:
                rest = RecordBlock(block.records[i + 1:], block.lines[i + 1:], block.rejects,
                                  block.end_line, block.position)
                return record, itertools.chain((rest,), it)
    return None, iter(())


# --- batches ------------------------------------------------------------------


@dataclass
class CopyBlock:
    """Validated rows as COPY text (one row per line) plus the rows refused."""

    text: str
    lines: list[int]
    rejects: list[Reject]
    end_line: int = 0
    position: Position | None = None


def fill_batch(blocks: Iterator[CopyBlock], out: Batch, batch_rows: int = 250_000,
               chunk_size: int = COPY_CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the COPY chunks of one batch, recording them in ``out`` as they go.

    Lazy on purpose: the next block is parsed only after the previous chunk went
    to the socket, so Python parses while the server inserts. pg8000 sends each
    item as one CopyData message: 256 KiB keeps the server fed at the start of a
    batch (1 MiB was ~4% slower, 4 MiB ~30%). Whenever this generator is suspended at a
    ``yield``, every row recorded in ``out`` has been yielded.
    """
    pending: list[str] = []
    pending_len = 0
    for block in blocks:
        out.rejects.extend(block.rejects)
        out.end_line = block.end_line or out.end_line
        out.position = block.position or out.position
        if block.text:
            pending.append(block.text)
            pending_len += len(block.text)
            out.lines.extend(block.lines)
        if pending_len >= chunk_size:
            data = "".join(pending).encode("utf-8")
            pending, pending_len = [], 0
            out.chunks.append(data)
            yield data
        if len(out.lines) >= batch_rows:
            break
    else:
        out.exhausted = True
    if pending:
        data = "".join(pending).encode("utf-8")
        out.chunks.append(data)
        yield data

