"""X-Request-ID in and out, secrets kept out of logs, and JSON lines from a live gunicorn."""

from __future__ import annotations

import contextvars
import json
import logging

import pytest
import requests
from flask.testing import FlaskClient

from flaskstream import logs
from tests.etl.helpers import query, users_csv


@pytest.mark.parametrize(("query_string", "expected"), [
    ("", ""),
    ("a=1&b=2", "a=1&b=2"),
    ("access_token=abc&x=1", "access_token=REDACTED&x=1"),
    ("x=1&sig=ff00&token=t0k&SIG=z", "x=1&sig=REDACTED&token=REDACTED&SIG=REDACTED"),
    ("access%5Ftoken=abc", "access%5Ftoken=REDACTED"),  # however the name is spelled
    ("token", "token"),  # no value, nothing to hide
    ("tokens=keep&q=a%20b", "tokens=keep&q=a%20b"),
])
def test_scrub_query(query_string: str, expected: str) -> None:
    assert logs.scrub_query(query_string) == expected


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, "é", "a\tb", "a;b", "<script>"])
def test_unacceptable_request_ids_are_replaced(given: str) -> None:
    made = logs.accept_request_id(given)
    assert made != given and len(made) == 32 and int(made, 16) >= 0


@pytest.mark.parametrize("given", ["abc", "4bf92f3577b34da6a3ce929d0e0e4736", "x" * 128,
                                   "req.1:2/3+4=", "00-4bf9-01"])
def test_plain_request_ids_are_kept(given: str) -> None:
    assert logs.accept_request_id(given) == given


@pytest.mark.db
def test_request_id_echoed_and_stored_on_the_etl_job(client: FlaskClient, clean_db: str) -> None:
    mine = client.get("/livez", headers={"X-Request-ID": "trace-42"})
    assert mine.headers["X-Request-ID"] == "trace-42"
    made = client.get("/livez", headers={"X-Request-ID": "bad id"}).headers["X-Request-ID"]
    assert made != "bad id" and len(made) == 32
    assert client.get("/nowhere").headers["X-Request-ID"]  # errors too
    job = client.post("/etl/jobs?table=users&job=j-rid", data=users_csv(3),
                      headers={"Content-Type": "text/csv", "X-Request-ID": "etl-7"})
    assert job.status_code == 201
    assert query(clean_db, "SELECT request_id FROM flaskstream.etl_jobs WHERE id = 'j-rid'") == [["etl-7"]]


def test_json_formatter_carries_the_request_outside_gunicorn() -> None:
    record = logging.LogRecord("flaskstream.x", logging.WARNING, __file__, 1, "hi %s", ("you",),
                               None)
    line = json.loads(contextvars.Context().run(logs.JsonFormatter().format, record))
    assert line["message"] == "hi you" and line["level"] == "WARNING"
    assert line["logger"] == "flaskstream.x" and line["time"].endswith("Z")
    assert "request_id" not in line


@pytest.mark.live
@pytest.mark.db
def test_live_logs_are_json_lines_without_secrets(start_live_server, clean_db: str) -> None:
    server = start_live_server(workers=1, env={"FLASKSTREAM_LOG_FORMAT": "json",
                                               "GUNICORN_ACCESSLOG": "-"})
    url = server.url
    media = requests.get(f"{url}/media/sample.opus?access_token=SECRET1&x=1",
                         headers={"X-Request-ID": "media-1", "Range": "bytes=0-9"}, timeout=10)
    assert media.status_code == 206 and media.headers["X-Request-ID"] == "media-1"
    assert requests.get(f"{url}/livez?token=SECRET2&sig=SECRET3", timeout=10).status_code == 200
    put = requests.put(f"{url}/uploads/x.bin", data=b"x" * 777, headers={"X-Request-ID": "up-1"},
                       timeout=10)
    assert put.status_code == 201
    missing = requests.get(f"{url}/uploads/none", headers={"X-Request-ID": "not a valid id"},
                           timeout=10)
    generated = missing.headers["X-Request-ID"]
    server.stop()

    text = server.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    assert "SECRET" not in text
    access = {e["request_id"]: e for e in lines if e["logger"] == "gunicorn.access"}
    assert access["media-1"]["path"] == "/media/sample.opus?access_token=REDACTED&x=1"
    assert (access["media-1"]["method"], access["media-1"]["status"],
            access["media-1"]["bytes"]) == ("GET", 206, 10)
    assert access["media-1"]["duration_ms"] >= 0
    assert access["up-1"]["status"] == 201 and access[generated]["status"] == 404
    livez = [e for e in access.values() if e["path"].startswith("/livez")]
    assert livez[0]["path"] == "/livez?token=REDACTED&sig=REDACTED"
    stored = [e for e in lines if e["logger"] == "flaskstream.uploads.views"]
    assert stored and stored[0]["request_id"] == "up-1"
    assert (stored[0]["method"], stored[0]["path"]) == ("PUT", "/uploads/x.bin")
    assert any(e["logger"] == "gunicorn.error" for e in lines)  # gunicorn's own lines too
