"""Ranged reads of the S3 backend against moto: one presigned GET per range on a pooled
urllib3 connection, the HEAD cached, botocore's per-call cost paid once per object."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from flaskstream.config import DEFAULTS
from flaskstream.storage.base import StorageUnavailable
from flaskstream.storage.s3 import S3Storage
from tests.live import free_port
from tests.storage.moto import BUCKET, S3Bucket

MiB = 1024 * 1024
KEY = "0123456789abcdef0123456789abcdef"  # an upload id


@pytest.fixture
def backend(s3_bucket: S3Bucket) -> Iterator[tuple[S3Storage, list[str], bytes]]:
    """An ``S3Storage`` on its own client (botocore's operations counted) and a 3 MiB object."""
    client = boto3.client("s3", endpoint_url=s3_bucket.endpoint, region_name="us-east-1")
    operations: list[str] = []

    def count(model: Any, **_: Any) -> None:
        operations.append(model.name)

    client.meta.events.register("before-call.s3", count)
    prefix = f"reads-{random.randrange(1 << 30):x}"
    data = random.Random(7).randbytes(3 * MiB)
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/{KEY}", Body=data)
    operations.clear()
    yield S3Storage(client, BUCKET, prefix, stat_ttl=60), operations, data


def read(backend: S3Storage, start: int, stop: int, chunk: int = 64 * 1024) -> bytes:
    stored = backend.open(KEY)
    assert stored is not None
    return b"".join(stored.body([(start, stop)], chunk))


def test_each_range_is_one_get_and_botocore_signs_once(
        backend: tuple[S3Storage, list[str], bytes]) -> None:
    storage, operations, data = backend
    starts = [random.Random(i).randrange(0, len(data) - 65536) for i in range(20)]
    for start in starts:
        assert read(storage, start, start + 65536) == data[start:start + 65536]
    # botocore: one HEAD (cached), no get_object per range (its CPU was half a request's)
    assert operations == ["HeadObject"]
    pool = storage.reads.http().connection_from_url(storage.client.meta.endpoint_url)
    assert pool.num_requests == len(starts)  # one ranged GET each, no retry, no HEAD


def test_a_body_closed_half_way_leaves_the_next_read_whole(
        backend: tuple[S3Storage, list[str], bytes]) -> None:
    storage, _, data = backend
    stored = storage.open(KEY)
    assert stored is not None
    body = stored.body([(0, len(data))], 64 * 1024)
    chunks = iter(body)
    assert next(chunks) == data[:64 * 1024]
    body.close()  # the client went away: the rest of the GET is never read into the pool
    for start in (5, MiB + 3, len(data) - 100):
        assert read(storage, start, start + 100) == data[start:start + 100]


def test_an_object_replaced_after_its_head_is_refused_not_mixed(
        backend: tuple[S3Storage, list[str], bytes]) -> None:
    storage, _, data = backend
    assert read(storage, 0, 10) == data[:10]  # the HEAD (and its ETag) is now cached
    storage.client.put_object(Bucket=BUCKET, Key=storage.object_key(KEY), Body=b"new" * 100)
    with pytest.raises(StorageUnavailable):
        read(storage, 0, 10)  # If-Match with the cached ETag: 412 from the bucket


def test_a_missing_object_or_a_dead_endpoint_is_storage_unavailable(s3_bucket: S3Bucket) -> None:
    client = boto3.client("s3", endpoint_url=s3_bucket.endpoint, region_name="us-east-1")
    with pytest.raises(StorageUnavailable):  # 404 from the bucket
        S3Storage(client, BUCKET, "gone").reads.get(f"gone/{KEY}", 0, 10, '"x"')
    dead = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}",
                        region_name="us-east-1")
    with pytest.raises(StorageUnavailable):  # connection refused, after urllib3's retries
        S3Storage(dead, BUCKET, "gone").reads.get(f"gone/{KEY}", 0, 10, '"x"')


def test_parts_are_bound_by_their_checksum_not_hashed_again(s3_bucket: S3Bucket) -> None:
    """botocore's SigV4 payload hash was a third SHA-256 of every byte, on the event loop:
    parts and small objects go UNSIGNED-PAYLOAD, bound by the signed x-amz-checksum-sha256
    (which the bucket verifies); the other calls keep a signed payload."""
    url = s3_bucket.url()
    storage = S3Storage.from_url(url, {**DEFAULTS, "STORAGE_PART_SIZE": 5 * MiB})
    sent: list[tuple[str, str, bool]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        payload = request.headers["X-Amz-Content-SHA256"]
        sent.append((event_name.rsplit(".", 1)[1], payload.decode() if isinstance(payload, bytes)
                     else payload, "x-amz-checksum-sha256" in request.headers))

    for client in (storage.client, storage.part_client):
        client.meta.events.register("before-send.s3", record)
    data = random.Random(3).randbytes(11 * MiB)
    for body in (data, b"small"):
        staged = storage.stage()
        for i in range(0, len(body), MiB):
            staged.write(body[i:i + MiB])
        staged.finalize()
        assert s3_bucket.body(S3Bucket.prefix_of(url), staged.key) == body
    signed = {op: payload for op, payload, _ in sent if payload != "UNSIGNED-PAYLOAD"}
    unsigned = {(op, checked) for op, payload, checked in sent if payload == "UNSIGNED-PAYLOAD"}
    assert unsigned == {("UploadPart", True), ("PutObject", True)}
    assert set(signed) == {"CreateMultipartUpload", "CompleteMultipartUpload"}
