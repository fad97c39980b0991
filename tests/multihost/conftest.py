"""Two hosts as one: two gunicorn masters with nothing on a shared disk (their own
instance folders, ports and upload dirs) on one PostgreSQL (the session's
``database_url``: a server both reach by URL) and one bucket (moto's S3 server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import LiveServer
from tests.storage.moto import S3Bucket

TOKEN = "multihost-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def host_env(path: Path, storage_url: str) -> dict[str, str]:
    """A host's settings: the shared bucket, its own upload dir."""
    return {"FLASKSTREAM_STORAGE_URL": storage_url, "FLASKSTREAM_API_TOKEN": TOKEN,
            "FLASKSTREAM_UPLOAD_DIR": str(path / "uploads"),
            "FLASKSTREAM_STORAGE_PART_SIZE": str(5 << 20)}


class Hosts:
    def __init__(self, a: LiveServer, b: LiveServer, bucket: S3Bucket, prefix: str,
                 storage_url: str, database_url: str) -> None:
        self.a, self.b, self.bucket, self.prefix = a, b, bucket, prefix
        self.storage_url, self.database_url = storage_url, database_url

    def another(self, path: Path, **env: str) -> LiveServer:
        """One more host like A and B (the caller starts and stops it)."""
        return LiveServer(path / "instance", database_url=self.database_url,
                          env={**host_env(path, self.storage_url), **env})


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
            servers.append(LiveServer(path / "instance", database_url=database_url,
                                      env=host_env(path, url)).start())
        yield Hosts(servers[0], servers[1], s3_bucket, S3Bucket.prefix_of(url), url,
                    database_url)
    finally:
        for server in servers:
            server.stop()
