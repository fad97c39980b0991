"""Client-supplied names and types, made safe: filenames, content types, the allow-list.

Pure functions (OWASP's upload rules): a filename is metadata only — never a
path — so it is normalised for display and for ``Content-Disposition``, and
types are reduced to a clean ``type/subtype``. Split from ``multipart`` (which
re-exports these names) to keep both modules small.
"""

from __future__ import annotations

import re
import unicodedata

from flaskstream.errorbase import FixedError

_BIDI_CONTROLS = {"\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)),
                  *map(chr, range(0x2066, 0x206A))}
_PATH_SEPARATORS_RE = re.compile(r"[/\\]")
FILENAME_MAX_BYTES = 255
FALLBACK_FILENAME = "upload"


def sanitize_filename(raw: str, max_bytes: int = FILENAME_MAX_BYTES) -> str:
    """The client's filename made safe to store and show (never used as a path).

    NFC-normalised; reduced to its last component on both ``/`` and ``\\``;
    control, unassigned, private-use, surrogate and bidi-override characters
    removed; surrounding whitespace stripped; ``.``/``..``/empty become
    ``upload``; cut to ``max_bytes`` of UTF-8 at a character boundary, keeping a
    short extension.
    """
    name = unicodedata.normalize("NFC", raw)
    name = _PATH_SEPARATORS_RE.split(name)[-1]
    name = "".join(ch for ch in name if ch not in _BIDI_CONTROLS
                   and unicodedata.category(ch) not in ("Cc", "Cs", "Co", "Cn"))
    name = name.strip()
    if name in ("", ".", ".."):
        return FALLBACK_FILENAME
    if len(name.encode("utf-8")) <= max_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = dot + ext if stem and len((dot + ext).encode("utf-8")) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    budget = max_bytes - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return unicodedata.normalize("NFC", cut.rstrip()) + suffix


class FilenameTooLong(FixedError, ValueError):
    """The client's raw filename is over its byte limit (413 ``LIMIT_FILENAME_LENGTH``)."""

    code, status = "LIMIT_FILENAME_LENGTH", 413


def client_filename(raw: str, raw_limit: int | None) -> str:
    """The stored name for a client's filename, however it came (PUT path, tus metadata).

    A raw name over ``raw_limit`` bytes of UTF-8 is refused (``FilenameTooLong``),
    as ``LIMIT_FILENAME_LENGTH`` does for multipart and PUT; anything else is
    sanitised and cut to ``FILENAME_MAX_BYTES`` (255), the stored-name cap.
    """
    if raw_limit is not None and len(raw.encode("utf-8", "surrogatepass")) > raw_limit:
        raise FilenameTooLong(f"the filename exceeds {raw_limit} bytes")
    return sanitize_filename(raw or FALLBACK_FILENAME)


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE = re.compile(rf"{_TOKEN}/{_TOKEN}")
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def clean_content_type(value: str | None) -> str:
    """``type/subtype`` lower-cased (parameters dropped), or application/octet-stream."""
    if not value:
        return DEFAULT_CONTENT_TYPE
    mimetype = value.split(";", 1)[0].strip().lower()
    if len(mimetype) > 127 or not _MEDIA_TYPE_RE.fullmatch(mimetype):
        return DEFAULT_CONTENT_TYPE
    return mimetype


def type_allowed(filename: str, content_type: str, allowed: list[str] | tuple[str, ...]) -> bool:
    """Allow-list check: entries are ``.ext``, ``type/subtype`` or ``type/*``; empty = all."""
    if not allowed:
        return True
    lower_name = filename.lower()
    major = content_type.split("/", 1)[0]
    for entry in allowed:
        entry = entry.strip().lower()
        if entry.startswith(".") and lower_name.endswith(entry):
            return True
        if entry == content_type or (entry.endswith("/*") and entry[:-2] == major):
            return True
    return False


