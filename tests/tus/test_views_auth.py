"""Who may take a tus upload over: only a request with the API token (issue 12, finding 5).

An anonymous HEAD reads the committed offset and writes nothing; with the token
a HEAD asks the holder to let go, as before. Test client, real PostgreSQL.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from flaskstream import db
from flaskstream.tus import store

pytestmark = pytest.mark.db

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "API_TOKEN": TOKEN, "TUS_LOCK_WAIT": 1, "TUS_LOCK_LEASE": 30}


def lease(app: Any, upload_id: str) -> list[Any]:
    with app.app_context(), db.connection() as con:
        return con.run("SELECT lock_token, release_requested IS NOT NULL, state FROM flaskstream.tus_uploads "
                       "WHERE id = :id", id=upload_id)[0]


@pytest.fixture
def held(client: FlaskClient, app: Any) -> tuple[str, str]:
    """An upload with 4 of 10 bytes, whose lease another request holds (a PATCH in flight)."""
    url = client.post("/uploads/tus/", headers={**TUS, **AUTH, "Upload-Length": "10"}
                      ).headers["Location"]
    response = client.patch(url, data=b"abcd", headers={**TUS, **AUTH, "Upload-Offset": "0",
                                                        "Content-Type": OCTETS})
    assert response.status_code == 204
    upload_id = url.rsplit("/", 1)[1]
    with app.app_context(), db.connection() as con:
        assert store.try_acquire(con, upload_id, "the-writer", 30) is not None
    return url, upload_id


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic czNjcmV0"}],
                         ids=["no-token", "wrong-token", "other-scheme"])
def test_anonymous_head_reads_the_offset_and_leaves_the_writer_alone(
        client: FlaskClient, app: Any, held: tuple[str, str], headers: dict[str, str]) -> None:
    url, upload_id = held
    started = time.monotonic()
    for _ in range(5):
        response = client.head(url, headers={**TUS, **headers})
        assert response.status_code == 200
        assert (response.headers["Upload-Offset"], response.headers["Upload-Length"]) == ("4", "10")
    assert time.monotonic() - started < 1, "an anonymous HEAD waited for the lease"
    # The same through the method override of a GET.
    response = client.get(url, headers={**TUS, **headers, "X-HTTP-Method-Override": "HEAD"})
    assert response.status_code == 200 and response.headers["Upload-Offset"] == "4"
    assert lease(app, upload_id) == ["the-writer", False, "active"]


def test_head_with_the_token_still_takes_over(client: FlaskClient, app: Any,
                                              held: tuple[str, str]) -> None:
    url, upload_id = held
    response = client.head(url, headers={**TUS, **AUTH})
    assert response.status_code == 423  # the fake writer never renews, so it never lets go
    assert lease(app, upload_id) == ["the-writer", True, "active"]


def test_anonymous_head_answers_404_and_410_like_a_holder_would(client: FlaskClient, app: Any
                                                                 ) -> None:
    assert client.head("/uploads/tus/" + "0" * 32, headers=TUS).status_code == 404
    gone = client.post("/uploads/tus/", headers={**TUS, **AUTH, "Upload-Length": "5"}
                       ).headers["Location"]
    assert client.delete(gone, headers={**TUS, **AUTH}).status_code == 204
    assert client.head(gone, headers=TUS).status_code == 410
    app.config["TUS_EXPIRATION_SECONDS"] = 0.2
    late = client.post("/uploads/tus/", headers={**TUS, **AUTH, "Upload-Length": "5"}
                       ).headers["Location"]
    time.sleep(0.4)
    response = client.head(late, headers=TUS)
    assert response.status_code == 410
    # Reading wrote nothing: the record is expired by the janitor or the next holder.
    assert lease(app, late.rsplit("/", 1)[1])[2] == "active"
    assert client.head(late, headers={**TUS, **AUTH}).status_code == 410
    assert lease(app, late.rsplit("/", 1)[1])[2] == "expired"
