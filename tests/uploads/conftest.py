"""The uploads behaviour tests run on both storage backends: ``storage_backend``.

``local`` is ``UPLOAD_DIR`` (the default); ``s3`` a fresh prefix of the moto
bucket (``tests/storage/moto.py``). Tests that only make sense on one backend
(a full disk) skip the other.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(params=["local", "s3"])
def storage_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app_config(app_config: dict[str, Any], storage_backend: str,
               request: pytest.FixtureRequest) -> dict[str, Any]:
    if storage_backend == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return {**app_config, "STORAGE_URL": bucket.url()}
    return app_config
