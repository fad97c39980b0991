"""The embedded PostgreSQL server (pgserver) used when no DATABASE_URL is set.

pgserver reference-counts the processes that use a server and stops it from an
``atexit`` hook; processes that end with ``os._exit`` (forked gunicorn workers
killed hard) skip that hook and leave it running or, worse, stop it under the
feet of the others. So we never let pgserver clean up (``cleanup_mode=None``)
and give the server exactly one owner with an explicit stop:

* under gunicorn the **master** owns it: ``on_starting`` starts it and
  ``on_exit`` stops it (``conf/gunicorn.conf.py``); workers only attach;
* a ``flask`` command (or any other process) that finds no server running starts
  one and stops it when it exits; one that finds it running only attaches.

The data directory lives in the instance folder and survives restarts.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from flaskstream.adapters import pgserver as pgserver_adapter

log = logging.getLogger(__name__)

# Set by the gunicorn master hook so that workers never take ownership.
_attach_only = False
_owned: set[Path] = set()


def _pgserver() -> Any:
    return pgserver_adapter.module()


def pgdata_path(instance_path: str) -> Path:
    return Path(instance_path) / "pgdata"


def running_uri(pgdata: Path) -> str | None:
    """The URI of the server running on ``pgdata``, or None (no side effects)."""
    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running() and info.status == "ready":
        return info.get_uri()
    return None


def ensure_running(pgdata: Path, *, own: bool | None = None) -> str:
    """Start the server on ``pgdata`` unless it runs already; return its URI.

    ``own`` (default: True unless this is a gunicorn worker) makes this process
    stop the server at exit — but only if this call started it.
    """
    uri = running_uri(pgdata)
    if uri is not None:
        return uri
    pgserver = _pgserver()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting embedded PostgreSQL in %s", pgdata)
    cached = pgserver_adapter.cached_server(pgdata)
    if cached is not None:  # pgserver caches handles per process: restart through it
        with pgserver_adapter.start_lock():
            cached.ensure_postgres_running()
        server = cached
    else:
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    uri = server.get_uri()
    if own is None:
        own = not _attach_only
    if own and pgdata.resolve() not in _owned:
        _owned.add(pgdata.resolve())
        atexit.register(stop, pgdata)
    return uri


def stop(pgdata: Path) -> None:
    """Stop the server on ``pgdata`` (fast shutdown) if one is running."""
    _owned.discard(pgdata.resolve())
    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running() or info.status != "ready":
        return
    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pgserver_adapter.stop_server(pgdata, info.pid, user=user, timeout=30)
        log.info("stopped embedded PostgreSQL in %s", pgdata)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, TimeoutError) as exc:
        log.warning("could not stop embedded PostgreSQL in %s: %s", pgdata, exc)


def attach_only() -> None:
    """Mark this process as one that must never own the server (gunicorn workers)."""
    global _attach_only
    _attach_only = True
