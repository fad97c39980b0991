"""Two gunicorn masters, one PostgreSQL, one bucket: what one host does, the other sees."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import requests

from tests.etl.helpers import users_csv
from tests.events.client import SSEClient
from tests.live import wait_for
from tests.multihost.conftest import AUTH, Hosts
from tests.tus.live_support import upload_id as tus_id
from tests.tus.live_support import uploader

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
    """The bytes of a completed tus upload go to the bucket like any other upload's.
    (Resuming an unfinished one on another host needs tus staging in the bucket: not yet.)"""
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
