"""tus protocol errors, CORS, expiry and idle bodies against a real gunicorn.

The issue's list — checksum mismatch, offset mismatch, wrong content type,
unknown version, oversize, expiry and termination — each answered by the live
server, plus the CORS headers a browser client needs and an idle PATCH that
keeps its bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any

import pytest
import requests

from tests.live import LiveServer
from tests.tus.live_support import AUTH, OCTETS, TUS, MiB, stored, upload_id

pytestmark = [pytest.mark.live, pytest.mark.slow]


def create(server: LiveServer, length: int, **headers: str) -> str:
    response = requests.post(f"{server.url}/uploads/tus/", headers={
        **TUS, "Upload-Length": str(length), **headers}, timeout=10)
    assert response.status_code == 201, response.text
    return server.url + response.headers["Location"]


def patch(url: str, offset: int, body: bytes, **headers: str) -> requests.Response:
    return requests.patch(url, data=body, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS, **headers}, timeout=10)


def error_code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


def test_live_protocol_errors(server: LiveServer) -> None:
    url = create(server, 11)
    # checksum mismatch: 460, chunk discarded
    wrong = base64.b64encode(hashlib.sha1(b"hello there").digest()).decode()
    response = patch(url, 0, b"hello world", **{"Upload-Checksum": f"sha1 {wrong}"})
    assert response.status_code == 460 and error_code(response) == "TUS_CHECKSUM_MISMATCH"
    assert requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"] == "0"
    # offset mismatch: 409
    assert patch(url, 0, b"hello").status_code == 204
    response = patch(url, 0, b"hello")
    assert response.status_code == 409 and error_code(response) == "TUS_OFFSET_MISMATCH"
    # wrong content type: 415
    response = requests.patch(url, data=b" world", headers={
        **TUS, "Upload-Offset": "5", "Content-Type": "application/octet-stream"}, timeout=10)
    assert response.status_code == 415 and error_code(response) == "TUS_CONTENT_TYPE"
    # unknown version: 412 with Tus-Version, request not processed
    response = requests.patch(url, data=b" world", headers={
        **AUTH, "Tus-Resumable": "0.2.2", "Upload-Offset": "5", "Content-Type": OCTETS}, timeout=10)
    assert response.status_code == 412 and response.headers["Tus-Version"] == "1.0.0"
    assert requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"] == "5"
    # oversize: 413 at creation, and a body longer than the upload
    response = requests.post(f"{server.url}/uploads/tus/", headers={
        **TUS, "Upload-Length": str(256 * MiB + 1)}, timeout=10)
    assert response.status_code == 413 and error_code(response) == "TUS_MAX_SIZE_EXCEEDED"
    assert patch(url, 5, b" world!").status_code == 413
    # writes need the token; OPTIONS advertises the extensions without one
    assert requests.post(f"{server.url}/uploads/tus/", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "1"}, timeout=10).status_code == 401
    options = requests.options(f"{server.url}/uploads/tus/", timeout=10)
    assert options.status_code == 204 and "Tus-Resumable" in options.headers
    assert options.headers["Tus-Max-Size"] == str(256 * MiB)
    # termination: 204, then 410 on every method
    assert patch(url, 5, b" world").status_code == 204
    uid = upload_id(url)
    assert requests.delete(url, headers=TUS, timeout=10).status_code == 204
    assert requests.head(url, headers=TUS, timeout=10).status_code in (404, 410)
    assert patch(url, 11, b"").status_code in (404, 410)
    assert requests.get(f"{server.url}/uploads/{uid}", timeout=10).status_code == 404


def test_cors_exposes_tus_headers(start_live_server: Any) -> None:
    live = start_live_server(env={"FLASKSTREAM_CORS_ALLOWED_ORIGINS": '["https://app.example"]'})
    origin = {"Origin": "https://app.example"}
    preflight = requests.options(f"{live.url}/uploads/tus/", headers={
        **origin, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "tus-resumable,upload-offset,upload-checksum"}, timeout=10)
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert all(h in allowed for h in ("tus-resumable", "upload-offset", "upload-checksum"))
    created = requests.post(f"{live.url}/uploads/tus/", headers={
        **origin, "Tus-Resumable": "1.0.0", "Upload-Length": "3"}, timeout=10)
    exposed = {h.strip().lower() for h in created.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"location", "upload-offset", "upload-expires", "tus-resumable", "upload-length",
            "upload-metadata"} <= exposed


def test_expiry_on_the_live_server(start_live_server: Any) -> None:
    live = start_live_server(env={"FLASKSTREAM_TUS_EXPIRATION_SECONDS": "1",
                                  "FLASKSTREAM_TUS_JANITOR_INTERVAL": "0.5"})
    base = f"{live.url}/uploads/tus/"
    tus = {"Tus-Resumable": "1.0.0"}
    created = requests.post(base, headers={**tus, "Upload-Length": "10"}, timeout=10)
    assert "Upload-Expires" in created.headers
    url = live.url + created.headers["Location"]
    staging = live.instance_path / "uploads" / ".staging"
    assert len(list(staging.glob("tus-*.part"))) == 1
    # trigger the janitor in this worker with any tus request, then wait it out
    requests.options(base, timeout=10)
    deadline = time.monotonic() + 10
    while list(staging.glob("tus-*.part")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(staging.glob("tus-*.part")), "the janitor did not remove the expired upload"
    assert requests.head(url, headers=tus, timeout=10).status_code == 410
    response = requests.patch(url, data=b"x", headers={**tus, "Upload-Offset": "0",
                                                       "Content-Type": OCTETS}, timeout=10)
    assert response.status_code == 410 and error_code(response) == "GONE"


def test_idle_patch_keeps_its_bytes_and_lets_go(start_live_server: Any) -> None:
    """A client that stops sending mid-body: after the idle timeout the server keeps the
    bytes it got, closes the connection, and the upload can be resumed."""
    import socket

    live = start_live_server(env={"FLASKSTREAM_UPLOAD_IDLE_TIMEOUT": "1",
                                  "FLASKSTREAM_TUS_LOCK_POLL": "0.2"})
    tus = {"Tus-Resumable": "1.0.0"}
    created = requests.post(f"{live.url}/uploads/tus/", headers={**tus, "Upload-Length": "5000"},
                            timeout=10)
    path = created.headers["Location"]
    data = os.urandom(5000)
    with socket.create_connection(("127.0.0.1", live.port)) as sock:
        sock.sendall((f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                      f"Upload-Offset: 0\r\nContent-Type: {OCTETS}\r\nContent-Length: 5000\r\n\r\n"
                      ).encode() + data[:1200])
        sock.settimeout(10)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    head_offset = requests.head(live.url + path, headers=tus, timeout=10).headers["Upload-Offset"]
    assert head_offset == "1200"
    rest = requests.patch(live.url + path, data=data[1200:], headers={
        **tus, "Upload-Offset": "1200", "Content-Type": OCTETS}, timeout=10)
    assert rest.status_code == 204
    assert stored(live, upload_id(path))["sha256"] == hashlib.sha256(data).hexdigest()
