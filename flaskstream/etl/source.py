"""The bytes stage of the ETL pipeline: read, gunzip (bounded), resume.

Pure: no Flask, no database driver. Re-exported by ``pipeline`` (its first stages).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from flaskstream.etl.bounds import Bounds, InflateGuard, InputError

CHUNK_SIZE = 1 << 20  # source read size
GZIP_MAGIC = b"\x1f\x8b"

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


def gunzip_if_needed(chunks: Iterable[bytes], chunk_size: int = CHUNK_SIZE,
                     bounds: Bounds | None = None) -> Iterator[bytes]:
    """Pass bytes through, or decompress them when they start with the gzip magic.

    Concatenated gzip members (``cat a.gz b.gz``) are decoded one after the
    other; output is produced ``chunk_size`` at a time so a gzip bomb cannot
    inflate in memory, and ``bounds`` caps the total and the ratio (413).
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
    guard = InflateGuard(bounds)
    try:
        for data in itertools.chain((head,), it):
            guard.took(data)
            while data:
                started = True
                out = decomp.decompress(data, chunk_size)
                if out:
                    guard.gave(out)
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
