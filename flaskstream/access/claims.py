"""What a token allows: the claim model and selector matching (pure: no Flask, no driver).

A token's claims follow Mercure's shape, with paths beside channels:

- ``sub``: who the caller is; objects created with the token record it as their owner.
- ``subscribe`` / ``publish``: channel selectors (an exact name, ``*``, or ``prefix.*``).
- ``read`` / ``write``: path selectors over ``/uploads``, ``/media``, ``/etl``, ``/events``
  (an exact path, ``*``, or ``/dir/*``: the directory itself and everything below it).

Matching is deliberately small and literal (no globs inside a segment, no regex): a
site's backend writes these selectors, and a selector that means more than it says is
an access-control bug. A path with an empty, ``.`` or ``..`` segment matches nothing,
so ``/media/../uploads/x`` can never ride on a ``/media/*`` grant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flaskstream.errorbase import FixedError

WILDCARD = "*"


class ClaimsError(FixedError):
    """A claim has the wrong type (a token whose claims cannot be read is refused)."""

    code, status = "UNAUTHORIZED", 401


def _selectors(payload: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = payload.get(name, ())
    if isinstance(value, str):  # a lone selector is accepted as a one-item list
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ClaimsError(f"claim {name!r} must be a list of non-empty strings")
    return tuple(value)


def channel_matches(selector: str, channel: str) -> bool:
    """``*`` matches any channel, ``orders.*`` any channel below ``orders.``, else equality."""
    if selector == WILDCARD:
        return True
    if selector.endswith(".*"):
        prefix = selector[:-1]  # keeps the dot: "orders." never matches "ordersx"
        return channel.startswith(prefix) and len(channel) > len(prefix)
    return selector == channel


def _clean_path(path: str) -> bool:
    if not path.startswith("/"):
        return False
    segments = path[1:].split("/")
    return all(s not in ("", ".", "..") for s in segments)


def path_matches(selector: str, path: str) -> bool:
    """``*`` matches any path; ``/uploads/*`` matches ``/uploads`` and all below; else equality.

    Trailing slashes are not significant (``/media/`` is the listing ``/media``)."""
    path = path.rstrip("/") or "/"
    if path != "/" and not _clean_path(path):
        return False
    if selector == WILDCARD:
        return True
    if selector.endswith("/*"):
        base = selector[:-2].rstrip("/")
        return path == base or path.startswith(base + "/")
    return selector.rstrip("/") == path


@dataclass(frozen=True)
class Claims:
    """The verified claims of one request (from a JWT, a signed URL, or the admin token)."""

    sub: str | None = None
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    exp: float | None = None  # seconds since the epoch; None: does not expire
    jti: str | None = None
    admin: bool = False

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Claims:
        """Claims from a decoded JWT payload; ``ClaimsError`` when a claim is malformed."""
        sub = payload.get("sub")
        if sub is not None and (not isinstance(sub, str) or not sub):
            raise ClaimsError("claim 'sub' must be a non-empty string")
        exp = payload.get("exp")
        jti = payload.get("jti")
        return cls(
            sub=sub, subscribe=_selectors(payload, "subscribe"),
            publish=_selectors(payload, "publish"), read=_selectors(payload, "read"),
            write=_selectors(payload, "write"),
            exp=float(exp) if isinstance(exp, int | float) else None,
            jti=jti if isinstance(jti, str) else None,
        )

    def can_subscribe(self, channel: str) -> bool:
        return self.admin or _any(channel_matches, self.subscribe, channel)

    def can_publish(self, channel: str) -> bool:
        return self.admin or _any(channel_matches, self.publish, channel)

    def can_read(self, path: str) -> bool:
        return self.admin or _any(path_matches, self.read, path)

    def can_write(self, path: str) -> bool:
        return self.admin or _any(path_matches, self.write, path)

    def owns(self, owner: str | None) -> bool:
        """True when an object recorded with ``owner`` is this caller's."""
        return owner is not None and self.sub is not None and owner == self.sub


ADMIN = Claims(admin=True)


def _any(match: Any, selectors: Iterable[str], target: str) -> bool:
    return any(match(selector, target) for selector in selectors)
