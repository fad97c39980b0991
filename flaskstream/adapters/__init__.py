"""The only modules that touch another package's private names.

One module per dependency (``gunicorn``, ``pg8000``, ``pgserver``, ``werkzeug``). Each
offers small named capabilities, checks at start-up that each still holds on the
installed version, logs once and falls back to the public path when one does not.
Contract tests in ``tests/adapters/`` pin every assumption, so a version bump fails
there first, by name.

A capability is registered with ``capability(name, check)``; ``check()`` returns
None when the assumption holds and a reason when it does not. The result is
cached per process (it is a fact about the installed library, not about a
request, so it is process state by nature and not per-app). ``init_app`` runs
every check once from ``create_app``; code that runs without an app (the
gunicorn master's hooks) checks lazily on first use. ``ADAPTERS_DISABLE``
(``FLASKSTREAM_ADAPTERS_DISABLE=pgserver.instances,gunicorn.direct_body``, or
``all``) forces checks to fail, so the public fallbacks can be run and tested.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

ENV_DISABLE = "FLASKSTREAM_ADAPTERS_DISABLE"


class Capability:
    """One assumption about a dependency's internals, checked once, with a fallback."""

    def __init__(self, name: str, check: Callable[[], str | None], fallback: str) -> None:
        self.name, self.check, self.fallback = name, check, fallback
        self._ok: bool | None = None
        self._lock = threading.Lock()

    def ok(self) -> bool:
        """True when the private path may be used (checked on first call)."""
        if self._ok is None:
            with self._lock:
                if self._ok is None:
                    reason = "disabled by ADAPTERS_DISABLE" if _is_disabled(self.name) \
                        else self._run_check()
                    if reason is None:
                        self._ok = True
                    else:
                        self._fail(reason)
        return bool(self._ok)

    def fail(self, reason: str) -> None:
        """Give up the private path for good in this process (a use-time check failed)."""
        with self._lock:
            if self._ok is not False:
                self._fail(reason)

    def _run_check(self) -> str | None:
        try:
            return self.check()
        except Exception as exc:  # noqa: BLE001 - any surprise means "does not hold"
            return f"check raised {type(exc).__name__}"

    def _fail(self, reason: str) -> None:
        self._ok = False
        log.warning("adapter %s: %s; using the public fallback (%s)", self.name, reason,
                    self.fallback)

    def reset(self) -> None:
        with self._lock:
            self._ok = None


_registry: dict[str, Capability] = {}
_disabled: frozenset[str] | None = None  # None: not configured yet, read ENV_DISABLE lazily


def capability(name: str, check: Callable[[], str | None], fallback: str) -> Capability:
    """Register (once) and return the capability ``name``."""
    if name not in _registry:
        _registry[name] = Capability(name, check, fallback)
    return _registry[name]


def parse_disabled(value: Any) -> frozenset[str]:
    """``"a, b"`` / ``["a", "b"]`` / None → the set of names (``all`` matches every one)."""
    if not value:
        return frozenset()
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    return frozenset(str(item).strip() for item in items if str(item).strip())


def _is_disabled(name: str) -> bool:
    global _disabled
    if _disabled is None:  # no create_app in this process (gunicorn master): its env
        _disabled = parse_disabled(os.environ.get(ENV_DISABLE))
    return "all" in _disabled or name in _disabled or name.split(".")[0] in _disabled


def configure(disabled: Any) -> None:
    """Set the disabled capabilities; earlier check results are forgotten if that changed
    (every ``create_app`` calls this: the same setting again checks and logs nothing)."""
    global _disabled
    wanted = parse_disabled(disabled)
    if wanted == _disabled:
        return
    _disabled = wanted
    for cap in _registry.values():
        cap.reset()


def check_all() -> dict[str, bool]:
    """Run every registered check (each logs once if it fails); name → holds."""
    from flaskstream.adapters import gunicorn, pg8000, pgserver  # noqa: F401 - they register

    return {name: cap.ok() for name, cap in sorted(_registry.items())}


def init_app(app: Any) -> None:
    """Called by ``create_app``: apply ``ADAPTERS_DISABLE`` and check every capability."""
    configure(app.config.get("ADAPTERS_DISABLE"))
    check_all()


def registered() -> dict[str, Capability]:
    return dict(_registry)


def reset_all(disabled: Any = None) -> None:
    """Forget every check result and set ``disabled`` (tests switch capabilities with this)."""
    global _disabled
    _disabled = parse_disabled(disabled)
    for cap in _registry.values():
        cap.reset()
