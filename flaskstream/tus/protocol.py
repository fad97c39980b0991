"""The tus 1.0.0 resumable-upload protocol, as pure functions (no Flask, no database).

Every rule here is taken from the tus 1.0.0 specification
(https://tus.io/protocols/resumable-upload): header syntax (``Upload-Offset``,
``Upload-Length``, ``Upload-Defer-Length``, ``Upload-Metadata``,
``Upload-Checksum``), version negotiation (``Tus-Resumable`` → 412), the
``OPTIONS`` capability headers and the ``Upload-Expires`` date format. The views
turn :class:`TusError` into the API's JSON error shape with the status given here.

Intentional choices where the specification leaves room:

- ``Upload-Metadata`` keys must be printable ASCII (the spec says SHOULD): the
  header is echoed back verbatim on ``HEAD``, so nothing that could smuggle a
  header line may be stored.
- Base64 values are decoded strictly (padding required, no stray characters).
- ``Tus-Resumable`` is required on every request but ``OPTIONS``; a missing
  header is treated like an unsupported version (412), as tusd does.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import email.utils
import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from flaskstream.errorbase import FlaskstreamError

TUS_VERSION = "1.0.0"
SUPPORTED_VERSIONS = (TUS_VERSION,)
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "checksum",
    "expiration",
)
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# sha1 is required by the spec; the rest are what tus clients commonly offer.
CHECKSUM_ALGORITHMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "md5": hashlib.md5,
}
# Status the checksum extension defines for a mismatching body.
CHECKSUM_MISMATCH = 460

_DIGITS_RE = re.compile(r"[0-9]{1,19}")
_METADATA_KEY_RE = re.compile(r"[!-+\--~]+")  # printable ASCII without space (0x20) and comma (0x2c)
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_ALGORITHM_RE = re.compile(r"[a-z0-9-]{1,32}")


class TusError(FlaskstreamError):
    """A protocol violation: HTTP ``status``, stable ``code``, human ``message``, extra
    headers (``Tus-Version``, ``Tus-Max-Size``...), answered by the app's one handler.
    Arguments in the order this module has always used."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(code, status, message, headers)


# --- version and capabilities -------------------------------------------------------


def check_version(method: str, tus_resumable: str | None) -> None:
    """Raise 412 (with ``Tus-Version``) unless the client speaks a version we support.

    ``OPTIONS`` is exempt: the client uses it to discover the versions.
    """
    if method == "OPTIONS":
        return
    if tus_resumable is None or tus_resumable.strip() not in SUPPORTED_VERSIONS:
        raise TusError(412, "TUS_VERSION_UNSUPPORTED",
                       f"Tus-Resumable must be one of {', '.join(SUPPORTED_VERSIONS)}",
                       {"Tus-Version": ",".join(SUPPORTED_VERSIONS)})


def options_headers(max_size: int | None) -> dict[str, str]:
    """Headers of the ``OPTIONS`` answer: versions, extensions, limits, checksum algorithms."""
    headers = {
        "Tus-Version": ",".join(SUPPORTED_VERSIONS),
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }
    if max_size is not None:
        headers["Tus-Max-Size"] = str(max_size)
    return headers


# --- numbers --------------------------------------------------------------------------


def parse_non_negative(name: str, value: str | None, *, required: bool = True) -> int | None:
    """A header whose value MUST be a non-negative integer (``Upload-Offset``, ``Upload-Length``).

    Only ASCII digits are accepted (no sign, no spaces inside, at most 19 digits
    so it fits PostgreSQL's bigint).
    """
    if value is None:
        if required:
            raise TusError(400, "TUS_HEADER_MISSING", f"{name} is required")
        return None
    text = value.strip()
    if not _DIGITS_RE.fullmatch(text) or int(text) > 2**63 - 1:
        raise TusError(400, "TUS_HEADER_INVALID", f"{name} must be a non-negative integer")
    return int(text)


@dataclasses.dataclass(frozen=True)
class Creation:
    """What a creation ``POST`` asks for: a length, or a deferred one."""

    length: int | None  # None when deferred

    @property
    def deferred(self) -> bool:
        return self.length is None


def parse_creation(upload_length: str | None, defer_length: str | None,
                   max_size: int | None) -> Creation:
    """``Upload-Length`` xor ``Upload-Defer-Length: 1``; over ``Tus-Max-Size`` → 413."""
    if upload_length is not None and defer_length is not None:
        raise TusError(400, "TUS_HEADER_INVALID",
                       "send either Upload-Length or Upload-Defer-Length, not both")
    if defer_length is not None:
        if defer_length.strip() != "1":
            raise TusError(400, "TUS_HEADER_INVALID", "Upload-Defer-Length must be 1")
        return Creation(None)
    if upload_length is None:
        raise TusError(400, "TUS_HEADER_MISSING", "Upload-Length or Upload-Defer-Length is required")
    length = parse_non_negative("Upload-Length", upload_length)
    assert length is not None
    check_max_size(length, max_size)
    return Creation(length)


def check_max_size(length: int, max_size: int | None) -> None:
    if max_size is not None and length > max_size:
        raise TusError(413, "TUS_MAX_SIZE_EXCEEDED",
                       f"Upload-Length {length} exceeds Tus-Max-Size {max_size}")


def resolve_length(current: int | None, given: str | None, offset: int,
                   max_size: int | None) -> int | None:
    """The upload's length after a ``PATCH`` that may carry ``Upload-Length``.

    A deferred length may be set once (not below the bytes already received,
    not over the maximum); a known length must not change.
    """
    if given is None:
        return current
    length = parse_non_negative("Upload-Length", given)
    assert length is not None
    if current is not None:
        if length != current:
            raise TusError(400, "TUS_LENGTH_IMMUTABLE",
                           f"Upload-Length is already {current} and cannot change")
        return current
    if length < offset:
        raise TusError(400, "TUS_HEADER_INVALID",
                       f"Upload-Length {length} is below the {offset} bytes already received")
    check_max_size(length, max_size)
    return length


def check_offset(expected: int, given: int) -> None:
    """``Upload-Offset`` MUST equal the resource's offset, else 409 without modifying it."""
    if given != expected:
        raise TusError(409, "TUS_OFFSET_MISMATCH",
                       f"Upload-Offset is {given} but the upload is at {expected}",
                       {"Upload-Offset": str(expected)})


def body_budget(offset: int, length: int | None, max_size: int | None) -> int | None:
    """How many more bytes the upload may receive (None: unbounded)."""
    if length is not None:
        return length - offset
    if max_size is not None:
        return max(max_size - offset, 0)
    return None


def check_declared_body(content_length: int | None, budget: int | None) -> None:
    """A ``Content-Length`` that would overrun the upload's length → 413 before reading."""
    if content_length is not None and budget is not None and content_length > budget:
        raise TusError(413, "TUS_LENGTH_EXCEEDED",
                       f"the body ({content_length} bytes) exceeds what is left of the upload "
                       f"({budget} bytes)")


def is_offset_stream(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == OFFSET_CONTENT_TYPE


def check_patch_content_type(content_type: str | None) -> None:
    if not is_offset_stream(content_type):
        raise TusError(415, "TUS_CONTENT_TYPE",
                       f"upload bodies need Content-Type: {OFFSET_CONTENT_TYPE}")


# --- Upload-Metadata -------------------------------------------------------------------


def parse_metadata(header: str | None) -> dict[str, bytes | None]:
    """``key base64value,key2 base64value2,flag`` → ``{key: bytes | None}``.

    Keys MUST be non-empty, without spaces or commas, unique; values MUST be
    base64 and MAY be empty or absent (``None``). An empty header means no metadata.
    """
    if header is None or not header.strip():
        return {}
    result: dict[str, bytes | None] = {}
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            raise TusError(400, "TUS_METADATA_INVALID", "Upload-Metadata has an empty pair")
        key, sep, value = pair.partition(" ")
        value = value.strip()
        if not _METADATA_KEY_RE.fullmatch(key):
            raise TusError(400, "TUS_METADATA_INVALID",
                           "Upload-Metadata keys must be printable ASCII without spaces or commas")
        if key in result:
            raise TusError(400, "TUS_METADATA_INVALID", f"Upload-Metadata key {key!r} is repeated")
        if not sep or not value:
            result[key] = None
            continue
        if " " in value or not _BASE64_RE.fullmatch(value):
            raise TusError(400, "TUS_METADATA_INVALID",
                           f"Upload-Metadata value of {key!r} is not base64")
        try:
            result[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TusError(400, "TUS_METADATA_INVALID",
                           f"Upload-Metadata value of {key!r} is not base64") from exc
    return result


def encode_metadata(metadata: Mapping[str, bytes | str | None]) -> str:
    """The inverse of :func:`parse_metadata` (for clients and tests)."""
    pairs = []
    for key, value in metadata.items():
        if value is None:
            pairs.append(key)
            continue
        raw = value.encode("utf-8") if isinstance(value, str) else value
        pairs.append(f"{key} {base64.b64encode(raw).decode('ascii')}")
    return ",".join(pairs)


def metadata_text(metadata: Mapping[str, bytes | None], *keys: str) -> str | None:
    """The first present, non-empty value among ``keys``, decoded as UTF-8, or 400.

    Values are opaque bytes to tus (and kept so); the ones read as text (file
    name and type) must be UTF-8: a client that sends anything else gets a clear
    refusal at the edge rather than a name guessed with replacement characters.
    """
    for key in keys:
        value = metadata.get(key)
        if value:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise TusError(400, "TUS_METADATA_INVALID",
                               f"Upload-Metadata value of {key!r} is not UTF-8 text") from None
    return None


def file_info(metadata: Mapping[str, bytes | None]) -> tuple[str | None, str | None]:
    """(filename, content type) from the keys tus clients use.

    tus-js-client and tuspy examples send ``filename``/``filetype``; Uppy sends
    ``name``/``type`` too.
    """
    return (metadata_text(metadata, "filename", "name"),
            metadata_text(metadata, "filetype", "type", "contentType", "content_type"))


# --- Upload-Checksum -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Checksum:
    """A requested body checksum: algorithm name and the expected raw digest."""

    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return CHECKSUM_ALGORITHMS[self.algorithm]()

    def matches(self, hasher: Any) -> bool:
        import hmac

        return hmac.compare_digest(hasher.digest(), self.digest)


def parse_checksum(header: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; unsupported algorithm or bad value → 400."""
    if header is None:
        return None
    algorithm, sep, encoded = header.strip().partition(" ")
    encoded = encoded.strip()
    if not sep or not _ALGORITHM_RE.fullmatch(algorithm) or not encoded:
        raise TusError(400, "TUS_CHECKSUM_INVALID",
                       "Upload-Checksum must be '<algorithm> <base64 digest>'")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise TusError(400, "TUS_CHECKSUM_ALGORITHM",
                       f"unsupported checksum algorithm {algorithm!r}; "
                       f"supported: {', '.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TusError(400, "TUS_CHECKSUM_INVALID", "Upload-Checksum digest is not base64") from exc
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]().digest_size:
        raise TusError(400, "TUS_CHECKSUM_INVALID",
                       f"a {algorithm} digest is {CHECKSUM_ALGORITHMS[algorithm]().digest_size} bytes")
    return Checksum(algorithm, digest)


def checksum_mismatch(algorithm: str) -> TusError:
    return TusError(CHECKSUM_MISMATCH, "TUS_CHECKSUM_MISMATCH",
                    f"the body does not match its {algorithm} Upload-Checksum; it was discarded")


# --- Upload-Expires ---------------------------------------------------------------------


def http_date(moment: dt.datetime) -> str:
    """RFC 9110 IMF-fixdate (``Wed, 25 Jun 2014 16:00:00 GMT``), as ``Upload-Expires`` requires."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return email.utils.format_datetime(moment.astimezone(dt.UTC).replace(microsecond=0),
                                       usegmt=True)


def expired(expires: dt.datetime | None, now: dt.datetime) -> bool:
    return expires is not None and expires <= now


# --- responses --------------------------------------------------------------------------


def upload_headers(*, offset: int, length: int | None, metadata: str | None,
                   expires: dt.datetime | None) -> dict[str, str]:
    """``HEAD``'s headers for an upload: offset, length (or deferral), metadata, expiry."""
    headers = {"Upload-Offset": str(offset), "Cache-Control": "no-store"}
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    if metadata:
        headers["Upload-Metadata"] = metadata
    if expires is not None:
        headers["Upload-Expires"] = http_date(expires)
    return headers


def effective_method(method: str, override: str | None) -> str:
    """``X-HTTP-Method-Override`` replaces the method when present (for clients without PATCH)."""
    if override and override.strip():
        return override.strip().upper()
    return method.upper()
