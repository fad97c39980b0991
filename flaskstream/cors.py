"""CORS for browser clients on other origins (tus-js-client, dashboards).

Only origins listed in ``CORS_ALLOWED_ORIGINS`` get CORS headers; the default
list is empty, so the API is same-origin only. Patterns add the response
headers their clients must read through ``expose_headers``.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, request

ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = (
    "Authorization, Content-Type, Last-Event-ID, Range, If-Range, If-Match, If-None-Match, "
    "If-Modified-Since, If-Unmodified-Since, "
    "Tus-Resumable, Upload-Length, Upload-Defer-Length, Upload-Offset, Upload-Metadata, "
    "Upload-Checksum, Upload-Concat, X-HTTP-Method-Override, X-Requested-With"
)
EXPOSED_HEADERS: list[str] = [
    "Content-Range", "Content-Length", "Accept-Ranges", "ETag", "Last-Modified", "Location",
]


def expose_headers(*names: str) -> None:
    for name in names:
        if name not in EXPOSED_HEADERS:
            EXPOSED_HEADERS.append(name)


def add_cors_headers(response: Response) -> Response:
    origin = request.headers.get("Origin")
    allowed = current_app.config["CORS_ALLOWED_ORIGINS"] or []
    if not origin or (origin not in allowed and "*" not in allowed):
        return response
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers.add("Vary", "Origin")
    response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "86400"
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_cors_headers)
