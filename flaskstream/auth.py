"""Bearer-token protection for writes.

When ``API_TOKEN`` is set, every POST/PUT/PATCH/DELETE must carry
``Authorization: Bearer <token>``; the comparison is constant-time. Reads stay
open (browsers cannot add headers to ``EventSource`` or ``<video>``). CORS
preflights (OPTIONS) never carry credentials, so they pass.

``has_api_token()`` is the one test of "this request carries the token" for
reads that do more for a caller who has it: a tus ``HEAD`` that may take an
upload over from its writer, job details that name client addresses and hosts.
"""

from __future__ import annotations

import hmac
import logging

from flask import Flask, current_app, request

from flaskstream.errors import ApiError

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def has_api_token() -> bool:
    """True when this request carries ``API_TOKEN`` (or none is configured: all are trusted)."""
    expected = current_app.config["API_TOKEN"]
    if not expected:
        return True
    given = bearer_token()
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def require_token_for_writes() -> None:
    if request.method in WRITE_METHODS and not has_api_token():
        raise ApiError(
            401, "UNAUTHORIZED", "this write needs Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="flaskstream"'},
        )


def init_app(app: Flask) -> None:
    if not app.config["API_TOKEN"]:
        log.warning("FLASKSTREAM_API_TOKEN is not set: writes are open to anyone who can connect")
    app.before_request(require_token_for_writes)
