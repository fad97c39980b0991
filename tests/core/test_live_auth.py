"""Write auth and the JSON error shape on a real gunicorn with FLASKSTREAM_API_TOKEN set.

The test-client checks in ``test_core.py`` prove the hook; this proves it is
wired in the served app for every write route the service has, and that a
refused streaming write (an ETL load, a raw PUT upload) leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.etl.helpers import query, users_csv

pytestmark = [pytest.mark.live, pytest.mark.db]

TOKEN = "live-s3cret"
WRITES = [
    ("POST", "/etl/jobs?job=refused"),
    ("POST", "/events/auth-check"),
    ("POST", "/uploads"),
    ("PUT", "/uploads/refused.bin"),
    ("DELETE", "/uploads/0123456789abcdef"),
    ("POST", "/uploads/tus/"),
    ("PATCH", "/uploads/tus/0123456789abcdef"),
    ("DELETE", "/uploads/tus/0123456789abcdef"),
]


def error_code(response: requests.Response) -> str:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    return response.json()["error"]["code"]


def test_every_write_route_needs_the_token_on_the_live_server(
        start_live_server: Any, clean_db: str) -> None:
    database_url = clean_db
    server = start_live_server(env={"FLASKSTREAM_API_TOKEN": TOKEN})
    body = users_csv(500)
    for method, path in WRITES:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = requests.request(method, server.url + path, data=body, timeout=10,
                                        headers={"Content-Type": "text/csv", **headers})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert error_code(response) == "UNAUTHORIZED"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Nothing of the refused writes reached the database or the upload store.
    assert query(database_url, "SELECT count(*) FROM flaskstream.users") == [[0]]
    assert query(database_url, "SELECT count(*) FROM flaskstream.etl_jobs") == [[0]]
    assert requests.get(server.url + "/uploads", timeout=10).json()["uploads"] == []  # reads open

    auth = {"Authorization": f"Bearer {TOKEN}"}
    loaded = requests.post(server.url + "/etl/jobs?job=allowed", data=body, timeout=30,
                           headers={"Content-Type": "text/csv", **auth})
    assert loaded.status_code == 201 and loaded.json()["rows_loaded"] == 500, loaded.text
    published = requests.post(server.url + "/events/auth-check", json={"data": 1}, headers=auth,
                              timeout=10)
    assert published.status_code == 202, published.text


def test_werkzeug_errors_are_json_on_the_live_server(live_server: Any) -> None:
    missing = requests.get(live_server.url + "/no/such/thing", timeout=10)
    assert missing.status_code == 404 and error_code(missing) == "NOT_FOUND"
    wrong = requests.delete(live_server.url + "/healthz", timeout=10)
    assert wrong.status_code == 405 and error_code(wrong) == "METHOD_NOT_ALLOWED"
    assert "GET" in wrong.headers["Allow"]
