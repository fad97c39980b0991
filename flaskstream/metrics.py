"""Every Prometheus metric flaskstream exports, defined in one place.

Patterns record a fact with one call where it is known (``metrics.X.inc()``);
``/metrics`` (``ops.py``) renders them. The README's "Monitoring" section lists
them all.

Under gunicorn each worker is its own process, so ``prometheus_client`` runs in
its multiprocess mode: the master sets ``PROMETHEUS_MULTIPROC_DIR`` in
``on_starting`` (``conf/gunicorn.conf.py``) before any worker imports this
module, every worker writes its values to mmap files there, and a scrape on
any worker sums all the files. Files of dead workers stay, so counters and
histograms survive a SIGKILL or ``max_requests`` recycling; ``child_exit`` calls
``mark_process_dead``, which deletes only the ``live*`` gauge files, so a dead
worker's open streams and pool slots stop counting. prometheus_client picks the
mode from the environment when it is first imported: without the variable
(flask CLI, test client) the metrics live in its ordinary in-process registry.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Where the request's blueprint is noted for the duration histogram (logs.RequestContext).
BLUEPRINT_ENVIRON_KEY = "flaskstream.blueprint"

# --- events -------------------------------------------------------------------
STREAMS_OPEN = Gauge("flaskstream_streams_open", "Open SSE/token streams", ["kind"],
                     multiprocess_mode="livesum")
EVENTS_PUBLISHED = Counter("flaskstream_events_published", "Events stored and notified")
EVENTS_DELIVERED = Counter("flaskstream_events_delivered",
                           "Events queued to a live subscriber (one per subscriber)")
EVENTS_DROPPED = Counter("flaskstream_events_dropped",
                         "Streams ended because their queue was full (slow consumers)")
LISTENER_RECONNECTS = Counter("flaskstream_listener_reconnects",
                              "LISTEN connection losses that were reconnected")
# Broker counter names (events/broker.py ``Broker.count``) that are exported.
_BROKER_COUNTERS = {"published": EVENTS_PUBLISHED, "delivered": EVENTS_DELIVERED,
                    "dropped_slow": EVENTS_DROPPED, "listener_reconnects": LISTENER_RECONNECTS}

# --- uploads and tus ----------------------------------------------------------
UPLOAD_FILES = Counter("flaskstream_upload_files", "Files stored by POST/PUT /uploads")
UPLOAD_BYTES = Counter("flaskstream_upload_bytes", "Bytes of files stored by POST/PUT /uploads")
UPLOAD_FAILURES = Counter("flaskstream_upload_failures", "Uploads refused or failed, by error code",
                          ["code"])
TUS_BYTES = Counter("flaskstream_tus_bytes_written", "Bytes appended to tus uploads")

# --- media --------------------------------------------------------------------
MEDIA_RESPONSES = Counter("flaskstream_media_responses",
                          "Ranged file responses (/media/, /uploads/<id>/content) by status",
                          ["status"])
MEDIA_BYTES = Counter("flaskstream_media_bytes_sent", "File bytes handed to the server for sending")

# --- etl ----------------------------------------------------------------------
ETL_ROWS_LOADED = Counter("flaskstream_etl_rows_loaded", "Rows committed by ETL loads")
ETL_ROWS_REJECTED = Counter("flaskstream_etl_rows_rejected", "Rows rejected by ETL loads")
ETL_JOBS = Counter("flaskstream_etl_jobs", "ETL loads finished, by status", ["status"])

# --- database pool ------------------------------------------------------------
DB_POOL_IN_USE = Gauge("flaskstream_db_pool_in_use", "Pooled connections borrowed",
                       multiprocess_mode="livesum")
DB_POOL_WAITING = Gauge("flaskstream_db_pool_waiting", "Callers waiting for a pooled connection",
                        multiprocess_mode="livesum")

# --- HTTP ---------------------------------------------------------------------
# Streams last minutes to hours: the top buckets keep them apart from API calls.
REQUEST_SECONDS = Histogram(
    "flaskstream_request_duration_seconds",
    "Time from request to the response body's close, by blueprint",
    ["blueprint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)


def count_broker(name: str, n: int = 1) -> None:
    """Mirror one of the broker's own counters (``Broker.count``), if exported."""
    metric = _BROKER_COUNTERS.get(name)
    if metric is not None:
        metric.inc(n)


def uploads_stored(sizes: list[int]) -> None:
    UPLOAD_FILES.inc(len(sizes))
    UPLOAD_BYTES.inc(sum(sizes))


# Label children looked up once per process: ``labels()`` takes a lock and builds a
# key on every call, a third of an increment's cost on the media fast path. Filled
# lazily (a child made at import would export a zero series for every label value).
_MEDIA_BY_STATUS: dict[int, Any] = {}
_REQUESTS_BY_BLUEPRINT: dict[str | None, Any] = {}


def media_response(status: int) -> None:
    """One ranged file response with ``status`` (``MEDIA_RESPONSES``)."""
    child = _MEDIA_BY_STATUS.get(status)
    if child is None:
        child = _MEDIA_BY_STATUS[status] = MEDIA_RESPONSES.labels(str(status))
    child.inc()


def media_fast_path(environ: dict[str, Any], status: int) -> None:
    """A response of the WSGI fast path (``media/fastpath.py``): Flask never saw it."""
    media_response(status)
    environ[BLUEPRINT_ENVIRON_KEY] = "media"


def etl_finished(status: str, rows_loaded: int, rows_rejected: int) -> None:
    ETL_JOBS.labels(status).inc()
    ETL_ROWS_LOADED.inc(rows_loaded)
    ETL_ROWS_REJECTED.inc(rows_rejected)


class PoolSlots:
    """The pool's semaphore, counting borrowers and waiters as it goes.

    A wrapper (not a subclass) so that the semaphore is created when the pool
    is, after gevent has patched ``threading`` in a worker.
    """

    def __init__(self, size: int) -> None:
        self._semaphore = threading.BoundedSemaphore(size)

    def acquire(self, timeout: float | None = None) -> bool:
        DB_POOL_WAITING.inc()
        try:
            got = self._semaphore.acquire(timeout=timeout)
        finally:
            DB_POOL_WAITING.dec()
        if got:
            DB_POOL_IN_USE.inc()
        return got

    def release(self) -> None:
        self._semaphore.release()
        DB_POOL_IN_USE.dec()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> tuple[bytes, str]:
    """The exposition text of every process (multiprocess) or of this one."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def observe_request(blueprint: str | None, seconds: float) -> None:
    child = _REQUESTS_BY_BLUEPRINT.get(blueprint)
    if child is None:
        child = _REQUESTS_BY_BLUEPRINT[blueprint] = REQUEST_SECONDS.labels(blueprint or "none")
    child.observe(seconds)

