"""The body of a media response: byte ranges of an open descriptor, read with
``os.pread`` at absolute offsets — no Flask here, only I/O.

Under gunicorn's gevent worker a read that has to wait for the disk would stop
the whole event loop (every other stream of the worker with it). So when the
process is gevent-patched, each chunk's last byte is first probed with
``RWF_NOWAIT`` (answered from the page cache or not at all, never blocking); a
chunk that is not cached is read in gevent's thread pool while the loop keeps
serving. Cached chunks — the common case — cost one extra one-byte syscall.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from flaskstream import metrics

ByteRange = tuple[int, int]
Offload = Callable[[Callable[..., bytes], tuple[Any, ...]], bytes]
MIN_CHUNK = 4096


class FileShrunk(RuntimeError):
    """The file got shorter mid-stream: better a broken connection than a short body.

    Raised from the body after the headers went out, so gunicorn logs it and
    shuts the socket down; the client sees fewer bytes than Content-Length.
    (Not an OSError: gunicorn would take that for a client socket error.)
    """


def gevent_offload() -> Offload | None:
    """gevent's ``threadpool.apply`` when this process is monkey-patched
    (gunicorn's gevent worker), else None: plain threads may simply block."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket") or not hasattr(os, "RWF_NOWAIT"):
        return None
    import gevent

    return gevent.get_hub().threadpool.apply


_PROBE = [bytearray(1)]  # the probe's byte is discarded; sharing it is harmless


def read_chunk(fd: int, offset: int, length: int, offload: Offload | None) -> bytes:
    """Up to ``length`` bytes at ``offset``; b"" only at end of file.

    With ``offload``, a one-byte ``RWF_NOWAIT`` probe of the chunk's last
    byte asks the page cache first: cached → ``pread`` here (readahead fills
    files forwards, so a cached last byte means a cached chunk in practice);
    not cached → the ``pread`` runs in the pool. Reading the whole chunk
    with ``RWF_NOWAIT`` instead would cost a second copy of every chunk. A
    filesystem without ``RWF_NOWAIT`` gets plain reads.
    """
    if offload is not None:
        try:
            os.preadv(fd, _PROBE, offset + length - 1, os.RWF_NOWAIT)
        except BlockingIOError:  # would wait for the disk: do it off the loop
            return offload(os.pread, (fd, length, offset))
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
    return os.pread(fd, length, offset)


class PreadStream:
    """A WSGI body that streams byte ranges of an open descriptor.

    ``pieces`` are literal bytes (multipart framing) or ``(start, stop)`` ranges.
    It owns ``fd`` from the ``fstat`` snapshot to the last byte and closes it in
    ``close()`` — which gunicorn calls after the last byte, on a client abort
    and even when iteration never started (a plain generator's ``finally``
    would not run then, and ``direct_passthrough`` bypasses ``call_on_close``).
    With ``offload`` (see ``gevent_offload``), reads that would wait for the
    disk run there instead of blocking the caller. ``release`` replaces the
    ``os.close`` when the descriptor is shared (the open-file cache's).
    """

    def __init__(self, fd: int, pieces: list[bytes | ByteRange], chunk_size: int,
                 offload: Offload | None = None,
                 release: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self.release = release
        self.pieces = pieces
        self.chunk_size = max(MIN_CHUNK, chunk_size)
        self.offload = offload

    def __iter__(self) -> Iterator[bytes]:
        try:
            for piece in self.pieces:
                if isinstance(piece, bytes):
                    yield piece
                    continue
                offset, stop = piece
                while offset < stop:
                    if self.fd < 0:
                        return
                    data = self.read(offset, min(self.chunk_size, stop - offset))
                    if not data:
                        raise FileShrunk(f"file ended at {offset}, {stop - offset} bytes short")
                    offset += len(data)
                    metrics.MEDIA_BYTES.inc(len(data))
                    yield data
        finally:
            self.close()

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; b"" only at end of file (``read_chunk``)."""
        return read_chunk(self.fd, offset, length, self.offload)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            if self.release is None:
                os.close(fd)
            else:
                self.release()
