"""How a stream learns that its client left or that its worker is going away.

A WSGI app normally learns of a disconnect only when a write fails, i.e. at the
next heartbeat. Under gunicorn's gevent worker we can do better at almost no
cost: an idle SSE client never sends anything after its request, so its socket
becoming *readable* means EOF (or stray bytes). ``PeerWatch`` puts one libev io
watcher on the socket — no extra greenlet — that wakes the stream, which then
peeks to tell EOF from data. Elsewhere (test client, threaded servers) it is a
no-op and heartbeats do the job.

Shutdown: gunicorn's gevent worker on SIGTERM (or after ``max_requests``, or
when its master changes) sets ``worker.alive = False`` and then waits up to
``graceful_timeout`` for open responses, which SSE streams never finish by
themselves. ``watch_worker`` (called from ``post_worker_init`` in
``conf/gunicorn.conf.py``) polls that flag and ends every stream, each with a
jittered ``retry:`` so a thousand browsers do not come back in the same second.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from flaskstream.adapters import gunicorn as gunicorn_adapter
from flaskstream.adapters.gunicorn_lifecycle import draining_probe
from flaskstream.events.broker import shutdown_all
from flaskstream.events.streams import Stream

log = logging.getLogger(__name__)


def _gevent_active() -> bool:
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


class PeerWatch:
    """Wake ``stream`` (``peer_check = True``) when the client socket turns readable."""

    __slots__ = ("stream", "sock", "watcher")

    def __init__(self, environ: dict[str, Any], stream: Stream) -> None:
        self.stream = stream
        self.sock = environ.get("gunicorn.socket")
        self.watcher = None
        stream.sock = self.sock
        if self.sock is None or not _gevent_active():
            return
        try:
            from gevent import get_hub

            self.watcher = get_hub().loop.io(self.sock.fileno(), 1)
            self.watcher.start(self._readable)
        except (OSError, ValueError, AttributeError):
            self.watcher = None

    def _readable(self) -> None:  # runs in the hub: set flags only, never block
        if self.watcher is not None:
            self.watcher.stop()
        self.stream.peer_check = True
        self.stream.wake.set()

    def gone(self) -> bool:
        """After a wake-up with ``peer_check``: True if the client closed its end."""
        self.stream.peer_check = False
        if self.sock is None or self.watcher is None:
            return False
        try:
            data = gunicorn_adapter.peek(self.sock, 1)
        except (BlockingIOError, InterruptedError):
            self.watcher.start(self._readable)  # spurious: keep watching
            return False
        except OSError:
            return True
        if not data:
            return True
        return False  # the client sent bytes: stop watching, heartbeats will tell

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher.close()
            self.watcher = None


def watch_worker(worker: Any, interval: float = 0.25, drain: float = 0.0) -> None:
    """End every stream as soon as the gunicorn worker stops being alive."""
    if not _gevent_active():
        return
    import gevent

    app = gunicorn_adapter.worker_app(worker)
    config = getattr(app, "config", None)
    connections = getattr(worker, "worker_connections", None)
    if config is not None and connections and int(config["SSE_MAX_STREAMS"]) >= connections:
        log.warning("SSE_MAX_STREAMS (%s) >= worker_connections (%s): when streams fill the "
                    "worker, /healthz and API calls will hang; keep the cap below",
                    config["SSE_MAX_STREAMS"], connections)

    stopping = draining_probe(worker)  # reads worker.alive, or follows SIGTERM without it

    def run() -> None:
        while not stopping():
            gevent.sleep(interval)
        gevent.sleep(drain)  # /readyz says 503 meanwhile (SHUTDOWN_DRAIN_SECONDS, ops.py)
        log.info("worker %s is stopping: ending open streams", worker.pid)
        shutdown_all()

    gevent.spawn(run)
