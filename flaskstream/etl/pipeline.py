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
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

CHUNK_SIZE = 1 << 20  # source read size
COPY_CHUNK_SIZE = 256 << 10  # target COPY message size
BLOCK_ROWS = 4096  # records per block between stages
GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_FIELD_SIZE_LIMIT = 1 << 20  # csv's own default is 128 KiB


@dataclass
class Progress:
    """Counters the stages update as they go; read by progress bars and events."""

    bytes_read: int = 0  # raw bytes taken from the source (compressed, if gzip)
    bytes_decoded: int = 0  # bytes handed to the text decoder (after gunzip)
    rows_read: int = 0  # data records seen (header and blank lines excluded)
    rows_loaded: int = 0
    rows_rejected: int = 0
    dirty: bool = False  # an undecodable byte or a NUL has been seen: check rows
    bom_bytes: int = 0  # length of the byte order mark the decoder dropped


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


def resume_chunks(chunks: Iterable[bytes], offset: int) -> Iterator[bytes]:
    """The header line, then the (decompressed) input from byte ``offset`` on.

    Resuming a load from a checkpoint: the header still maps the columns and
    everything before ``offset`` (already committed) is skipped. The header
    must fit on one physical line.
    """
    it = iter(gunzip_if_needed(chunks))
    buf = b""
    for chunk in it:
        buf += chunk
        if b"\n" in buf:
            break
    header_end = buf.find(b"\n") + 1
    if header_end == 0 or offset < header_end:
        raise InputError("cannot resume: no header line before the checkpoint")
    yield buf[:header_end]
    if offset < len(buf):
        yield buf[offset:]
    pos = len(buf)
    for chunk in it:
        if pos + len(chunk) > offset:
            yield chunk[max(0, offset - pos):]
        pos += len(chunk)
    if pos < offset:
        raise InputError(f"cannot resume: input is shorter than the checkpoint ({offset} bytes)")


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


class InputError(Exception):
    """Bad input as a whole (not one row): reported as a clear message, no traceback."""


# --- bytes --------------------------------------------------------------------


def read_chunks(source: IO[bytes], progress: Progress | None = None,
                chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Read a binary file object (file, stdin, request stream) in large chunks."""
    while True:
        chunk = source.read(chunk_size)
        if not chunk:
            return
        if progress is not None:
            progress.bytes_read += len(chunk)
        yield chunk


def gunzip_if_needed(chunks: Iterable[bytes], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Pass bytes through, or decompress them when they start with the gzip magic.

    Concatenated gzip members (``cat a.gz b.gz``) are decoded one after the
    other; output is produced ``chunk_size`` at a time so a gzip bomb cannot
    inflate in memory.
    """
    it = iter(chunks)
    head = b""
    for chunk in it:
        head += chunk
        if len(head) >= 2:
            break
    if not head:
        return
    if not head.startswith(GZIP_MAGIC):
        yield head
        yield from it
        return
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False  # the current member has been fed bytes
    try:
        for data in itertools.chain((head,), it):
            while data:
                started = True
                out = decomp.decompress(data, chunk_size)
                if out:
                    yield out
                if decomp.eof:
                    data = decomp.unused_data
                    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    started = False
                    if data and not GZIP_MAGIC.startswith(data[:2]):
                        raise InputError("trailing garbage after gzip data")
                else:
                    data = decomp.unconsumed_tail
        tail = decomp.flush()
    except zlib.error as exc:
        raise InputError(f"corrupt gzip input: {exc}") from None
    if tail:
        yield tail
    if started and not decomp.eof:
        raise InputError("truncated gzip input")


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
    """Python's canonical name for ``encoding``; ``InputError`` if unknown."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"unknown encoding: {encoding}") from None


def decode(chunks: Iterable[bytes], encoding: str = "utf-8", progress: Progress | None = None,
           max_line: int = 64 * CHUNK_SIZE) -> Iterator[str]:
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
            if len(text) > max_line:
                raise InputError(f"no line break within {max_line} characters")
            carry = text
            continue
        carry = text[cut:]
        yield text[:cut]


# --- records ------------------------------------------------------------------


def _record_lines(record: list[str]) -> int:
    """Physical lines a parsed record spans (1 + line breaks inside quoted fields)."""
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
                 base_offset: int = 0, line_base: int = 0) -> Iterator[RecordBlock]:
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
    state: list = [base_offset, "", None]  # bytes done, current text, its StringIO

    def sources() -> Iterator[io.StringIO]:
        for text in texts:
            if state[2] is not None:
                state[0] = Position(state[0], state[1], len(state[1]), encoding).offset
            state[1], state[2] = text, io.StringIO(text, newline="")
            yield state[2]

    reader = csv.reader(itertools.chain.from_iterable(sources()), dialect)
    end = 0  # reader line on which the previous block ended (file line = + line_base)
    while True:
        records: list[list[str]] = []
        rejects: list[Reject] = []
        error: csv.Error | None = None
        try:
            records.extend(itertools.islice(reader, block_rows))
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
        end = reader.line_num
        where = Position(state[0], state[1], state[2].tell() if state[2] else 0, encoding)
        yield RecordBlock(records, lines, rejects, line_base + end, where)


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

