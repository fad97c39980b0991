"""HTTP routes with the test client (real PostgreSQL)."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from flaskstream import create_app
from tests.etl.helpers import query, users_csv

pytestmark = pytest.mark.db


def post(client, body: bytes, query_string: str = "", content_type: str = "text/csv"):
    return client.post(f"/etl/jobs?{query_string}", data=body,
                       headers={"Content-Type": content_type})


def test_post_raw_csv_then_job_and_rejects(client, clean_db):
    resp = post(client, users_csv(50, bad_every=10), "table=users&job=j-1")
    assert resp.status_code == 201, resp.get_json()
    summary = resp.get_json()
    assert (summary["job"], summary["rows_read"], summary["rows_loaded"],
            summary["rows_rejected"]) == ("j-1", 50, 45, 5)
    job = client.get("/etl/jobs/j-1").get_json()
    assert (job["status"], job["rows_loaded"], job["table"]) == ("done", 45, "users")
    rejects = client.get("/etl/jobs/j-1/rejects")
    assert rejects.headers["Content-Type"] == "text/csv; charset=utf-8"
    lines = rejects.get_data(as_text=True).splitlines()
    assert lines[0] == "line,reason,text"
    assert lines[1] == "11,age: not a valid integer: 'x',\"user9@example.com,x,User 9\""
    assert len(lines) == 6
    assert client.get("/etl/jobs").get_json()["jobs"][0]["id"] == "j-1"
    events = query(clean_db, "SELECT event, data FROM flaskstream.events WHERE channel = 'etl.j-1' "
                   "ORDER BY id")
    assert events[0][0] == "progress" and events[-1][0] == "done"
    assert json.loads(events[-1][1])["rows_loaded"] == 45
    assert set(json.loads(events[0][1])) >= {"bytes", "rows_read", "rows_loaded",
                                              "rows_rejected", "rows_per_s"}


def test_post_gzip_and_multipart(client, clean_db):
    assert post(client, gzip.compress(users_csv(5)), content_type="application/gzip") \
        .get_json()["rows_loaded"] == 5
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"u.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode() \
        + users_csv(7, start=100) + f"\r\n--{boundary}--\r\n".encode()
    resp = post(client, body, "mode=upsert", f"multipart/form-data; boundary={boundary}")
    assert resp.status_code == 201 and resp.get_json()["rows_loaded"] == 7
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[12]]


def test_errors_have_the_error_shape(client, clean_db):
    resp = post(client, b"", "table=nope")  # not in ETL_TABLES: refused before any lookup
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "TABLE_NOT_ALLOWED"
    assert post(client, b"", "job=../x").status_code == 400
    resp = post(client, b"name\nx\n", "job=h")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "BAD_HEADER"
    assert client.get("/etl/jobs/h").get_json()["status"] == "failed"
    assert post(client, users_csv(1), "job=h").status_code == 409
    resp = post(client, users_csv(300, bad_every=2), "max_errors=3")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "TOO_MANY_ERRORS"
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[0]]
    assert client.get("/etl/jobs/none").status_code == 404
    assert client.get("/etl/jobs/none/rejects").status_code == 404
    assert client.get("/etl/export.csv?table=etl_nope").status_code == 403  # not in ETL_TABLES
    resp = post(client, users_csv(3), "dry_run=1")
    assert resp.status_code == 200 and resp.get_json()["dry_run"] is True
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[0]]


def test_export_streams_what_was_loaded(client, clean_db):
    name = "O'Brien, \"quoted\"\nnext line; DROP TABLE users"
    body = b"email,age,name\n" + f'o@x.io,7,"{name.replace(chr(34), chr(34) * 2)}"\n'.encode()
    assert post(client, body).status_code == 201
    resp = client.get("/etl/export.csv?table=users")
    assert resp.headers["Content-Disposition"] == 'attachment; filename="users.csv"'
    text = resp.get_data(as_text=True)
    assert text.startswith("id,email,age,name\n")
    query(clean_db, "TRUNCATE flaskstream.users")
    assert post(client, text.encode()).get_json()["rows_loaded"] == 1
    assert query(clean_db, "SELECT email, age, name FROM flaskstream.users") == [["o@x.io", 7, name]]


def test_body_limit_is_413_declared_or_streamed_and_bad_parameters_are_400(app_config, clean_db):
    client = create_app({**app_config, "ETL_MAX_BODY": 1000}).test_client()
    resp = post(client, users_csv(100), "job=declared")
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # No Content-Length (chunked): the limit is enforced while streaming, then rolled back.
    resp = client.post("/etl/jobs?job=streamed&batch_size=1", input_stream=io.BytesIO(
        users_csv(100)), headers={"Content-Type": "text/csv"},
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True})
    assert resp.status_code == 413, resp.get_json()
    assert resp.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert client.get("/etl/jobs/streamed").get_json()["status"] == "failed"
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[0]]
    for qs in ("mode=merge", "batch_size=0", "max_errors=x", "max_error_ratio=x"):
        resp = post(client, users_csv(1), qs)
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "BAD_REQUEST", qs
    boundary = "B"
    resp = post(client, f"--{boundary}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1"
                f"\r\n--{boundary}--\r\n".encode(), "job=nofile",
                f"multipart/form-data; boundary={boundary}")
    assert resp.status_code == 422 and "no file part" in resp.get_json()["error"]["message"]
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[0]]
