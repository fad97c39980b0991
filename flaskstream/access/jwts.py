"""JWT verification with PyJWT (no Flask, no driver): keys, algorithms, time claims.

The algorithm a token may use follows from the key that verifies it, never from the
token: ``HS256`` with ``JWT_SECRET``; with ``JWT_PUBLIC_KEY`` the one algorithm of that
key's type (RSA → ``RS256``, EC P-256 → ``ES256``, Ed25519 → ``EdDSA``). The token's
header only picks which configured key to try, and each ``jwt.decode`` gets a
one-item algorithm list, so ``alg: none`` and the HS/RS confusion (an RS public key
used as an HMAC secret) cannot verify. ``exp`` is required; ``nbf``, ``iat`` and
``aud`` are checked by PyJWT with ``leeway`` seconds of clock skew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from flaskstream.access.claims import Claims, ClaimsError
from flaskstream.errorbase import FixedError

HMAC_ALGORITHM = "HS256"


class TokenError(FixedError):
    """The token is missing, malformed, expired, not yet valid, or does not verify."""

    code, status = "UNAUTHORIZED", 401


def _public_algorithm(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError("JWT_PUBLIC_KEY must be an RSA, EC P-256 or Ed25519 public key (PEM)")


@dataclass(frozen=True)
class Verifier:
    """The configured keys; ``decode`` turns a compact JWT into ``Claims``."""

    secret: bytes | None = None
    public_key: Any = None
    public_algorithm: str | None = None
    audience: str | None = None
    leeway: float = 30.0

    @classmethod
    def from_settings(cls, secret: str | None, public_key_pem: str | None,
                      audience: str | None, leeway: float) -> Verifier:
        """Build from settings; a public key that is not PEM text is read as a path to one."""
        key = algorithm = None
        if public_key_pem:
            text = public_key_pem
            if "-----BEGIN" not in text:
                with open(text, encoding="ascii") as pem:
                    text = pem.read()
            key = load_pem_public_key(text.encode("ascii"))
            algorithm = _public_algorithm(key)
        return cls(secret=secret.encode() if secret else None, public_key=key,
                   public_algorithm=algorithm, audience=audience or None, leeway=float(leeway))

    @property
    def enabled(self) -> bool:
        return self.secret is not None or self.public_key is not None

    def _key_for(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("the token is not a JWT") from exc
        alg = header.get("alg")
        if alg == HMAC_ALGORITHM and self.secret is not None:
            return self.secret, HMAC_ALGORITHM
        if self.public_algorithm is not None and alg == self.public_algorithm:
            return self.public_key, self.public_algorithm
        raise TokenError("the token's algorithm is not accepted")

    def decode(self, token: str) -> Claims:
        """Verified claims, or ``TokenError`` saying in plain words what is wrong."""
        if not self.enabled:
            raise TokenError("JWTs are not enabled (no JWT_SECRET or JWT_PUBLIC_KEY)")
        key, algorithm = self._key_for(token)
        try:
            payload = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience,
                                 leeway=self.leeway, options={"require": ["exp"]})
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("the token is not valid yet") from exc
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
            raise TokenError("the token's audience or required claims do not match") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("the token does not verify") from exc
        try:
            return Claims.from_payload(payload)
        except ClaimsError as exc:
            raise TokenError(exc.message) from exc


def mint(secret: str, claims: dict[str, Any]) -> str:
    """An HS256 token (``flask auth token`` and tests; sites usually mint their own)."""
    return jwt.encode(claims, secret, algorithm=HMAC_ALGORITHM)
