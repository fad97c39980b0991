"""FLASKSTREAM_PROXY_FIX through Flask's test client: the forwarded scheme, host
and client address of that many trusted hops, absolute Location headers (tus,
raw uploads), and nothing believed when it is 0."""

from __future__ import annotations

import runpy
from typing import Any

import pytest
from flask import Flask, request

from tests.live import ROOT

TUS = {"Tus-Resumable": "1.0.0", "Upload-Length": "3"}
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "forged.example, app.example",
             "X-Forwarded-For": "6.6.6.6, 203.0.113.9"}


@pytest.fixture(params=[0, 1], ids=["off", "one-hop"])
def app_config(request: pytest.FixtureRequest, app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "PROXY_FIX": request.param}


@pytest.fixture
def probe(app: Flask) -> Flask:
    @app.get("/probe")
    def _probe() -> dict[str, str]:
        return {"url": request.host_url, "remote": str(request.remote_addr)}

    return app


def test_forwarded_request_is_the_clients_only_when_trusted(probe: Flask) -> None:
    got = probe.test_client().get("/probe", headers=FORWARDED).get_json()
    if probe.config["PROXY_FIX"]:
        # One hop: the rightmost value of each header is the one our proxy added.
        assert got == {"url": "https://app.example/", "remote": "203.0.113.9"}
    else:
        assert got == {"url": "http://localhost/", "remote": "127.0.0.1"}


def test_tus_location_is_absolute_on_the_client_facing_origin(app: Flask) -> None:
    res = app.test_client().post("/uploads/tus/", headers={**TUS, **FORWARDED})
    assert res.status_code == 201, res.get_json()
    location = res.headers["Location"]
    if app.config["PROXY_FIX"]:
        assert location.startswith("https://app.example/uploads/tus/")
    else:
        assert location.startswith("/uploads/tus/")  # relative, as before


def test_raw_upload_location_too(app: Flask) -> None:
    res = app.test_client().put("/uploads/n.txt", data=b"abc",
                                headers={"X-Forwarded-Proto": "https",
                                         "X-Forwarded-Host": "app.example:8443"})
    assert res.status_code == 201
    expected = "https://app.example:8443/uploads/" if app.config["PROXY_FIX"] else "/uploads/"
    assert res.headers["Location"] == expected + res.get_json()["id"]


@pytest.mark.parametrize("env,expected", [
    ({}, "127.0.0.1,::1"),
    ({"FORWARDED_ALLOW_IPS": "10.0.0.2"}, "10.0.0.2"),  # gunicorn's own variable
    ({"GUNICORN_FORWARDED_ALLOW_IPS": "*", "FORWARDED_ALLOW_IPS": "10.0.0.2"}, "*"),
])
def test_gunicorn_forwarded_allow_ips_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for name in ("GUNICORN_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = runpy.run_path(str(ROOT / "conf" / "gunicorn.conf.py"))
    assert settings["forwarded_allow_ips"] == expected
