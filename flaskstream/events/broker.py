"""Publishing, and the per-worker fan-out from one LISTEN connection to many streams.

``publish`` is the cross-pattern API: it stores the event and NOTIFYs its id
(see ``store.py`` for why ids commit in order). Each worker process that serves
streams has one ``Broker``: a single listener (a thread, i.e. a greenlet under
gevent's monkey-patching) holding the worker's only LISTEN connection, and a map
channel → subscribers with bounded queues.

The listener never trusts notifications for content: pg8000 only collects them
while a query runs, into a deque of 100 that silently drops the oldest. So it
waits for the socket to become readable (or ``EVENTS_POLL_SECONDS``), then runs
"events with id > last seen" — that query both drains the deque and is the
whole truth, so an overflowed deque, a lost connection or a notification that
sat in pg8000's read buffer costs latency, never an event.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import selectors
import threading
import time
import weakref
from typing import Any

from flask import Flask, current_app

from flaskstream import db, metrics
from flaskstream.adapters import pg8000 as pg8000_adapter
from flaskstream.events import store
from flaskstream.events.encode import EncodeError, encode_event
from flaskstream.events.streams import Delivery, Stream, Subscriber

log = logging.getLogger(__name__)

FETCH_PAGE = 500
_brokers: weakref.WeakSet[Broker] = weakref.WeakSet()
_brokers_lock = threading.RLock()


def publish(
    channel: str,
    data: Any,
    event: str | None = None,
    *,
    key: str | int | None = None,
    app: Flask | None = None,
    strict: bool = False,
) -> int:
    """Store an event on ``channel`` and fan it out to every worker and host; return its id.

    ``data`` that is not a ``str`` is sent as compact JSON. ``key`` makes the call
    idempotent per channel (a retry returns the first call's id). Needs an app
    context or ``app=``. Raises ``ValueError`` for a bad channel, event name or data.

    Any ``str`` is safe: text UTF-8 cannot encode (a lone surrogate, e.g. an ETL
    error event's CSV header) becomes U+FFFD, or ``ValueError`` when ``strict`` (HTTP/CLI edges).
    """
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    channel = store.check_channel(channel)
    text = store.data_text(data, strict=strict)
    event = store.check_event_name(event, strict=strict)
    key = store.check_key(key, strict=strict)
    broker = get_broker(app)
    with db.get_database(app).connection() as con:
        event_id, created = store.insert_event(con, channel, text, event, key,
                                               durable=broker.durable)
        if created:
            broker.count("published")
            if broker.prune_due():
                broker.prune(con)
    return event_id


class Broker:
    """Per-process (per-worker) event hub of one app."""

    def __init__(self, app: Flask) -> None:
        cfg = app.config
        self.app = app
        self.pid = os.getpid()
        self.max_streams = int(cfg["SSE_MAX_STREAMS"])
        self.queue_size = int(cfg["SSE_QUEUE_SIZE"])
        self.poll_seconds = float(cfg["EVENTS_POLL_SECONDS"])
        self.keep_count = int(cfg["EVENTS_RETENTION_COUNT"])
        self.keep_seconds = float(cfg["EVENTS_RETENTION_SECONDS"])
        self.prune_interval = float(cfg["EVENTS_PRUNE_INTERVAL"])
        self.stats_log_seconds = float(cfg["EVENTS_STATS_LOG_SECONDS"])
        self.durable = bool(cfg["EVENTS_SYNCHRONOUS_COMMIT"])
        self.lock = threading.RLock()
        self.streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self.open_streams = 0
        self.peak_streams = 0  # since the last memory release
        self.by_channel: dict[str, set[Subscriber]] = {}
        self.counters: dict[str, int] = dict.fromkeys((
            "published", "delivered", "dropped_slow", "replays", "replayed_events", "resets",
            "rejected", "opened", "closed", "disconnects", "shutdown_ended", "listener_reconnects",
            "catchups", "pruned"), 0)
        self.shutting_down = False
        self.last_id: int | None = None  # highest id the listener has fanned out
        self.connected = False
        self._ready = threading.Event()
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._publishes_since_prune = 0
        self._last_prune = 0.0
        self._last_stats_log = time.monotonic()
        with _brokers_lock:
            _brokers.add(self)

    # --- counters and stats ------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n
        metrics.count_broker(name, n)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            channels = {name: len(subs) for name, subs in self.by_channel.items()}
            kinds: dict[str, int] = {}
            for stream in list(self.streams):
                kinds[stream.kind] = kinds.get(stream.kind, 0) + 1
        return {
            "pid": self.pid,
            "open_streams": self.open_streams,
            "max_streams": self.max_streams,
            "streams_by_kind": kinds,
            "subscribers": sum(channels.values()),
            "channel_count": len(channels),  # all of them; the map shows the top 100
            "channels": dict(sorted(channels.items(), key=lambda kv: -kv[1])[:100]),
            "counters": dict(self.counters),
            "listener": {"running": self._listener is not None and self._listener.is_alive(),
                         "connected": self.connected, "last_id": self.last_id},
            "shutting_down": self.shutting_down,
        }

    # --- retention -----------------------------------------------------------
    def prune_due(self) -> bool:
        self._publishes_since_prune += 1
        return (self._publishes_since_prune >= max(100, self.keep_count // 10)
                or time.monotonic() - self._last_prune >= self.prune_interval)

    def prune(self, con: Any) -> None:
        self._publishes_since_prune = 0
        self._last_prune = time.monotonic()
        try:
            deleted = store.prune(con, self.keep_count, self.keep_seconds)
        except db.DatabaseError:
            log.exception("events retention failed")
            return
        if deleted:
            self.count("pruned", deleted)
            log.info("events retention removed %d events", deleted)

    # --- streams -------------------------------------------------------------
    def open_stream(self, stream: Stream) -> bool:
        """Admit ``stream`` unless over ``SSE_MAX_STREAMS`` or shutting down."""
        with self.lock:
            if self.shutting_down or self.open_streams >= self.max_streams:
                self.count("rejected")
                return False
            self.open_streams += 1
            self.peak_streams = max(self.peak_streams, self.open_streams)
            self.streams.add(stream)
            self.count("opened")
            metrics.STREAMS_OPEN.labels(stream.kind).inc()
            return True

    def close_stream(self, stream: Stream) -> None:
        with self.lock:
            if stream not in self.streams:
                return
            self.streams.discard(stream)
            self.open_streams -= 1
            self.count("closed")
            metrics.STREAMS_OPEN.labels(stream.kind).dec()
            if stream.reason == "disconnect":
                self.count("disconnects")
            if isinstance(stream, Subscriber):
                for name in stream.channels:
                    subs = self.by_channel.get(name)
                    if subs is not None:
                        subs.discard(stream)
                        if not subs:
                            del self.by_channel[name]

    def subscribe(self, subscriber: Subscriber) -> int:
        """Start delivering to an admitted subscriber; return the id it is current to.

        Every event with a larger id will reach its queue: the listener's
        position is read under the same lock that registers the subscriber.
        """
        with self.lock:
            for name in subscriber.channels:
                self.by_channel.setdefault(name, set()).add(subscriber)
            return self.last_id or 0

    def begin_shutdown(self) -> None:
        """End every open stream now (each sends a jittered ``retry:`` first)."""
        with self.lock:
            if self.shutting_down:
                return
            self.shutting_down = True
            streams = list(self.streams)
        log.info("shutdown: ending %d open streams", len(streams))
        for stream in streams:
            stream.end("shutdown")
        self._stop.set()
        # Streams blocked writing to clients that do not read cannot send their
        # retry: cut them off shortly after, well before graceful_timeout.
        timer = threading.Timer(1.0, self._abort_remaining)
        timer.daemon = True
        timer.start()

    def _abort_remaining(self) -> None:
        with self.lock:
            streams = list(self.streams)
        for stream in streams:
            stream.abort()

    # --- listener ------------------------------------------------------------
    def ensure_listener(self, timeout: float) -> bool:
        """Start the LISTEN loop once per process; True once it is current."""
        if self._listener is None or not self._listener.is_alive():
            with self.lock:
                if self._listener is None or not self._listener.is_alive():
                    self._stop.clear()
                    self._listener = threading.Thread(
                        target=self._listen_forever, name="flaskstream-events-listener", daemon=True)
                    self._listener.start()
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Stop the listener (tests, app teardown); streams are left alone."""
        self._stop.set()
        if self._listener is not None and self._listener is not threading.current_thread():
            self._listener.join(self.poll_seconds + 5)

    def _listen_forever(self) -> None:
        backoff = 0.5
        database = db.get_database(self.app)
        while not self._stop.is_set():
            con = None
            selector: selectors.BaseSelector | None = None
            try:
                con = database.new_connection()
                con.run(f'LISTEN "{store.notify_channel(con)}"')
                top = store.max_id(con)
                if self.last_id is None or top < self.last_id:
                    if self.last_id is not None:  # the store was restored or recreated
                        log.warning("events store is behind the listener (%d < %d): "
                                    "following it from %d", top, self.last_id, top)
                    self.last_id = top
                self.connected = True
                self._ready.set()
                backoff = 0.5
                self._catch_up(con)  # anything committed while we were away
                # DefaultSelector: gevent's under monkey-patching, epoll otherwise —
                # never select(), which fails for fds >= 1024 in a busy worker.
                selector = selectors.DefaultSelector()
                sock = pg8000_adapter.raw_socket(con)
                if sock is not None:
                    selector.register(sock, selectors.EVENT_READ)
                while not self._stop.is_set():
                    if sock is None:  # no socket to wait on: poll (later, never lost)
                        self._stop.wait(self.poll_seconds)
                    elif not pg8000_adapter.has_buffered_input(con):
                        selector.select(self.poll_seconds)
                    self._catch_up(con)
                    self._log_stats()
                    self._release_memory()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect and re-read
                if self._stop.is_set():
                    break
                self.count("listener_reconnects")
                log.warning("events listener lost its connection (%s); retrying in %.1fs",
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                            backoff)
            finally:
                self.connected = False
                if selector is not None:
                    selector.close()
                    selector = None
                if con is not None:  # never reused after any error: it may be out of
                    db.close_quietly(con)  # step (db.Connection); the next one re-reads
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _catch_up(self, con: Any) -> None:
        """Fan out every event after ``last_id``; also drains pg8000's notification deque."""
        # Pages of at most half a queue, with a yield between them: under gevent
        # the dispatch loop never blocks, so without the yield a burst larger than
        # SSE_QUEUE_SIZE would overflow every subscriber before any could write.
        page = max(1, min(FETCH_PAGE, self.queue_size // 2))
        while True:
            with self.lock:
                watched = list(self.by_channel)
            rows = store.fetch_after(con, self.last_id or 0, watched, page)
            con.notifications.clear()
            if rows:
                self.count("catchups")
                rows = self._fill_bodies(con, rows)
            for event in rows:
                self._dispatch(event)
            if len(rows) < page:
                return
            time.sleep(0)  # let the woken streams write before the next page

    def _fill_bodies(self, con: Any, rows: list[store.StoredEvent]) -> list[store.StoredEvent]:
        """Fetch bodies for channels that gained a subscriber while the query ran.

        ``watched`` is read before the query; a subscriber that registers and
        sees its first event committed before the query's snapshot would
        otherwise be skipped for that event.
        """
        with self.lock:
            missing = [r.id for r in rows if r.data is None and r.channel in self.by_channel]
        if not missing:
            return rows
        bodies = store.bodies(con, missing)
        return [r._replace(data=bodies.get(r.id)) if r.id in bodies else r for r in rows]

    def _dispatch(self, event: store.StoredEvent) -> None:
        delivered = dropped = 0
        with self.lock:
            subs = self.by_channel.get(event.channel)
            if subs and event.data is not None:
                try:
                    delivery = Delivery(event.id, encode_event(
                        event.data, event=event.event, id=event.id))
                except EncodeError:  # stored by hand with a CR in its name: skip, say so
                    log.error("event %d cannot be encoded as SSE; skipped", event.id)
                    subs = None
            if subs and event.data is not None:
                for sub in list(subs):
                    if sub.offer(delivery):
                        delivered += 1
                    elif sub.reason == "slow":
                        dropped += 1
                        subs.discard(sub)
            self.last_id = event.id
        if delivered:
            self.count("delivered", delivered)
        if dropped:
            self.count("dropped_slow", dropped)
            log.warning("slow consumer: %d stream(s) on %r ended (queue of %d full)",
                        dropped, event.channel, self.queue_size)

    def _release_memory(self) -> None:
        """Give the heap back after a wave of streams has gone.

        Thousands of closed streams leave glibc's heap full of free but
        unreturned pages (greenlet stacks, socket buffers), so a worker that once
        held 10,000 streams would keep that RSS for good. When at least 1,000
        streams have closed since the peak and fewer than a tenth remain, collect
        and ``malloc_trim`` once.
        """
        if self.peak_streams - self.open_streams < 1000 or self.open_streams > self.peak_streams // 10:
            return
        self.peak_streams = self.open_streams
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            return
        log.info("released memory after streams closed (open now %d)", self.open_streams)

    def _log_stats(self) -> None:
        now = time.monotonic()
        if now - self._last_stats_log < self.stats_log_seconds:
            return
        self._last_stats_log = now
        if self.open_streams or self.counters["published"] or self.counters["delivered"]:
            s = self.snapshot()
            log.info("events stats: open=%d subscribers=%d channels=%d counters=%s last_id=%s",
                     s["open_streams"], s["subscribers"], len(s["channels"]), s["counters"],
                     self.last_id)


def get_broker(app: Flask | None = None) -> Broker:
    """This process's broker for ``app`` (a fresh one after a fork)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    broker = app.extensions.get("flaskstream.events")
    if broker is None or broker.pid != os.getpid():
        with _brokers_lock:
            broker = app.extensions.get("flaskstream.events")
            if broker is None or broker.pid != os.getpid():
                broker = Broker(app)
                app.extensions["flaskstream.events"] = broker
    return broker


def shutdown_all() -> None:
    """End every stream of every broker in this process (SIGTERM, worker exit)."""
    with _brokers_lock:
        brokers = [b for b in _brokers if b.pid == os.getpid()]
    for broker in brokers:
        broker.begin_shutdown()
