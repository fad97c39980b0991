"""Operations: ``/livez``, ``/readyz``, ``/metrics``; request ids, timing and JSON logs.

- ``/livez``: answered without the database. Under gevent the answer itself is
  the proof that the worker's event loop runs: a blocked loop answers nothing,
  and the probe times out — which is what a liveness probe should see.
- ``/readyz``: 503 ``draining`` from the moment this worker begins a graceful
  shutdown (SIGTERM, ``max_requests``: see ``adapters/gunicorn_lifecycle.py``),
  so a load balancer stops sending it work while its streams still run
  (``SHUTDOWN_DRAIN_SECONDS`` holds them open that long); else 503 when the
  database does not answer or the schema is not in place, else 200.
- ``/metrics``: Prometheus text, optionally behind ``METRICS_TOKEN``.
``/healthz`` (core.py) keeps its own contract.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from flaskstream import auth, db, logs, metrics, migrate
from flaskstream.errors import ApiError

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

DRAIN_PROBE = "flaskstream.draining"


def set_draining_probe(app: Flask, probe: Callable[[], bool]) -> None:
    """Install the server's "am I shutting down?" test (gunicorn's ``post_worker_init``)."""
    app.extensions[DRAIN_PROBE] = probe


def draining(app: Flask) -> bool:
    probe = app.extensions.get(DRAIN_PROBE)
    return bool(probe is not None and probe())


def _no_store(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/livez")
def livez() -> Response:
    return _no_store({"status": "ok"}, 200)


@bp.get("/readyz")
def readyz() -> Response:
    if draining(current_app):
        return _no_store({"status": "draining"}, 503)
    status = schema_status()
    if status != "ok":
        return _no_store({"status": "unavailable", "db": status}, 503)
    return _no_store({"status": "ready", "db": "ok"}, 200)


def schema_status() -> str:
    """"ok" when the database answers and every migration is applied ("schema current")."""
    try:
        database = db.get_database()
        database.ensure_schema()  # a no-op once applied; applies it if a restart lost it
        with database.connection() as con:
            left = migrate.pending(con, database.names)
        return "ok" if not left else f"schema not current: {len(left)} migration(s) pending"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness check failed: %s", exc)
        health = db.check_health()
        return health if health != "ok" else "schema not applied"

@bp.get("/metrics")
def metrics_view() -> Response:
    expected = current_app.config["METRICS_TOKEN"]
    if expected:
        given = auth.bearer_token()
        if given is None or not hmac.compare_digest(given.encode(), str(expected).encode()):
            raise ApiError(401, "UNAUTHORIZED", "/metrics needs Authorization: Bearer <token>",
                           headers={"WWW-Authenticate": 'Bearer realm="flaskstream-metrics"'})
    body, content_type = metrics.render()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _note_blueprint() -> None:
    request.environ[metrics.BLUEPRINT_ENVIRON_KEY] = request.blueprint


def _observe(environ: dict[str, Any], seconds: float) -> None:
    metrics.observe_request(environ.get(metrics.BLUEPRINT_ENVIRON_KEY), seconds)


def init_app(app: Flask) -> None:
    """Blueprint, request timing and request ids around everything.

    Call last in ``create_app`` so ``RequestContext`` wraps every other WSGI layer.
    """
    app.register_blueprint(bp)
    app.before_request(_note_blueprint)
    app.wsgi_app = logs.RequestContext(app.wsgi_app, _observe)  # type: ignore[method-assign]
