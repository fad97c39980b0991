"""Leases and janitors shared by the patterns whose work outlives a request's ``finally``.

A worker killed hard (SIGKILL, OOM) runs no cleanup, so anything it was doing
must be *owned through a lease* that it keeps renewing, and a *janitor* on any
worker finds what nobody renews any more. tus uploads were first (their lease
guards one writer per upload, ``tus/store.py``); ETL jobs (``etl/joblease.py``)
and request staging files (``uploads/janitor.py``) reuse the two pieces here:

- ``Heartbeat``: calls ``beat()`` every ``interval`` seconds in the background
  until stopped. It is a ``threading.Thread``: under gunicorn's gevent worker
  (``monkey.patch_all``) that is a greenlet, in a ``flask`` command a real thread,
  so the same code renews a lease in both.
- ``run_every``: one periodic janitor loop per (app, name) per process, with
  the first pass at start-up and jittered passes after, so several workers
  sharing a database do not run in lock step. Passes must be safe to run on
  several workers at once (``FOR UPDATE SKIP LOCKED``, idempotent unlinks).

No flask or driver import here: callers pass callables.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SECONDS = "* interval '1 second'"


def gevent_active() -> bool:
    """True in a gevent-patched process (a gunicorn gevent worker), where background
    greenlets run; False in ``flask`` commands and the test client."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a runtime dependency
        return False
    return bool(monkey.is_module_patched("socket"))


class Heartbeat:
    """Calls ``beat`` every ``interval`` s until ``stop``; a ``beat`` returning False ends it.

    ``beat`` exceptions are logged and the loop goes on (a database hiccup must
    not end renewals that would succeed a second later; the lease's length is
    the tolerance). ``stopped`` is set once it ended for any reason.
    """

    def __init__(self, beat: Callable[[], bool], interval: float, name: str = "heartbeat") -> None:
        self.beat = beat
        self.interval = interval
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    if not self.beat():
                        return
                except Exception:  # noqa: BLE001 - keep trying until the lease runs out
                    log.warning("%s failed", self._thread.name, exc_info=True)
        finally:
            self.stopped.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end and wait for a beat in progress (never interrupts one:
        a query cut in the middle would leave its connection unusable)."""
        self.stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


_started: set[tuple[int, str]] = set()
_started_lock = threading.Lock()


def jittered(interval: float) -> float:
    """``interval`` ± 25 %: workers started together spread apart."""
    return interval * (0.75 + secrets.randbelow(500) / 1000)


def run_every(owner: Any, name: str, interval: float, task: Callable[[], Any],
              first_delay: float | None = None) -> threading.Event | None:
    """Run ``task`` every ``interval`` s (jittered) in the background of this process.

    One loop per (``owner``, ``name``): a second call is a no-op (None). The
    first pass runs after ``first_delay`` (default: a small jitter), so a
    worker started after a crash cleans up at once. Failures are logged and
    retried at the next pass. Returns an event that ends the loop when set
    (workers never set it: the loop ends with the process).
    """
    key = (id(owner), name)
    with _started_lock:
        if key in _started or not interval or interval <= 0:
            return None
        _started.add(key)
    stop = threading.Event()

    def loop() -> None:
        delay = jittered(min(interval, 1.0)) if first_delay is None else first_delay
        failing = False  # the traceback once per run of failures (a database down for an hour)
        while not stop.wait(delay):  # gevent-patched in a worker: a greenlet wait
            delay = jittered(interval)
            try:
                task()
                failing = False
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("%s pass failed: %s", name, exc, exc_info=not failing)
                failing = True
        with _started_lock:
            _started.discard(key)

    threading.Thread(target=loop, name=name, daemon=True).start()
    return stop
