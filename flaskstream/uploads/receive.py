"""The read loops of the upload routes: request body → chunks → staging files.

Kept apart from the routes so that each step is testable: ``read_chunks`` is
the only place that touches the request body (idle timeout, disconnects),
``receive_multipart``/``receive_raw`` route chunks through the pure core
(``multipart.FormReader``) into ``storage.StagingFile`` objects, and
``Progress`` throttles the SSE progress events. Every function here cleans up
what it staged before it re-raises: the caller only ever holds complete,
verified staging files, which ``storage.commit_staged`` then moves into place.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from flaskstream import metrics
from flaskstream.adapters.gunicorn import DirectBody
from flaskstream.errorbase import FixedError
from flaskstream.state import ProcessState
from flaskstream.storage.base import StagedObject, Storage
from flaskstream.uploads import digest, multipart, storage

log = logging.getLogger(__name__)

DRAIN_MAX_BYTES = 1 << 20   # after a rejection, read at most this much more of the body
DRAIN_SECONDS = 2.0


BODY_UNREADABLE = "the request body ended early or could not be read"


class IdleTimeout(FixedError):
    """No byte of the body arrived within ``UPLOAD_IDLE_TIMEOUT`` seconds."""

    code, status = "UPLOAD_IDLE_TIMEOUT", 408

    def __init__(self, seconds: float | None = None) -> None:
        super().__init__(f"no data for {seconds:g} s" if seconds else "no data in time")


class ClientGone(FixedError):
    """Reading the body failed: the client disconnected or sent a broken chunked body."""

    code, status = "CLIENT_DISCONNECTED", 400


class TypeNotAllowed(FixedError):
    """A file's extension/content type is not in ``UPLOAD_ALLOWED_TYPES``."""

    code, status = "UPLOAD_TYPE_NOT_ALLOWED", 415


def _gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return False
    return bool(monkey.is_module_patched("socket"))


class ChunkBudget:
    """Context manager counting an upload in flight; ``size()`` is its current chunk size.

    The count is the app's (``state.uploads_in_flight``): the chunk size shrinks as
    uploads grow in number, so the worker's read buffers stay near
    UPLOAD_BUFFER_BUDGET however many there are.
    """

    def __init__(self, state: ProcessState, budget: int, maximum: int,
                 minimum: int = 64 * 1024) -> None:
        self.state = state
        self.budget, self.maximum, self.minimum = budget, maximum, min(minimum, maximum)

    def size(self) -> int:
        return max(self.minimum,
                   min(self.maximum, self.budget // max(self.state.uploads_in_flight, 1)))

    def __enter__(self) -> ChunkBudget:
        self.state.uploads_in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.uploads_in_flight -= 1


def read_chunks(stream: IO[bytes] | DirectBody, raw_input: Any, chunk_size: int | Callable[[], int],
                idle_timeout: float | None, expected: int | None = None) -> Iterator[bytes]:
    """Yield the body in chunks of up to ``chunk_size`` until EOF.

    The idle timeout bounds each read. Under gunicorn's gevent worker it is a
    ``gevent.Timeout`` around the read; the adapter's ``DirectBody`` returns as soon
    as any bytes arrive, so it means "no byte for that long". (gunicorn's own
    body reader, used for chunked bodies, blocks until a whole chunk or EOF, so
    there a read of up to ``UPLOAD_CHUNK_SIZE`` must complete in time.) Without
    gevent (tests, other servers) it is a ``select`` on the raw input's file
    descriptor when it has one.

    ``expected`` is the declared Content-Length: a body that ends before it is
    a disconnect (``ClientGone``), never a short success.
    """
    use_gevent = idle_timeout is not None and _gevent_active()
    fd: int | None = None
    if idle_timeout is not None and not use_gevent:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fd = raw_input.fileno()
    received = 0
    while True:
        size = chunk_size() if callable(chunk_size) else chunk_size
        try:
            if use_gevent:
                import gevent

                with gevent.Timeout(idle_timeout, IdleTimeout(idle_timeout)):
                    chunk = stream.read(size)
            else:
                if fd is not None:
                    ready, _, _ = select.select([fd], [], [], idle_timeout)
                    if not ready:
                        raise IdleTimeout(idle_timeout)
                chunk = stream.read(size)
        except IdleTimeout:
            raise
        except Exception as exc:  # werkzeug ClientDisconnected, gunicorn chunk errors, OSError
            raise ClientGone(BODY_UNREADABLE) from exc  # the server's reason stays in __cause__
        if not chunk:
            if expected is not None and received < expected:
                raise ClientGone(f"body ended after {received} of {expected} bytes")
            return
        received += len(chunk)
        yield chunk


def drain(chunks: Iterator[bytes], max_bytes: int = DRAIN_MAX_BYTES,
          seconds: float = DRAIN_SECONDS) -> bool:
    """Read and drop what is left of a rejected body, boundedly; True if it reached EOF.

    A client still sending when the error response goes out may see a reset
    instead of the response; a short drain avoids that for small overruns.
    """
    deadline = time.monotonic() + seconds
    read = 0
    try:
        for chunk in chunks:
            read += len(chunk)
            if read > max_bytes or time.monotonic() > deadline:
                return False
    except (IdleTimeout, ClientGone):
        return False
    return True


class Progress:
    """``progress`` events on SSE channel ``uploads.<id>``, at most every ``interval`` s.

    Publishing is best effort: a failing event bus must not fail the upload,
    so errors are logged once and progress is switched off.
    """

    def __init__(self, progress_id: str | None, total: int | None,
                 publish: Callable[..., Any] | None, interval: float = 0.25) -> None:
        self.channel = f"uploads.{progress_id}" if progress_id else None
        self.total = total
        self.publish = publish if self.channel else None
        self.interval = interval
        self.bytes = 0
        self.started = time.monotonic()
        self._last = 0.0

    def _send(self, event: str, data: Any) -> None:
        if self.publish is None or self.channel is None:
            return
        try:
            self.publish(self.channel, data, event)
        except Exception:  # noqa: BLE001 - progress must never break the upload
            log.warning("progress events on %s disabled", self.channel, exc_info=True)
            self.publish = None

    def advance(self, n: int) -> None:
        self.bytes += n
        now = time.monotonic()
        if self.publish is not None and now - self._last >= self.interval:
            self._last = now
            self._send("progress", {"bytes": self.bytes, "total": self.total})

    def done(self, files: list[dict[str, Any]]) -> None:
        self._send("progress", {"bytes": self.bytes, "total": self.total})
        self._send("done", {"bytes": self.bytes, "files": files})

    def error(self, code: str, message: str) -> None:
        metrics.UPLOAD_FAILURES.labels(code).inc()
        self._send("error", {"code": code, "message": message, "bytes": self.bytes})


Staged = storage.Staged


def receive_multipart(chunks: Iterator[bytes], boundary: bytes, limits: multipart.Limits,
                      files: Storage, allowed_types: list[str], progress: Progress,
                      ) -> tuple[Staged, dict[str, Any]]:
    """Stream a multipart body into staged objects; return them (unfinalized) and the fields.

    On any error every staging file of the request is discarded before the
    error propagates. A file part with a ``Content-Digest`` header is checked at its
    end against the SHA-256 computed on the way (400 ``DIGEST_MISMATCH``; malformed:
    400 ``BAD_DIGEST``), so a corrupted part stores nothing of the request.
    """
    reader = multipart.FormReader(boundary, limits)
    staged: Staged = []
    fields: dict[str, Any] = {}
    current: StagedObject | None = None
    start: multipart.FileStart | None = None
    expected: bytes | None = None
    try:
        for chunk in _with_end(_progressed(chunks, progress)):
            events = reader.feed(chunk)
            multipart.collect_fields(events, fields)
            for event in events:
                if isinstance(event, multipart.FileStart):
                    if not multipart.type_allowed(event.filename, event.content_type,
                                                  allowed_types):
                        raise TypeNotAllowed(f"{event.filename!r} ({event.content_type}) "
                                             "is not an allowed upload type")
                    start = event
                    expected = _part_digest(event)
                    current = files.stage()
                elif isinstance(event, multipart.FileData):
                    assert current is not None
                    current.write(event.data)
                elif isinstance(event, multipart.FileEnd):
                    assert current is not None and start is not None
                    if expected is not None and bytes.fromhex(current.sha256) != expected:
                        raise digest.DigestMismatch(f"file part {start.field!r} does not match "
                                                    "its Content-Digest; nothing was stored")
                    staged.append((current, storage.Upload(
                        current.key, start.filename, current.size,
                        current.sha256, start.content_type, start.field)))
                    current = None
        return staged, fields
    except BaseException:
        if current is not None:
            current.discard()
        for staging, _ in staged:
            staging.discard()
        raise


def _part_digest(start: multipart.FileStart) -> bytes | None:
    try:
        return digest.expected_sha256(start.content_digest)
    except digest.DigestError as exc:
        raise digest.DigestError(f"the Content-Digest of file part {start.field!r}: "
                                 f"{exc.message}") from exc


def receive_raw(chunks: Iterator[bytes], filename: str, content_type: str,
                limits: multipart.Limits, files: Storage, progress: Progress) -> Staged:
    """Stream a raw body (``PUT``, ``curl -T``) into one staged object."""
    staging = files.stage()
    try:
        for chunk in _progressed(chunks, progress):
            limits.check_body(progress.bytes)
            limits.check_file(progress.bytes)
            staging.write(chunk)
        return [(staging, storage.Upload(staging.key, filename, staging.size,
                                         staging.sha256, content_type, None))]
    except BaseException:
        staging.discard()
        raise


def _progressed(chunks: Iterator[bytes], progress: Progress) -> Iterator[bytes]:
    for chunk in chunks:
        progress.advance(len(chunk))
        yield chunk


def _with_end(chunks: Iterator[bytes]) -> Iterator[bytes | None]:
    yield from chunks
    yield None
