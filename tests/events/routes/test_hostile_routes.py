"""The publish route and CLI against hostile input, through Flask's test client
(issue 12, findings 1, 7 and 8); the live versions are in tests/hostile/."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from flaskstream import db, jsonbody
from flaskstream.errors import ApiError


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "EVENTS_MAX_BODY": 1000}


def post(client: FlaskClient, body: bytes, **kw: Any) -> Any:
    return client.post("/events/x", data=body, content_type="application/json", **kw)


def test_publish_body_limit(client: FlaskClient) -> None:
    assert post(client, b'{"data": "' + b"x" * 900 + b'"}').status_code == 202
    over = post(client, b'{"data": "' + b"x" * 1000 + b'"}')
    assert over.status_code == 413
    assert over.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


class Endless:
    """A chunked body that never ends; counts what the app read of it."""

    def __init__(self) -> None:
        self.given = 0

    def read(self, size: int = -1) -> bytes:
        size = 65536 if size is None or size < 0 else size
        self.given += size
        return b"1" * size


def test_a_chunked_body_over_the_limit_is_413_after_reading_just_past_it(app: Flask) -> None:
    stream = Endless()
    environ = {"wsgi.input": stream, "wsgi.input_terminated": True,
               "HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_TYPE": "application/json"}
    with app.test_request_context("/events/x", method="POST", environ_overrides=environ), \
            pytest.raises(ApiError) as info:
        jsonbody.read_json(1000)
    assert (info.value.status, info.value.code) == (413, "PAYLOAD_TOO_LARGE")
    assert 1000 < stream.given <= 1001  # the limit + 1 byte: never more held


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b"{", b"\xff"])
def test_malformed_json_is_400(app: Flask, client: FlaskClient, body: bytes) -> None:
    app.config["EVENTS_MAX_BODY"] = 1 << 20
    response = post(client, body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_JSON"


def test_a_lone_surrogate_is_400_and_the_pool_stays_in_step(app: Flask,
                                                           client: FlaskClient) -> None:
    response = post(client, b'{"event": "\\ud800", "data": "x"}')
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_EVENT"
    with db.get_database(app).connection() as con:
        assert con.run("SELECT CAST(:v AS text)", v="mine") == [["mine"]]


def test_cli_publish_with_bad_json_is_a_click_error(runner: FlaskCliRunner) -> None:
    for data, reason in (("{", "not valid JSON (line 1, column 2)"),
                         ("[" * 100_000, "nested too deeply")):
        result = runner.invoke(args=["events", "publish", "x", data, "--json"])
        assert result.exit_code == 2, result.output
        assert f"Error: Invalid value for DATA: {reason}" in result.output
        assert isinstance(result.exception, SystemExit)  # click's exit, not a traceback


def test_cli_publish_refuses_a_lone_surrogate(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["events", "publish", "x", '"\\ud800"', "--json"])
    assert result.exit_code == 2 and "lone surrogate" in result.output


def test_internal_publishers_may_pass_any_str(app: Flask) -> None:
    """The ETL job's error event carries a CSV header decoded with surrogateescape:
    publish stores it with U+FFFD instead of failing halfway through the INSERT."""
    from flaskstream.events import store
    from flaskstream.events.broker import publish

    with app.app_context():
        event_id = publish("etl.x", {"message": "found: na\udcffme"}, "err\ud800or")
        with db.get_database(app).connection() as con:
            (stored,) = store.replay(con, ["etl.x"], event_id - 1, 10)
            assert con.run("SELECT CAST(:v AS text)", v="mine") == [["mine"]]
    assert stored.data == '{"message":"found: na\ufffdme"}'
    assert stored.event == "err\ufffdor"
