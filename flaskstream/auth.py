"""Who may do what: the admin token, JWT claims, signed URLs, and the read/write policy.

``API_TOKEN`` stays the admin credential: it covers every route. Beside it, a
site's backend mints JWTs (``flaskstream.access.jwts``) whose claims
(``flaskstream.access.claims``) say which channels and paths the bearer may read
and write; ``READ_ACCESS`` / ``WRITE_ACCESS`` (``public`` | ``token``) say whether
reads and writes need one. ``public`` writes are today's rule: ``API_TOKEN``, when set.

Where a credential comes from: ``Authorization: Bearer`` always; for reads only
(GET/HEAD, what ``EventSource``, ``<video>`` and ``<img>`` send) also the
``AUTH_COOKIE`` cookie, ``?access_token=`` and a signed URL (``?expires=&sig=``).
Writes never take the cookie or the query, so a cross-site form cannot ride on them.

Every route's requirement is decided in one place (``flaskstream.access.policy``)
from its endpoint, before the view runs; a view only calls ``listing_owner`` to
filter what it lists.
"""

from __future__ import annotations

import hmac
import logging
import time

from flask import Flask, current_app, g, request
from werkzeug.wrappers import Response

from flaskstream import db
from flaskstream.access import signing
from flaskstream.access.claims import ADMIN, Claims
from flaskstream.access.jwts import TokenError, Verifier
from flaskstream.errors import ApiError

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_METHODS = frozenset({"GET", "HEAD"})
MODES = ("public", "token")
QUERY_TOKEN = "access_token"
CHALLENGE = 'Bearer realm="flaskstream"'
SESSION_ENDPOINTS = frozenset({"access.session", "access.end_session"})


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _is_admin_token(given: str | None) -> bool:
    expected = current_app.config["API_TOKEN"]
    return bool(expected) and given is not None and \
        hmac.compare_digest(given.encode(), expected.encode())


def has_api_token() -> bool:
    """True when this request carries ``API_TOKEN`` (or none is configured: all are trusted)."""
    if not current_app.config["API_TOKEN"]:
        return True
    return _is_admin_token(bearer_token())


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "UNAUTHORIZED", message,
                    headers={"WWW-Authenticate": CHALLENGE + ', error="invalid_token"'})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", message)


def verifier(app: Flask | None = None) -> Verifier:
    return (app or current_app).extensions["flaskstream.jwt"]  # type: ignore[no-any-return]


def signing_key(app: Flask | None = None) -> bytes:
    """``URL_SIGNING_KEY``, else ``JWT_SECRET``, else ``API_TOKEN`` (b"" when none is set)."""
    cfg = (app or current_app).config
    key = cfg["URL_SIGNING_KEY"] or cfg["JWT_SECRET"] or cfg["API_TOKEN"] or ""
    return str(key).encode()


def is_revoked(jti: str) -> bool:
    """The deny-list lookup; an unreachable database refuses the token (fails closed)."""
    try:
        with db.connection() as con:
            return bool(con.run(f"SELECT 1 FROM {db.qualified('auth_revoked')} WHERE jti = :jti",
                                jti=jti))
    except (db.DatabaseError, db.InterfaceError, OSError, TimeoutError) as exc:
        log.warning("cannot read the token deny-list: %s", exc)
        raise ApiError(503, "DATABASE_UNAVAILABLE", "the token deny-list cannot be read now",
                       headers={"Retry-After": "2"}) from None


def _decode(token: str, *, in_header: bool) -> Claims:
    if _is_admin_token(token):
        if not in_header:  # a URL or a cookie is copied, cached, logged: never the admin's
            raise unauthorized("the admin token is accepted in the Authorization header only")
        return ADMIN
    try:
        claims = verifier().decode(token)
    except TokenError as exc:
        raise unauthorized(exc.message) from None
    if claims.jti is not None and is_revoked(claims.jti):
        raise unauthorized("the token has been revoked")
    return claims


def _from_signed_url() -> Claims | None:
    sig, expires = request.args.get("sig"), request.args.get("expires")
    if sig is None or expires is None:
        return None
    try:
        when = signing.verify(signing_key(), request.path, expires, sig, time.time())
    except signing.SignatureError as exc:
        raise unauthorized(exc.message) from None
    return Claims(read=(request.path,), exp=float(when))


def claims() -> Claims | None:
    """This request's verified claims (cached), None without a credential; 401 for a bad one."""
    if "access_claims" in g:
        return g.access_claims  # type: ignore[no-any-return]
    found: Claims | None = None
    token = bearer_token()
    in_header = token is not None
    if token is None and request.method in READ_METHODS:
        token = request.args.get(QUERY_TOKEN) or \
            request.cookies.get(current_app.config["AUTH_COOKIE"]) or None
    if token is not None:
        found = _decode(token, in_header=in_header)
    elif request.method in READ_METHODS:
        found = _from_signed_url()
    g.access_claims = found
    return found


def token_mode(kind: str) -> bool:
    """Does ``kind`` ("READ" or "WRITE") need a token under the current settings?"""
    return current_app.config[f"{kind}_ACCESS"] == "token"


def require_claims(kind: str) -> Claims | None:
    """The caller's claims when ``kind`` is in token mode (401 without); None when public."""
    if not token_mode(kind):
        return None
    found = claims()
    if found is None:
        raise unauthorized("this request needs a token (Authorization: Bearer, the "
                           "session cookie, ?access_token= or a signed URL)")
    return found


def request_owner() -> str | None:
    """The ``sub`` an object created by this request records (None: no token, or no sub)."""
    try:
        found = claims()
    except ApiError:
        return None
    return found.sub if found is not None else None


def listing_owner(path: str) -> str | None:
    """None: list everything at ``path``; else list only this owner's objects.

    Public reads, the admin, and claims whose ``read`` covers ``path`` see all."""
    found = require_claims("READ")
    if found is None or found.can_read(path):
        return None
    if found.sub is None:
        raise forbidden(f"the token's claims do not cover {path}")
    return found.sub


def stream_deadline() -> float | None:
    """When a stream opened by this request must end: its credential's ``exp`` (None: never)."""
    found = claims() if "access_claims" in g else None
    return found.exp if found is not None else None


def until(deadline: float | None, timeout: float) -> float:
    """``timeout``, shortened so that a wait wakes at ``deadline`` (epoch seconds)."""
    return timeout if deadline is None else min(timeout, max(0.0, deadline - time.time()))


def mint_signed_url(path: str, ttl: int | None = None) -> str | None:
    """A signed read URL for ``path`` (None when no signing key is configured)."""
    key = signing_key()
    if not key:
        return None
    seconds = int(ttl if ttl is not None else current_app.config["SIGNED_URL_TTL"])
    return signing.signed_url(key, path, int(time.time()) + seconds)


def _private_response(response: Response) -> Response:
    """A credential in the URL: keep it out of caches and of the next page's Referer.

    A read that needed claims is never stored by a shared cache either."""
    args = request.args
    if QUERY_TOKEN in args or "sig" in args:
        response.headers["Cache-Control"] = "private, no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
    elif g.get("access_checked") and "public" in response.headers.get("Cache-Control", ""):
        response.headers["Cache-Control"] = "private, no-cache"
    return response


def require_token_for_writes() -> None:
    """Today's rule, with ``WRITE_ACCESS=public``: ``API_TOKEN`` (when set) on every write."""
    if request.endpoint in SESSION_ENDPOINTS:
        return  # trading a JWT for a cookie (or dropping it) is not a write of data
    if request.method in WRITE_METHODS and not token_mode("WRITE") and not has_api_token():
        raise ApiError(401, "UNAUTHORIZED", "this write needs Authorization: Bearer <token>",
                       headers={"WWW-Authenticate": CHALLENGE})


def _check_settings(app: Flask) -> None:
    cfg = app.config
    for kind in ("READ", "WRITE"):
        if cfg[f"{kind}_ACCESS"] not in MODES:
            raise ValueError(f"FLASKSTREAM_{kind}_ACCESS must be one of {', '.join(MODES)}")
    app.extensions["flaskstream.jwt"] = Verifier.from_settings(
        cfg["JWT_SECRET"], cfg["JWT_PUBLIC_KEY"], cfg["JWT_AUDIENCE"], float(cfg["JWT_LEEWAY"]))
    if "token" in (cfg["READ_ACCESS"], cfg["WRITE_ACCESS"]) and \
            not app.extensions["flaskstream.jwt"].enabled and not cfg["API_TOKEN"]:
        raise ValueError("READ_ACCESS/WRITE_ACCESS=token needs FLASKSTREAM_JWT_SECRET, "
                         "FLASKSTREAM_JWT_PUBLIC_KEY or FLASKSTREAM_API_TOKEN")


def init_app(app: Flask) -> None:
    """Keys and the write rule; the per-route policy is ``flaskstream.access.views.init_app``."""
    _check_settings(app)
    if not app.config["API_TOKEN"] and app.config["WRITE_ACCESS"] == "public":
        log.warning("FLASKSTREAM_API_TOKEN is not set: writes are open to anyone who can connect")
    app.before_request(require_token_for_writes)
    app.after_request(_private_response)
