"""The live tus server: 2 gevent workers, a token, a 256 MiB maximum, short leases.

Module-scoped: each live test module gets its own server (and instance folder).
The test-client tests (``app``/``client``) run on both storage backends, with the
uploads tests' ``storage_backend`` fixture (local ``UPLOAD_DIR``, a moto bucket).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live import LiveServer
from tests.tus.live_support import TOKEN, MiB
from tests.uploads.conftest import app_config, storage_backend

__all__ = ["app_config", "storage_backend"]


def live_tus_env(**extra: str) -> dict[str, str]:
    """The live tus server's settings (a token, 256 MiB, short leases), plus ``extra``:
    one place for the local server below and the S3 one in test_live_s3.py."""
    return {
        "FLASKSTREAM_API_TOKEN": TOKEN,
        "FLASKSTREAM_TUS_MAX_SIZE": str(256 * MiB),
        "FLASKSTREAM_TUS_LOCK_LEASE": "3",
        "FLASKSTREAM_TUS_LOCK_POLL": "0.2",
        "FLASKSTREAM_TUS_LOCK_WAIT": "8",
        "FLASKSTREAM_TUS_CHECKPOINT_BYTES": str(16 * MiB),
        **extra,
    }


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("tus-live"), env=live_tus_env(), workers=2,
                      database_url=database_url)
    with live:
        yield live
