"""The janitors every gunicorn worker runs: what a killed worker left behind goes.

Started from ``create_app`` in a gevent-patched process (a gunicorn worker),
so a worker respawned after a crash cleans up at once; ``flask`` commands and
the test client run none. Each pass is safe on several workers and hosts at
once (``leases.run_every``):

- ETL jobs whose lease ran out are failed, with a ``failed`` event on ``etl.<id>``;
- request staging files of dead writers are removed (``uploads/janitor.py``);
- tus uploads past their expiry are removed (``tus/janitor.py``).

``flask janitor run`` does one pass of each, for cron or servers without gevent.
"""

from __future__ import annotations

import logging
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from flaskstream import db, leases, state
from flaskstream.etl import joblease
from flaskstream.uploads import janitor as staging_janitor

log = logging.getLogger(__name__)


def fail_expired_jobs(app: Flask) -> list[str]:
    """One pass: fail ``running`` ETL jobs whose lease ran out; return their ids."""
    from flaskstream.events.broker import publish

    def announce(job_id: str, data: dict[str, Any]) -> None:
        publish(f"etl.{job_id}", data, joblease.FAILED_EVENT, key=joblease.FAILED_EVENT, app=app)

    with db.get_database(app).connection() as con:
        failed = joblease.fail_expired(con, announce, grace=float(app.config["ETL_JOB_LEASE"]))
    for job_id in failed:
        log.warning("ETL job %s failed: its lease expired (worker gone)", job_id)
    return failed


def staging_ttl(app: Flask) -> float:
    """``UPLOAD_STAGING_TTL``, but never shorter than a live request may go without writing."""
    idle = float(app.config.get("UPLOAD_IDLE_TIMEOUT") or 0)
    return max(float(app.config["UPLOAD_STAGING_TTL"]), idle + 30)


def sweep_staging(app: Flask) -> list[str]:
    """One pass: remove request staging files of dead writers; return their names."""
    removed = staging_janitor.sweep_dead(app.config["UPLOAD_DIR"], staging_ttl(app))
    # The storage backend's own leftovers (S3: multipart uploads of killed workers).
    removed += state.get(app).storage.sweep(float(app.config["STORAGE_ORPHAN_TTL"]))
    if removed:
        log.info("staging janitor: removed %d files of dead uploads", len(removed))
    return removed


def start(app: Flask) -> None:
    """Start this worker's janitors (idempotent)."""
    from flaskstream.tus import janitor as tus_janitor

    cfg = app.config
    leases.run_every(app, "etl-job-janitor", float(cfg["ETL_JANITOR_INTERVAL"]),
                     lambda: fail_expired_jobs(app))
    leases.run_every(app, "staging-janitor", float(cfg["UPLOAD_STAGING_SWEEP_INTERVAL"]),
                     lambda: sweep_staging(app))
    tus_janitor.start(app)


cli = AppGroup("janitor", help="Clean up after killed workers (each worker also does it).")


@cli.command("run")
def run_command() -> None:
    """One pass of every janitor: expired ETL job leases, dead writers' staging files,
    expired tus uploads."""
    from flaskstream.tus import janitor as tus_janitor

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    failed = fail_expired_jobs(app)
    removed = sweep_staging(app)
    expired, purged = tus_janitor.expire_and_purge(app)
    click.echo(f"{len(failed)} ETL jobs failed (lease expired), {len(removed)} staging files "
               f"removed, {expired} expired tus uploads removed, {purged} tus records purged")


def init_app(app: Flask) -> None:
    app.cli.add_command(cli)
    if leases.gevent_active():
        start(app)
