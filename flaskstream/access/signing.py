"""Signed URLs: ``/media/film.mp4?expires=1790000000&sig=...`` (pure: no Flask).

For sharing a file or embedding it in a page without a JWT library on the client
(S3's presigned URLs, nginx's ``secure_link``). The signature is HMAC-SHA256 over the
path and the expiry, base64url without padding; it grants reading exactly that path
(GET/HEAD) until ``expires``. The check uses ``hmac.compare_digest`` (constant time)
and the standard library's HMAC: there is nothing here to write ourselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote, urlencode

from flaskstream.errorbase import FixedError


class SignatureError(FixedError):
    """A signed URL is malformed, expired, or its signature does not match."""

    code, status = "UNAUTHORIZED", 401


def _mac(key: bytes, path: str, expires: int) -> str:
    message = f"GET\n{path}\n{expires}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(key: bytes, path: str, expires: int) -> str:
    """The query string (``expires=...&sig=...``) that lets anyone read ``path`` until ``expires``."""
    if not key:
        raise SignatureError("no signing key is configured")
    return urlencode({"expires": str(expires), "sig": _mac(key, path, expires)})


def signed_url(key: bytes, path: str, expires: int) -> str:
    """``path`` (percent-encoded as a URL path) with its signature."""
    return f"{quote(path)}?{sign(key, path, expires)}"


def verify(key: bytes, path: str, expires: str, sig: str, now: float) -> int:
    """The expiry when ``sig`` signs ``path`` until ``expires`` and that is still ahead.

    Raises ``SignatureError`` otherwise; the signature is compared before the expiry
    is judged so that a forged URL and an expired one take the same path."""
    if not key:
        raise SignatureError("signed URLs are not enabled")
    if not expires.isdigit() or len(expires) > 12:
        raise SignatureError("expires must be seconds since the epoch")
    when = int(expires)
    if not hmac.compare_digest(_mac(key, path, when).encode(), sig.encode("utf-8", "replace")):
        raise SignatureError("the signature does not match")
    if when <= now:
        raise SignatureError("the signed URL has expired")
    return when
