"""RFC 9530 digests: the pure parser, Repr-Digest on answers, Content-Digest checked on PUT
(both storage backends: ``storage_backend`` from tests/uploads/conftest.py's pattern)."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from flask import Flask

from flaskstream import create_app, db
from flaskstream.uploads import digest
from tests.storage.moto import stored_leftovers


def b64(data: bytes, algorithm: str = "sha256") -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


@pytest.mark.parametrize("value,expected", [
    ("sha-256=:" + b64(b"x") + ":", {"sha-256": hashlib.sha256(b"x").digest()}),
    ("sha-512=:" + b64(b"x", "sha512") + ":, sha-256=:" + b64(b"x") + ":",
     {"sha-256": hashlib.sha256(b"x").digest()}),
    ("sha-512=:" + b64(b"x", "sha512") + ":", {}),  # only algorithms we do not verify
    ("md5=:" + b64(b"x", "md5") + ":;p=1", {}),  # parameters are allowed and ignored
])
def test_digest_fields_parse(value: str, expected: dict[str, bytes]) -> None:
    assert digest.parse_digests(value) == expected


@pytest.mark.parametrize("value", ["sha-256=abc", "sha-256=:not base64!:", "sha-256=:YQ==:",
                                   "sha-256=:" + b64(b"x") + ":,", "=:YQ==:"])
def test_malformed_digest_fields_are_errors(value: str) -> None:
    with pytest.raises(digest.DigestError):
        digest.parse_digests(value)


def test_repr_digest_is_the_sha256_as_a_byte_sequence() -> None:
    assert digest.repr_digest(hashlib.sha256(b"abc").hexdigest()) == f"sha-256=:{b64(b'abc')}:"


@pytest.fixture(params=["local", "s3"])
def app(request: pytest.FixtureRequest, app_config: dict[str, Any]) -> Any:
    config = dict(app_config)
    if request.param == "s3":
        config["STORAGE_URL"] = request.getfixturevalue("s3_bucket").url()
    app = create_app(config)
    yield app
    db.get_database(app).close_all()


pytestmark = pytest.mark.db


def test_answers_carry_repr_digest(app: Flask) -> None:
    client = app.test_client()
    data = os.urandom(100_000)
    put = client.put("/uploads/a.bin", data=data)
    assert put.headers["Repr-Digest"] == f"sha-256=:{b64(data)}:"
    for headers in ({}, {"Range": "bytes=10-99"}):
        got = client.get(put.json["url"], headers=headers)
        assert got.status_code in (200, 206)
        assert got.headers["Repr-Digest"] == f"sha-256=:{b64(data)}:"  # the whole representation
    boundary = "dg"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"b.bin\"\r\n"
            f"\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    post = client.post("/uploads", data=body,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert post.headers["Repr-Digest"] == f"sha-256=:{b64(data)}:"


def test_put_with_a_matching_content_digest_is_stored(app: Flask) -> None:
    data = os.urandom(70_000)
    res = app.test_client().put("/uploads/ok.bin", data=data,
                                headers={"Content-Digest": f"sha-256=:{b64(data)}:"})
    assert res.status_code == 201 and stored_leftovers(app) == [res.json["id"]]


@pytest.mark.parametrize("header,code", [
    ("sha-256=:" + b64(b"something else") + ":", "DIGEST_MISMATCH"),
    ("sha-256=:bad!:", "BAD_DIGEST"),
])
def test_put_with_a_wrong_content_digest_stores_nothing(app: Flask, header: str,
                                                        code: str) -> None:
    client = app.test_client()
    res = client.put("/uploads/bad.bin", data=os.urandom(6 << 20),
                     headers={"Content-Digest": header})
    assert (res.status_code, res.json["error"]["code"]) == (400, code)
    assert stored_leftovers(app) == []
    with app.app_context(), db.connection() as con:
        assert con.run("SELECT count(*) FROM flaskstream.uploads")[0][0] == 0


TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def test_tus_patch_content_digest_is_verified(app: Flask) -> None:
    """A PATCH body with a wrong Content-Digest is discarded (the offset stays); a right
    one is kept; the finished upload answers with its Repr-Digest."""
    client = app.test_client()
    data = os.urandom(300_000)
    created = client.post("/uploads/tus/", headers={**TUS, "Upload-Length": str(len(data))})
    location = created.headers["Location"]
    first = client.patch(location, data=data[:100_000], headers={
        **OCTETS, "Upload-Offset": "0", "Content-Digest": f"sha-256=:{b64(b'not it')}:"})
    assert (first.status_code, first.json["error"]["code"]) == (400, "DIGEST_MISMATCH")
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == "0"
    bad = client.patch(location, data=data[:10], headers={
        **OCTETS, "Upload-Offset": "0", "Content-Digest": "sha-256=:x:"})
    assert (bad.status_code, bad.json["error"]["code"]) == (400, "BAD_DIGEST")
    for start, stop in ((0, 100_000), (100_000, len(data))):
        ok = client.patch(location, data=data[start:stop], headers={
            **OCTETS, "Upload-Offset": str(start),
            "Content-Digest": f"sha-256=:{b64(data[start:stop])}:"})
        assert ok.status_code == 204, ok.json
    upload_id = location.rstrip("/").rsplit("/", 1)[1]
    got = client.get(f"/uploads/{upload_id}/content")
    assert got.data == data and got.headers["Repr-Digest"] == f"sha-256=:{b64(data)}:"


def digest_form(boundary: str, *parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart body of file parts ``(field, content, Content-Digest header or None)``."""
    out = bytearray()
    for field, content, header in parts:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                f"filename=\"{field}.bin\"\r\n").encode()
        if header is not None:
            out += f"Content-Digest: {header}\r\n".encode()
        out += b"\r\n" + content + b"\r\n"
    return bytes(out + f"--{boundary}--\r\n".encode())


def test_post_parts_with_matching_content_digests_are_stored(app: Flask) -> None:
    """RFC 9530 §2: a part's Content-Digest is the digest of that part's content."""
    a, b = os.urandom(6 << 20), os.urandom(1000)  # one over an S3 part, one small
    body = digest_form("dg", ("a", a, f"sha-256=:{b64(a)}:"),
                       ("b", b, f"sha-512=:{b64(b, 'sha512')}:, sha-256=:{b64(b)}:"),
                       ("c", b"no digest", None))
    res = app.test_client().post("/uploads", data=body,
                                 headers={"Content-Type": "multipart/form-data; boundary=dg"})
    assert res.status_code == 201, res.json
    assert [f["sha256"] for f in res.json["files"]] == [
        hashlib.sha256(x).hexdigest() for x in (a, b, b"no digest")]


@pytest.mark.parametrize("which,header,code", [
    (0, "sha-256=:" + b64(b"something else") + ":", "DIGEST_MISMATCH"),  # the big first part
    (1, "sha-256=:" + b64(b"something else") + ":", "DIGEST_MISMATCH"),  # after one stored
    (1, "sha-256=:bad!:", "BAD_DIGEST"),
    (0, "sha-256=:YQ==:", "BAD_DIGEST"),  # 1 byte is no SHA-256
])
def test_post_part_with_a_wrong_content_digest_stores_nothing(app: Flask, which: int,
                                                              header: str, code: str) -> None:
    parts = [os.urandom(6 << 20), os.urandom(1000)]
    body = digest_form("dg", *[(f"f{i}", part, header if i == which else f"sha-256=:{b64(part)}:")
                               for i, part in enumerate(parts)])
    res = app.test_client().post("/uploads", data=body,
                                 headers={"Content-Type": "multipart/form-data; boundary=dg"})
    assert (res.status_code, res.json["error"]["code"]) == (400, code), res.json
    assert f"f{which}" in res.json["error"]["message"]
    assert stored_leftovers(app) == []
    with app.app_context(), db.connection() as con:
        assert con.run("SELECT count(*) FROM flaskstream.uploads")[0][0] == 0
