"""Durability of a PATCH in progress: fsync by path, and periodic offset checkpoints.

The offset a ``HEAD`` reports must be durable, so every recorded offset follows
the writer's ``durable`` (an fsync of the staging file; acknowledged S3 parts);
``Checkpointer`` does that every
``TUS_CHECKPOINT_BYTES`` of a long body, so a worker killed mid-PATCH loses at
most that much (see ``transfer.receive_body``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flaskstream.storage.localtus import fsync_path
from flaskstream.tus.receive import gevent_active

__all__ = ["Checkpointer", "fsync_path"]


class Checkpointer:
    """Makes the offset durable every ``every`` bytes of a long PATCH, without stopping it.

    ``commit(written)`` fsyncs the file and records the offset. Under gevent it
    runs in its own greenlet (the fsync itself on the thread pool) while the
    request keeps reading: the bytes it covers were all written before it
    started, so the offset it records is on disk. One runs at a time; ``wait``
    joins it (before the final commit, so offsets are recorded in order) and
    re-raises its error. Never killed: see ``db.is_connection_lost``.
    """

    def __init__(self, commit: Callable[[int], Any], every: int) -> None:
        self.commit = commit
        self.every = every
        self.last = 0
        self._job: Any = None
        self._error: BaseException | None = None

    def maybe(self, written: int) -> None:
        if self._error is not None:
            raise self._error
        if not self.every or written - self.last < self.every:
            return
        if self._job is not None and not self._job.ready():
            return  # the previous one is still syncing: the next chunk will ask again
        self.last = written
        if gevent_active():
            import gevent

            self._job = gevent.spawn(self._run, written)
        else:
            self._run(written)

    def _run(self, written: int) -> None:
        try:
            self.commit(written)
        except Exception as exc:  # noqa: BLE001 - raised in the request at its next chunk
            self._error = exc

    def wait(self) -> None:
        if self._job is not None:
            self._job.join()
            self._job = None
        if self._error is not None:
            raise self._error
