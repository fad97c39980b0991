"""The route policy through Flask's test client (the live matrix is test_live_matrix.py)."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.auth.helpers import ADMIN, bearer, token, token_config


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, **token_config()}


def upload(client: FlaskClient, name: str, auth: dict[str, str]) -> dict[str, Any]:
    response = client.put(f"/uploads/{name}", data=b"hello " + name.encode(), headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def test_reads_need_a_token_and_claims_that_cover_them(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    response = client.get("/media/")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "UNAUTHORIZED"
    assert client.get("/media/", headers=bearer(token(read=["/uploads/*"]))).status_code == 403
    assert client.get("/media/", headers=bearer(token(read=["/media/*"]))).status_code == 200
    assert client.get("/media/", headers=bearer(ADMIN)).status_code == 200
    assert client.get(f"/media/?access_token={ADMIN}").status_code == 401  # never in a URL
    assert client.get("/events/stats", headers=bearer(token())).status_code == 403


def test_owners_see_their_uploads_and_no_one_else_s(client: FlaskClient) -> None:
    alice = bearer(token(sub="alice", write=["/uploads"]))
    bob = bearer(token(sub="bob", write=["/uploads"]))
    mine = upload(client, "a.txt", alice)
    theirs = upload(client, "b.txt", bob)
    assert mine["signed_url"].startswith(f"/uploads/{mine['id']}/content?expires=")
    listed = client.get("/uploads", headers=alice).get_json()["uploads"]
    assert [u["id"] for u in listed] == [mine["id"]]
    assert client.get(f"/uploads/{mine['id']}", headers=alice).status_code == 200
    assert client.get(f"/uploads/{theirs['id']}", headers=alice).status_code == 403
    assert client.get(f"/uploads/{theirs['id']}/content", headers=alice).status_code == 403
    assert client.delete(f"/uploads/{theirs['id']}", headers=alice).status_code == 403
    assert client.get(f"/uploads/{theirs['id']}", headers=bob).status_code == 200
    everyone = client.get("/uploads", headers=bearer(token(read=["/uploads/*"]))).get_json()
    assert {u["id"] for u in everyone["uploads"]} == {mine["id"], theirs["id"]}
    # the signed URL of the 201 reads the content with no token at all
    content = client.get(mine["signed_url"])
    assert content.status_code == 200 and content.data == b"hello a.txt"
    assert content.headers["Cache-Control"] == "private, no-store"
    assert content.headers["Referrer-Policy"] == "no-referrer"
    assert client.get(mine["signed_url"].replace("/content", "")).status_code == 401
    assert client.delete(f"/uploads/{mine['id']}", headers=alice).status_code == 204


def test_session_cookie_reads_but_never_writes(client: FlaskClient) -> None:
    jwt_ = token(sub="carol", read=["/media/*"], write=["/uploads/*"])
    response = client.post("/auth/session", headers=bearer(jwt_))
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie
    client.set_cookie("flaskstream_token", jwt_)
    assert client.get("/media/").status_code == 200
    assert client.put("/uploads/x.txt", data=b"x").status_code == 401
    assert client.post("/auth/session", headers=bearer(ADMIN)).status_code == 400


def test_query_tokens_and_signed_urls_never_authorise_a_write(client: FlaskClient) -> None:
    writer = token(sub="dave", write=["/uploads/*"])
    assert client.put(f"/uploads/q.txt?access_token={writer}", data=b"x").status_code == 401
    stored = upload(client, "ok.txt", bearer(writer))
    signed = stored["signed_url"]
    assert client.delete(signed.replace("/content", "")).status_code == 401
    assert client.get(f"/uploads/{stored['id']}", headers=bearer(writer)).status_code == 200  # kept
