"""The tus janitor: removes unfinished uploads past their ``Upload-Expires``.

Each gunicorn worker runs one janitor greenlet, started by its first tus
request; passes are spread out with jitter and use ``SKIP LOCKED``, so workers
and hosts sharing a database do not trip over each other. ``flask tus expire``
runs one pass (for cron, or servers without gevent).
"""

from __future__ import annotations

import logging
import secrets
import threading

from flask import Flask

from flaskstream import db
from flaskstream.tus import receive, store

log = logging.getLogger(__name__)

_started: set[int] = set()
_lock = threading.Lock()


def expire_and_purge(app: Flask) -> tuple[int, int]:
    """One janitor pass: remove expired unfinished uploads, forget old tombstones."""
    with db.get_database(app).connection() as con:
        expired = store.expire_due(con, app.config["UPLOAD_DIR"])
        purged = store.purge(con, float(app.config["TUS_TOMBSTONE_SECONDS"]))
    if expired or purged:
        log.info("tus janitor: %d expired uploads removed, %d old records purged", expired, purged)
    return expired, purged


def _loop(app: Flask) -> None:
    import gevent

    interval = float(app.config["TUS_JANITOR_INTERVAL"])
    while True:
        gevent.sleep(interval * (0.75 + secrets.randbelow(500) / 1000))  # spread workers apart
        try:
            expire_and_purge(app)
        except Exception:  # noqa: BLE001 - try again next round
            log.warning("tus janitor pass failed", exc_info=True)


def start(app: Flask) -> None:
    """One janitor greenlet per worker process, started by its first tus request."""
    if id(app) in _started or not app.config["TUS_JANITOR_INTERVAL"] \
            or not receive.gevent_active():
        return
    with _lock:
        if id(app) in _started:
            return
        _started.add(id(app))
    import gevent

    gevent.spawn(_loop, app)
