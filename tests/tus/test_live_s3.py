"""The live tus tests again, on S3: a real gunicorn (2 gevent workers) and a moto bucket.

Unfinished bytes are multipart parts and a tail object in the bucket
(``storage/s3tus.py``), written from greenlets; the rules must not change: the
checksum extension and ``Upload-Offset`` mismatches, takeover of a vanished
client's PATCH (the lease), two workers sharing an upload, a frozen worker that
cannot write after losing its lease, and a killed one that loses only
unconfirmed bytes. The functions are ``test_live.py``'s and ``test_live_errors.py``'s,
run against this module's ``server`` and ``staging_size``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveServer
from tests.tus.backends import durable_bytes
from tests.tus.conftest import live_tus_env
from tests.tus.live_support import MiB, stored, upload_id, uploader
from tests.tus.test_live import (
    RssSampler,
    test_frozen_worker_is_waited_out_and_cannot_write_after,
    test_killed_worker_loses_only_unconfirmed_bytes,
    test_takeover_from_a_client_that_vanished,
    test_two_workers_share_an_upload,
)
from tests.tus.test_live_errors import test_live_protocol_errors

pytestmark = [pytest.mark.live, pytest.mark.slow]

__all__ = ["test_frozen_worker_is_waited_out_and_cannot_write_after",
           "test_killed_worker_loses_only_unconfirmed_bytes", "test_live_protocol_errors",
           "test_takeover_from_a_client_that_vanished", "test_two_workers_share_an_upload"]


@pytest.fixture(scope="module")
def storage_url(s3_bucket: Any) -> str:
    return str(s3_bucket.url())


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory, storage_url: str
           ) -> Iterator[LiveServer]:
    env = live_tus_env(FLASKSTREAM_STORAGE_URL=storage_url,
                       FLASKSTREAM_STORAGE_PART_SIZE=str(5 * MiB))
    live = LiveServer(tmp_path_factory.mktemp("tus-live-s3"), env=env, workers=2,
                      database_url=database_url)
    with live:
        yield live


@pytest.fixture(scope="module")
def staging_size(server: LiveServer, database_url: str, s3_bucket: Any, storage_url: str
                 ) -> Any:
    """The bytes the bucket holds for an upload's committed offset (its parts and tail)."""
    import pg8000.native

    from flaskstream import db
    from tests.storage.moto import BUCKET

    prefix = s3_bucket.prefix_of(storage_url)

    def size(uid: str) -> int:
        con = pg8000.native.Connection(**db.connect_kwargs(database_url))
        try:
            name, offset = con.run("SELECT staging_name, upload_offset FROM "
                                   "flaskstream.tus_uploads WHERE id = :id", id=uid)[0]
        finally:
            con.close()
        return durable_bytes(s3_bucket.client, BUCKET, f"{prefix}/{uid}", name, offset)

    return size


def test_tuspy_upload_into_parts_with_bounded_memory(server: LiveServer, tmp_path: Path,
                                                     s3_bucket: Any, storage_url: str) -> None:
    """96 MiB in one PATCH: 20 parts out of the worker's part budget, not its memory; the
    running hash is the object's; nothing but the object is left in the bucket."""
    path = tmp_path / "parts.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(24):
            block = os.urandom(4 * MiB)
            f.write(block)
            digest.update(block)
        f.write(b"tail")
        digest.update(b"tail")
    sampler = RssSampler(server)
    sampler.start()
    up = uploader(server.url, path)
    up.upload()
    growth = sampler.growth()
    uid = upload_id(up.url)
    assert stored(server, uid)["sha256"] == digest.hexdigest()
    assert growth < 32 * MiB, f"worker RSS grew {growth / MiB:.1f} MiB"
    prefix = s3_bucket.prefix_of(storage_url)
    assert [k for k in s3_bucket.keys(prefix) if k.startswith(uid)] == [uid]
    assert [k for k in s3_bucket.open_uploads(prefix) if uid in k] == []
