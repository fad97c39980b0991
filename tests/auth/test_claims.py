"""The pure access core: selectors, claims, signed URLs and JWT verification, exactly."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from flaskstream.access import signing
from flaskstream.access.claims import Claims, ClaimsError, channel_matches, path_matches
from flaskstream.access.jwts import TokenError, Verifier

SECRET = "s3cret-for-tests-only-" + "0123456789abcdef" * 3


@pytest.mark.parametrize(("selector", "channel", "expected"), [
    ("*", "anything.at.all", True),
    ("orders.alice", "orders.alice", True),
    ("orders.alice", "orders.alice2", False),
    ("orders.*", "orders.alice", True),
    ("orders.*", "orders.", False),
    ("orders.*", "orders", False),
    ("orders.*", "ordersx.a", False),
    ("orders.*", "orders.a.b", True),
    ("uploads.abc", "uploads.abd", False),
])
def test_channel_selectors(selector: str, channel: str, expected: bool) -> None:
    assert channel_matches(selector, channel) is expected


@pytest.mark.parametrize(("selector", "path", "expected"), [
    ("*", "/media/film.mp4", True),
    ("/uploads/*", "/uploads", True),
    ("/uploads/*", "/uploads/", True),
    ("/uploads/*", "/uploads/abc/content", True),
    ("/uploads/*", "/uploadsx/abc", False),
    ("/media/*", "/media/../uploads/abc", False),
    ("*", "/media/../uploads/abc", False),
    ("/media/*", "/media//film.mp4", False),
    ("/media/*", "/media/./film.mp4", False),
    ("/media/film.mp4", "/media/film.mp4", True),
    ("/media/film.mp4", "/media/film.mp4.bak", False),
    ("/media/film.mp4", "/media/film", False),
    ("/etl/jobs/*", "/etl/export.csv", False),
])
def test_path_selectors(selector: str, path: str, expected: bool) -> None:
    assert path_matches(selector, path) is expected


segment = st.text(st.characters(whitelist_categories=("Ll", "Nd")), min_size=1, max_size=8)


@given(st.lists(segment, min_size=1, max_size=4), st.lists(segment, min_size=0, max_size=3))
def test_a_directory_grant_covers_exactly_its_subtree(base: list[str], rest: list[str]) -> None:
    selector = "/" + "/".join(base) + "/*"
    inside = "/" + "/".join(base + rest)
    assert path_matches(selector, inside)
    sibling = "/" + "/".join(base[:-1] + [base[-1] + "x"] + rest)
    assert not path_matches(selector, sibling)
    assert not path_matches(selector, inside + "/../../x")


@given(segment, segment)
def test_a_prefix_grant_never_matches_a_longer_first_word(word: str, rest: str) -> None:
    assert channel_matches(f"{word}.*", f"{word}.{rest}")
    assert not channel_matches(f"{word}.*", f"{word}{rest}.{rest}")
    assert not channel_matches(f"{word}.*", word)


def test_claims_from_payload_and_ownership() -> None:
    claims = Claims.from_payload({"sub": "alice", "subscribe": "orders.alice",
                                  "read": ["/uploads/*"], "exp": 10, "jti": "j1"})
    assert claims.subscribe == ("orders.alice",) and claims.exp == 10.0 and claims.jti == "j1"
    assert claims.can_read("/uploads/x") and not claims.can_read("/media/x")
    assert not claims.can_write("/uploads/x") and not claims.can_publish("orders.alice")
    assert claims.owns("alice") and not claims.owns("bob") and not claims.owns(None)
    assert not Claims().owns(None)


@pytest.mark.parametrize("payload", [{"read": [1]}, {"read": {"a": 1}}, {"sub": 5}, {"sub": ""},
                                     {"publish": [""]}])
def test_malformed_claims_are_refused(payload: dict[str, object]) -> None:
    with pytest.raises(ClaimsError):
        Claims.from_payload(payload)


def test_signed_urls_round_trip_and_refuse_everything_else() -> None:
    key = b"k" * 32
    query = signing.sign(key, "/media/film.mp4", 2000)
    assert query.startswith("expires=2000&sig=")
    sig = query.split("sig=")[1]
    assert signing.verify(key, "/media/film.mp4", "2000", sig, now=1999) == 2000
    for path, expires, sig_, now in [
        ("/media/film.mp4", "2000", sig, 2000),          # expired (exactly at expiry)
        ("/media/other.mp4", "2000", sig, 10),            # another path
        ("/media/film.mp4", "2001", sig, 10),             # another expiry
        ("/media/film.mp4", "2000", sig[:-1] + "A", 10),  # another signature
        ("/media/film.mp4", "-1", sig, 10),
        ("/media/film.mp4", "2000", "é", 10),
    ]:
        with pytest.raises(signing.SignatureError):
            signing.verify(key, path, expires, sig_, now=now)
    with pytest.raises(signing.SignatureError):
        signing.verify(b"", "/media/film.mp4", "2000", sig, now=1)
    assert signing.signed_url(key, "/media/a b.mp4", 5).startswith("/media/a%20b.mp4?expires=5&sig=")


def _pem(private: object) -> str:
    return private.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_hs256_time_claims_and_audience() -> None:
    verifier = Verifier.from_settings(SECRET, None, "flaskstream", 5)
    now = int(time.time())
    good = jwt.encode({"sub": "a", "exp": now + 60, "aud": "flaskstream"}, SECRET, algorithm="HS256")
    assert verifier.decode(good).sub == "a"
    cases = {
        "expired": {"exp": now - 10, "aud": "flaskstream"},
        "not yet": {"exp": now + 60, "nbf": now + 30, "aud": "flaskstream"},
        "iat ahead": {"exp": now + 60, "iat": now + 30, "aud": "flaskstream"},
        "audience": {"exp": now + 60, "aud": "someone-else"},
        "no audience": {"exp": now + 60},
        "no exp": {"aud": "flaskstream"},
    }
    for name, payload in cases.items():
        with pytest.raises(TokenError):
            verifier.decode(jwt.encode(payload, SECRET, algorithm="HS256"))
            pytest.fail(name)
    # within the leeway, a just-expired token still passes
    assert verifier.decode(jwt.encode({"exp": now - 2, "aud": "flaskstream"}, SECRET,
                                      algorithm="HS256")).sub is None
    with pytest.raises(TokenError):
        verifier.decode(jwt.encode({"exp": now + 60, "aud": "flaskstream"}, "wrong" * 8,
                                   algorithm="HS256"))


def test_alg_none_and_foreign_algorithms_are_refused() -> None:
    verifier = Verifier.from_settings(SECRET, None, None, 5)
    exp = int(time.time()) + 60
    with pytest.raises(TokenError):
        verifier.decode(jwt.encode({"exp": exp}, None, algorithm="none"))
    with pytest.raises(TokenError):
        verifier.decode(jwt.encode({"exp": exp}, SECRET, algorithm="HS512"))
    with pytest.raises(TokenError):
        verifier.decode("not.a.jwt")


@pytest.mark.parametrize(("make", "alg"), [
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
])
def test_public_keys_and_no_hs_rs_confusion(make: object, alg: str) -> None:
    private = make()  # type: ignore[operator]
    pem = _pem(private)
    verifier = Verifier.from_settings(None, pem, None, 5)
    assert verifier.public_algorithm == alg
    exp = int(time.time()) + 60
    assert verifier.decode(jwt.encode({"sub": "k", "exp": exp}, private, algorithm=alg)).sub == "k"
    # the classic confusion: the public key's PEM used as an HMAC secret
    forged = jwt.api_jws.PyJWS()
    forged._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]
    token = forged.encode(b'{"exp": %d}' % exp, pem.encode(), algorithm="HS256")
    with pytest.raises(TokenError):
        verifier.decode(token)
    # and with both keys configured, the public key still never verifies an HS token
    both = Verifier.from_settings(SECRET, pem, None, 5)
    with pytest.raises(TokenError):
        both.decode(token)


@given(st.binary(min_size=1, max_size=64), st.integers(0, 10**10), st.integers(0, 42),
       st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
def test_any_change_to_a_signature_is_refused(key: bytes, expires: int, position: int,
                                              char: str) -> None:
    sig = signing.sign(key, "/media/x", expires).split("sig=")[1]
    assert len(sig) == 43  # 32 bytes of HMAC-SHA256, base64url without padding
    tampered = sig[:position] + char + sig[position + 1:]
    if tampered == sig:
        return
    with pytest.raises(signing.SignatureError):
        signing.verify(key, "/media/x", str(expires), tampered, now=0)
