"""Reading objects of the S3 backend: one ranged GET per range, streamed through in chunks.

Split from ``s3.py`` (the backend and its writes). An object's key is an upload
id and is never rewritten, yet every GET carries ``If-Match`` with the ETag the
response's validators came from: if the object were replaced mid-stream, the
client gets a broken connection, never bytes of two versions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flaskstream.storage.base import ByteRange, ObjectInfo, StorageUnavailable


def remote_errors() -> tuple[type[BaseException], ...]:
    """botocore's base errors: the service answered with an error, or could not be reached."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


class ObjectShrunk(RuntimeError):
    """A ranged GET returned fewer bytes than asked for: a broken connection beats a
    short body (not an OSError, which gunicorn would take for a client socket error)."""


class S3Object:
    """An object opened for reading (``base.StoredObject``): one HEAD, then ranged GETs."""

    def __init__(self, storage: Any, key: str, info: ObjectInfo) -> None:
        # ``storage`` is the ``s3.S3Storage`` (not imported: s3.py imports this module)
        self.storage = storage
        self.key = key
        self.info = info
        self._stream: Any | None = None

    def body(self, pieces: list[bytes | ByteRange], chunk_size: int) -> S3Body:
        return S3Body(self, pieces, chunk_size)

    def read_range(self, start: int, stop: int, chunk_size: int) -> Iterator[bytes]:
        """``[start, stop)`` as one ranged GET, streamed through in chunks."""
        answer = self.storage.call("get_object", Key=self.storage.object_key(self.key),
                                   Range=f"bytes={start}-{stop - 1}", IfMatch=self.info.etag)
        self._stream = answer["Body"]
        offset = start
        try:
            for chunk in self._stream.iter_chunks(chunk_size):
                offset += len(chunk)
                yield chunk
        except remote_errors() as exc:
            raise StorageUnavailable("object storage: reading failed") from exc
        finally:
            self.close()
        if offset < stop:
            raise ObjectShrunk(f"object ended at {offset}, {stop - offset} bytes short")

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


class S3Body:
    """The WSGI body of an object response; ``close()`` (gunicorn calls it even when
    iteration never started) closes the GET in progress."""

    def __init__(self, stored: S3Object, pieces: list[bytes | ByteRange], chunk_size: int) -> None:
        self.stored = stored
        self.pieces = pieces
        self.chunk_size = max(4096, chunk_size)

    def __iter__(self) -> Iterator[bytes]:
        try:
            for piece in self.pieces:
                if isinstance(piece, bytes):
                    yield piece
                else:
                    yield from self.stored.read_range(piece[0], piece[1], self.chunk_size)
        finally:
            self.close()

    def close(self) -> None:
        self.stored.close()
