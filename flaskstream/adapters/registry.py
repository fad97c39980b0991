"""The capability registry shared by the adapter modules (see ``flaskstream.adapters``).

Kept apart from the package's ``__init__`` so that the adapters import it and the
package imports the adapters, without a cycle.
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


def registered() -> dict[str, Capability]:
    return dict(_registry)


def reset_all(disabled: Any = None) -> None:
    """Forget every check result and set ``disabled`` (tests switch capabilities with this)."""
    global _disabled
    _disabled = parse_disabled(disabled)
    for cap in _registry.values():
        cap.reset()
