"""Part uploads of the S3 backend in flight, and the worker-wide budget of part buffers.

Split from ``s3.py``. A part goes out on a greenlet under gunicorn's gevent worker
(its socket is patched, so the upload yields to every other greenlet) and on a
small thread pool elsewhere; either way it holds one slot of ``PartBudget``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class PartJob:
    """One part upload in flight: a greenlet under gevent, else a pool thread's future.

    It owns one slot of the worker's ``PartBudget`` and gives it back exactly once:
    when it ends, or when it is cancelled before it started (then it never runs).
    """

    def __init__(self, spawn: Callable[..., Any], release: Callable[[], None],
                 func: Callable[..., Any], *args: Any) -> None:
        self._release: Callable[[], None] | None = release
        self._started = False
        self._handle = spawn(self._run, func, *args)

    def _run(self, func: Callable[..., Any], *args: Any) -> Any:
        self._started = True
        try:
            return func(*args)
        finally:
            self._free()

    def _free(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def result(self) -> Any:
        handle = self._handle
        return handle.get() if hasattr(handle, "get") else handle.result()

    def cancel(self) -> None:
        handle = self._handle
        if hasattr(handle, "kill"):
            handle.kill(block=True)  # a started greenlet runs its finally (GreenletExit)
            if not self._started:
                self._free()
        elif handle.cancel():  # a future only cancels if it never started
            self._free()
        else:
            try:
                handle.result()
            except BaseException:  # noqa: BLE001 - cancelled: its outcome is moot
                pass


class PartBudget:
    """The part buffers all uploads of this process may hold at once, and their reuse.

    ``STORAGE_PARTS_IN_FLIGHT`` bounds one upload; this bounds the worker, so 8
    or 100 uploads at once share ``STORAGE_BUFFER_BUDGET`` instead of each
    holding (in flight + 1) parts: an upload waits for a free buffer (its client
    then waits on TCP) rather than the worker growing. No upload waits for one
    it holds itself: a part gives its buffer back when its upload call ends.

    Buffers are reused, not freed: allocating and freeing part-sized blocks
    makes glibc raise its mmap threshold and keep them in a fragmented heap
    (measured: 8 uploads at once grew the worker 83 MiB for a 48 MiB budget).
    Every byte of a reused buffer is overwritten before it is sent (a part is
    sent only full, the last one cut to what it holds). ``threading`` is gevent's
    own under the gevent worker (patched), so a wait yields.
    """

    def __init__(self, slots: int, part_size: int) -> None:
        self.slots = max(1, slots)
        self.part_size = part_size
        self._semaphore = threading.BoundedSemaphore(self.slots)
        self._free: list[bytearray] = []

    def acquire(self) -> bytearray:
        """A part-sized buffer (waits while ``slots`` are out)."""
        self._semaphore.acquire()
        return self._free.pop() if self._free else bytearray(self.part_size)

    def release(self, buffer: bytearray | None) -> None:
        """Give a buffer's slot back; a full-size buffer is kept for the next part."""
        if buffer is not None and len(buffer) == self.part_size \
                and len(self._free) < self.slots:
            self._free.append(buffer)
        self._semaphore.release()
