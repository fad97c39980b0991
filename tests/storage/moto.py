"""A real S3 API for the tests: moto's server on 127.0.0.1 (a free port), one bucket.

moto keeps objects in memory and its ranged GET of a large object is slow, so
range tests use objects of a few MiB. Each test gets its own key prefix
(``S3Bucket.url``), so tests never see each other's objects.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.live import free_port

BUCKET = "flaskstream-test"
# moto accepts any credentials; boto3's chain reads these from the environment (and so
# does every gunicorn the tests start, which inherits the test process's environment).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


class S3Bucket:
    """The bucket on the moto server, with what tests ask of it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.client.create_bucket(Bucket=BUCKET)

    def url(self, prefix: str | None = None) -> str:
        """A ``STORAGE_URL`` on a fresh prefix (or ``prefix``)."""
        prefix = prefix or f"t-{uuid.uuid4().hex[:12]}"
        return f"s3://{BUCKET}/{prefix}?endpoint_url={self.endpoint}&region=us-east-1"

    @staticmethod
    def prefix_of(url: str) -> str:
        return url.split(BUCKET + "/", 1)[1].split("?", 1)[0]

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix + "/")
        return sorted(item["Key"].split("/", 1)[1] for page in pages
                      for item in page.get("Contents", []))

    def open_uploads(self, prefix: str) -> list[str]:
        """Multipart uploads started and neither completed nor aborted."""
        answer = self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix + "/")
        return [u["Key"] for u in answer.get("Uploads", [])]

    def body(self, prefix: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read())


def start_moto() -> tuple[Any, S3Bucket]:
    from moto.server import ThreadedMotoServer

    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, S3Bucket(f"http://127.0.0.1:{port}")


def stored_leftovers(app: Any) -> list[str]:
    """Everything an app's storage holds: files under ``UPLOAD_DIR`` (staging too) and, on
    S3, the objects and open multipart uploads under its prefix (``mpu:<key>``)."""
    root = Path(app.config["UPLOAD_DIR"])
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    backend = app.extensions["flaskstream"]["storage"]
    if backend.kind == "s3":
        bucket = S3Bucket.__new__(S3Bucket)
        bucket.client = backend.client
        found += bucket.keys(backend.prefix)
        found += [f"mpu:{k}" for k in bucket.open_uploads(backend.prefix)]
    return sorted(found)
