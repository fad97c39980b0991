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
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Set by the gunicorn master hook so that workers never take ownership.
_attach_only = False
_owned: set[Path] = set()


def _pgserver() -> Any:
    """Import pgserver quietly: as root without XDG_RUNTIME_DIR, platformdirs warns
    at import that it falls back to /tmp/runtime-0 — expected here, and noise in
    every ``flask`` command's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver
        import pgserver.utils

    return pgserver


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
    cached = pgserver.PostgresServer._instances.get(pgdata.resolve())
    if cached is not None:  # pgserver caches handles per process: restart through it
        with cached._lock:
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
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import

    _owned.discard(pgdata.resolve())
    if running_uri(pgdata) is None:
        return
    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)
        log.info("stopped embedded PostgreSQL in %s", pgdata)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log.warning("could not stop embedded PostgreSQL in %s: %s", pgdata, exc)


def attach_only() -> None:
    """Mark this process as one that must never own the server (gunicorn workers)."""
    global _attach_only
    _attach_only = True
