"""Pure multipart/form-data core: a byte-exact decoder, every limit, filename rules.

No Flask, no I/O: ``FormReader.feed(chunk)`` takes bytes and returns small
events (``FileStart``, ``FileData``, ``FileEnd``, ``FieldValue``); the view is
the loop that reads ``request.stream`` and routes ``FileData`` to disk.

Three things here exist because the parsers we build on get them wrong or leave
them out:

- ``decoder.PartDecoder`` (used here, our own) replaces werkzeug 3.1.9's decoder,
  which leaks a stray ``\\r`` into a file when a read ends inside a closing
  delimiter (pallets/werkzeug#3285) and rescans transport padding per chunk.
  ``tests/uploads/test_multipart*.py`` split bodies at every position to prove it.
- Limits as complete as busboy/multer's (body, file, file count, field count,
  part count, field size, part headers size and count, filename length), each with its own
  error code, checked as bytes arrive so an over-limit request stops early.
- Filenames are metadata: UTF-8, NFC, basename on ``/`` and ``\\``, control and
  bidi-override characters removed, at most 255 bytes (OWASP's upload rules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from werkzeug.http import parse_options_header

from flaskstream.errorbase import FixedError
from flaskstream.uploads.decoder import Data, DecodeError, Part, PartDecoder, State
from flaskstream.uploads.names import (
    DEFAULT_CONTENT_TYPE,
    FALLBACK_FILENAME,
    FILENAME_MAX_BYTES,
    clean_content_type,
    sanitize_filename,
    type_allowed,
)

__all__ = [
    "DEFAULT_CONTENT_TYPE", "FALLBACK_FILENAME", "FILENAME_MAX_BYTES", "PartDecoder",
    "FieldValue", "FileData", "FileEnd", "FileStart", "FormReader", "LimitExceeded", "Limits",
    "MultipartError", "clean_content_type", "collect_fields", "parse_boundary",
    "sanitize_filename", "type_allowed",
]

# --- errors ----------------------------------------------------------------------


class MultipartError(FixedError):
    """A request the form reader refuses: 400 ``MALFORMED_MULTIPART`` unless the raiser
    says otherwise, by keyword (``code=``, ``status=``: never positionally after the
    message, the order ``ApiError`` takes them in)."""

    status = 400
    code = "MALFORMED_MULTIPART"


class LimitExceeded(MultipartError):
    """A configured limit was crossed; always 413 with the limit's ``LIMIT_*`` code."""

    status = 413

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True)
class Limits:
    """Every bound on one request (``None`` = unbounded). Defaults mirror config.py."""

    body_size: int | None = 8 << 30
    file_size: int | None = 4 << 30
    file_count: int | None = 20
    field_count: int | None = 100
    field_size: int | None = 64 << 10
    part_headers: int | None = 8 << 10
    part_header_count: int | None = 32
    filename_length: int | None = 1024
    part_count: int | None = 200  # every part: files, fields and skipped empty files

    def check_body(self, received: int) -> None:
        if self.body_size is not None and received > self.body_size:
            raise LimitExceeded("LIMIT_BODY_SIZE",
                                f"request body exceeds {self.body_size} bytes")

    def check_file(self, size: int) -> None:
        if self.file_size is not None and size > self.file_size:
            raise LimitExceeded("LIMIT_FILE_SIZE", f"a file exceeds {self.file_size} bytes")


def parse_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type (RFC 2046: 1-70 bchars)."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        raise MultipartError("expected multipart/form-data", code="UNSUPPORTED_MEDIA_TYPE",
                             status=415)
    boundary = options.get("boundary", "")
    if not 1 <= len(boundary) <= 70 or not re.fullmatch(r"[0-9A-Za-z'()+_,\-./:=? ]*"
                                                        r"[0-9A-Za-z'()+_,\-./:=?]", boundary):
        raise MultipartError("missing or invalid multipart boundary")
    return boundary.encode("ascii")


# --- the reader: decoder + limits → events -------------------------------------------


@dataclass(frozen=True)
class FileStart:
    field: str
    filename: str        # sanitised, for metadata and Content-Disposition
    content_type: str
    content_digest: str | None = None  # the part's own Content-Digest header, verbatim


@dataclass(frozen=True)
class FileData:
    data: bytes | memoryview  # a read-only view of the received chunk (no copy)


@dataclass(frozen=True)
class FileEnd:
    size: int


@dataclass(frozen=True)
class FieldValue:
    name: str
    value: str


ReaderEvent = FileStart | FileData | FileEnd | FieldValue


class FormReader:
    """Feed it the body in chunks; it returns events and raises on the first violation.

    ``feed(None)`` marks the end of the body: a body that ends before its
    closing delimiter raises ``MultipartError`` (never an empty success).
    File parts with an empty filename (a browser's unused ``<input type=file>``)
    are skipped, as Django and werkzeug do, but still count towards
    ``part_count`` so that no kind of part is unbounded.
    """

    def __init__(self, boundary: bytes, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.decoder = PartDecoder(boundary)
        self.received = 0
        self.file_count = 0
        self.field_count = 0
        self.complete = False
        self._in_file = False
        self._skipping = False
        self._file_size = 0
        self._field_name: str | None = None
        self._field_value = bytearray()

    def feed(self, chunk: bytes | None) -> list[ReaderEvent]:
        if chunk is None:
            return self._finish()
        self.received += len(chunk)
        self.limits.check_body(self.received)
        try:
            events = self.decoder.feed(chunk)
        except DecodeError as exc:
            raise MultipartError(f"malformed multipart body: {exc}") from None
        out: list[ReaderEvent] = []
        for event in events:
            if isinstance(event, Part):
                self._check_header_bytes(event.header_bytes)
                self._start_part(event, out)
            else:
                self._part_data(event, out)
        self._check_buffered()
        return out

    def _check_buffered(self) -> None:
        """Headers (or a preamble) still incomplete must stay within their limit."""
        state, limit = self.decoder.state, self.limits.part_headers
        if state is State.HEADERS:
            self._check_header_bytes(self.decoder.buffered)
        elif state is State.PREAMBLE and limit is not None and self.decoder.buffered > limit:
            raise MultipartError("no multipart boundary at the start of the body")

    def _finish(self) -> list[ReaderEvent]:
        if self.decoder.state is not State.EPILOGUE:
            raise MultipartError("multipart body ended before its closing boundary")
        self.complete = True
        return []

    def _check_header_bytes(self, size: int) -> None:
        limit = self.limits.part_headers
        if limit is not None and size > limit:
            raise LimitExceeded("LIMIT_PART_HEADERS", f"part headers exceed {limit} bytes")

    def _start_part(self, event: Part, out: list[ReaderEvent]) -> None:
        limits = self.limits
        if limits.part_count is not None and self.decoder.parts > limits.part_count:
            raise LimitExceeded("LIMIT_PART_COUNT", f"more than {limits.part_count} parts")
        if limits.part_header_count is not None and len(event.headers) > limits.part_header_count:
            raise LimitExceeded("LIMIT_PART_HEADERS",
                                f"a part has more than {limits.part_header_count} headers")
        if not event.name:
            raise MultipartError("a part's Content-Disposition has no name")
        if event.filename is not None:
            raw = event.filename
            if limits.filename_length is not None \
                    and len(raw.encode("utf-8", "surrogateescape")) > limits.filename_length:
                raise LimitExceeded("LIMIT_FILENAME_LENGTH",
                                    f"a filename exceeds {limits.filename_length} bytes")
            self._in_file = True
            self._file_size = 0
            self._skipping = raw == ""
            if self._skipping:
                return
            self.file_count += 1
            if limits.file_count is not None and self.file_count > limits.file_count:
                raise LimitExceeded("LIMIT_FILE_COUNT", f"more than {limits.file_count} files")
            out.append(FileStart(event.name, sanitize_filename(raw),
                                 clean_content_type(event.headers.get("Content-Type")),
                                 event.headers.get("Content-Digest")))
        else:
            self.field_count += 1
            if limits.field_count is not None and self.field_count > limits.field_count:
                raise LimitExceeded("LIMIT_FIELD_COUNT", f"more than {limits.field_count} fields")
            self._in_file = False
            self._field_name = event.name
            self._field_value.clear()

    def _part_data(self, event: Data, out: list[ReaderEvent]) -> None:
        if self._in_file:
            self._file_size += len(event.data)
            self.limits.check_file(self._file_size)
            if not self._skipping:
                if event.data:
                    out.append(FileData(event.data))
                if not event.more_data:
                    out.append(FileEnd(self._file_size))
            return
        self._field_value += event.data
        limit = self.limits.field_size
        if limit is not None and len(self._field_value) > limit:
            raise LimitExceeded("LIMIT_FIELD_SIZE", f"a field value exceeds {limit} bytes")
        if not event.more_data:
            try:
                value = self._field_value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MultipartError(f"field {self._field_name!r} is not UTF-8") from exc
            out.append(FieldValue(str(self._field_name), value))
            self._field_value.clear()


def collect_fields(events: list[Any], fields: dict[str, Any]) -> None:
    """Fold ``FieldValue`` events into ``fields`` (a repeated name becomes a list)."""
    for event in events:
        if isinstance(event, FieldValue):
            if event.name in fields:
                prev = fields[event.name]
                fields[event.name] = [*prev, event.value] if isinstance(prev, list) \
                    else [prev, event.value]
            else:
                fields[event.name] = event.value
