"""Hostile parsing input against one live gunicorn worker with a token (issue 12).

Finding 2: blanks after a multipart boundary (uploads and the ETL multipart path).
Finding 4: rows of a million fields, gzip bombs. Finding 8: non-text encodings.
Finding 9: 20,000 parts with ``filename=""``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.etl.helpers import query
from tests.etl.test_cli_process import flask_etl
from tests.live import LiveServer

pytestmark = [pytest.mark.live, pytest.mark.db]

MiB = 1 << 20
TOKEN = "hostile-parsing-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOUNDARY = "hostileBoundary42"


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from tests.conftest import truncate_all

    truncate_all(database_url)
    path = tmp_path_factory.mktemp("hostile-parsing")
    live = LiveServer(path, database_url=database_url, env={
        "FLASKSTREAM_API_TOKEN": TOKEN, "FLASKSTREAM_UPLOAD_DIR": str(path / "uploads")})
    with live:
        yield live


def staging(server: LiveServer) -> list[str]:
    folder = server.instance_path / "uploads" / ".staging"
    return sorted(os.listdir(folder)) if folder.exists() else []


def send_while_reading(server: LiveServer, path: str, head: bytes, filler: bytes,
                       total: int) -> tuple[int, dict, int]:
    """POST ``head`` then ``filler`` up to ``total`` body bytes; read the answer meanwhile.

    Returns (status, JSON body, body bytes sent when the answer was complete).
    The reply is read concurrently because the server answers and closes early.
    """
    request = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
               f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
               f"Content-Length: {total}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sent = [0]
    done = threading.Event()

    def sender() -> None:
        try:
            sock.sendall(request + head)
            sent[0] = len(head)
            while sent[0] < total and not done.is_set():
                piece = filler[:total - sent[0]]
                sock.sendall(piece)
                sent[0] += len(piece)
        except OSError:
            pass  # the server closed after answering

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    reply = b""
    try:
        while b"\r\n\r\n" not in reply or len(reply) < _reply_length(reply):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        at_answer = sent[0]
    finally:
        done.set()
        sock.close()
        thread.join(10)
    status = int(reply.split(b" ", 2)[1])
    return status, json.loads(reply.split(b"\r\n\r\n", 1)[1]), at_answer


def _reply_length(reply: bytes) -> int:
    head, _, _ = reply.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":")[1])
    return 1 << 62


def part_head(filename: str | None = "pad.bin") -> bytes:
    disposition = 'form-data; name="file"' + (f'; filename="{filename}"' if filename else "")
    return (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: text/csv\r\n\r\nemail,age,name\r\n--{BOUNDARY}").encode()


@pytest.mark.parametrize("path", ["/uploads", "/etl/jobs?table=users"])
def test_64_mib_of_blanks_after_a_boundary_is_400_at_once_and_healthz_answers(
        server: LiveServer, path: str) -> None:
    """Finding 2: main rescanned the blanks per chunk (8 MiB: ~6 s, /healthz waited too)."""
    head = part_head()
    total = len(head) + 64 * MiB
    health: list[int] = []

    def probe() -> None:
        for _ in range(5):
            health.append(requests.get(server.url + "/healthz", timeout=10).status_code)

    prober = threading.Thread(target=probe)
    prober.start()
    status, body, at_answer = send_while_reading(server, path, head, b" " * (256 << 10), total)
    prober.join(60)
    assert status == 400, body
    assert body["error"]["code"] == "MALFORMED_MULTIPART"
    assert "blanks after a boundary" in body["error"]["message"]
    assert at_answer < 16 * MiB  # refused while the body was still arriving
    assert health == [200] * 5
    assert staging(server) == []
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200


def test_20000_empty_filename_parts_are_413_part_count(server: LiveServer) -> None:
    """Finding 9: parts with filename="" were skipped without being counted."""
    empty = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename=""\r\n'
             "Content-Type: application/octet-stream\r\n\r\n\r\n").encode()
    real = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="g"; filename="r.txt"'
            f"\r\n\r\nreal\r\n--{BOUNDARY}--\r\n").encode()
    before = requests.get(server.url + "/uploads", timeout=10).json()
    res = requests.post(server.url + "/uploads", data=empty * 20_000 + real, headers={
        **AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, timeout=60)
    assert res.status_code == 413, res.text
    assert res.json()["error"]["code"] == "LIMIT_PART_COUNT"
    assert requests.get(server.url + "/uploads", timeout=10).json() == before
    assert staging(server) == []


class PeakRss:
    """The worker's highest RSS while a request runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> int:
        return self.peak - self.base


# What a load may hold with the default bounds (bounds.py, config.py): one parsed record of
# a 1 MiB line (8 bytes a field slot: 8 MiB), the character budget of a block (1 MiB) parsed
# (~8x as lists and strs), and the 8 prefetched blocks, each keeping its piece of text
# (<= 1 MiB read + one line); plus allocator slack.
WIDE_ROWS_RSS_BOUND = 8 * MiB + 8 * MiB + 8 * (2 * MiB) + 32 * MiB


def test_96_kib_gzip_of_wide_rows_is_413_with_bounded_memory(server: LiveServer) -> None:
    """Finding 4: 96 KiB of gzip (96 lines of 1 MiB of commas) took the worker 341 → 923 MiB."""
    body = gzip.compress(b"email,age,name\n" + (b"," * MiB + b"\n") * 96)
    assert len(body) < 128 << 10
    (pid,) = server.worker_pids()
    with PeakRss(pid) as rss:
        res = requests.post(server.url + "/etl/jobs?table=users&job=hostile-gzip", data=body,
                            headers={**AUTH, "Content-Type": "text/csv"}, timeout=120)
    assert res.status_code == 413, res.text
    assert res.json()["error"]["code"] == "LIMIT_GZIP_RATIO"
    print(f"worker RSS growth {rss.growth / MiB:.1f} MiB (bound {WIDE_ROWS_RSS_BOUND / MiB:.0f})")
    assert rss.growth < WIDE_ROWS_RSS_BOUND, rss.growth
    assert requests.get(server.url + "/etl/jobs/hostile-gzip", timeout=10).json()["status"] \
        == "failed"


def test_uncompressed_wide_rows_are_rejects_with_bounded_memory(server: LiveServer,
                                                                database_url: str) -> None:
    """The same rows without gzip: each one a reject with its line, the good row loads."""
    body = b"email,age,name\n" + (b"," * MiB + b"\n") * 96 + b"wide@example.com,7,W\n"
    (pid,) = server.worker_pids()
    with PeakRss(pid) as rss:
        res = requests.post(server.url + "/etl/jobs?table=users&job=hostile-wide", data=body,
                            headers={**AUTH, "Content-Type": "text/csv"}, timeout=300)
    assert res.status_code == 201, res.text
    summary = res.json()
    assert (summary["rows_loaded"], summary["rows_rejected"]) == (1, 96)
    print(f"worker RSS growth {rss.growth / MiB:.1f} MiB (bound {WIDE_ROWS_RSS_BOUND / MiB:.0f})")
    assert rss.growth < WIDE_ROWS_RSS_BOUND, rss.growth
    rejects = requests.get(server.url + "/etl/jobs/hostile-wide/rejects", timeout=10).text
    rows = list(csv.reader(io.StringIO(rejects)))
    assert [int(r[0]) for r in rows[1:]] == list(range(2, 98))
    assert {r[1] for r in rows[1:]} == {"1048577 fields, more than 1600 (ETL_MAX_FIELDS)"}
    assert query(database_url, "SELECT count(*) FROM flaskstream.users WHERE email = 'wide@example.com'") \
        == [[1]]


def test_a_line_past_etl_max_line_bytes_is_413(server: LiveServer) -> None:
    body = b"email,age,name\n" + b"x" * (5 * MiB) + b"\n"
    res = requests.post(server.url + "/etl/jobs?table=users", data=body,
                        headers={**AUTH, "Content-Type": "text/csv"}, timeout=60)
    assert res.status_code == 413, res.text
    assert res.json()["error"]["code"] == "LIMIT_LINE_BYTES"


@pytest.mark.parametrize("encoding", ["rot13", "hex", "base64", "zlib", "no-such-codec",
                                      "utf-8%00"])
def test_non_text_encodings_are_400(server: LiveServer, encoding: str) -> None:
    """Finding 8: rot13/hex answered 500."""
    res = requests.post(f"{server.url}/etl/jobs?table=users&encoding={encoding}",
                        data=b"email,age,name\na@b.io,1,A\n",
                        headers={**AUTH, "Content-Type": "text/csv"}, timeout=30)
    assert res.status_code == 400, res.text
    error = res.json()["error"]
    assert error["code"] == "BAD_ENCODING"
    assert "Traceback" not in error["message"] and "codec" not in error["message"]


def test_cli_refuses_non_text_encodings(clean_db: str, tmp_path: Path) -> None:
    for encoding in ("rot13", "hex"):
        result = flask_etl(["load", "-", "--encoding", encoding], clean_db, tmp_path,
                           b"email,age,name\na@b.io,1,A\n")
        assert result.returncode == 2, result.stderr
        assert b"Invalid value for '--encoding'" in result.stderr
        assert b"is not a text encoding" in result.stderr
        assert b"Traceback" not in result.stderr + result.stdout
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[0]]
