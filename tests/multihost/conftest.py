"""Two hosts as one: two gunicorn masters with nothing on a shared disk (their own
instance folders, ports and upload dirs) on one PostgreSQL (the session's
``database_url``: a server both reach by URL) and one bucket (moto's S3 server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.live import LiveServer
from tests.storage.moto import S3Bucket

TOKEN = "multihost-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Hosts:
    def __init__(self, a: LiveServer, b: LiveServer, bucket: S3Bucket, prefix: str) -> None:
        self.a, self.b, self.bucket, self.prefix = a, b, bucket, prefix


@pytest.fixture(scope="module")
def hosts(database_url: str, s3_bucket: S3Bucket,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    from tests.conftest import truncate_all

    truncate_all(database_url)
    url = s3_bucket.url()
    servers: list[LiveServer] = []
    try:
        for name in ("host-a", "host-b"):
            path = tmp_path_factory.mktemp(name)
            env: dict[str, Any] = {
                "FLASKSTREAM_STORAGE_URL": url, "FLASKSTREAM_API_TOKEN": TOKEN,
                "FLASKSTREAM_UPLOAD_DIR": str(path / "uploads"),
                "FLASKSTREAM_STORAGE_PART_SIZE": str(5 << 20)}
            servers.append(LiveServer(path / "instance", database_url=database_url,
                                      env=env).start())
        yield Hosts(servers[0], servers[1], s3_bucket, S3Bucket.prefix_of(url))
    finally:
        for server in servers:
            server.stop()
