"""Small JSON request bodies, read with a byte limit and parsed without surprises.

``request.get_json()`` buffers whatever the client sends (a 200 MiB publish
grew a worker by 1.2 GiB), lets ``RecursionError`` out of a deeply nested
array, and turns a malformed chunked body into a server error. This reader
refuses a declared ``Content-Length`` over the limit before reading a byte,
stops a chunked body at the first chunk that passes it, and answers every
other failure with a 400 in the one error shape.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request

from flaskstream.errors import BODY_ERROR_MESSAGE, ApiError

READ_SIZE = 64 * 1024


def too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {limit} bytes")


def read_body(limit: int) -> bytes:
    """At most ``limit`` bytes of this request's body, else 413 (never more held)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit)
    stream = request.stream
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := stream.read(min(READ_SIZE, limit + 1 - size)):
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            parts.append(chunk)
    except ApiError:
        raise
    except Exception as exc:  # the server's body reader: bad chunk framing, a client gone
        # Whatever the server raised (gunicorn: InvalidChunkSize, NoMoreData, OSError),
        # the body cannot be read; its text names server internals, so it is not shown.
        raise ApiError(400, "BAD_REQUEST_BODY", BODY_ERROR_MESSAGE) from exc
    return b"".join(parts)


def read_json(limit: int) -> Any:
    """This request's body parsed as JSON (any value), or a 400/413 ``ApiError``."""
    raw = read_body(limit)
    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(400, "INVALID_JSON", "the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        # json.JSONDecodeError and bad UTF-8 are both ValueErrors; their text is
        # Python's, so the message is ours.
        raise ApiError(400, "INVALID_JSON", "the body is not valid JSON") from None
