"""``FLASKSTREAM_MEDIA_URL=s3://...``: ``/media/`` from a bucket answers as it does from
``MEDIA_DIR`` (ranges, multi-range, conditionals, hidden names, listing)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flaskstream import create_app
from tests.storage.moto import BUCKET, S3Bucket

MiB = 1 << 20
BLOB = random.Random(9).randbytes(3 * MiB + 77)
FILES = {"blob.bin": BLOB, "sub/tone.opus": b"OggS" + bytes(100), "small.txt": b"0123456789",
         ".secret": b"hidden", ".private/clip.mp4": b"hidden folder"}


@pytest.fixture
def apps(tmp_path: Path, s3_bucket: S3Bucket) -> Iterator[tuple[Flask, Flask]]:
    """The same files in MEDIA_DIR (local) and under a bucket prefix (MEDIA_URL)."""
    prefix = f"media-{uuid.uuid4().hex[:8]}"
    media_dir = tmp_path / "media"
    for name, data in FILES.items():
        (media_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (media_dir / name).write_bytes(data)
        s3_bucket.client.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=data)
    base: dict[str, Any] = {"TESTING": True, "DATABASE_URL": "postgresql://unused@127.0.0.1:9/x",
                            "INSTANCE_PATH": str(tmp_path / "instance"),
                            "UPLOAD_DIR": str(tmp_path / "uploads"), "MEDIA_DIR": str(media_dir),
                            "MEDIA_CHUNK_SIZE": 64 * 1024}
    empty = tmp_path / "empty"  # the bucket app can only answer from the bucket
    empty.mkdir()
    yield create_app(base), create_app({**base, "MEDIA_URL": s3_bucket.url(prefix),
                                        "MEDIA_DIR": str(empty)})


CASES = [
    ("blob.bin", {}), ("blob.bin", {"Range": "bytes=-100"}),
    ("blob.bin", {"Range": "bytes=0-0,2000000-2000099,-5"}), ("blob.bin", {"Range": "bytes=9999999-"}),
    ("sub/tone.opus", {}), ("small.txt", {"Range": "bytes=2-4"}), (".secret", {}),
    (".private/clip.mp4", {}), ("missing.bin", {}), ("sub/../small.txt", {}),
]


@pytest.mark.parametrize("name,headers", CASES)
def test_a_bucket_serves_media_as_media_dir_does(apps: tuple[Flask, Flask], name: str,
                                                  headers: dict[str, str]) -> None:
    answers = []
    for app in apps:
        client = app.test_client()
        for method in ("GET", "HEAD"):
            res = client.open(f"/media/{name}", method=method, headers=headers)
            body = res.data
            ctype = res.headers.get("Content-Type", "")
            if "boundary=" in ctype:
                body = body.replace(ctype.split("boundary=")[1].encode(), b"B")
                ctype = ctype.split(";")[0]
            answers.append((res.status_code, body if res.status_code < 400 else b"",
                            ctype, res.headers.get("Content-Range"),
                            res.headers.get("Content-Length") if res.status_code < 400 else None,
                            res.headers.get("Accept-Ranges"), res.headers.get("Cache-Control")))
    assert answers[2:] == answers[:2]


def test_conditional_requests_and_the_listing(apps: tuple[Flask, Flask]) -> None:
    _, bucket_app = apps
    client = bucket_app.test_client()
    first = client.get("/media/blob.bin")
    assert first.data == BLOB
    assert client.get("/media/blob.bin",
                      headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    listed = client.get("/media/").json["files"]
    assert [(f["name"], f["size"]) for f in listed] == [
        ("blob.bin", len(BLOB)), ("small.txt", 10), ("sub/tone.opus", 104)]
    local = apps[0].test_client().get("/media/").json["files"]
    assert [f["url"] for f in listed] == [f["url"] for f in local]
