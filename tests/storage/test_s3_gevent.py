"""S3 calls are cooperative under gunicorn's gevent worker: while one upload crawls into a
slow bucket, the same worker keeps 100 SSE streams' heartbeats on time."""

from __future__ import annotations

import os
import selectors
import threading
import time
from typing import Any

import pytest
import requests

from tests.events.client import SSEClient
from tests.storage.moto import S3Bucket
from tests.storage.slow_proxy import SlowProxy

pytestmark = [pytest.mark.live, pytest.mark.db]

MiB = 1 << 20
STREAMS = 100
HEARTBEAT = 1.0


def test_heartbeats_stay_on_time_during_a_slow_s3_upload(start_live_server: Any,
                                                         s3_bucket: S3Bucket) -> None:
    moto_port = int(s3_bucket.endpoint.rsplit(":", 1)[1])
    proxy = SlowProxy(moto_port, 1 * MiB)  # a 5 MiB part takes ~5 s on the wire
    url = s3_bucket.url().replace(s3_bucket.endpoint, proxy.url)
    live = start_live_server(env={"FLASKSTREAM_STORAGE_URL": url,
                                  "FLASKSTREAM_STORAGE_PART_SIZE": str(5 * MiB),
                                  "FLASKSTREAM_SSE_HEARTBEAT": "1"})
    clients = [SSEClient(live.port, f"/events/coop-{i}") for i in range(STREAMS)]
    selector = selectors.DefaultSelector()
    last: dict[int, float] = {}
    gaps: dict[int, float] = {}
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    result: dict[str, Any] = {}

    def upload() -> None:
        result["res"] = requests.put(live.url + "/uploads/slow.bin", data=os.urandom(11 * MiB),
                                     timeout=120)

    try:
        deadline = time.monotonic() + 10
        while len(last) < STREAMS and time.monotonic() < deadline:  # every stream is open
            for key, _ in selector.select(0.5):
                if key.fileobj.recv(65536):  # type: ignore[union-attr]
                    last[id(key.data)] = time.monotonic()
        assert len(last) == STREAMS
        uploader = threading.Thread(target=upload)
        started = time.monotonic()
        uploader.start()
        while uploader.is_alive():
            for key, _ in selector.select(0.2):
                if key.fileobj.recv(65536):  # type: ignore[union-attr]
                    now = time.monotonic()
                    stream = id(key.data)
                    gaps[stream] = max(gaps.get(stream, 0.0), now - last[stream])
                    last[stream] = now
        took = time.monotonic() - started
        uploader.join()
        assert result["res"].status_code == 201, result["res"].text + live.log()[-3000:]
        assert took > 4 * HEARTBEAT  # the upload really was slow: parts crawled out
        now = time.monotonic()
        worst = max(max(gaps.values(), default=0.0), *(now - t for t in last.values()))
        assert worst < 3 * HEARTBEAT, f"a heartbeat came {worst:.1f} s late (upload {took:.1f} s)"
    finally:
        for client in clients:
            client.close()
        proxy.close()
