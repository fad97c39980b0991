"""``READ_ACCESS=token`` on a real gunicorn: every route × every way a token can be wrong.

For each route: no token → 401; expired, not yet valid, wrong audience, bad
signature, revoked, ``alg: none`` and an HS256 token signed with the RS public key
→ 401; claims that do not cover it → 403; covering claims → its success status.
Then ownership, logs without the query token, and an SSE stream ending at ``exp``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flaskstream import create_app
from tests.auth.helpers import ADMIN, AUDIENCE, SECRET, bearer, token
from tests.conftest import truncate_all
from tests.etl.helpers import users_csv
from tests.live import LiveServer

pytestmark = [pytest.mark.live, pytest.mark.db]

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
REVOKED_JTI = "revoked-in-the-matrix"


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    truncate_all(database_url)
    path = tmp_path_factory.mktemp("auth-live")
    (path / "rsa.pem").write_bytes(RSA_PEM)
    env = {"FLASKSTREAM_READ_ACCESS": "token", "FLASKSTREAM_WRITE_ACCESS": "token",
           "FLASKSTREAM_JWT_SECRET": SECRET, "FLASKSTREAM_JWT_PUBLIC_KEY": str(path / "rsa.pem"),
           "FLASKSTREAM_JWT_AUDIENCE": AUDIENCE, "FLASKSTREAM_JWT_LEEWAY": "1",
           "FLASKSTREAM_API_TOKEN": ADMIN, "GUNICORN_ACCESSLOG": "-",
           "FLASKSTREAM_SSE_HEARTBEAT": "5"}
    with LiveServer(path, env=env, database_url=database_url) as live:
        app = create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": str(path / "cli"),
                          "JWT_SECRET": SECRET})
        result = app.test_cli_runner().invoke(args=["auth", "revoke", REVOKED_JTI])
        assert result.exit_code == 0, result.output
        yield live


@pytest.fixture(scope="module")
def objects(server: LiveServer) -> dict[str, str]:
    """An upload, a tus upload and an ETL job, made with the admin token."""
    admin = bearer(ADMIN)
    put = requests.put(server.url + "/uploads/matrix.txt", data=b"0123456789" * 100,
                       headers=admin, timeout=10)
    assert put.status_code == 201, put.text
    tus = requests.post(server.url + "/uploads/tus/", timeout=10, headers={
        **admin, "Tus-Resumable": "1.0.0", "Upload-Length": "4"})
    assert tus.status_code == 201, tus.text
    job = requests.post(server.url + "/etl/jobs?table=users&job=matrix-job", data=users_csv(5),
                        headers={**admin, "Content-Type": "text/csv"}, timeout=30)
    assert job.status_code == 201, job.text
    return {"upload": put.json()["id"], "tus": tus.headers["Location"].rsplit("/", 1)[-1],
            "job": "matrix-job"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bad_tokens(claims: dict[str, Any]) -> dict[str, str]:
    """Tokens carrying covering ``claims`` that must each be refused with 401."""
    now = time.time()
    unsigned = _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(
        {"exp": int(now + 300), "aud": AUDIENCE, **claims}).encode()) + "."
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64(json.dumps({"exp": int(now + 300), "aud": AUDIENCE, **claims}).encode())
    import hashlib
    import hmac
    confused = f"{header}.{body}." + _b64(hmac.new(RSA_PEM, f"{header}.{body}".encode(),
                                                   hashlib.sha256).digest())
    good = token(**claims)
    return {
        "expired": token(ttl=-30, **claims),
        "not yet valid": token(nbf=int(now + 60), **claims),
        "wrong audience": token(aud="another-service", **claims),
        "bad signature": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "revoked": token(jti=REVOKED_JTI, **claims),
        "alg none": unsigned,
        "HS/RS confusion": confused,
        "garbage": "not-a-token",
    }


def routes(ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any], dict[str, Any], int]]:
    """(method, path, request kwargs, covering claims, success status)."""
    up, tus, job = ids["upload"], ids["tus"], ids["job"]
    tus_head = {"headers": {"Tus-Resumable": "1.0.0"}}
    return [
        ("GET", "/uploads", {}, {"read": ["/uploads/*"]}, 200),
        ("GET", f"/uploads/{up}", {}, {"read": [f"/uploads/{up}"]}, 200),
        ("GET", f"/uploads/{up}/content", {"headers": {"Range": "bytes=10-19"}},
         {"read": ["/uploads/*"]}, 206),
        ("HEAD", f"/uploads/tus/{tus}", tus_head, {"read": ["/uploads/tus/*"]}, 200),
        ("PATCH", f"/uploads/tus/{tus}", {"data": b"ab", "headers": {
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream"}},
         {"write": [f"/uploads/tus/{tus}"]}, 204),
        ("GET", "/events/orders.alice", {"stream": True}, {"subscribe": ["orders.*"]}, 200),
        ("GET", "/events?channel=a.1&channel=b.2", {"stream": True},
         {"subscribe": ["a.1", "b.*"]}, 200),
        ("POST", "/events/orders.alice", {"json": {"data": 1}},
         {"publish": ["orders.alice"]}, 202),
        ("GET", "/events/stats", {}, {"read": ["/events/stats"]}, 200),
        ("GET", "/etl/jobs", {}, {"read": ["/etl/jobs/*"]}, 200),
        ("GET", f"/etl/jobs/{job}", {}, {"read": ["/etl/jobs/*"]}, 200),
        ("GET", f"/etl/jobs/{job}/rejects", {}, {"read": [f"/etl/jobs/{job}/rejects"]}, 200),
        ("GET", "/etl/export.csv?table=users", {}, {"read": ["/etl/export.csv"]}, 200),
        ("GET", "/media/", {}, {"read": ["/media/*"]}, 200),
        ("GET", "/media/sample.mp4", {"headers": {"Range": "bytes=0-99"}},
         {"read": ["/media/sample.mp4"]}, 206),
        ("DELETE", f"/uploads/tus/{tus}", {"headers": {"Tus-Resumable": "1.0.0"}},
         {"write": ["/uploads/tus/*"]}, 204),
        ("DELETE", f"/uploads/{up}", {}, {"write": ["/uploads/*"]}, 204),
    ]


LISTINGS = {"/uploads": "uploads", "/etl/jobs": "jobs"}
UNRELATED = {"sub": "mallory", "read": ["/media/other.mp4"], "write": ["/etl/jobs/x"],
             "subscribe": ["orders.bob"], "publish": ["orders.bob"]}


def call(server: LiveServer, method: str, path: str, kwargs: dict[str, Any],
         auth: dict[str, str] | None = None) -> requests.Response:
    headers = {**kwargs.get("headers", {}), **(auth or {})}
    response = requests.request(method, server.url + path, timeout=10,
                                **{**kwargs, "headers": headers})
    if kwargs.get("stream") and response.status_code == 200:
        response.close()  # an open SSE stream: the status is all this test needs
    return response


def test_every_route_refuses_missing_bad_and_narrow_tokens(
        server: LiveServer, objects: dict[str, str]) -> None:
    for method, path, kwargs, claims, success in routes(objects):
        refused = call(server, method, path, kwargs)
        assert refused.status_code == 401, (method, path, refused.text)
        if method != "HEAD":
            assert refused.json()["error"]["code"] == "UNAUTHORIZED"
        for name, bad in bad_tokens(claims).items():
            response = call(server, method, path, kwargs, bearer(bad))
            assert response.status_code == 401, (method, path, name, response.text)
        if path in LISTINGS:  # with a sub: only the caller's own (none); without: 403
            own = call(server, method, path, kwargs, bearer(token(**UNRELATED)))
            assert own.status_code == 200 and own.json()[LISTINGS[path]] == [], own.text
        anonymous = {k: v for k, v in UNRELATED.items() if k != "sub"}
        narrow = call(server, method, path, kwargs, bearer(token(**anonymous)))
        assert narrow.status_code == 403, (method, path, narrow.text)
        if method != "HEAD":
            assert narrow.json()["error"]["code"] == "FORBIDDEN"
        allowed = call(server, method, path, kwargs, bearer(token(**claims)))
        assert allowed.status_code == success, (method, path, allowed.text)


def test_an_owner_sees_their_upload_and_another_sub_does_not(server: LiveServer) -> None:
    alice = bearer(token(sub="alice", write=["/uploads"]))
    bob = bearer(token(sub="bob", write=["/uploads"]))
    created = requests.put(server.url + "/uploads/alice.txt", data=b"alice's", headers=alice,
                           timeout=10)
    assert created.status_code == 201, created.text
    upload = created.json()
    for path in (f"/uploads/{upload['id']}", f"/uploads/{upload['id']}/content"):
        assert requests.get(server.url + path, headers=alice, timeout=10).status_code == 200
        assert requests.get(server.url + path, headers=bob, timeout=10).status_code == 403
    mine = requests.get(server.url + "/uploads", headers=alice, timeout=10).json()["uploads"]
    assert [u["id"] for u in mine] == [upload["id"]]
    assert requests.get(server.url + "/uploads", headers=bob, timeout=10).json()["uploads"] == []
    # the 201's signed URL plays it in a browser element, with no token at all
    signed = requests.get(server.url + upload["signed_url"], timeout=10)
    assert signed.status_code == 200 and signed.content == b"alice's"
    tus = requests.post(server.url + "/uploads/tus/", timeout=10, headers={
        **alice, "Tus-Resumable": "1.0.0", "Upload-Length": "3"})
    assert tus.status_code == 201, tus.text
    location = server.url + tus.headers["Location"]
    tus_headers = {"Tus-Resumable": "1.0.0"}
    assert requests.head(location, headers={**tus_headers, **bob}, timeout=10).status_code == 403
    assert requests.head(location, headers={**tus_headers, **alice}, timeout=10).status_code == 200


def test_a_query_token_reaches_no_log_line(server: LiveServer) -> None:
    secret = token(read=["/media/*"], subscribe=["logs.*"])
    for path in ("/media/sample.mp4", "/media/", "/media/missing.mp4"):
        response = requests.get(f"{server.url}{path}?access_token={secret}", timeout=10,
                                headers={"Range": "bytes=0-9"})
        assert response.status_code in (206, 200, 404), response.text
        assert response.headers["Cache-Control"] == "private, no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    with requests.get(f"{server.url}/events/logs.a?access_token={secret}", stream=True,
                      timeout=10) as stream:
        assert stream.status_code == 200
    expired = token(ttl=-60, read=["/media/*"])
    assert requests.get(f"{server.url}/media/?access_token={expired}", timeout=10,
                        ).status_code == 401
    time.sleep(0.5)  # let the access lines reach the log file
    log = Path(server.log_path).read_text(errors="replace")
    assert "/media/sample.mp4?access_token=REDACTED" in log  # the access log is on
    for value in (secret, expired):
        assert value not in log and value.split(".")[2] not in log


def test_a_stream_ends_within_a_second_of_its_token_s_exp(server: LiveServer) -> None:
    exp = time.time() + 3
    short = jwt.encode({"exp": exp, "aud": AUDIENCE, "subscribe": ["clock.*"]}, SECRET,
                       algorithm="HS256")
    lines: list[str] = []
    ended = None
    stop = threading.Event()

    def publish_meanwhile() -> None:  # a busy channel must end on time too
        while not stop.wait(0.2):
            requests.post(f"{server.url}/events/clock.a", json={"data": "tick"},
                          headers=bearer(ADMIN), timeout=5)

    publisher = threading.Thread(target=publish_meanwhile, daemon=True)
    with requests.get(f"{server.url}/events/clock.a?access_token={short}", stream=True,
                      timeout=10) as stream:
        assert stream.status_code == 200
        publisher.start()
        for line in stream.iter_lines(decode_unicode=True):  # the server ends the stream
            lines.append(line)
            if line == "event: auth-expired":
                ended = time.time()
            if time.time() > exp + 5:  # heartbeats (every 5 s) give the loop a turn
                break
    stop.set()
    publisher.join()
    assert ended is not None, lines
    assert "data: tick" in lines  # events were flowing until the end
    assert exp - 0.2 <= ended <= exp + 1.0, (ended - exp)
    final = lines[lines.index("event: auth-expired") - 1:]
    assert any(line.startswith("retry:") for line in final), lines
