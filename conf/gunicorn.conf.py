"""gunicorn settings for flaskstream: gevent workers sized for long-lived streams.

Every setting can be overridden from the environment (names in the README):
PORT / GUNICORN_BIND, WEB_CONCURRENCY, GUNICORN_WORKER_CONNECTIONS,
GUNICORN_TIMEOUT, GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_KEEPALIVE,
GUNICORN_ACCESSLOG, GUNICORN_LOGLEVEL, GUNICORN_CONTROL_SOCKET; FLASKSTREAM_LOG_FORMAT=json
makes gunicorn's own and access logs JSON lines too; PROMETHEUS_MULTIPROC_DIR
(default: a fresh folder per master under the instance folder) holds /metrics.

The master owns the embedded PostgreSQL (when no database URL is configured):
``on_starting`` starts it before any worker forks, ``on_exit`` stops it, and
workers only attach — see ``flaskstream/embedded.py`` for why.
"""

from __future__ import annotations

import os
import resource
import shutil

_env = os.environ.get

# One worker per core by default: each gevent worker holds thousands of streams.
bind = _env("GUNICORN_BIND") or f"{_env('HOST', '127.0.0.1')}:{_env('PORT', '8000')}"
workers = int(_env("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
# Open connections per worker (streams included). SSE admission stays below this
# (FLASKSTREAM_SSE_MAX_STREAMS) so /healthz always gets through.
worker_connections = int(_env("GUNICORN_WORKER_CONNECTIONS", "10000"))
# With gevent this is an event-loop heartbeat, not a request timeout: a worker
# is killed only if its loop is blocked this long.
timeout = int(_env("GUNICORN_TIMEOUT", "30"))
# Streams are ended by the app at shutdown, so this is only a backstop.
graceful_timeout = int(_env("GUNICORN_GRACEFUL_TIMEOUT", "10"))
keepalive = int(_env("GUNICORN_KEEPALIVE", "5"))
accesslog = _env("GUNICORN_ACCESSLOG", "-") or None
errorlog = "-"
loglevel = _env("GUNICORN_LOGLEVEL", "info")
# Uploads and streams are long; never let a proxy-less client hold a header forever.
limit_request_field_size = 16384
# Peers whose X-Forwarded-Proto gunicorn believes (wsgi.url_scheme). nginx on the
# same host by default; "*" behind a private network's proxy. Unix-socket peers
# are always trusted. Host and client address come from FLASKSTREAM_PROXY_FIX.
forwarded_allow_ips = (_env("GUNICORN_FORWARDED_ALLOW_IPS") or _env("FORWARDED_ALLOW_IPS")
                       or "127.0.0.1,::1")
proc_name = "flaskstream"
# gunicorn's control socket (gunicornc) is off unless a path is given: the
# default path is shared by every gunicorn of the user, so two would collide.
control_socket = _env("GUNICORN_CONTROL_SOCKET") or "/dev/null"
control_socket_disable = not _env("GUNICORN_CONTROL_SOCKET")


def _instance_path() -> str:
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.abspath(_env("FLASKSTREAM_INSTANCE_PATH") or os.path.join(checkout, "instance"))


def _database_url() -> str | None:
    return _env("FLASKSTREAM_DATABASE_URL") or _env("DATABASE_URL")


# --- operations: JSON logs, Prometheus multiprocess dir, readiness (d-metrics) ---------
from gunicorn.glogging import Logger  # noqa: E402

from flaskstream.logs import scrub_atoms, use_json, use_scrubbing  # noqa: E402


class FlaskstreamLogger(Logger):
    """gunicorn's logger (the public ``logger_class`` hook): no token in any line
    (issue 15: ``?access_token=``, ``sig=``), JSON lines with FLASKSTREAM_LOG_FORMAT=json."""

    def setup(self, cfg) -> None:  # noqa: ANN001
        super().setup(cfg)
        handlers = [*self.error_log.handlers, *self.access_log.handlers]
        use_scrubbing(handlers)
        if _env("FLASKSTREAM_LOG_FORMAT") == "json":
            use_json(handlers)

    def atoms(self, resp, req, environ, request_time):  # noqa: ANN001, ANN201
        return scrub_atoms(super().atoms(resp, req, environ, request_time))


logger_class = FlaskstreamLogger


def _own_metrics_dir() -> str:
    return os.path.join(_instance_path(), "prometheus", str(os.getpid()))  # the master's pid


def _metrics_dir() -> str:
    """One folder per master, emptied now: prometheus_client's multiprocess files.

    Set in the environment before any worker forks (and before this process
    imports prometheus_client, which reads it once at import).
    """
    path = _env("PROMETHEUS_MULTIPROC_DIR")
    if path:  # the operator's folder: empty it of metric files only
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
    else:
        path = _own_metrics_dir()
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # Imported here, in the master, once the variable is set (prometheus_client reads
    # it at import): the one lock its multiprocess values share is then an OS lock,
    # inherited by every worker. Imported first in a gevent worker it would be
    # gevent's, which made each increment ~2.5x dearer on the media fast path
    # (bench/README.md); the sections it guards (an mmap write) never yield.
    import prometheus_client  # noqa: F401
    return path


def child_exit(server, worker) -> None:  # noqa: ANN001
    # Its counters stay (summed forever); its live gauges (open streams, pool) go.
    if _env("PROMETHEUS_MULTIPROC_DIR"):  # set by on_starting; a hook must never raise
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _drain_probe(worker) -> float:  # noqa: ANN001
    from flaskstream import ops
    from flaskstream.adapters.gunicorn_lifecycle import draining_probe

    ops.set_draining_probe(worker.wsgi, draining_probe(worker))
    return float(worker.wsgi.config["SHUTDOWN_DRAIN_SECONDS"])
# --- end operations ---------------------------------------------------------------------


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's Arbiter
    server.log.info("metrics folder: %s", _metrics_dir())
    # Thousands of sockets per worker need descriptors: raise the soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if not _database_url():
        from flaskstream import embedded

        os.makedirs(_instance_path(), exist_ok=True)
        uri = embedded.ensure_running(embedded.pgdata_path(_instance_path()), own=False)
        server.log.info("embedded PostgreSQL ready: %s", uri)


def post_fork(server, worker) -> None:  # noqa: ANN001
    from flaskstream import embedded

    embedded.attach_only()


def post_worker_init(worker) -> None:  # noqa: ANN001
    # SSE streams never end by themselves: end them (with a jittered retry:) as
    # soon as the worker stops being alive, so it exits in ~2 s, not graceful_timeout.
    from flaskstream.events.lifecycle import watch_worker

    watch_worker(worker, drain=_drain_probe(worker))


def on_exit(server) -> None:  # noqa: ANN001
    shutil.rmtree(_own_metrics_dir(), ignore_errors=True)  # never an operator's folder
    if not _database_url():
        from flaskstream import embedded

        embedded.stop(embedded.pgdata_path(_instance_path()))
