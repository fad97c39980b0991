"""Service routes that belong to no one pattern: the dashboard page and health."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template

from flaskstream import db

bp = Blueprint("core", __name__)

# The dashboard's Content-Security-Policy: everything from this origin, no inline
# or eval'd script. The page repeats it in a <meta> (kept with a saved copy);
# frame-ancestors only works as a header (browsers ignore it, with a console
# error, in a <meta>), so the header alone adds it: no other site may frame the
# page (clickjacking its upload and delete buttons).
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; media-src 'self'; connect-src 'self'; object-src 'none'; "
               "base-uri 'none'; form-action 'self'")
HEADER_POLICY = f"{PAGE_POLICY}; frame-ancestors 'self'"


@bp.get("/")
def index() -> Response:
    response = Response(render_template("index.html", page_policy=PAGE_POLICY),
                        mimetype="text/html")
    response.headers["Content-Security-Policy"] = HEADER_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"  # the same, for browsers before CSP 2
    return response


@bp.get("/healthz")
def healthz() -> Response:
    """200 when the database answers; 503 with the reason when it does not.

    The process keeps serving either way: the pool drops broken connections and
    reconnects on the next call, so health recovers without a restart.
    """
    status = db.check_health()
    body = {"status": "ok" if status == "ok" else "degraded", "db": status}
    response = jsonify(body)
    response.status_code = 200 if status == "ok" else 503
    response.headers["Cache-Control"] = "no-store"
    return response
