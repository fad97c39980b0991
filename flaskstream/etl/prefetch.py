"""Run pipeline stages ahead of the sink, in a helper thread.

Pure stdlib (no Flask, no driver): see ``prefetch``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def prefetch(items: Iterable, depth: int = 8, on_idle: Callable[[], None] | None = None,
             idle_interval: float = 0.25) -> Iterator:
    """Iterate ``items`` in a helper thread, up to ``depth`` items ahead.

    The parse/validate stages are CPU-bound Python; the sink spends its time
    blocked in ``send`` (the GIL released) while the server inserts. Running
    the stages ahead in a thread lets both happen at once — under gevent's
    monkey-patching the thread is a greenlet that runs while the COPY socket
    waits. Exceptions are re-raised in the consumer; closing the consumer stops
    the producer at its next hand-off.

    ``on_idle`` is called in the consumer every ``idle_interval`` seconds that
    it waits for an item: when the input stalls (a slow or paused client), the
    consumer's throttled progress reporting would otherwise stay at whatever it
    last wrote, which may be from before the rows now loaded.
    """
    hand_off: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[int, Any]) -> bool:
        while not stop.is_set():
            try:
                hand_off.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((0, item)):
                    return
                time.sleep(0)  # under gevent: let other greenlets (streams) run per block
            put((1, None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put((2, exc))

    worker = threading.Thread(target=produce, name="etl-stages", daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, item = hand_off.get(timeout=idle_interval) if on_idle else hand_off.get()
            except queue.Empty:
                assert on_idle is not None
                on_idle()
                continue
            if kind == 0:
                yield item
            elif kind == 1:
                return
            else:
                raise item
    finally:
        stop.set()
        worker.join(timeout=5)
