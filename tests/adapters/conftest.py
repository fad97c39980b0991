"""Every adapter test starts and ends with all capabilities re-checked and enabled."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flaskstream import adapters


@pytest.fixture(autouse=True)
def fresh_capabilities() -> Iterator[None]:
    adapters.reset_all()
    yield
    adapters.reset_all()
