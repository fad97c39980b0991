"""Capability: "has this gunicorn worker begun to shut down?" (for ``/readyz``).

gunicorn's server hooks give no public signal for the start of a graceful
shutdown: ``worker_int``/``worker_exit`` run when the worker is already
leaving. What every worker class does do is set ``worker.alive = False`` the
moment it decides to stop — from its SIGTERM handler, after ``max_requests``,
or when it sees its master change — and then wait up to ``graceful_timeout``
for open responses. ``alive`` is a plain attribute of ``gunicorn.workers.base.
Worker``, not a documented API, so it is read here and nowhere else.

Start-up check: ``draining_probe`` verifies the attribute is a bool. Public
fallback when it is not: chain a handler in front of the worker's own SIGTERM
handler (``signal`` is public; we still call theirs), which covers the signal
but not ``max_requests``. Contract test: ``tests/ops/test_health.py``.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def draining_probe(worker: Any) -> Callable[[], bool]:
    """A cheap callable: True from the moment ``worker`` starts a graceful shutdown."""
    if isinstance(getattr(worker, "alive", None), bool):
        return lambda: not worker.alive
    log.warning("gunicorn worker has no boolean 'alive' flag: /readyz follows SIGTERM only")
    return _signal_probe()


def _signal_probe() -> Callable[[], bool]:
    state = {"draining": False}
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        state["draining"] = True
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    return lambda: state["draining"]
