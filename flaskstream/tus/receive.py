"""Streaming a PATCH body into an upload's bytes (a ``ResumableWriter``) while holding its lease.

The request greenlet reads the body in chunks and appends them; one renewer
greenlet per worker (``LeaseRenewer``) renews the leases of all its requests
every ``interval`` seconds in a single query. The renewer is what makes
takeover work: a request blocked reading from a client that vanished without
closing its connection would otherwise hold the upload until the TCP stack gave
up (minutes to hours). When another request asks for the upload, when the lease
is lost, or when no byte arrived for the idle timeout, the renewer interrupts
the read; the view then keeps the bytes it has (fsync, commit the offset) and
lets go.

Without gevent (the Flask test client, other servers) reads never block for
long, so each request renews inline between chunks instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flaskstream import metrics
from flaskstream.adapters import gunicorn as gunicorn_adapter
from flaskstream.errorbase import FixedError
from flaskstream.storage.base import ResumableWriter
from flaskstream.storage.localtus import LocalWriter
from flaskstream.tus import store

log = logging.getLogger(__name__)

BODY_UNREADABLE = "the request body could not be read (the client went away or sent a broken body)"
# Stop writing this long before the lease could have run out in the database.
LEASE_MARGIN = 1.0


class Interrupted(FixedError):
    """The body stopped before its end; the bytes so far may be kept."""

    status = 400
    code = "CLIENT_DISCONNECTED"


class ClientGone(Interrupted):
    status, code = 400, "CLIENT_DISCONNECTED"


class IdleTimeout(Interrupted):
    status, code = 408, "UPLOAD_IDLE_TIMEOUT"


class TakenOver(Interrupted):
    status, code = 423, "UPLOAD_TAKEN_OVER"


class LeaseExpired(Interrupted):
    status, code = 423, "UPLOAD_LEASE_LOST"


class LengthExceeded(FixedError):
    """More bytes than the upload's length (or the maximum size) allows."""

    status, code = 413, "TUS_LENGTH_EXCEEDED"


def gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a runtime dependency
        return False
    return bool(monkey.is_module_patched("socket"))


class LeaseKeeper:
    """Renews a lease while a body streams, and decides when the stream must stop."""

    def __init__(self, connect: Callable[[], Any], upload_id: str, token: str, *,
                 lease: float, interval: float, idle_timeout: float | None,
                 renewers: dict[tuple[int, float, float], LeaseRenewer] | None = None) -> None:
        """``renewers`` is the app's registry (``state.lease_renewers``); None: one of its own."""
        self.connect = connect
        self.upload_id = upload_id
        self.token = token
        self.lease = lease
        self.interval = interval
        self.idle_timeout = idle_timeout
        now = time.monotonic()
        self.valid_until = now + lease - LEASE_MARGIN
        self.last_data = now
        self.interrupt: Interrupted | None = None
        self.reading = False
        self._next_tick = now + interval
        self._renewer: LeaseRenewer | None = None
        self._renewers = {} if renewers is None else renewers
        self._owner: Any = None

    def tick(self) -> Interrupted | None:
        """Renew once, by itself (no gevent); the reason to stop, if there is one."""
        started = time.monotonic()
        try:
            with self.connect() as con:
                wanted: bool | None = store.renew(con, self.upload_id, self.token, self.lease)
        except store.LeaseLost:
            wanted = None
        except Exception:  # noqa: BLE001 - a database hiccup: keep going until the lease runs out
            log.warning("could not renew the lease of tus upload %s", self.upload_id,
                        exc_info=True)
            return self.outcome(started, False, renewed=False)
        return self.outcome(started, wanted)

    def outcome(self, started: float, wanted: bool | None, renewed: bool = True
                ) -> Interrupted | None:
        """Apply a renewal's result: ``wanted`` None = the lease is gone, True = asked to let go."""
        if wanted is None:
            return LeaseExpired("the upload's lease was lost")
        if renewed:
            self.valid_until = started + self.lease - LEASE_MARGIN
        if wanted:
            return TakenOver("another request took over this upload")
        if self.idle_timeout and started - self.last_data >= self.idle_timeout:
            return IdleTimeout(f"no data for {self.idle_timeout:g} s")
        return None

    def start(self) -> LeaseKeeper:
        if gevent_active():
            import gevent

            self._owner = gevent.getcurrent()
            self._renewer = LeaseRenewer.for_(self._renewers, self.connect, self.lease,
                                              self.interval)
            self._renewer.add(self)
        return self

    def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.remove(self)
            self._renewer = None

    def stop_with(self, reason: Interrupted) -> None:
        """Called by the renewer: remember why, and interrupt a read in progress.

        From the hub, and only if the owner is still blocked in a read: an
        exception thrown anywhere else (an fsync, a commit) would break the
        bookkeeping that keeps the bytes; otherwise ``check`` raises it.
        """
        import gevent

        self.interrupt = reason
        gevent.get_hub().loop.run_callback(self._interrupt_read, reason)

    def _interrupt_read(self, reason: Interrupted) -> None:
        if self.reading and self._owner is not None and not self._owner.dead:
            self._owner.throw(reason)

    @contextlib.contextmanager
    def read_guard(self) -> Iterator[None]:
        self.reading = True
        try:
            yield
        finally:
            self.reading = False

    def check(self) -> None:
        """Before each write: raise if the stream must stop (inline renewal without gevent)."""
        now = time.monotonic()
        if self._renewer is None and now >= self._next_tick:
            self._next_tick = now + self.interval
            reason = self.tick()
            if reason is not None:
                self.interrupt = reason
        if self.interrupt is not None:
            raise self.interrupt
        if now >= self.valid_until:
            raise LeaseExpired("the upload's lease ran out")


class LeaseRenewer:
    """One greenlet per worker renews every lease its requests hold, in one query per interval.

    A greenlet and a query per upload would cost 2 queries a second per upload
    in flight and, at 100 uploads on a worker, more than its connection pool can
    serve in time — leases would run out under load. Never killed (see
    ``db.is_connection_lost``); it sleeps while no lease is held.
    """

    def __init__(self, connect: Callable[[], Any], lease: float, interval: float) -> None:
        from gevent.event import Event

        self.connect = connect
        self.lease = lease
        self.interval = interval
        self.keepers: dict[int, LeaseKeeper] = {}
        self._wake = Event()
        self._greenlet: Any = None

    @classmethod
    def for_(cls, registry: dict[tuple[int, float, float], LeaseRenewer],
             connect: Callable[[], Any], lease: float, interval: float) -> LeaseRenewer:
        """The renewer of ``registry`` (the app's) for this pool, lease and interval."""
        key = (id(getattr(connect, "__self__", connect)), float(lease), float(interval))
        renewer = registry.get(key)
        if renewer is None:
            renewer = registry[key] = cls(connect, lease, interval)
        return renewer

    def add(self, keeper: LeaseKeeper) -> None:
        import gevent

        self.keepers[id(keeper)] = keeper
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        self._wake.set()

    def remove(self, keeper: LeaseKeeper) -> None:
        self.keepers.pop(id(keeper), None)

    def _run(self) -> None:
        import gevent

        while True:
            if not self.keepers:
                self._wake.clear()
                self._wake.wait()
                continue
            gevent.sleep(self.interval)
            keepers = [k for k in self.keepers.values() if k.interrupt is None]
            if keepers:
                self.renew(keepers)

    def renew(self, keepers: list[LeaseKeeper]) -> None:
        started = time.monotonic()
        try:
            with self.connect() as con:
                held = store.renew_many(con, [(k.upload_id, k.token) for k in keepers],
                                        self.lease)
        except Exception:  # noqa: BLE001 - keep going until the leases run out
            log.warning("could not renew %d tus leases", len(keepers), exc_info=True)
            held, renewed = {}, False
        else:
            renewed = True
        for keeper in keepers:
            if renewed:
                reason = keeper.outcome(started, held.get((keeper.upload_id, keeper.token)))
            else:
                reason = keeper.outcome(started, False, renewed=False)
            if reason is not None and id(keeper) in self.keepers:
                keeper.stop_with(reason)


class Tee:
    """Feeds several hashers (the checksum's, the file's SHA-256) from one stream."""

    def __init__(self, *hashers: Any) -> None:
        self.hashers = [h for h in hashers if h is not None]

    def update(self, data: bytes) -> None:
        for hasher in self.hashers:
            hasher.update(data)


def append_body(sink: os.PathLike[str] | str | ResumableWriter, stream: Any,
                keeper: LeaseKeeper, *, chunk_size: int | Callable[[], int],
                budget: int | None, hasher: Any | None, declared: int | None = None,
                on_chunk: Callable[[int], None] | None = None,
                salvage: Callable[[], bytes] | None = None) -> int:
    """Append the body to ``sink`` (a writer, or a file's path); return the bytes written.

    ``budget`` bounds the body (the upload's remaining length): one byte more
    raises ``LengthExceeded``; a body shorter than its ``declared`` Content-Length
    raises ``ClientGone``. ``Interrupted`` subclasses carry ``written`` (the
    bytes appended before the stop) as an attribute; so do ``InsufficientStorage``
    and ``LengthExceeded``.
    """
    own = isinstance(sink, str | os.PathLike)
    writer = LocalWriter(Path(sink), 0) if isinstance(sink, str | os.PathLike) else sink
    written = 0
    try:
        while True:
            size = chunk_size() if callable(chunk_size) else chunk_size
            want = size if budget is None else min(size, budget - written + 1)
            try:
                with keeper.read_guard():
                    chunk = stream.read(max(want, 1))
            except Interrupted as exc:
                # The read was cut short by the watcher: what the server had already
                # received for it sits in the server's buffers. Keep it (still ours).
                extra = salvage() if salvage is not None and not isinstance(exc, LeaseExpired) \
                    and time.monotonic() < keeper.valid_until else b""
                if budget is not None:
                    extra = extra[: budget - written]
                if extra:
                    _write_all(writer, extra)
                    if hasher is not None:
                        hasher.update(extra)
                    written += len(extra)
                raise
            except Exception as exc:  # werkzeug ClientDisconnected, gunicorn NoMoreData, OSError
                raise ClientGone(BODY_UNREADABLE) from exc  # the server's reason stays in __cause__
            if not chunk:
                if declared is not None and written < declared:
                    # gunicorn's wsgi.input (werkzeug uses it as-is, wsgi.input_terminated)
                    # just ends early when the peer closes: a short body is a disconnect.
                    raise ClientGone(f"the body ended after {written} of {declared} bytes")
                return written
            keeper.last_data = time.monotonic()
            if budget is not None and written + len(chunk) > budget:
                raise LengthExceeded(f"the body is longer than the {budget} bytes left")
            keeper.check()
            _write_all(writer, chunk)
            if hasher is not None:
                hasher.update(chunk)
            written += len(chunk)
            if on_chunk is not None:
                on_chunk(written)
    except BaseException as exc:
        exc.written = written  # type: ignore[attr-defined]
        raise
    finally:
        if own:  # a writer of the caller's is the caller's to close
            writer.close(None)


def salvage_gunicorn_buffers(raw_input: Any) -> bytes:
    """The body bytes gunicorn received for a read that was interrupted (best effort).

    Without this, up to one read (``UPLOAD_CHUNK_SIZE``) of received bytes would
    be lost on every takeover or idle timeout; the adapter knows where gunicorn
    keeps them (``b""`` where it cannot tell) and marks the body failed so the
    connection is not reused.
    """
    return gunicorn_adapter.salvage_buffers(raw_input)


def _write_all(writer: ResumableWriter, data: bytes) -> None:
    writer.write(data)  # a full disk raises InsufficientStorage (its written bytes: none)
    metrics.TUS_BYTES.inc(len(data))
