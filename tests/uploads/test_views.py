"""Upload routes through Flask's test client: the contract of an accepted upload.

A multipart POST and a raw PUT are stored with their digests, served back (ranges,
download names, never HTML inline), listed newest first and deleted; progress goes
out as events; the buffered route exists only for the benchmarks; writes need the
token when one is set. What is refused is in ``test_views_limits.py``, what fails
mid-body in ``test_views_faults.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flaskstream import db
from tests.uploads.views_support import CT, form, leftovers

pytestmark = pytest.mark.db


def test_multipart_upload_roundtrip(app: Flask, client: FlaskClient) -> None:
    a, b = os.urandom(200_003), b"second file"
    body = form(("title", None, "Grüße".encode()), ("file", "../ä.bin", a), ("doc", "b.txt", b))
    res = client.post("/uploads", data=body, headers={"Content-Type": CT})
    assert res.status_code == 201, res.json
    files = res.json["files"]
    assert res.json["fields"] == {"title": "Grüße"}
    assert [(f["field"], f["filename"], f["size"], f["sha256"]) for f in files] == [
        ("file", "ä.bin", len(a), hashlib.sha256(a).hexdigest()),
        ("doc", "b.txt", len(b), hashlib.sha256(b).hexdigest()),
    ]
    assert sorted(leftovers(app)) == sorted(f["id"] for f in files)

    got = client.get(files[0]["url"])
    assert got.status_code == 200 and got.data == a
    assert got.headers["Content-Disposition"] == \
        "attachment; filename=\"a.bin\"; filename*=UTF-8''%C3%A4.bin"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    part = client.get(files[0]["url"], headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.data == a[-10:]

    meta = client.get(f"/uploads/{files[1]['id']}")
    assert meta.status_code == 200 and meta.json["filename"] == "b.txt"
    assert client.delete(f"/uploads/{files[1]['id']}").status_code == 204
    assert client.get(f"/uploads/{files[1]['id']}").status_code == 404
    assert client.delete(f"/uploads/{files[1]['id']}").status_code == 404
    assert leftovers(app) == [files[0]["id"]]


def test_list_is_paginated_newest_first(client: FlaskClient) -> None:
    ids = []
    for i in range(5):
        res = client.put(f"/uploads/f{i}.txt", data=b"x" * i)
        assert res.status_code == 201
        ids.append(res.json["id"])
    seen, cursor = [], None
    while True:
        res = client.get("/uploads", query_string={"limit": 2, **({"cursor": cursor} if cursor
                                                                   else {})})
        seen += [u["id"] for u in res.json["uploads"]]
        cursor = res.json["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert client.get("/uploads?cursor=!!").status_code == 400


def test_raw_put(app: Flask, client: FlaskClient) -> None:
    data = os.urandom(70_000)
    res = client.put("/uploads/clip%20one.mp4", data=data)
    assert res.status_code == 201
    assert res.json["filename"] == "clip one.mp4" and res.json["content_type"] == "video/mp4"
    assert res.json["sha256"] == hashlib.sha256(data).hexdigest()
    assert res.headers["Location"] == f"/uploads/{res.json['id']}"
    assert client.get(res.json["url"]).data == data
    inline = client.get(res.json["url"] + "?inline=1")
    assert inline.headers["Content-Disposition"].startswith("inline;")


def test_html_is_never_served_inline(client: FlaskClient) -> None:
    res = client.put("/uploads/x.html", data=b"<script>alert(1)</script>",
                     headers={"Content-Type": "text/html"})
    got = client.get(res.json["url"] + "?inline=1")
    assert got.headers["Content-Disposition"].startswith("attachment;")



def test_progress_events(app: Flask, client: FlaskClient) -> None:
    data = os.urandom(600_000)
    res = client.post("/uploads?progress=job-1", data=form(("f", "p.bin", data)),
                      headers={"Content-Type": CT})
    assert res.status_code == 201
    with app.app_context(), db.connection() as con:
        events = con.run("SELECT event, data FROM flaskstream.events WHERE channel = 'uploads.job-1' "
                         "ORDER BY id")
    names = [e[0] for e in events]
    assert names[0] == "progress" and names[-1] == "done"
    last_progress = json.loads(events[-2][1])
    assert last_progress["bytes"] == last_progress["total"] == len(form(("f", "p.bin", data)))
    assert json.loads(events[-1][1])["files"][0]["id"] == res.json["files"][0]["id"]

    bad = client.post("/uploads?progress=job-2", data=form(("f", "p.bin", data))[:-5],
                      headers={"Content-Type": CT})
    assert bad.status_code == 400
    with app.app_context(), db.connection() as con:
        last = con.run("SELECT event, data FROM flaskstream.events WHERE channel = 'uploads.job-2' "
                       "ORDER BY id DESC LIMIT 1")
    assert last[0][0] == "error" and json.loads(last[0][1])["code"] == "MALFORMED_MULTIPART"
    assert client.post("/uploads?progress=../x", data=b"",
                       headers={"Content-Type": CT}).status_code == 400


def test_buffered_route_only_in_bench_config(app_config: dict[str, Any], client: FlaskClient
                                             ) -> None:
    from flaskstream import create_app

    assert client.post("/uploads/buffered", data=form(("f", "a", b"1")),
                       headers={"Content-Type": CT}).status_code in (404, 405)
    app = create_app({**app_config, "BENCH_BUFFERED_ROUTE": True})
    res = app.test_client().post("/uploads/buffered", data=form(("f", "a", b"1")),
                                 headers={"Content-Type": CT})
    assert res.status_code == 201 and res.json["files"][0]["size"] == 1
    db.get_database(app).close_all()



def test_writes_need_the_token_when_set(app_config: dict[str, Any]) -> None:
    from flaskstream import create_app

    app = create_app({**app_config, "API_TOKEN": "s3cret"})
    client = app.test_client()
    assert client.put("/uploads/a.txt", data=b"x").status_code == 401
    assert client.post("/uploads", data=form(("f", "a", b"1")),
                       headers={"Content-Type": CT}).status_code == 401
    ok = client.put("/uploads/a.txt", data=b"x", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    assert client.get(ok.json["url"]).data == b"x"  # reads stay open
    assert client.delete(f"/uploads/{ok.json['id']}").status_code == 401
    db.get_database(app).close_all()
