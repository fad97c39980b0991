"""The tus janitor: removes unfinished uploads past their ``Upload-Expires``.

Each gunicorn worker runs one janitor loop (``leases.run_every``, shared with
the ETL job and staging janitors), started with the worker and by its first tus
request; passes are spread out with jitter and use ``SKIP LOCKED``, so workers
and hosts sharing a database do not trip over each other. ``flask tus expire``
runs one pass (for cron, or servers without gevent).
"""

from __future__ import annotations

import logging

from flask import Flask

from flaskstream import db, leases
from flaskstream.storage import get_resumable
from flaskstream.tus import store

log = logging.getLogger(__name__)


def expire_and_purge(app: Flask) -> tuple[int, int]:
    """One janitor pass: remove expired unfinished uploads, forget old tombstones."""
    with db.get_database(app).connection() as con:
        expired = store.expire_due(con, get_resumable(app))
        purged = store.purge(con, float(app.config["TUS_TOMBSTONE_SECONDS"]))
    if expired or purged:
        log.info("tus janitor: %d expired uploads removed, %d old records purged", expired, purged)
    return expired, purged


def start(app: Flask) -> None:
    """One janitor loop per worker process; the first pass after about one interval."""
    interval = float(app.config["TUS_JANITOR_INTERVAL"] or 0)
    if not interval or not leases.gevent_active():
        return
    leases.run_every(app, "tus-janitor", interval, lambda: expire_and_purge(app),
                     first_delay=leases.jittered(interval))
