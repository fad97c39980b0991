"""Hypothesis sends random bytes and strings through every route of a live gunicorn.

One gevent worker with ``FLASKSTREAM_API_TOKEN`` set; each example is one raw
HTTP/1.1 request (``rawhttp``: nothing normalised) with a random method, a
path built on one of the contract's routes with random segments, random query
parameters (the names the routes read, and others), random values for the
headers the routes read, with or without the token, and a random body (bytes,
JSON with lone surrogates and deep nesting, CSV, multipart). Requests stay
valid HTTP syntax: gunicorn answers malformed framing itself, before the app.

After every example: no 5xx, and every error body is the JSON error shape.
At the end: the known records (two uploads, one event) read back exactly, and
the worker's backends in ``pg_stat_activity`` are back to the baseline.
The number of examples is bounded (``FUZZ_EXAMPLES``) to stay well under a minute.
"""

from __future__ import annotations

import base64
import json
import os
import string
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote_from_bytes

import pg8000.native
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flaskstream import db
from tests.hostile.rawhttp import AUTH, TOKEN, Reply, exchange, request_bytes, token_server
from tests.live import LiveServer, wait_for

FUZZ_EXAMPLES = int(os.environ.get("FLASKSTREAM_FUZZ_EXAMPLES", "200"))
POOL_SIZE = 4
JSON_AUTH = {"Content-Type": "application/json", **AUTH}

ROUTES = [
    "/", "/healthz", "/events", "/events/{s}", "/events/tick", "/events/stats",
    "/events/known", "/stream/tokens", "/uploads", "/uploads/{s}", "/uploads/{s}/content",
    "/uploads/{id}", "/uploads/{id}/content", "/uploads/tus/", "/uploads/tus/{s}",
    "/media/", "/media/{s}", "/media/{s}/{s}", "/etl/jobs", "/etl/jobs/{s}",
    "/etl/jobs/{s}/rejects", "/etl/export.csv", "/static/{s}", "/{s}",
]
QUERY_NAMES = ["channel", "lastEventId", "cursor", "limit", "table", "interval", "prompt",
               "max_tokens", "delay", "upload", "encoding", "inline", "mode", "delimiter",
               "dry_run", "max_errors", "access_token", "x"]
HEADER_NAMES = ["Content-Type", "Last-Event-ID", "Upload-Metadata", "Upload-Length",
                "Upload-Offset", "Upload-Defer-Length", "Upload-Checksum", "Tus-Resumable",
                "X-HTTP-Method-Override", "Range", "If-Range", "If-None-Match",
                "If-Modified-Since", "Content-Encoding", "Accept", "Origin", "X-Request-ID",
                "Cookie", "Access-Control-Request-Method"]
CONTENT_TYPES = ["application/json", "text/csv", "multipart/form-data; boundary=fuzz",
                 "multipart/form-data", "application/offset+octet-stream", "text/plain", ""]
HEADER_CHARS = string.ascii_letters + string.digits + string.punctuation + " "


# Values known to have broken something once (issue 12), drawn as often as random ones.
_NUL_CURSOR = base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|\x00").decode()
INTERESTING_QUERY = {
    "lastEventId": ["9" * 3000, "-1", "0", "18446744073709551616"],
    "cursor": [_NUL_CURSOR, base64.urlsafe_b64encode(b"\x00").decode(), "%00"],
    "table": ["%00", "tus_uploads", "events", "etl_jobs", "pg_class"],
    "encoding": ["rot13", "hex", "base64", "utf-16", "zlib"],
}
INTERESTING_HEADERS = {
    "Last-Event-ID": ["9" * 5000, "1" * 20, "abc"],
    "Upload-Metadata": ["filename " + base64.b64encode(b"\xed\xa0\x80").decode(),
                        "filename " + base64.b64encode(b"\xff" * 300).decode(),
                        "filename " + base64.b64encode("\u00e9".encode() * 200).decode()],
    "Upload-Length": ["3", "0", "9" * 30, "-1"],
    "Content-Encoding": ["gzip", "deflate", "br"],
}
# Lone surrogates (JSON "\ud800") are what desynchronised the pool: hypothesis's default
# alphabet leaves category Cs out, so they are asked for explicitly.
hostile_text = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(exclude_categories=()), max_size=20),
    st.sampled_from(["\ud800", "x\udfff", "\ud83d", "\x00", "a\r\nb"]),
)


def segment() -> st.SearchStrategy[str]:
    """A path segment or query value: random bytes, or text (lone surrogates too) as
    UTF-8 with ``surrogatepass`` (so invalid UTF-8), percent-encoded."""
    raw = st.one_of(
        st.binary(max_size=40),
        hostile_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"", b".", b"..", b"\x00", b"%", b"9" * 30, b"users", b"tus_uploads",
                         b"rot13", b"hex", b"-1", b"0", b"1e309", b"nan"]),
    )
    return raw.map(lambda b: quote_from_bytes(b, safe=""))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)


def json_body() -> st.SearchStrategy[bytes]:
    publishable = st.fixed_dictionaries({"data": json_values}, optional={
        "event": hostile_text | st.integers(), "id": hostile_text | json_values})
    deep = st.sampled_from([2, 100, 10_000, 100_000]).map(lambda n: b"[" * n + b"]" * n)
    return st.one_of(
        publishable.map(lambda v: json.dumps(v).encode()),  # \ud800 escapes for lone surrogates
        json_values.map(lambda v: json.dumps(v).encode()),
        deep,
    )


def body() -> st.SearchStrategy[bytes]:
    csv_rows = st.lists(st.lists(st.binary(max_size=12), min_size=1, max_size=5), max_size=6)
    multipart = st.tuples(st.binary(max_size=60), st.binary(max_size=200)).map(
        lambda p: b"--fuzz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"" + p[0]
        + b"\"\r\n\r\n" + p[1] + b"\r\n--fuzz--\r\n")
    return st.one_of(
        st.just(b""),
        st.binary(max_size=2048),
        json_body(),
        csv_rows.map(lambda rows: b"id,name,email\n" + b"\n".join(b",".join(r) for r in rows)),
        multipart,
    )


@st.composite
def hostile_request(draw: st.DrawFn, known_ids: list[str]) -> tuple[str, str, bytes]:
    method = draw(st.sampled_from(["GET", "GET", "HEAD", "POST", "POST", "PUT", "PATCH",
                                   "DELETE", "OPTIONS"]))
    route = draw(st.sampled_from(ROUTES))
    if "{id}" in route and method not in ("GET", "HEAD"):  # never delete the known records
        method = "GET"
    path = route.replace("{id}", draw(st.sampled_from(known_ids)))
    while "{s}" in path:
        path = path.replace("{s}", draw(segment()) or "x", 1)
    query = []
    for name in draw(st.lists(st.sampled_from(QUERY_NAMES), max_size=4)):
        special = INTERESTING_QUERY.get(name)
        query.append((name, draw(st.sampled_from(special) | segment() if special else segment())))
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query)
    path = path[:3900]  # gunicorn answers a request line over 4,094 bytes with its own 414
    headers: dict[str, str] = {}
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=5, unique=True)):
        special = INTERESTING_HEADERS.get(name)
        value = draw(st.sampled_from(CONTENT_TYPES) if name == "Content-Type"
                     else st.sampled_from(special) | st.text(HEADER_CHARS, max_size=60)
                     if special else st.text(HEADER_CHARS, max_size=60))
        headers[name] = value.strip()
    authorization = draw(st.sampled_from([f"Bearer {TOKEN}"] * 6 + [
        None, None, "Bearer wrong", "Basic Zm9v", "Bearer"]))
    if authorization is not None:
        headers["Authorization"] = authorization
    data = draw(body()) if method in ("POST", "PUT", "PATCH") or draw(st.booleans()) else b""
    if data and "Content-Type" not in headers and draw(st.booleans()):
        headers["Content-Type"] = draw(st.sampled_from(CONTENT_TYPES[:5]))
    return method, path, request_bytes(method, path, headers, data) if data or method in (
        "POST", "PUT", "PATCH") else request_bytes(method, path, headers)


def assert_sound(method: str, path: str, reply: Reply) -> None:
    assert reply.status < 500, (method, path, reply.status, reply.body[:300])
    if reply.status >= 400 and method != "HEAD":
        assert reply.content_type.startswith("application/json"), (method, path, reply)
        error = json.loads(reply.body)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
        for leak in ("Traceback", "Invalid chunk size", "codec can't", "<class ", " object at 0x"):
            assert leak not in error["message"], (method, path, error)


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with token_server(tmp_path_factory.mktemp("fuzz"), database_url,
                      FLASKSTREAM_TOKENS_DELAY="0", FLASKSTREAM_DB_POOL_SIZE=str(POOL_SIZE),
                      FLASKSTREAM_SSE_HEARTBEAT="1") as live:
        yield live


def backend_queries(database_url: str, server: LiveServer) -> list[str]:
    """The last query of each backend the server's worker holds (for a failure message)."""
    con = pg8000.native.Connection(**db.connect_kwargs(database_url))
    try:
        # ETL jobs rename their bookkeeping connection: counted too (this session's
        # other servers are stopped by the time this module runs).
        names = [f"flaskstream:{pid}" for pid in server.worker_pids()] + ["flaskstream-etl-jobs"]
        return [r[0][:120] for r in con.run(
            "SELECT state || ': ' || query FROM pg_stat_activity"
            " WHERE application_name = ANY(CAST(:n AS text[])) ORDER BY backend_start", n=names)]
    finally:
        con.close()


def backends(database_url: str, server: LiveServer) -> int:
    return len(backend_queries(database_url, server))


@pytest.fixture(scope="module")
def known(server: LiveServer) -> dict[str, Any]:
    """Two uploads and one event, as first answered, and the warmed-up backend count."""
    uploads = {}
    for name in ("alice", "bob"):
        response = requests.put(f"{server.url}/uploads/{name}.txt", headers=AUTH, timeout=10,
                                data=f"{name}'s bytes".encode())
        assert response.status_code == 201
        uploads[response.json()["id"]] = response.json()
    event = requests.post(f"{server.url}/events/known", headers=AUTH, timeout=10,
                          json={"event": "fixed", "data": {"who": "known"}})
    assert event.status_code == 202
    with ThreadPoolExecutor(POOL_SIZE * 2) as pool:  # fill the pool and start the listener
        list(pool.map(lambda _: requests.get(server.url + "/healthz", timeout=10),
                      range(POOL_SIZE * 4)))
    exchange(server, request_bytes("GET", "/events/known?lastEventId=0"), timeout=5,
             until=b"event: fixed")
    return {"uploads": uploads, "event_id": event.json()["id"]}


def known_event(server: LiveServer, event_id: int) -> bytes:
    reply = exchange(server, request_bytes("GET", f"/events/known?lastEventId={event_id - 1}"),
                     timeout=5, until=b"\n\n" + b"id: " + str(event_id).encode())
    return reply.body


def test_random_requests_never_5xx_never_cross_never_leak(
        server: LiveServer, known: dict[str, Any], database_url: str) -> None:
    ids = list(known["uploads"])
    baseline = backends(database_url, server)
    first_event = known_event(server, known["event_id"])
    assert b'data: {"who":"known"}' in first_event

    # derandomize: the same examples on every run, so CI never flakes; set
    # FLASKSTREAM_FUZZ_RANDOM=1 to explore new ones. The explicit examples are
    # requests that broke something once (issue 12): they run every time.
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              derandomize=not os.environ.get("FLASKSTREAM_FUZZ_RANDOM"),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(hostile_request(ids))
    @example(("POST", "/events/x", request_bytes(
        "POST", "/events/x", {**JSON_AUTH}, b'{"event": "\\ud800", "data": "x"}')))
    @example(("GET", "/events/known", request_bytes(
        "GET", "/events/known", {"Last-Event-ID": "9" * 5000})))
    @example(("HEAD", "/etl/export.csv", request_bytes("HEAD", "/etl/export.csv")))
    def one(request: tuple[str, str, bytes]) -> None:
        method, path, raw = request
        stream = method == "GET" and path.startswith(("/events", "/stream"))
        reply = exchange(server, raw, timeout=10, max_body=64 * 1024,
                         until=b"\n\n" if stream else None)
        assert_sound(method, path, reply)

    one()
    for upload_id, record in known["uploads"].items():
        assert requests.get(f"{server.url}/uploads/{upload_id}", timeout=10).json() == record
    assert b'data: {"who":"known"}' in known_event(server, known["event_id"])
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    assert wait_for(lambda: backends(database_url, server) <= baseline, timeout=20), \
        (baseline, backend_queries(database_url, server))
