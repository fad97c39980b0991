"""RFC 9110 conformance of /media/ against the live gunicorn: one test per rule,
checking status, headers and exact bytes on the wire (raw http.client, so no
client library normalises paths or headers)."""

from __future__ import annotations

import http.client
import os
import socket
import time
from email.message import Message

import pytest
import requests

from tests.media.conftest import MediaServer

pytestmark = pytest.mark.live

BLOB = "/media/blob.bin"


def fetch(ms: MediaServer, path: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, Message, bytes]:
    conn = http.client.HTTPConnection(ms.host, ms.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        res = conn.getresponse()
        return res.status, res.headers, res.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def blob(media_server: MediaServer) -> bytes:
    return media_server.path("blob.bin").read_bytes()


@pytest.fixture(scope="module")
def etag(media_server: MediaServer) -> str:
    return fetch(media_server, BLOB, method="HEAD")[1]["ETag"]


def multipart_parts(headers: Message, body: bytes) -> list[tuple[str, bytes]]:
    boundary = headers["Content-Type"].split("boundary=", 1)[1].encode()
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    parts = []
    for chunk in chunks[1:-1]:
        head, _, payload = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
        parts.append((fields["Content-Range"], payload))
    return parts


# --- full responses ---------------------------------------------------------------------

def test_full_200_headers_and_bytes(media_server: MediaServer, blob: bytes) -> None:
    status, headers, body = fetch(media_server, BLOB)
    assert status == 200 and body == blob
    assert headers["Content-Length"] == str(len(blob))
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Cache-Control"] == "public, max-age=3600"
    assert headers["ETag"].startswith('"') and not headers["ETag"].startswith("W/")
    stat = media_server.path("blob.bin").stat()
    assert headers["Last-Modified"] == time.strftime(
        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(int(stat.st_mtime)))
    assert "Transfer-Encoding" not in headers


def test_content_type_from_extension(media_server: MediaServer) -> None:
    assert fetch(media_server, "/media/sample.mp4", method="HEAD")[1]["Content-Type"] == "video/mp4"
    assert fetch(media_server, "/media/sub/tone.opus")[1]["Content-Type"] == "audio/ogg; codecs=opus"


def test_head_mirrors_get_without_body(media_server: MediaServer) -> None:
    for headers in ({}, {"Range": "bytes=10-19"}, {"Range": "bytes=0-1,100-101"}):
        g_status, g_headers, _ = fetch(media_server, BLOB, headers)
        h_status, h_headers, h_body = fetch(media_server, BLOB, headers, method="HEAD")
        assert (h_status, h_body) == (g_status, b"")
        for name in ("Content-Length", "Content-Range", "ETag", "Last-Modified", "Accept-Ranges"):
            assert h_headers[name] == g_headers[name], name
        if "boundary" not in (g_headers["Content-Type"] or ""):
            assert h_headers["Content-Type"] == g_headers["Content-Type"]


def test_head_304_412_send_no_body_bytes_on_the_wire(media_server: MediaServer, etag: str) -> None:
    """http.client never reads a body after HEAD/304, so check the raw connection:
    on one keep-alive socket, each bodiless answer is followed directly by the next."""
    requests_ = [
        ("HEAD", {}), ("HEAD", {"Range": "bytes=0-9,100-109"}),
        ("GET", {"If-None-Match": etag}), ("GET", {"If-Match": '"stale"'}),
    ]
    with socket.create_connection((media_server.host, media_server.port), timeout=10) as sock:
        pending = b""
        for method, headers in requests_:
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            sock.sendall(f"{method} {BLOB} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
            while b"\r\n\r\n" not in pending:
                data = sock.recv(65536)
                assert data, "connection closed"
                pending += data
            head, _, pending = pending.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 " + (b"412" if "If-Match" in headers else
                                                   b"304" if "If-None-Match" in headers else
                                                   b"206" if "Range" in headers else b"200"))
            assert pending == b"", (method, headers)
        sock.sendall(b"GET /media/small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while data := sock.recv(65536):
            pending += data
    assert pending.startswith(b"HTTP/1.1 200") and pending.endswith(b"0123456789abcdefghij")


# --- single ranges ----------------------------------------------------------------------

@pytest.mark.parametrize("spec,start,stop", [
    ("bytes=0-0", 0, 1),                   # first byte only (whitenoise: 416)
    ("bytes=1000-1999", 1000, 2000),       # closed, inclusive
    ("bytes=8388600-", 8388600, None),     # open to the end
    ("bytes=0-", 0, None),                 # 206, not 200 (Safari)
    ("bytes=-65536", -65536, None),        # suffix
    ("bytes=-999999999", 0, None),         # suffix longer than the file → whole file
    ("bytes=8388000-99999999", 8388000, None),  # last-pos clamped
    ("bytes=0-18446744073709551615", 0, None),  # would overflow a uint64 + 1
])
def test_single_range_206(media_server: MediaServer, blob: bytes, spec: str,
                          start: int, stop: int | None) -> None:
    status, headers, body = fetch(media_server, BLOB, {"Range": spec})
    want = blob[start:stop]
    first = start % len(blob)
    assert status == 206 and body == want
    assert headers["Content-Range"] == f"bytes {first}-{first + len(want) - 1}/{len(blob)}"
    assert headers["Content-Length"] == str(len(want))
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("spec", ["bytes=-0", "bytes=8388685-", "bytes=99999999-99999999"])
def test_unsatisfiable_416(media_server: MediaServer, blob: bytes, spec: str) -> None:
    status, headers, body = fetch(media_server, BLOB, {"Range": spec})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(blob)}"
    assert b"RANGE_NOT_SATISFIABLE" in body


@pytest.mark.parametrize("spec", ["bytes=abc", "bytes=9-1", "pages=1-2", "bytes=1-2-3", "bytes="])
def test_invalid_range_ignored_200(media_server: MediaServer, blob: bytes, spec: str) -> None:
    status, _, body = fetch(media_server, BLOB, {"Range": spec})
    assert status == 200 and body == blob


# --- several ranges ---------------------------------------------------------------------

def test_multi_range_multipart_in_requested_order(media_server: MediaServer, blob: bytes) -> None:
    status, headers, body = fetch(media_server, BLOB, {"Range": "bytes=5000000-5000099,-10,0-9"})
    assert status == 206
    assert headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert headers["Content-Length"] == str(len(body))
    size = len(blob)
    assert multipart_parts(headers, body) == [
        (f"bytes 5000000-5000099/{size}", blob[5000000:5000100]),
        (f"bytes {size - 10}-{size - 1}/{size}", blob[-10:]),
        (f"bytes 0-9/{size}", blob[:10]),
    ]


def test_multipart_boundary_is_random(media_server: MediaServer) -> None:
    first = fetch(media_server, BLOB, {"Range": "bytes=0-0,9000-9000"}, method="HEAD")[1]
    second = fetch(media_server, BLOB, {"Range": "bytes=0-0,9000-9000"}, method="HEAD")[1]
    assert first["Content-Type"] != second["Content-Type"]


def test_overlapping_ranges_coalesce_into_one_part(media_server: MediaServer, blob: bytes) -> None:
    status, headers, body = fetch(media_server, BLOB, {"Range": "bytes=100-199,150-299,300-310"})
    assert status == 206 and body == blob[100:311]
    assert headers["Content-Range"] == f"bytes 100-310/{len(blob)}"  # never multipart for one


def test_more_than_max_ranges_full_200(media_server: MediaServer, blob: bytes) -> None:
    spec = "bytes=" + ",".join(f"{k * 1000}-{k * 1000 + 1}" for k in range(17))
    status, _, body = fetch(media_server, BLOB, {"Range": spec})
    assert status == 200 and body == blob


def test_ranges_summing_past_size_full_200(media_server: MediaServer, blob: bytes) -> None:
    status, _, body = fetch(media_server, BLOB, {"Range": "bytes=0-,1-"})
    assert status == 200 and body == blob


def test_apache_killer_header(media_server: MediaServer, blob: bytes) -> None:
    spec = "bytes=0-," + ",".join(f"5-{k}" for k in range(1300))
    status, _, body = fetch(media_server, BLOB, {"Range": spec})
    assert status == 200 and body == blob


def test_thousands_of_ranges_within_header_limit(media_server: MediaServer, blob: bytes) -> None:
    spec = "bytes=" + ",".join("1-1" for _ in range(3500))  # ~14 KB, under gunicorn's 16 KB
    status, _, body = fetch(media_server, BLOB, {"Range": spec})
    assert status == 200 and body == blob


def test_ten_thousand_ranges_stop_at_gunicorn(media_server: MediaServer) -> None:
    # ~48 KB of header: gunicorn's 16 KiB field limit answers 431 before the app
    # (the core's own handling of it is a unit test); the worker carries on.
    spec = "bytes=" + ",".join(f"{k}-{k}" for k in range(0, 20_000, 2))
    assert fetch(media_server, BLOB, {"Range": spec})[0] == 431
    assert fetch(media_server, "/media/small.txt")[0] == 200


# --- conditional requests, §13.2.2 order --------------------------------------------------

def test_if_match_mismatch_412_no_body(media_server: MediaServer, etag: str) -> None:
    status, headers, body = fetch(media_server, BLOB, {"If-Match": '"stale"'})
    assert (status, body) == (412, b"")
    assert fetch(media_server, BLOB, {"If-Match": etag}, method="HEAD")[0] == 200


def test_if_unmodified_since_412(media_server: MediaServer) -> None:
    status, _, body = fetch(media_server, BLOB, {"If-Unmodified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"})
    assert (status, body) == (412, b"")


def test_if_none_match_304_no_body(media_server: MediaServer, etag: str) -> None:
    status, headers, body = fetch(media_server, BLOB, {"If-None-Match": f'"x", {etag}'})
    assert (status, body) == (304, b"")
    assert headers["ETag"] == etag
    assert headers["Cache-Control"] == "public, max-age=3600"


def test_if_modified_since_304(media_server: MediaServer) -> None:
    last_modified = fetch(media_server, BLOB, method="HEAD")[1]["Last-Modified"]
    assert fetch(media_server, BLOB, {"If-Modified-Since": last_modified})[0] == 304
    status, _, _ = fetch(media_server, BLOB, {"If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"},
                         method="HEAD")
    assert status == 200


def test_preconditions_checked_before_range(media_server: MediaServer, etag: str) -> None:
    # werkzeug's send_file answers these with 206.
    assert fetch(media_server, BLOB, {"Range": "bytes=0-9", "If-None-Match": etag})[0] == 304
    assert fetch(media_server, BLOB, {"Range": "bytes=0-9", "If-Match": '"stale"'})[0] == 412


def test_if_range_strong_etag_match_206(media_server: MediaServer, blob: bytes, etag: str) -> None:
    status, _, body = fetch(media_server, BLOB, {"Range": "bytes=10-19", "If-Range": etag})
    assert (status, body) == (206, blob[10:20])


def test_if_range_stale_etag_full_200(media_server: MediaServer, blob: bytes, etag: str) -> None:
    for stale in ('"stale"', "W/" + etag, etag[:-2] + '"'):
        status, _, body = fetch(media_server, BLOB, {"Range": "bytes=10-19", "If-Range": stale})
        assert (status, body) == (200, blob), stale


def test_if_range_date_exact_match_only(media_server: MediaServer, blob: bytes) -> None:
    last_modified = fetch(media_server, BLOB, method="HEAD")[1]["Last-Modified"]
    assert fetch(media_server, BLOB, {"Range": "bytes=0-0", "If-Range": last_modified})[2] == blob[:1]
    status, _, _ = fetch(media_server, BLOB, {"Range": "bytes=0-0",
                                             "If-Range": "Sun, 06 Nov 1994 08:49:37 GMT"})
    assert status == 200


def test_etag_changes_when_file_changes(media_server: MediaServer) -> None:
    path = media_server.path("small.txt")
    before = fetch(media_server, "/media/small.txt", method="HEAD")[1]["ETag"]
    path.write_bytes(b"0123456789ABCDEFGHIJ")  # same size
    status, headers, body = fetch(media_server, "/media/small.txt",
                                  {"Range": "bytes=10-", "If-Range": before})
    assert headers["ETag"] != before
    assert (status, body) == (200, b"0123456789ABCDEFGHIJ")


# --- safety ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/media/../tests/live.py", "/media/%2e%2e/outside.txt", "/media/%2E%2E%2Foutside.txt",
    "/media/sub/..%2F..%2Foutside.txt", "/media/escape.txt", "/media/.secret",
    "/media/%2esecret", "/media/sub", "/media/missing.mp4", "/media/sub/%00x",
    "/media/.private/clip.mp4", "/media/%2Eprivate/clip.mp4", "/media/sub/../.private/clip.mp4",
])
def test_paths_outside_or_hidden_404(media_server: MediaServer, path: str) -> None:
    status, _, body = fetch(media_server, path)
    assert status == 404, path
    assert b"secret" not in body and b"import" not in body and b"hidden" not in body


def test_listing(media_server: MediaServer) -> None:
    listing = requests.get(media_server.url + "/media/", timeout=10).json()["files"]
    names = [f["name"] for f in listing]
    assert names == ["blob.bin", "sample.mp4", "small.txt", "sub/tone.opus"] or \
        set(names) >= {"blob.bin", "sample.mp4", "sub/tone.opus"}
    assert ".secret" not in names and "escape.txt" not in names
    assert not any(name.startswith(".private") for name in names)
    mp4 = next(f for f in listing if f["name"] == "sample.mp4")
    assert mp4["content_type"] == "video/mp4" and mp4["url"] == "/media/sample.mp4"
    assert mp4["size"] == media_server.path("sample.mp4").stat().st_size


# --- streaming behaviour -------------------------------------------------------------------

def worker_fds(media_server: MediaServer) -> int:
    pid = media_server.server.worker_pids()[0]
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_client_aborts_close_descriptors_and_memory_stays_flat(media_server: MediaServer) -> None:
    big = media_server.path("big.bin")
    with open(big, "wb") as f:
        f.truncate(256 * 1024 * 1024)  # sparse
    fetch(media_server, "/media/big.bin", {"Range": "bytes=0-0"})
    baseline_fds = worker_fds(media_server)
    baseline_rss = sum(media_server.server.worker_rss().values())
    socks = []
    for k in range(20):  # 20 streams stalled mid-body: each must hold ~one chunk, not the file
        sock = socket.create_connection((media_server.host, media_server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        start = k * 10 * 1024 * 1024
        sock.sendall(f"GET /media/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes={start}-\r\n\r\n"
                     .encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 206")
        socks.append(sock)
    time.sleep(0.5)
    grown = sum(media_server.server.worker_rss().values()) - baseline_rss
    assert grown < 40 * 1024 * 1024, grown
    for sock in socks:
        sock.close()  # abort mid-stream
    deadline = time.monotonic() + 10
    while worker_fds(media_server) > baseline_fds and time.monotonic() < deadline:
        fetch(media_server, "/media/small.txt", method="HEAD")
        time.sleep(0.1)
    assert worker_fds(media_server) <= baseline_fds
    big.unlink()


def test_file_shrinking_mid_stream_aborts_connection(media_server: MediaServer) -> None:
    path = media_server.path("shrink.bin")
    with open(path, "wb") as f:
        f.truncate(128 * 1024 * 1024)
    res = requests.get(media_server.url + "/media/shrink.bin", stream=True, timeout=30)
    assert res.status_code == 200 and res.headers["Content-Length"] == str(128 * 1024 * 1024)
    received = len(res.raw.read(1024))
    os.truncate(path, 1024 * 1024)
    with pytest.raises(requests.exceptions.RequestException):
        for chunk in res.iter_content(1 << 20):
            received += len(chunk)
    assert received < 128 * 1024 * 1024
    path.unlink()
    assert fetch(media_server, "/media/small.txt")[0] == 200  # the worker carries on
