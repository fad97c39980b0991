"""Ranged reads of the S3 backend against moto: one presigned GET per range on a pooled
urllib3 connection, the HEAD cached, botocore's per-call cost paid once per object."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

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
