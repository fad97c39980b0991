"""Two gunicorn masters, one PostgreSQL, one bucket: what one host does, the other sees."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from tests.etl.helpers import users_csv
from tests.events.client import SSEClient
from tests.live import wait_for
from tests.multihost.conftest import AUTH, Hosts
from tests.tus.live_support import OCTETS, uploader
from tests.tus.live_support import upload_id as tus_id
from tests.tus.proxy import BreakingProxy

TUS = {"Tus-Resumable": "1.0.0", **AUTH}

pytestmark = [pytest.mark.live, pytest.mark.db]

MiB = 1 << 20


def test_upload_on_a_is_read_with_ranges_on_b(hosts: Hosts) -> None:
    data = random.Random(7).randbytes(11 * MiB + 5)
    res = requests.put(hosts.a.url + "/uploads/shared.bin", data=data, headers=AUTH, timeout=60)
    assert res.status_code == 201, res.text
    url = hosts.b.url + res.json()["url"]
    for start, stop in [(0, 10), (5 * MiB - 2, 5 * MiB + 2), (len(data) - 7, len(data))]:
        part = requests.get(url, headers={"Range": f"bytes={start}-{stop - 1}"}, timeout=10)
        assert part.status_code == 206 and part.content == data[start:stop]
    listed = requests.get(hosts.b.url + "/uploads", timeout=10).json()["uploads"]
    assert res.json()["id"] in [u["id"] for u in listed]
    assert not (hosts.a.instance_path.parent / "uploads" / res.json()["id"]).exists()


def test_delete_on_b_is_404_on_a(hosts: Hosts) -> None:
    res = requests.put(hosts.a.url + "/uploads/gone.txt", data=b"short-lived", headers=AUTH,
                       timeout=10)
    upload_id = res.json()["id"]
    assert requests.get(f"{hosts.a.url}/uploads/{upload_id}/content", timeout=10).content \
        == b"short-lived"
    assert requests.delete(f"{hosts.b.url}/uploads/{upload_id}", headers=AUTH,
                           timeout=10).status_code == 204
    for path in (f"/uploads/{upload_id}", f"/uploads/{upload_id}/content"):
        assert requests.get(hosts.a.url + path, timeout=10).status_code == 404
    assert upload_id not in hosts.bucket.keys(hosts.prefix)


def test_publish_on_a_is_received_on_b(hosts: Hosts) -> None:
    subscriber = SSEClient(hosts.b.port, "/events/multihost")
    try:
        assert subscriber.wait_for(b"\n\n", 10)  # the stream is open (its first comment)
        sent = requests.post(hosts.a.url + "/events/multihost", headers=AUTH, timeout=10,
                             json={"event": "hello", "data": {"from": "a"}})
        assert sent.status_code == 202
        events = subscriber.wait_events(1, 10)
        assert [(e.type, json.loads(e.data)) for e in events] == [("hello", {"from": "a"})]
    finally:
        subscriber.close()


def test_etl_job_on_a_is_listed_on_b(hosts: Hosts) -> None:
    res = requests.post(hosts.a.url + "/etl/jobs?table=users&job=multihost-1",
                        data=users_csv(300), headers={"Content-Type": "text/csv", **AUTH},
                        timeout=60)
    assert res.status_code == 201, res.text
    job = requests.get(hosts.b.url + "/etl/jobs/multihost-1", timeout=10).json()
    assert (job["status"], job["rows_loaded"]) == ("done", 300)


def test_tus_upload_finished_on_a_is_served_by_b(hosts: Hosts, tmp_path: Path) -> None:
    """The bytes of a completed tus upload go to the bucket like any other upload's."""
    path = tmp_path / "tus.bin"
    data = os.urandom(6 * MiB + 3)
    path.write_bytes(data)
    upload = uploader(hosts.a.url, path, chunk_size=4 * MiB)
    upload.client.headers.update(AUTH)
    upload.upload()
    uid = tus_id(upload.url)
    assert wait_for(lambda: requests.get(f"{hosts.b.url}/uploads/{uid}", timeout=10)
                    .status_code == 200, 10)
    assert requests.get(f"{hosts.b.url}/uploads/{uid}/content", timeout=30).content == data
    assert uid in hosts.bucket.keys(hosts.prefix)


def tus_leftovers(hosts: Hosts, uid: str) -> list[str]:
    """What of a tus upload is in the bucket besides its object: tails, marker, open
    multipart upload (``storage/s3tus.py``)."""
    keys = [k for k in hosts.bucket.keys(hosts.prefix) if k.startswith(uid) and k != uid]
    return keys + [f"mpu:{k}" for k in hosts.bucket.open_uploads(hosts.prefix) if uid in k]


def host_uploader(base: str, path: Path, **kwargs: Any) -> Any:
    """A tuspy uploader with these hosts' token (sent on its very first request)."""
    from tusclient import client as tus_client

    client = tus_client.TusClient(base + "/uploads/tus/", headers=dict(AUTH))
    return client.uploader(file_path=str(path), metadata={"filename": path.name}, **kwargs)


def test_tus_patch_on_a_head_and_rest_on_b(hosts: Hosts) -> None:
    """The bytes of an unfinished upload are in the bucket (parts + tail), so B reports
    the offset A committed and takes the rest of the upload."""
    data = os.urandom(12 * MiB + 5)
    created = requests.post(f"{hosts.a.url}/uploads/tus/", headers={
        **TUS, "Upload-Length": str(len(data))}, timeout=10)
    assert created.status_code == 201, created.text
    path = created.headers["Location"]
    uid = tus_id(path)
    first = 7 * MiB + 3  # one whole part and a tail
    sent = requests.patch(hosts.a.url + path, data=data[:first], headers={
        **TUS, "Upload-Offset": "0", "Content-Type": OCTETS}, timeout=30)
    assert sent.status_code == 204, sent.text
    for headers in (TUS, {"Tus-Resumable": "1.0.0"}):  # taking the lease, or only reading
        offset = requests.head(hosts.b.url + path, headers=headers, timeout=10)
        assert offset.headers["Upload-Offset"] == str(first)
    rest = requests.patch(hosts.b.url + path, data=data[first:], headers={
        **TUS, "Upload-Offset": str(first), "Content-Type": OCTETS}, timeout=30)
    assert rest.status_code == 204, rest.text
    body = requests.get(f"{hosts.a.url}/uploads/{uid}", timeout=10).json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["size"] == len(data)
    assert requests.get(f"{hosts.a.url}/uploads/{uid}/content", timeout=30).content == data
    assert tus_leftovers(hosts, uid) == []


def test_tus_start_on_a_kill_a_resume_on_b(hosts: Hosts, tmp_path: Path) -> None:
    """tuspy starts on host A; A (master and worker) is SIGKILLed mid-PATCH; a new tuspy
    client resumes on B from the offset A made durable, and the object is whole."""
    path = tmp_path / "kill.bin"
    data = os.urandom(24 * MiB + 11)
    path.write_bytes(data)
    a = hosts.another(tmp_path / "host-a-killed", FLASKSTREAM_TUS_LOCK_LEASE="3",
                      FLASKSTREAM_TUS_LOCK_POLL="0.2",
                      FLASKSTREAM_TUS_CHECKPOINT_BYTES=str(8 * MiB))
    a.start()
    try:
        with BreakingProxy(a.port, 18 * MiB, mode="stall") as proxy:
            first = host_uploader(proxy.url, path)
            with pytest.raises((TusUploadFailed, TusCommunicationError)):
                first.upload()
            uid = tus_id(first.url)
            time.sleep(0.5)  # A's PATCH is blocked reading the silent socket, lease held
            victims = [a.pid, *a.worker_pids()]
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            for pid in victims:
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).wait(timeout=10)
    finally:
        a.stop()
    second = host_uploader(hosts.b.url, path, url=f"{hosts.b.url}/uploads/tus/{uid}")
    # durable on A: whole 5 MiB parts acknowledged by the bucket before a checkpoint
    assert 0 < second.offset < 18 * MiB and second.offset % (5 * MiB) == 0, second.offset
    second.upload()
    body = requests.get(f"{hosts.b.url}/uploads/{uid}", timeout=10).json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["size"] == len(data)
    assert hosts.bucket.body(hosts.prefix, uid) == data
    assert tus_leftovers(hosts, uid) == []
