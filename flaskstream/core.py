"""Service routes that belong to no one pattern: the dashboard page and health."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template

from flaskstream import db

bp = Blueprint("core", __name__)


@bp.get("/")
def index() -> str:
    return render_template("index.html")


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
