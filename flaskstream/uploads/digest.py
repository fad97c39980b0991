"""HTTP digests (RFC 9530): ``Repr-Digest`` out, ``Content-Digest`` in. Pure: no I/O.

Every stored upload has its SHA-256 (computed while the bytes streamed in), so
answers carry ``Repr-Digest: sha-256=:<base64>:`` for the whole stored
representation — on a 206 too: it is the digest of the representation, not of
the bytes of that response. A client that sends ``Content-Digest`` with a raw
``PUT``, on a file part of a multipart ``POST`` (a part header, as RFC 9530 §2
allows for any message content), or with a tus ``PATCH`` has it checked against
the same running hash before anything is stored.

Both fields are Structured Field Dictionaries (RFC 8941) whose values are byte
sequences (``:base64:``); only the parts of that grammar they use are parsed
here, strictly: a malformed field is an error, an algorithm we do not compute
is ignored (RFC 9530 §2: a recipient may ignore algorithms it does not support).
"""

from __future__ import annotations

import base64
import binascii
import re

from flaskstream.errorbase import FixedError

#: Algorithms verified (RFC 9530 registry name → digest size): the one computed on the way.
SUPPORTED = {"sha-256": 32}
_MEMBER = re.compile(r"\s*([a-z*][a-z0-9_\-.*]*)\s*=\s*:([A-Za-z0-9+/=]*):\s*(?:;[^,]*)?\s*")


class DigestError(FixedError, ValueError):
    """A ``Content-Digest`` field that does not parse as RFC 9530 says: 400."""

    code, status = "BAD_DIGEST", 400


class DigestMismatch(FixedError):
    """The content does not match the ``Content-Digest`` sent with it: 400, nothing kept."""

    code, status = "DIGEST_MISMATCH", 400


def expected_sha256(value: str | None) -> bytes | None:
    """The SHA-256 a ``Content-Digest`` field promises (None: no field, or no algorithm we
    verify); a malformed field raises ``DigestError``."""
    return None if value is None else parse_digests(value).get("sha-256")


def repr_digest(sha256_hex: str) -> str:
    """``sha-256=:<base64>:`` from a hex SHA-256."""
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_hex)).decode() + ":"


def parse_digests(value: str) -> dict[str, bytes]:
    """``{"sha-256": digest_bytes, ...}`` for the supported algorithms in a digest field."""
    found: dict[str, bytes] = {}
    for member in value.split(","):
        if not member.strip():
            raise DigestError("an empty member in the digest field")
        match = _MEMBER.fullmatch(member)
        if match is None:
            raise DigestError("a digest field member is not algorithm=:base64:")
        algorithm, encoded = match.groups()
        try:
            digest = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise DigestError(f"the {algorithm} digest is not base64") from exc
        if algorithm in SUPPORTED:
            if len(digest) != SUPPORTED[algorithm]:
                raise DigestError(f"a {algorithm} digest has {SUPPORTED[algorithm]} bytes")
            found[algorithm] = digest
    return found
