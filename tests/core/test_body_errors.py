"""A chunked body the server cannot read answers one 400, whatever the route made of it
(issue 12, finding 8); the live version, through gunicorn, is in tests/hostile/test_edges.py."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from flaskstream import create_app
from flaskstream.errors import ApiError


class BrokenChunks:
    """Stands in for gunicorn's chunked reader meeting ``zz``: it raises an OSError
    (gunicorn's ``InvalidChunkSize`` is an ``IOError``) with the server's text."""

    failed = False

    def read(self, size: int = -1) -> bytes:
        raise OSError("Invalid chunk size: b'zz'")


def make_app(tmp_path: Any) -> Flask:
    app = create_app({"TESTING": True, "INSTANCE_PATH": str(tmp_path),
                      "DATABASE_URL": "postgresql://nobody@/none?host=/nonexistent"})

    @app.post("/t/leaky")
    def leaky() -> Any:
        try:
            request.stream.read()
        except Exception as exc:  # a route that puts the server's text in its answer
            return jsonify({"error": {"code": "LOAD_FAILED", "message": str(exc)}}), 500
        return "", 204

    @app.post("/t/coded")
    def coded() -> Any:
        try:
            request.stream.read()
        except OSError as exc:
            raise ApiError(400, "CLIENT_DISCONNECTED", f"OSError: {exc}") from exc
        return "", 204

    @app.post("/t/flag")
    def flag() -> Any:
        request.environ["wsgi.input"].failed = True  # tus: "close, do not drain"
        return "", 204

    return app


def post(app: Flask, path: str, body: Any) -> Any:
    environ = {"wsgi.input": body, "wsgi.input_terminated": True,
               "HTTP_TRANSFER_ENCODING": "chunked"}
    return app.test_client().post(path, environ_overrides=environ)


def test_a_route_that_leaks_or_fails_answers_one_400(tmp_path: Any) -> None:
    response = post(make_app(tmp_path), "/t/leaky", BrokenChunks())
    assert response.status_code == 400
    assert response.get_json() == {"error": {
        "code": "BAD_REQUEST_BODY", "message": "the request body is malformed or ended early"}}


def test_a_route_that_gave_a_400_code_keeps_it_with_a_clean_message(tmp_path: Any) -> None:
    response = post(make_app(tmp_path), "/t/coded", BrokenChunks())
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "CLIENT_DISCONNECTED" and "chunk size" not in error["message"]


def test_the_servers_attributes_are_the_servers(tmp_path: Any) -> None:
    body = BrokenChunks()
    assert post(make_app(tmp_path), "/t/flag", body).status_code == 204
    assert body.failed is True
