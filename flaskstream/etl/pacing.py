"""Fewer garbage-collector passes while loads run.

Moved out of ``jobs.py`` (which re-exports them) to keep that module readable.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GC_GEN0_DURING_LOADS", "relaxed_gc"]

_gc_lock = threading.Lock()
_gc_loads = 0
_gc_saved: tuple[int, int, int] | None = None
GC_GEN0_DURING_LOADS = 50_000


@contextmanager
def relaxed_gc() -> Iterator[None]:
    """Fewer young-generation collections while any load runs in this process.

    The pipeline allocates millions of short-lived containers (csv records); at
    the default threshold (700 allocations) the cyclic collector keeps walking
    them — measured at ~25% of the pipeline's CPU. Counted, so overlapping
    loads (greenlets of one worker) restore the setting only when the last ends.
    """
    global _gc_loads, _gc_saved
    with _gc_lock:
        if _gc_loads == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(GC_GEN0_DURING_LOADS, _gc_saved[0]), *_gc_saved[1:])
        _gc_loads += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_loads -= 1
            if _gc_loads == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
