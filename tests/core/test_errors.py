"""The one error base (issue 13): what it answers when the database cannot be reached,
and messages free of Python internals when a fixed-length body cannot be read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pg8000.exceptions import DatabaseError

from flaskstream import create_app, db
from flaskstream.errors import FlaskstreamError
from tests.live import free_port

SECRET = "ConnectionResetError: [Errno 104] secret internals"


class BreaksAfter:
    """A ``wsgi.input`` that gives ``good`` bytes and then fails as a reset socket does."""

    def __init__(self, good: bytes) -> None:
        self.good = good

    def read(self, size: int = -1) -> bytes:
        if self.good:
            chunk, self.good = self.good[:size], self.good[size:]
            return chunk
        raise ConnectionResetError(SECRET)

    readline = read


def assert_no_internals(message: str) -> None:
    """No exception class (``ConnectionResetError``, werkzeug's ``ClientDisconnected``), no
    server text: what a client reads is ours."""
    assert not re.search(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)+\b", message), message
    assert "secret" not in message and "Errno" not in message, message


def broken_body(good: bytes) -> dict[str, Any]:
    """Environ of a request that declares 100,000 bytes and breaks after ``good``."""
    return {"wsgi.input": BreaksAfter(good), "CONTENT_LENGTH": "100000"}


@pytest.fixture
def unreachable(tmp_path: Path) -> Any:
    """An app whose database URL points at a port nobody listens on (connection refused)."""
    app = create_app({"TESTING": True, "INSTANCE_PATH": str(tmp_path),
                      "UPLOAD_DIR": str(tmp_path / "uploads"),
                      "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
                      "DB_CONNECT_TIMEOUT": 1})
    yield app
    db.get_database(app).close_all()


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "DATABASE_UNAVAILABLE"
    assert response.headers["Retry-After"] == "2"


def test_a_refused_connection_is_503_database_unavailable(unreachable: Flask) -> None:
    client = unreachable.test_client()
    assert_unavailable(client.get("/uploads"))
    assert_unavailable(client.get("/uploads/" + "a" * 32))
    assert_unavailable(client.get("/etl/jobs/some-job"))
    assert client.get("/livez").status_code == 200  # the process keeps serving


def test_an_upload_that_cannot_be_recorded_is_503_and_leaves_no_file(unreachable: Flask) -> None:
    response = unreachable.test_client().put("/uploads/notes.txt", data=b"x" * 10_000)
    assert_unavailable(response)
    upload_dir = Path(unreachable.config["UPLOAD_DIR"])
    assert [p for p in upload_dir.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(("fields", "refused"), [
    ({"C": "53300", "M": "too many connections for role"}, True),  # insufficient resources
    ({"C": "57P03", "M": "the database system is starting up"}, True),
    ({"C": "08006", "M": "connection failure"}, True),
    ({"C": "42P01", "M": "relation does not exist"}, False),  # a bug, not an outage
    ({"C": "XX000", "M": "the database cannot be reached (says the text)"}, False),
])
def test_a_refusal_is_told_by_its_sqlstate_never_its_text(fields: dict[str, str],
                                                          refused: bool) -> None:
    assert db.refused_connection(DatabaseError(fields)) is refused
    assert db.refused_connection(ConnectionRefusedError(111, "refused"))


def test_database_unavailable_is_still_a_lost_connection_for_the_pool() -> None:
    exc = db.DatabaseUnavailable("down")
    assert isinstance(exc, FlaskstreamError) and isinstance(exc, db.InterfaceError)
    assert db.is_connection_lost(exc) and (exc.status, exc.code) == (503, "DATABASE_UNAVAILABLE")


@pytest.mark.db
def test_an_unreadable_raw_upload_body_says_so_without_python_internals(
        client: FlaskClient) -> None:
    response = client.put("/uploads/raw.bin", environ_overrides=broken_body(b"x" * 1000))
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "CLIENT_DISCONNECTED"
    assert_no_internals(error["message"])


@pytest.mark.db
def test_an_unreadable_tus_patch_body_says_so_without_python_internals(
        client: FlaskClient) -> None:
    tus = {"Tus-Resumable": "1.0.0"}
    created = client.post("/uploads/tus/", headers={**tus, "Upload-Length": "100000"})
    assert created.status_code == 201
    response = client.patch(created.headers["Location"], environ_overrides=broken_body(b"y" * 1000),
                            headers={**tus, "Content-Type": "application/offset+octet-stream",
                                     "Upload-Offset": "0"})
    assert response.status_code == 400
    assert response.headers["Tus-Resumable"] == "1.0.0" and "Upload-Offset" in response.headers
    error = response.json["error"]
    assert error["code"] == "CLIENT_DISCONNECTED"
    assert_no_internals(error["message"])
