"""Tokens for the access tests: minted here with PyJWT, as a site's backend would."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

SECRET = "access-tests-secret-" + "0123456789abcdef" * 3
AUDIENCE = "flaskstream-tests"
ADMIN = "admin-token-for-access-tests"


def token(ttl: float = 300, secret: str = SECRET, algorithm: str = "HS256",
          **claims: Any) -> str:
    """A JWT with ``claims`` (``exp`` from ``ttl`` unless given; the tests' audience)."""
    now = time.time()
    payload: dict[str, Any] = {"iat": int(now), "exp": int(now + ttl), "aud": AUDIENCE,
                               "jti": uuid.uuid4().hex}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret,
                      algorithm=algorithm)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def token_config() -> dict[str, Any]:
    return {"READ_ACCESS": "token", "WRITE_ACCESS": "token", "JWT_SECRET": SECRET,
            "JWT_AUDIENCE": AUDIENCE, "JWT_LEEWAY": 2, "API_TOKEN": ADMIN}
