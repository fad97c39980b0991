"""``POST``/``DELETE /auth/session`` (the cookie for EventSource and ``<video>``) and the wiring.

A page cannot add ``Authorization`` to what ``EventSource`` or ``<video>`` fetch, so
it trades its bearer JWT for an HttpOnly, Secure, SameSite=Lax cookie once; the
cookie then rides on every same-site read and ends with the token's ``exp``. The
cookie is honoured for reads only (``auth.claims``), so it never authorises a write
a cross-site page could trigger. Chromium and Firefox treat ``http://localhost`` /
``127.0.0.1`` as secure, so Secure cookies also work in local development.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, current_app, jsonify
from werkzeug.wrappers import Response

from flaskstream import auth, authcli
from flaskstream.access import policy
from flaskstream.errors import ApiError

bp = Blueprint("access", __name__)


@bp.post("/auth/session")
def session() -> Response:
    """Set the session cookie from the request's ``Authorization: Bearer <JWT>``."""
    token = auth.bearer_token()
    if token is None:
        raise auth.unauthorized("send the token as Authorization: Bearer <JWT>")
    found = auth.claims()
    if found is None or found.admin:
        raise ApiError(400, "NOT_A_JWT", "only a JWT can become a session cookie, "
                       "never the admin token")
    max_age = int(found.exp - time.time()) if found.exp is not None else None
    response = jsonify({"sub": found.sub, "exp": found.exp})
    response.set_cookie(current_app.config["AUTH_COOKIE"], token, max_age=max_age,
                        secure=True, httponly=True, samesite="Lax", path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/auth/session")
def end_session() -> Response:
    response = Response(status=204)
    response.delete_cookie(current_app.config["AUTH_COOKIE"], secure=True, httponly=True,
                           samesite="Lax", path="/")
    return response


def init_app(app: Flask) -> None:
    """The route policy's hooks (after ``auth.init_app``'s), the session routes, ``flask auth``."""
    app.before_request(policy.enforce)
    app.after_request(policy.after_create)
    app.register_blueprint(bp)
    app.cli.add_command(authcli.group)
