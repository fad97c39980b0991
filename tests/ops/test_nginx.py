"""Through a real nginx rendered from conf/nginx.conf.template (tests/ops/nginx.py):
SSE unbuffered, uploads streamed past nginx's disk, tus with absolute Locations on
the client's host, byte-exact ranges, and the X-Accel-Redirect media offload."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.events.client import SSEClient
from tests.live import LiveServer
from tests.ops import nginx
from tests.tus.live_support import AUTH, TOKEN, uploader
from tests.uploads.test_live import peak_rss_during

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(not nginx.available(), reason="needs /usr/sbin/nginx (nginx-light)")]

MiB, GiB = 1 << 20, 1 << 30
BLOB = random.Random(17).randbytes(3 * MiB + 77)
ODD_NAME = "odd name ?#%.bin"  # every character nginx would split or decode


@dataclass
class Front:
    server: LiveServer
    proxy: nginx.Nginx
    media: Path

    @property
    def url(self) -> str:
        return self.proxy.url


def fill_media(folder: Path) -> None:
    folder.mkdir()
    (folder / "blob.bin").write_bytes(BLOB)
    (folder / ODD_NAME).write_bytes(BLOB[:1000])
    (folder / "tone.opus").write_bytes(b"OggS" + BLOB[:5000])
    (folder / ".secret").write_text("hidden")
    (folder.parent / "outside.txt").write_text("outside secret")
    (folder / "escape.txt").symlink_to(folder.parent / "outside.txt")
    (folder / "sub").mkdir()
    (folder / "link.bin").symlink_to(folder / "blob.bin")  # inside: served


def start_front(database_url: str, base: Path, env: dict[str, str]) -> Iterator[Front]:
    media = base / "media"
    fill_media(media)
    server = LiveServer(base / "instance", database_url=database_url, env={
        "FLASKSTREAM_PROXY_FIX": "1",
        "FLASKSTREAM_MEDIA_DIR": str(media),
        "FLASKSTREAM_API_TOKEN": TOKEN,
        "FLASKSTREAM_SSE_HEARTBEAT": "0.5",
        "FLASKSTREAM_EVENTS_POLL_SECONDS": "30",
        **env,
    })
    with server:
        proxy = nginx.Nginx(base / "nginx", f"127.0.0.1:{server.port}", media,
                            base / "instance" / "uploads")
        with proxy:
            yield Front(server, proxy, media)


@pytest.fixture(scope="module")
def front(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    yield from start_front(database_url, tmp_path_factory.mktemp("nginx"), {})


@pytest.fixture(scope="module")
def accel_front(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    yield from start_front(database_url, tmp_path_factory.mktemp("nginx-accel"),
                           {"FLASKSTREAM_MEDIA_ACCEL": "/_accel/"})


def test_render_substitutes_only_its_placeholders(tmp_path: Path) -> None:
    text = nginx.render({name: f"/{name.lower()}" for name in nginx.PLACEHOLDERS})
    assert "${" not in text
    for name in nginx.PLACEHOLDERS:
        assert f"/{name.lower()}" in text
    for own in ("$host", "$http_host", "$scheme", "$proxy_add_x_forwarded_for", "$document_root"):
        assert own in text  # nginx's variables survive envsubst


# --- events -----------------------------------------------------------------------------


def test_sse_event_arrives_at_once_and_heartbeats_on_time(front: Front) -> None:
    client = SSEClient(front.proxy.port, "/events/nginx-sse", headers={"Accept-Encoding": "gzip"})
    try:
        assert client.wait_for(b": worker"), client.raw
        assert client.status == 200 and client.headers["content-type"].startswith("text/event-stream")
        res = requests.post(front.url + "/events/nginx-sse", json={"event": "hi", "data": 1},
                            headers=AUTH, timeout=10)
        published = time.monotonic()
        assert res.status_code == 202, res.text
        events = client.wait_events(1, timeout=5)
        latency = time.monotonic() - published
        assert [e.type for e in events] == ["hi"]
        assert latency < 0.2, latency  # not held in a proxy buffer

        beats: list[float] = []
        seen = len(client.parsed().comments)
        end = time.monotonic() + 2.6
        while time.monotonic() < end:
            client._pump(0.05)
            now = len(client.parsed().comments)
            beats += [time.monotonic()] * (now - seen)
            seen = now
        assert len(beats) >= 4, beats  # SSE_HEARTBEAT=0.5
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        assert max(gaps) < 1.0, gaps
    finally:
        client.close()


# --- uploads ----------------------------------------------------------------------------


def chunks(total_mib: int, digest: Any) -> Iterator[bytes]:
    """``total_mib`` distinct MiB, generated as they are sent (no copy on disk)."""
    block = os.urandom(MiB)
    for i in range(total_mib):
        chunk = block[i:] + block[:i]
        digest.update(chunk)
        yield chunk


class SpoolWatch:
    """Samples nginx's client body temp folder while an upload runs."""

    def __init__(self, proxy: nginx.Nginx) -> None:
        self.proxy = proxy
        self.seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.stop.is_set():
            self.seen.update(self.proxy.spooled_files())
            time.sleep(0.05)

    def __enter__(self) -> SpoolWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.seen.update(self.proxy.spool_warnings())


def put_streamed(front: Front, name: str, total_mib: int) -> tuple[dict[str, Any], str]:
    digest = hashlib.sha256()
    res = requests.put(f"{front.url}/uploads/{name}", data=chunks(total_mib, digest),
                       headers=AUTH, timeout=900)  # a generator: chunked, no Content-Length
    assert res.status_code == 201, res.text
    return res.json(), digest.hexdigest()


def test_chunked_upload_streams_past_nginx_disk(front: Front) -> None:
    with SpoolWatch(front.proxy) as watch:
        body, sha = put_streamed(front, "mid.bin", 64)
    assert body["sha256"] == sha and body["size"] == 64 * MiB
    assert watch.seen == set()
    assert requests.delete(front.url + body["url"].rsplit("/content", 1)[0], headers=AUTH,
                           timeout=30).status_code == 204


@pytest.mark.slow
def test_1gib_upload_flat_memory_nothing_spooled(front: Front) -> None:
    put_streamed(front, "warm.bin", 1)  # the worker's first upload imports and connects
    with SpoolWatch(front.proxy) as watch:
        baseline, peak, (body, sha) = peak_rss_during(
            front.server, lambda: put_streamed(front, "big.bin", 1024))  # type: ignore[misc]
    try:
        assert body["sha256"] == sha and body["size"] == GiB
        assert watch.seen == set()
        assert peak - baseline < 16 * MiB, (baseline, peak)
    finally:
        requests.delete(front.url + f"/uploads/{body['id']}", headers=AUTH, timeout=30)


def test_body_over_the_proxy_limit_gets_the_json_error(front: Front) -> None:
    with socket.create_connection(("127.0.0.1", front.proxy.port), timeout=10) as sock:
        sock.sendall(b"PUT /uploads/huge.bin HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                     b"Authorization: Bearer %s\r\n\r\n" % (9 * GiB, TOKEN.encode()))
        reply = sock.recv(65536).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413")
    assert "{\"error\":{\"code\":\"LIMIT_BODY_SIZE\"" in reply, reply
    assert "content-type: application/json" in reply.lower(), reply


def test_tuspy_through_nginx_gets_absolute_locations(front: Front, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 5)
    path = tmp_path / "t.bin"
    path.write_bytes(data)
    up = uploader(front.url, path, chunk_size=MiB)
    up.upload()
    assert up.url.startswith(f"{front.url}/uploads/tus/")  # nginx's address, not gunicorn's
    uid = up.url.rsplit("/", 1)[1]
    got = requests.get(f"{front.url}/uploads/{uid}/content", timeout=30)
    assert got.content == data


def test_location_carries_the_client_host_and_ignores_forged_forwarding(front: Front) -> None:
    res = requests.post(front.url + "/uploads/tus/", timeout=10, headers={
        **AUTH, "Tus-Resumable": "1.0.0", "Upload-Length": "3",
        "Host": "files.example:8443",
        # A client cannot choose what the app believes: nginx overwrites these.
        "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "1", "X-Forwarded-Prefix": "/evil"})
    assert res.status_code == 201, res.text
    assert res.headers["Location"].startswith("http://files.example:8443/uploads/tus/")


# --- media ------------------------------------------------------------------------------


def multipart_parts(res: requests.Response) -> list[tuple[str, bytes]]:
    """(Content-Range, bytes) of each part of a multipart/byteranges body."""
    boundary = res.headers["Content-Type"].split("boundary=", 1)[1].strip('"').encode()
    parts = []
    for chunk in res.content.split(b"--" + boundary)[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        ranges = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-range:")]
        parts.append((ranges[0], body[:-2]))  # the CRLF before the next delimiter
    return parts


RANGE_PROBES = [("bytes=0-0", 0, 1), ("bytes=100-65635", 100, 65636),
                ("bytes=-65536", len(BLOB) - 65536, len(BLOB)),
                (f"bytes={len(BLOB) - 10}-", len(BLOB) - 10, len(BLOB)),
                ("bytes=1000000-99999999", 1000000, len(BLOB))]


def check_ranges(url: str) -> None:
    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200 and whole.content == BLOB
    assert whole.headers["Accept-Ranges"] == "bytes"
    for spec, start, stop in RANGE_PROBES:
        res = requests.get(url, headers={"Range": spec}, timeout=30)
        assert res.status_code == 206, spec
        assert res.content == BLOB[start:stop], spec
        assert res.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(BLOB)}"
    multi = requests.get(url, headers={"Range": "bytes=0-9,2000000-2000099"}, timeout=30)
    assert multi.status_code == 206
    assert multipart_parts(multi) == [(f"bytes 0-9/{len(BLOB)}", BLOB[:10]),
                                      (f"bytes 2000000-2000099/{len(BLOB)}",
                                       BLOB[2000000:2000100])]
    etag = whole.headers["ETag"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=30).status_code == 304
    stale = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'}, timeout=30)
    assert stale.status_code == 200 and stale.content == BLOB
    head = requests.head(url, headers={"Range": "bytes=5-9"}, timeout=30)
    assert head.status_code == 206 and head.headers["Content-Length"] == "5"
    assert requests.get(url, headers={"Range": f"bytes={len(BLOB)}-"},
                        timeout=30).status_code == 416


def test_ranges_through_nginx_are_byte_exact(front: Front) -> None:
    check_ranges(front.url + "/media/blob.bin")


def test_accel_ranges_are_byte_exact(accel_front: Front) -> None:
    check_ranges(accel_front.url + "/media/blob.bin")
    check_ranges(accel_front.url + "/media/link.bin")  # a symlink inside MEDIA_DIR


def test_accel_is_what_sends_the_bytes(accel_front: Front) -> None:
    direct = requests.get(accel_front.server.url + "/media/blob.bin", timeout=10)
    assert direct.status_code == 200 and direct.content == b""
    assert direct.headers["X-Accel-Redirect"] == "/_accel/media/blob.bin"
    res = requests.get(accel_front.url + "/media/tone.opus", timeout=10)
    assert res.content == b"OggS" + BLOB[:5000]
    assert "X-Accel-Redirect" not in res.headers
    # The application's headers, not nginx's guesses from mime.types.
    assert res.headers["Content-Type"] == "audio/ogg; codecs=opus"
    assert res.headers["Cache-Control"] == "public, max-age=3600"
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    odd = requests.get(accel_front.url + "/media/" + requests.utils.quote(ODD_NAME), timeout=10)
    assert odd.status_code == 200 and odd.content == BLOB[:1000]


@pytest.mark.parametrize("path", ["/media/.secret", "/media/escape.txt", "/media/sub",
                                  "/media/%2e%2e/outside.txt", "/media/sub/..%2f..%2foutside.txt",
                                  "/media/missing.bin", "/_accel/media/blob.bin",
                                  "/_accel/media/.secret", "/_accel/uploads/x"])
def test_accel_still_refuses(accel_front: Front, path: str) -> None:
    res = requests.get(accel_front.url + path, timeout=10)
    assert res.status_code in (400, 404), (path, res.status_code)
    assert b"secret" not in res.content and b"hidden" not in res.content


def test_accel_upload_content(accel_front: Front) -> None:
    data = os.urandom(300_000)
    put = requests.put(accel_front.url + "/uploads/report.pdf", data=data, timeout=30,
                       headers={**AUTH, "Content-Type": "application/pdf"})
    assert put.status_code == 201, put.text
    url = accel_front.url + put.json()["url"]
    res = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert res.status_code == 206 and res.content == data[1000:2000]
    assert res.headers["Content-Type"] == "application/pdf"
    assert res.headers["Content-Disposition"] == 'attachment; filename="report.pdf"'
    assert res.headers["Cache-Control"] == "private, no-cache"
    unknown = requests.get(accel_front.url + "/uploads/" + "0" * 32 + "/content", timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "NOT_FOUND"


# --- access log -------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["front", "accel_front"])
def test_nginx_access_log_keeps_no_credential_from_the_query(fixture: str,
                                                             request: pytest.FixtureRequest) -> None:
    """A read token or a signature in the query never reaches nginx's log on disk."""
    site: Front = request.getfixturevalue(fixture)
    url = site.url + "/media/blob.bin?access_token=SECRET-TOKEN-1&sig=SECRET-SIG-2&token=SECRET-3"
    res = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=10)
    assert res.status_code == 206 and res.content == BLOB[:10]
    deadline = time.monotonic() + 5
    while "/media/blob.bin " not in (log := site.proxy.access_log.read_text()):
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.05)
    assert "SECRET" not in log
    line = [entry for entry in log.splitlines() if "/media/blob.bin " in entry][-1]
    assert '"GET /media/blob.bin HTTP/1.1" 206 10 ' in line  # the client's path, not /_accel/
