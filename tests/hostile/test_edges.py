"""Hostile input at the edges, against a live gunicorn with a token (issue 12, findings 7-9).

Each test sends what an attacker would, on the wire as written (``rawhttp``),
and checks the answer is the JSON error shape with the right status, that no
message carries Python internals, and that the worker keeps serving.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import requests

from tests.hostile.rawhttp import (
    AUTH,
    Reply,
    assert_error_shape,
    exchange,
    request_bytes,
    token_server,
)
from tests.live import LiveServer

MiB = 1024 * 1024
JSON = {"Content-Type": "application/json", **AUTH}
TUS = {"Tus-Resumable": "1.0.0", **AUTH}


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with token_server(tmp_path_factory.mktemp("edges"), database_url) as live:
        yield live


def alive(server: LiveServer) -> bool:
    return requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok", "db": "ok"}


def publish_raw(server: LiveServer, body: bytes, channel: str = "edge") -> requests.Response:
    return requests.post(f"{server.url}/events/{channel}", data=body, headers=JSON, timeout=30)


# --- finding 1: strings UTF-8 cannot encode are refused at the edge -------------------


@pytest.mark.parametrize("body", [
    b'{"event": "\\ud800", "data": "x"}',
    b'{"data": "lone \\udfff surrogate"}',
    b'{"data": {"nested": ["\\ud83d"]}}',
    b'{"data": 1, "id": "key-\\ud800"}',
])
def test_publish_with_a_lone_surrogate_is_400_before_any_query(server: LiveServer,
                                                               body: bytes) -> None:
    response = publish_raw(server, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_EVENT"
    assert "surrogate" in error["message"] and "codec" not in error["message"]
    ok = publish_raw(server, b'{"data": "after"}')
    assert ok.status_code == 202 and isinstance(ok.json()["id"], int)


def test_a_valid_surrogate_pair_is_text_and_published(server: LiveServer) -> None:
    assert publish_raw(server, b'{"data": "\\ud83d\\ude00"}').status_code == 202


def test_tus_metadata_that_is_not_utf8_is_400(server: LiveServer) -> None:
    bad = base64.b64encode(b"\xff\xfe name.txt").decode()
    response = requests.post(server.url + "/uploads/tus/", timeout=10, headers={
        **TUS, "Upload-Length": "3", "Upload-Metadata": f"filename {bad}"})
    error = assert_error_shape(Reply.of(response), 400)
    assert error["code"] == "TUS_METADATA_INVALID"


# --- finding 7: body limits on JSON routes --------------------------------------------


def test_publish_over_the_limit_is_413_before_reading(server: LiveServer) -> None:
    """Only the headers go out: the answer comes without a byte of the 2 MiB body."""
    head = request_bytes("POST", "/events/edge", JSON)
    head = head.replace(b"Content-Length: 0", f"Content-Length: {2 * MiB}".encode())
    reply = exchange(server, head)
    assert assert_error_shape(reply, 413)["code"] == "PAYLOAD_TOO_LARGE"


def test_chunked_publish_over_the_limit_is_413_and_memory_stays_flat(server: LiveServer) -> None:
    pid = server.worker_pids()[0]
    before = server.worker_rss()[pid]
    chunk = b"[" + b"1," * (256 * 1024)  # never closed: a parser would wait for more

    def body() -> Iterator[bytes]:
        for _ in range(200):  # 100 MiB offered
            yield chunk

    try:
        response = requests.post(server.url + "/events/edge", data=body(), headers=JSON,
                                 timeout=60)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    except requests.ConnectionError:
        pass  # the server may close before the client has sent everything: also a refusal
    assert server.worker_rss()[pid] - before < 16 * MiB
    assert alive(server)


def test_publish_at_the_limit_is_accepted(server: LiveServer) -> None:
    data = "x" * (MiB - 64)
    response = publish_raw(server, json.dumps({"data": data}).encode())
    assert response.status_code == 202


# --- finding 8: 500s on malformed input ----------------------------------------------


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"data": ' + b"9" * 5000 + b"}",
    b'{"data": 1',
    b'\xff\xfe{"data": 1}',
])
def test_malformed_json_to_publish_is_400(server: LiveServer, body: bytes) -> None:
    reply = exchange(server, request_bytes("POST", "/events/edge", JSON, body))
    error = assert_error_shape(reply, 400)
    assert error["code"] in ("INVALID_JSON", "INVALID_EVENT")
    assert alive(server)


@pytest.mark.parametrize("where", ["header", "query"])
def test_an_unusable_last_event_id_is_a_reset_not_a_500(server: LiveServer, where: str) -> None:
    """EventSource gives up for good on a non-200: the stream opens and says where to go on."""
    # 5,000 digits in the header (int() refuses > 4,300); the query gets 4,000, as
    # gunicorn answers a request line over limit_request_line (4,094) with 414 itself.
    huge = "9" * (5000 if where == "header" else 4000)
    publish_raw(server, b'{"data": "seen"}', channel="resume")
    target = "/events/resume" + (f"?lastEventId={huge}" if where == "query" else "")
    headers = {"Last-Event-ID": huge} if where == "header" else {}
    reply = exchange(server, request_bytes("GET", target, headers), timeout=5,
                     until=b"unknown-id")
    assert reply.status == 200 and reply.content_type.startswith("text/event-stream")
    assert b"event: reset" in reply.body and b'"reason":"unknown-id"' in reply.body
    tick = exchange(server, request_bytes("GET", "/events/tick?interval=0.05", headers)
                    if where == "header" else
                    request_bytes("GET", f"/events/tick?interval=0.05&lastEventId={huge}"),
                    timeout=5, until=b"id: 1\n")
    assert tick.status == 200 and b"event: tick" in tick.body and b"id: 1\n" in tick.body


@pytest.mark.parametrize("cursor", [
    base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|\x00").decode(),
    base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|" + b"a" * 31 + b"\x00").decode(),
    base64.urlsafe_b64encode(b"\x00").decode(),
    base64.urlsafe_b64encode(b"2026-01-01T00:00:00|" + b"0" * 32).decode(),
    "%00", "!!!!", base64.urlsafe_b64encode(b"\xff\xfe").decode(),
])
def test_a_garbage_uploads_cursor_is_400(server: LiveServer, cursor: str) -> None:
    reply = exchange(server, request_bytes("GET", f"/uploads?cursor={cursor}"))
    assert assert_error_shape(reply, 400)["code"] == "BAD_CURSOR"
    assert requests.get(server.url + "/uploads", timeout=5).status_code == 200


BODY_ROUTES = [
    ("POST", "/events/edge", {"Content-Type": "application/json"}),
    ("POST", "/uploads", {"Content-Type": "multipart/form-data; boundary=b"}),
    ("PUT", "/uploads/chunked.txt", {}),
    ("POST", "/uploads/tus/", {"Tus-Resumable": "1.0.0", "Upload-Length": "10",
                               "Content-Type": "application/offset+octet-stream"}),
    ("POST", "/etl/jobs?table=users", {"Content-Type": "text/csv"}),
]


@pytest.mark.parametrize("framing", [
    b"zz\r\nabc\r\n0\r\n\r\n",
    b"3\r\nabcXX0\r\n\r\n",  # no CRLF after the chunk
    b"5\r\nab",  # ends early
], ids=["size-zz", "no-terminator", "truncated"])
@pytest.mark.parametrize(("method", "path", "headers"), BODY_ROUTES,
                         ids=[p for _, p, _ in BODY_ROUTES])
def test_a_malformed_chunked_body_is_400_on_every_route(
        server: LiveServer, method: str, path: str, headers: dict[str, str],
        framing: bytes) -> None:
    listed = requests.get(server.url + "/uploads", timeout=5).json()["uploads"]
    raw = request_bytes(method, path, {**headers, **AUTH}, chunked=framing)
    reply = exchange(server, raw, timeout=30, half_close=True)
    error = assert_error_shape(reply)
    assert reply.status == 400 and error["code"] in ("BAD_REQUEST_BODY", "CLIENT_DISCONNECTED",
                                                     "BAD_INPUT", "TUS_BODY_INCOMPLETE")
    assert requests.get(server.url + "/uploads", timeout=5).json()["uploads"] == listed
    assert alive(server)


# --- finding 9: tus filenames, stats ----------------------------------------------------


def test_tus_filenames_are_capped_at_255_bytes_like_put(server: LiveServer) -> None:
    name = "\u00e9" * 200 + ".txt"  # 404 bytes of UTF-8
    meta = "filename " + base64.b64encode(name.encode()).decode()
    created = requests.post(server.url + "/uploads/tus/", timeout=10, data=b"abc", headers={
        **TUS, "Upload-Length": "3", "Upload-Metadata": meta,
        "Content-Type": "application/offset+octet-stream"})
    assert created.status_code == 201, created.text
    put = requests.put(server.url + "/uploads/" + name, data=b"abc", headers=AUTH, timeout=10)
    stored = {u["filename"] for u in requests.get(server.url + "/uploads", timeout=5)
              .json()["uploads"] if u["filename"].endswith(".txt") and "\u00e9" in u["filename"]}
    assert put.json()["filename"] in stored
    assert stored and all(len(n.encode()) <= 255 and n.endswith(".txt") for n in stored)
    too_long = "filename " + base64.b64encode(b"a" * 2000).decode()
    refused = requests.post(server.url + "/uploads/tus/", timeout=10, headers={
        **TUS, "Upload-Length": "3", "Upload-Metadata": too_long})
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "LIMIT_FILENAME_LENGTH"


def test_events_stats_show_channel_names_only_with_the_token(server: LiveServer) -> None:
    with requests.get(server.url + "/events/secret-channel-name", stream=True, timeout=10):
        anonymous = requests.get(server.url + "/events/stats", timeout=5)
        admin = requests.get(server.url + "/events/stats", headers=AUTH, timeout=5)
        wrong = requests.get(server.url + "/events/stats", timeout=5,
                             headers={"Authorization": "Bearer nope"})
    assert "secret-channel-name" not in anonymous.text and "secret-channel-name" not in wrong.text
    assert "channels" not in anonymous.json() and "channels" not in wrong.json()
    assert anonymous.json()["channel_count"] == 1 and anonymous.json()["subscribers"] == 1
    assert admin.json()["channels"] == {"secret-channel-name": 1}
    assert admin.json()["channel_count"] == 1
