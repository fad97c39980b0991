"""The one error base: every error flaskstream answers over HTTP is a ``FlaskstreamError``.

It carries what the API answers — a stable machine ``code``, an HTTP ``status``,
a human ``message`` and extra ``headers`` (tus's ``Tus-Version``, ``Upload-Offset``;
``Retry-After``) — so it is raised where the fact is known (a pure core, a
receive loop, the pool) and rendered in one place (``errors.py``), with no map
from one vocabulary to another and never a look at the message text.

This module is a pure core on purpose: the cores that raise these errors
(``tus/protocol.py``, ``uploads/multipart.py``, ``etl/bounds.py``) may import
neither Flask nor a driver, and ``errors.py``, which renders, imports Flask. It
re-exports everything here, so ``from flaskstream.errors import FlaskstreamError``
works for the I/O halves and blueprints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["FixedError", "FlaskstreamError"]


class FlaskstreamError(Exception):
    """An error with a stable ``code``, an HTTP ``status``, a ``message`` for people and
    ``headers`` for the answer; ``details`` are extra members of the JSON error object."""

    code: str = "INTERNAL_ERROR"
    status: int = 500

    def __init__(self, code: str, status: int, message: str,
                 headers: Mapping[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
        self.details = details

    def __str__(self) -> str:
        return self.message


class FixedError(FlaskstreamError):
    """A kind of error whose ``code`` and ``status`` are class attributes: raised with a
    message only (``ClientGone("the body ended early")``); a subclass may still pass
    ``code=``/``status=`` for a variant (one limit among several, say)."""

    def __init__(self, message: str = "", headers: Mapping[str, str] | None = None, *,
                 code: str | None = None, status: int | None = None, **details: Any) -> None:
        super().__init__(code or type(self).code, status or type(self).status, message,
                         headers, **details)
