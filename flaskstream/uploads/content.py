"""Serving a stored upload whose backend has no local path (an S3 bucket).

The local backend's files go through media's ``serve_file`` (``pread``, nginx
offload); an object in a bucket is answered here: the RFC 9110 decisions come
from ``storage.serve`` on the object's cached HEAD, the bytes from ranged GETs
streamed through, or — with ``STORAGE_REDIRECT=presigned`` — a 302 to a
short-lived presigned URL so the client reads from the bucket itself.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request

from flaskstream import metrics
from flaskstream.errors import ApiError, error_response
from flaskstream.media.files import conditional_headers, content_disposition
from flaskstream.storage import serve
from flaskstream.uploads.records import Upload


def serve_stored(files: Any, upload: Upload, *, as_attachment: bool) -> Response:
    """``GET``/``HEAD`` of an object in a bucket: ranges and preconditions decided on its
    cached HEAD (``storage.serve``), bytes from ranged GETs, or a 302 to a presigned URL."""
    disposition = content_disposition(upload.filename, as_attachment)
    if current_app.config.get("STORAGE_REDIRECT") == "presigned" \
            and hasattr(files, "presigned_url"):
        url = files.presigned_url(upload.id, upload.content_type, disposition)
        return Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
    stored = files.open(upload.id)  # StorageUnavailable (503) is the error base's to answer
    if stored is None:
        raise ApiError(404, "NOT_FOUND", "the upload's bytes are gone")
    status, headers, body = serve.plan_stored(
        stored, request.method, conditional_headers(request.environ), current_app.config,
        upload.content_type, "private, no-cache")
    metrics.MEDIA_RESPONSES.labels(str(status)).inc()
    if status == 416:
        return error_response(416, "RANGE_NOT_SATISFIABLE",
                              "no requested range overlaps the file", headers)
    if status in (200, 206):
        headers["Content-Disposition"] = disposition
    if body is None:
        return Response(status=status, headers=headers)
    return Response(body, status=status, headers=headers, direct_passthrough=True)
