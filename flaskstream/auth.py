"""Bearer-token protection for writes.

When ``API_TOKEN`` is set, every POST/PUT/PATCH/DELETE must carry
``Authorization: Bearer <token>``; the comparison is constant-time. Reads stay
open (browsers cannot add headers to ``EventSource`` or ``<video>``). CORS
preflights (OPTIONS) never carry credentials, so they pass.
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


def require_token_for_writes() -> None:
    expected = current_app.config["API_TOKEN"]
    if not expected or request.method not in WRITE_METHODS:
        return
    given = bearer_token()
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            401, "UNAUTHORIZED", "this write needs Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="flaskstream"'},
        )


def init_app(app: Flask) -> None:
    if not app.config["API_TOKEN"]:
        log.warning("FLASKSTREAM_API_TOKEN is not set: writes are open to anyone who can connect")
    app.before_request(require_token_for_writes)
