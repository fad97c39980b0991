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

from typing import Any

from flaskstream.adapters.registry import (
    ENV_DISABLE,
    Capability,
    capability,
    configure,
    parse_disabled,
    registered,
    reset_all,
)

__all__ = ["ENV_DISABLE", "Capability", "capability", "check_all", "configure", "init_app",
           "parse_disabled", "registered", "reset_all"]


def check_all(packages: tuple[str, ...] = ("gunicorn", "pg8000", "pgserver")) -> dict[str, bool]:
    """Run the checks of ``packages``' capabilities (each logs once if it fails); name → holds."""
    from flaskstream.adapters import gunicorn, pg8000, pgserver  # noqa: F401 - they register

    return {name: cap.ok() for name, cap in sorted(registered().items())
            if name.split(".")[0] in packages}


def init_app(app: Any) -> None:
    """Called by ``create_app``: apply ``ADAPTERS_DISABLE`` and check the capabilities it
    will use. pgserver's only matter (and pgserver is only imported) when the database
    is the embedded one; they are checked on first use, in whichever process starts it."""
    configure(app.config.get("ADAPTERS_DISABLE"))
    check_all(("gunicorn", "pg8000") if app.config.get("DATABASE_URL") else
              ("gunicorn", "pg8000", "pgserver"))
