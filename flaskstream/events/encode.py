"""WHATWG Server-Sent Events encoder: pure functions, no Flask, no I/O.

The HTML standard's parser ("9.2.6 Interpreting an event stream") splits the
stream into lines on CRLF, CR or LF, reads ``field: value`` lines, appends each
``data`` value plus LF to a buffer and dispatches on a blank line, dropping one
trailing LF. So to make a browser see exactly the string we were given:

* ``data`` is split on ``\\r\\n``, ``\\r`` and ``\\n`` only — not
  ``str.splitlines()``, which also splits on U+2028, U+0085, form feed and so on,
  characters the parser keeps inside a line. A trailing line break becomes an
  extra empty ``data:`` line, so ``"a\\n"`` arrives as ``"a\\n"``. The format
  cannot carry CR: ``\\r\\n`` and ``\\r`` arrive as ``\\n`` (send JSON when
  they matter — ``publish`` does for non-``str`` data).
* ``id`` and ``event`` cannot contain CR or LF (they would end the field) and an
  ``id`` with NUL is ignored by the parser, so both are rejected here rather
  than silently mangled. ``retry`` is only honoured as ASCII digits, so it is an
  ``int``.
* Every value is written after ``": "``: the parser strips exactly one space, so
  a value that starts with a space keeps it.
* Output is UTF-8 without a BOM, lines end with ``\\n``.

Comments (``: ...``) carry heartbeats; the parser ignores them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flaskstream.errorbase import FixedError

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")


class EncodeError(FixedError, ValueError):
    """An event that the event-stream format cannot carry faithfully."""

    code, status = "INVALID_EVENT", 400


def split_lines(text: str) -> list[str]:
    """Split on CRLF, CR and LF exactly as the event-stream parser does."""
    return _LINE_BREAK.split(text)


def _check_field(name: str, value: str) -> str:
    if _FORBIDDEN_IN_FIELD.search(value):
        raise EncodeError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")
    return value


def encode_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | int | None = None,  # noqa: A002 - the field's name in the standard
    retry: int | None = None,
) -> bytes:
    """The bytes of one event block, ending with the blank line that dispatches it."""
    lines: list[str] = []
    if id is not None:
        if isinstance(id, bool) or not isinstance(id, (str, int)):
            raise EncodeError(f"SSE id must be str or int, not {type(id).__name__}")
        lines.append("id: " + _check_field("id", str(id)))
    if event is not None:
        lines.append("event: " + _check_field("event", event))
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise EncodeError(f"SSE retry must be a non-negative int, not {retry!r}")
        lines.append(f"retry: {retry}")
    if data is not None:
        if not isinstance(data, str):
            raise EncodeError(f"SSE data must be str, not {type(data).__name__}; use json_data()")
        lines.extend("data: " + line for line in split_lines(data))
    if not lines:
        raise EncodeError("an SSE event needs at least one of data, event, id, retry")
    return _to_bytes("\n".join(lines) + "\n\n")


def encode_retry(milliseconds: int) -> bytes:
    """A block that only sets the reconnection delay."""
    return encode_event(retry=milliseconds)


def encode_comment(text: str = "") -> bytes:
    """A comment block (``: text``), ignored by parsers: heartbeats, padding.

    Multi-line text becomes one comment line per line, so no line break can
    escape the comment.
    """
    body = "".join(":" + (" " + line if line else "") + "\n" for line in split_lines(text))
    return _to_bytes(body + "\n")


def json_data(value: Any) -> str:
    """Compact JSON for a ``data`` field: never contains a raw line break."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates cannot be UTF-8
        raise EncodeError(f"SSE text is not encodable as UTF-8: {exc}") from None
