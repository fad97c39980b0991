"""Per-process state of one app, in ``app.extensions["flaskstream"]`` instead of module globals.

A module global is shared by every app in the process (tests build many) and
outlives it; this object is made by ``create_app`` and dies with its app. What
stays a module global is state that is the process's by nature: the garbage
collector's thresholds (``etl/pacing.py``), the embedded server's ownership
(``embedded.py``), the adapters' capability checks (of the installed
libraries; the gunicorn master has no app), and ``leases.run_every``'s registry of background threads,
which is keyed by its owner (the app) already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app

EXTENSION = "flaskstream"


@dataclass
class ProcessState:
    """What one app's worker process shares between its requests."""

    # Uploads and tus PATCHes reading a body now: ``uploads.receive.ChunkBudget`` shares
    # UPLOAD_BUFFER_BUDGET out among them, so the worker's read buffers stay bounded.
    uploads_in_flight: int = 0
    # tus: one lease-renewer greenlet per (pool, lease, interval), for all its requests.
    lease_renewers: dict[tuple[int, float, float], Any] = field(default_factory=dict)
    # The upload storage backend (``flaskstream.storage``, when it is configured).
    storage: Any = None

    # Dict-style access (``extensions["flaskstream"]["storage"]``) for code written
    # against a plain dict; only the fields above exist.
    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        setattr(self, name, value)


def init_app(app: Flask) -> ProcessState:
    state = app.extensions.get(EXTENSION)
    if not isinstance(state, ProcessState):
        state = app.extensions[EXTENSION] = ProcessState()
    return state


def get(app: Flask | None = None) -> ProcessState:
    """The state of ``app`` (``current_app`` unless given)."""
    return (app or current_app).extensions[EXTENSION]  # type: ignore[no-any-return]
