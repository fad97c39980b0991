"""Status, headers and body for a GET/HEAD of a stored object that is not a local file.

The media code serves files of this host with ``pread`` (``media/views.py``); an
object in a bucket has no descriptor, so this module makes the same RFC 9110
decisions (``media.ranges``, the pure core: ranges, multi-range, 304/412/416)
from the object's ``ObjectInfo`` and leaves the bytes to ``StoredObject.body``:
one ranged GET per range, streamed through in chunks (S3 cannot answer
``multipart/byteranges`` itself, so a multi-range answer is several GETs framed
here). No Flask: the blueprint adds Content-Disposition and sends it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from flaskstream.media import ranges
from flaskstream.storage.base import StoredObject

Plan = tuple[int, dict[str, str], Iterable[bytes] | None]


def plan_stored(stored: StoredObject, method: str, request_headers: Mapping[str, str],
                config: Mapping[str, Any], content_type: str, cache_control: str) -> Plan:
    """Like ``media.views.plan_response`` for a ``StoredObject``; ``stored`` is always
    consumed (closed here, or owned by the returned body)."""
    handed_over = False
    try:
        info = stored.info
        decision = ranges.evaluate(method, request_headers, info.size, info.etag,
                                   info.last_modified, int(config["MEDIA_MAX_RANGES"]))
        headers = {"ETag": info.etag, "Last-Modified": ranges.http_date(info.last_modified),
                   "Cache-Control": cache_control}
        if decision.status == 304:
            del headers["Last-Modified"]  # RFC 9110 §15.4.5, as for media files
            return 304, headers, None
        if decision.status == 412:
            headers["Content-Length"] = "0"
            return 412, headers, None
        if decision.status == 416:
            headers["Content-Range"] = ranges.unsatisfied_range(info.size)
            return 416, headers, None
        headers["Accept-Ranges"] = "bytes"
        headers["X-Content-Type-Options"] = "nosniff"
        pieces, length, headers["Content-Type"] = _pieces(decision, info.size, content_type)
        if decision.status == 206 and not decision.multipart:
            start, stop = decision.ranges[0]
            headers["Content-Range"] = ranges.content_range(start, stop, info.size)
        headers["Content-Length"] = str(length)
        if method == "HEAD" or length == 0:
            return decision.status, headers, None
        body = stored.body(pieces, int(config["MEDIA_CHUNK_SIZE"]))
        handed_over = True
        return decision.status, headers, body
    finally:
        if not handed_over:
            with contextlib.suppress(Exception):
                stored.close()


def _pieces(decision: ranges.Decision, size: int, content_type: str
            ) -> tuple[list[bytes | ranges.ByteRange], int, str]:
    """The body's pieces, its length and its Content-Type."""
    if decision.status == 200:
        return [(0, size)], size, content_type
    if not decision.multipart:
        start, stop = decision.ranges[0]
        return [(start, stop)], stop - start, content_type
    plan = ranges.plan_multipart(decision.ranges, size, content_type)
    pieces: list[bytes | ranges.ByteRange] = []
    for head, start, stop in plan.parts:
        pieces += [head, (start, stop)]
    pieces.append(plan.tail)
    return pieces, plan.content_length, plan.content_type
