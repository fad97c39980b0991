"""flaskstream: the four streaming jobs of a web backend, with flat memory.

``create_app`` is the application factory (gunicorn's and ``flask --app wsgi``'s
target through ``wsgi.py``): configuration layers, database, auth, errors, then
one blueprint per pattern.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    instance_path = os.environ.get("FLASKSTREAM_INSTANCE_PATH")
    if test_config and test_config.get("INSTANCE_PATH"):
        instance_path = str(test_config["INSTANCE_PATH"])
    app = Flask(
        __name__,
        instance_relative_config=True,
        instance_path=os.path.abspath(instance_path) if instance_path else None,
    )

    from flaskstream import config, logs

    config.load_config(app, test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    os.makedirs(app.config["UPLOAD_DIR"], exist_ok=True)
    if not app.debug and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logs.use_scrubbing(logging.getLogger().handlers)  # issue 15: no query token in a text line
    if app.config["LOG_FORMAT"] == "json":  # FLASKSTREAM_LOG_FORMAT: see flaskstream/logs.py
        logs.use_json(logging.getLogger().handlers)
    # pgserver logs every pg_ctl command line and its output at INFO.
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    from flaskstream import adapters, auth, cors, db, dbcli, errors, state, storage

    state.init_app(app)  # app.extensions["flaskstream"]: per-process state, no module globals
    adapters.init_app(app)
    db.init_app(app)
    dbcli.init_app(app)  # flask db upgrade / status
    storage.init_app(app)  # app.extensions["flaskstream"]["storage"]: uploads, tus, content
    errors.init_app(app)
    auth.init_app(app)
    from flaskstream.access import views as access_views

    access_views.init_app(app)  # issue 15: per-route read/write policy, /auth/session, flask auth
    cors.init_app(app)

    from flaskstream import core
    from flaskstream.etl import views as etl_views
    from flaskstream.events import views as events_views
    from flaskstream.media import views as media_views
    from flaskstream.tus import views as tus_views
    from flaskstream.uploads import views as uploads_views

    app.register_blueprint(core.bp)
    app.register_blueprint(events_views.bp)
    app.register_blueprint(tus_views.bp)  # before uploads: /uploads/tus/... is tus's
    app.register_blueprint(uploads_views.bp)
    app.register_blueprint(media_views.bp)
    app.register_blueprint(etl_views.bp)

    from flaskstream import janitors, ops
    from flaskstream.media import fastpath

    if not app.config.get("MEDIA_URL"):  # media from a bucket: Flask's route only
        fastpath.install(app)  # in front of Flask, behind ProxyFix (it reads no forwarded header)
    janitors.init_app(app)  # in a gunicorn worker: leases and staging of dead workers
    ops.init_app(app)  # its WSGI layer (request ids, durations) wraps the app and the fast path
    _trust_proxies(app)  # outermost: everything behind it sees the client-facing request
    return app


def _trust_proxies(app: Flask) -> None:
    """``PROXY_FIX`` hops: werkzeug's ProxyFix rewrites the environ from the
    X-Forwarded-* headers of that many proxies (the rightmost values; anything a
    client put before them is ignored), and Location headers become absolute on
    the client-facing scheme and host (werkzeug's ``autocorrect_location_header``)."""
    hops = int(app.config["PROXY_FIX"] or 0)
    if hops <= 0:
        return
    from werkzeug.middleware.proxy_fix import ProxyFix
    from werkzeug.wrappers import Response

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops,  # type: ignore[method-assign]
                            x_port=hops, x_prefix=hops)

    @app.after_request
    def _absolute_location(response: Response) -> Response:
        response.autocorrect_location_header = True
        return response
