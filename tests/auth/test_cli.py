"""``flask auth token|sign|revoke`` against the app they configure."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from flaskstream.auth import verifier
from tests.auth.helpers import bearer, token_config


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, **token_config()}


def test_token_prints_a_jwt_with_the_claims_asked_for(app: Flask, runner: FlaskCliRunner,
                                                      client: FlaskClient) -> None:
    result = runner.invoke(args=["auth", "token", "--sub", "alice", "--subscribe", "orders.alice",
                                 "--read", "/media/*", "--ttl", "60", "--jti", "cli-1"])
    assert result.exit_code == 0, result.output
    jwt_ = result.output.strip()
    claims = verifier(app).decode(jwt_)
    assert (claims.sub, claims.subscribe, claims.read, claims.jti) == \
        ("alice", ("orders.alice",), ("/media/*",), "cli-1")
    assert client.get("/media/", headers=bearer(jwt_)).status_code == 200
    assert runner.invoke(args=["auth", "revoke", "cli-1"]).exit_code == 0
    refused = client.get("/media/", headers=bearer(jwt_))
    assert refused.status_code == 401
    assert refused.get_json()["error"]["message"] == "the token has been revoked"


def test_sign_prints_a_url_that_reads_exactly_that_path(runner: FlaskCliRunner,
                                                        client: FlaskClient) -> None:
    result = runner.invoke(args=["auth", "sign", "/media/sample.webm", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    url = result.output.strip()
    assert url.startswith("/media/sample.webm?expires=")
    response = client.get(url, headers={"Range": "bytes=0-9"})
    assert response.status_code == 206 and len(response.data) == 10
    assert client.get(url.replace("sample.webm", "sample.mp4")).status_code == 401
    assert runner.invoke(args=["auth", "sign", "media/x"]).exit_code != 0
