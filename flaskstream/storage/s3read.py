"""Reading objects of the S3 backend: one ranged GET per range, streamed through in chunks.

Split from ``s3.py`` (the backend and its writes). An object's key is an upload
id and is never rewritten, yet every GET carries ``If-Match`` with the ETag the
response's validators came from: if the object were replaced mid-stream, the
client gets a broken connection, never bytes of two versions.

Why the GET is not ``client.get_object``: measured in the gevent worker
(``bench/storage.py``, 64 KiB ranges), botocore spent ~2.5 ms of CPU per call --
parameter validation, request serialisation, SigV4 over the headers, a dozen
event hooks, response parsing (dateutil for ``LastModified``) -- as much as the
rest of the request. ``SignedReads`` asks botocore for the signature once per
object and minute (``generate_presigned_url``: botocore's own signer, the same
credentials chain) and sends the ranged GETs on one keep-alive urllib3 pool
(botocore's own HTTP library), with urllib3's ``Retry`` for what botocore's
standard retry mode would retry before the first byte. A URL is used for at most
``SIGNED_URL_TTL`` (60 s) after it was signed and is valid for 15 min: botocore
refreshes temporary credentials 10-15 min before they expire, so a cached URL
never outlives the credentials that signed it (revoked credentials fail a fresh
signature just the same).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from flaskstream.storage.base import ByteRange, ObjectInfo, StorageUnavailable

SIGNED_URL_TTL = 60.0  # seconds a signed GET URL is reused (it is valid for SIGNED_URL_EXPIRES)
SIGNED_URL_EXPIRES = 900
SIGNED_URL_MAX = 4096
RETRY_STATUSES = frozenset({500, 502, 503, 504})


def remote_errors() -> tuple[type[BaseException], ...]:
    """botocore's base errors: the service answered with an error, or could not be reached."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def http_errors() -> tuple[type[BaseException], ...]:
    """What urllib3 raises when the endpoint cannot be reached or breaks off mid-answer."""
    from urllib3.exceptions import HTTPError

    return (HTTPError, OSError)


class SignedReads:
    """Ranged GETs by presigned URL on one urllib3 pool per process (see the module doc)."""

    def __init__(self, sign: Callable[[str], str], pool_size: int) -> None:
        self._sign = sign  # object key -> presigned GET URL (botocore)
        self._pool_size = pool_size
        self._pool: Any | None = None
        self._urls: dict[str, tuple[float, str]] = {}

    def _url(self, object_key: str) -> str:
        now = time.monotonic()
        cached = self._urls.get(object_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            url = self._sign(object_key)
        except remote_errors() as exc:  # e.g. no credentials at all
            raise StorageUnavailable("object storage: signing get_object failed") from exc
        if len(self._urls) >= SIGNED_URL_MAX:
            self._urls.clear()
        self._urls[object_key] = (now + SIGNED_URL_TTL, url)
        return url

    def http(self) -> Any:
        """The keep-alive pool, built on first use (after gunicorn forked the worker)."""
        if self._pool is None:
            import urllib3

            self._pool = urllib3.PoolManager(
                maxsize=self._pool_size, block=False,
                retries=urllib3.Retry(total=3, read=0, backoff_factor=0.05,
                                      status_forcelist=RETRY_STATUSES,
                                      allowed_methods={"GET"}, raise_on_status=False))
        return self._pool

    def get(self, object_key: str, start: int, stop: int, etag: str) -> Any:
        """The open urllib3 response of ``[start, stop)``; its body is not read yet."""
        headers = {"Range": f"bytes={start}-{stop - 1}", "If-Match": etag}
        try:
            answer = self.http().request("GET", self._url(object_key), headers=headers,
                                         preload_content=False, decode_content=False)
        except http_errors() as exc:
            raise StorageUnavailable("object storage: get_object failed") from exc
        if answer.status == 206 or (answer.status == 200 and start == 0
                                    and answer.headers.get("Content-Length") == str(stop)):
            return answer
        discard(answer)  # 404/412: gone or replaced since the HEAD; 403: refused
        raise StorageUnavailable(f"object storage: get_object answered {answer.status}")


def discard(answer: Any) -> None:
    """End a response that will not be read to its end: the connection is not reused."""
    answer.close()
    answer.release_conn()


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
        self._stream = self.storage.reads.get(self.storage.object_key(self.key), start, stop,
                                              self.info.etag)
        offset = start
        try:
            for chunk in self._stream.stream(chunk_size):
                offset += len(chunk)
                yield chunk
        except http_errors() as exc:
            raise StorageUnavailable("object storage: reading failed") from exc
        finally:
            self.close()
        if offset < stop:
            raise ObjectShrunk(f"object ended at {offset}, {stop - offset} bytes short")

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            if stream.isclosed():  # read to its end: urllib3 gave the connection back
                stream.release_conn()
            else:
                discard(stream)


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
