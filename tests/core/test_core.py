"""Health, the error shape and write auth, through the Flask test client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from flaskstream import create_app, db


def test_healthz_ok(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "db": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_degraded_when_database_unreachable(tmp_path: Any) -> None:
    app = create_app({
        "TESTING": True,
        "INSTANCE_PATH": str(tmp_path),
        "DATABASE_URL": f"postgresql://postgres@/postgres?host={tmp_path}",  # no socket there
        "DB_CONNECT_TIMEOUT": 1,
    })
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["db"] and body["db"] != "ok"


def test_index_links_the_four_patterns(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    for path in ("/events/", "/uploads", "/media/", "/etl/"):
        assert path in html


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/no/such/thing", 404, "NOT_FOUND"), ("DELETE", "/healthz", 405, "METHOD_NOT_ALLOWED")],
)
def test_werkzeug_errors_use_the_json_shape(
    client: FlaskClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.is_json
    assert response.get_json()["error"]["code"] == code
    assert response.get_json()["error"]["message"]


def test_body_over_max_content_length_is_a_json_413(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 10

    @app.post("/echo")
    def echo() -> str:
        return str(len(request.get_data()))  # werkzeug raises RequestEntityTooLarge

    client = app.test_client()
    assert client.post("/echo", data=b"x" * 10).get_data() == b"10"
    response = client.post("/echo", data=b"x" * 11)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert response.get_json()["error"]["message"]


def test_unexpected_exception_is_a_json_500(app: Flask) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "INTERNAL_ERROR",
                                             "message": "internal server error"}}


@pytest.fixture
def token_app(app_config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app({**app_config, "API_TOKEN": "t0ken"})
    yield app
    db.get_database(app).close_all()  # else its idle connection outlives the test until GC


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic t0ken", "Bearer "])
def test_writes_need_the_token(token_app: Flask, method: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = token_app.test_client().open("/healthz", method=method, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "UNAUTHORIZED"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_right_token_passes_auth_and_reads_are_open(token_app: Flask) -> None:
    client = token_app.test_client()
    # Past auth, the route decides: /healthz has no POST, so 405 rather than 401.
    assert client.post("/healthz", headers={"Authorization": "Bearer t0ken"}).status_code == 405
    assert client.get("/healthz").status_code == 200


def test_open_writes_are_logged(app_config: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    create_app(app_config)
    assert "FLASKSTREAM_API_TOKEN is not set" in caplog.text


def test_dashboard_sends_its_csp_as_a_header_with_frame_ancestors(client: FlaskClient) -> None:
    response = client.get("/")
    header = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in header.split(";"))
    assert directives["frame-ancestors"] == "'self'"  # no other site may frame the page
    assert directives["script-src"] == "'self'" and directives["default-src"] == "'self'"
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    # The <meta> copy is the same policy minus frame-ancestors (ignored, with an error, there).
    html = response.get_data(as_text=True)
    meta = html.split('http-equiv="Content-Security-Policy" content="', 1)[1].split('"', 1)[0]
    assert meta + "; frame-ancestors 'self'" == header
    assert "Content-Security-Policy" not in client.get("/healthz").headers
