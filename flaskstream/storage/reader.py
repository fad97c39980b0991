"""A stored object as a binary file object, for code that reads a whole upload (ETL).

The ETL loader takes a file object (``TextIOWrapper(BufferedReader(...))``); a
local upload is simply ``open()``-ed, an object in a bucket is one GET streamed
through ``StoredObject.body`` in chunks — never the whole object in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO

from flaskstream.storage.base import Storage, StoredObject

CHUNK = 1 << 20


class ObjectReader(io.RawIOBase):
    """``readinto`` from a ``StoredObject``'s body, chunk by chunk; ``close`` ends the GET."""

    def __init__(self, stored: StoredObject, chunk_size: int = CHUNK) -> None:
        self.stored = stored
        self._body = stored.body([(0, stored.info.size)], chunk_size)
        self._chunks: Iterator[bytes] = iter(self._body)
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = memoryview(chunk)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            stop = getattr(self._chunks, "close", None)  # the body's generator: its finally
            if stop is not None:
                stop()
            closer = getattr(self._body, "close", None)
            (closer or self.stored.close)()
        super().close()


def open_stored(files: Storage, key: str) -> tuple[IO[bytes], int] | None:
    """The object ``key`` as (binary file object, size); None when it is not there."""
    path = files.local_path(key)
    if path is not None:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            return None
        return handle, path.stat().st_size
    stored = files.open(key)
    if stored is None:
        return None
    return io.BufferedReader(ObjectReader(stored), CHUNK), stored.info.size
