"""Fixtures for the events routes through Flask's test client: fast heartbeats and
polls, no token delay, and the per-app listener stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flaskstream.events.broker import get_broker


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "SSE_HEARTBEAT": 0.2, "EVENTS_POLL_SECONDS": 0.2, "TOKENS_DELAY": 0.0}


@pytest.fixture(autouse=True)
def _stop_listener(app: Flask) -> Iterator[None]:
    yield
    get_broker(app).stop()
