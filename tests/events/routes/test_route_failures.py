"""Refusals and degraded paths of the events routes: bad channels, a failing store,
no event bus, caps — each answered without breaking EventSource clients."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flaskstream import db
from flaskstream.events import store
from flaskstream.events.broker import Broker, get_broker, publish
from flaskstream.events.tokens import answer_tokens
from tests.events.sse_parser import parse
from tests.events.stream_reader import Stream, ends_by_itself


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/events/b%20ad", "INVALID_CHANNEL"),
        ("/events?channel=ok&channel=no%2Fslash", "INVALID_CHANNEL"),
        ("/events?channel=stats", "INVALID_CHANNEL"),  # reserved
        ("/events?" + "&".join(f"channel=c{i}" for i in range(store.MAX_CHANNELS + 1)),
         "TOO_MANY_CHANNELS"),
    ],
)
def test_subscribe_rejects_bad_channels_before_streaming(app: Flask, client: FlaskClient,
                                                         url: str, code: str) -> None:
    response = ends_by_itself(client, url)
    assert response.status_code == 400
    assert json.loads(response.body)["error"]["code"] == code
    assert get_broker(app).snapshot()["counters"]["opened"] == 0


def test_subscribe_with_the_max_channels_is_accepted(app: Flask, client: FlaskClient) -> None:
    query = "&".join(f"channel=c{i}" for i in range(store.MAX_CHANNELS))
    stream = Stream(client, f"/events?{query}&channel=c0")  # a repeat does not count twice
    try:
        assert stream.response.status_code == 200
        assert get_broker(app).snapshot()["subscribers"] == store.MAX_CHANNELS
    finally:
        stream.close()


def test_publish_is_503_with_retry_after_when_the_store_fails(
        client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise db.InterfaceError("connection refused")

    monkeypatch.setattr(store, "insert_event", down)
    response = client.post("/events/x", json={"data": 1})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "EVENT_STORE_UNAVAILABLE"
    assert response.headers["Retry-After"] == "2"


def test_resume_when_the_store_fails_is_a_200_retry_not_an_error(
        app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    with app.app_context():
        publish("down", "x")

    def down(*args: Any, **kwargs: Any) -> Any:
        raise db.InterfaceError("connection refused")

    monkeypatch.setattr(store, "pruned_through", down)
    response = ends_by_itself(client, "/events/down", headers={"Last-Event-ID": "0"})
    assert response.status_code == 200
    parsed = parse(response.body)
    assert parsed.retry is not None and parsed.events == []
    assert b"event store unavailable" in response.body
    assert get_broker(app).snapshot()["open_streams"] == 0


def test_tokens_over_the_cap(app: Flask, client: FlaskClient) -> None:
    """Plain text may say 503; an EventSource must get a 200 that only sets retry:."""
    app.config["SSE_MAX_STREAMS"] = 0
    app.extensions.pop("flaskstream.events", None)
    plain = client.get("/stream/tokens?prompt=x")
    assert plain.status_code == 503 and plain.headers["Retry-After"] == "5"
    assert plain.get_json()["error"]["code"] == "TOO_MANY_STREAMS"
    sse = ends_by_itself(client, "/stream/tokens?prompt=x", headers={"Accept": "text/event-stream"})
    assert sse.status_code == 200
    assert parse(sse.body).retry is not None and parse(sse.body).events == []
    assert get_broker(app).snapshot()["counters"]["rejected"] == 2


def test_tokens_max_tokens(client: FlaskClient) -> None:
    words = answer_tokens("p", 3)
    assert len(words) == 3
    assert client.get("/stream/tokens?prompt=p&max_tokens=3").get_data(as_text=True) == "".join(words)
    assert client.get("/stream/tokens?max_tokens=x").status_code == 400


def test_stats_are_logged_periodically(app: Flask, client: FlaskClient,
                                       caplog: pytest.LogCaptureFixture) -> None:
    app.config["EVENTS_STATS_LOG_SECONDS"] = 0
    app.extensions.pop("flaskstream.events", None)
    caplog.set_level("INFO", logger="flaskstream.events.broker")
    stream = Stream(client, "/events/logged")
    try:
        stream.head()
        deadline = time.monotonic() + 5
        while "events stats: open=1" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stream.close()
    assert "events stats: open=1 subscribers=1 channels=1" in caplog.text


def test_no_event_bus_is_a_200_retry_not_an_error(app: Flask, client: FlaskClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that cannot connect: the subscriber is told when to come back, and
    no admission slot is taken."""
    monkeypatch.setattr(Broker, "ensure_listener", lambda self, timeout: False)
    response = ends_by_itself(client, "/events/nobus")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert parse(response.body).retry is not None and parse(response.body).events == []
    assert b"event bus unavailable" in response.body
    assert get_broker(app).snapshot()["counters"]["opened"] == 0
