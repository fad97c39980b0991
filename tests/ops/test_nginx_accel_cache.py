"""The media decision tier of conf/nginx.conf.template through a real nginx:
``MEDIA_ACCEL`` answers cached for ``MEDIA_ACCEL_CACHE`` seconds, keyed by the URI
and the credentials, while every refusal still comes from the app.

How many requests reached gunicorn is read from the app's own
``flaskstream_request_duration_seconds_count`` (every request the app finishes,
whatever its blueprint or status), scraped on gunicorn directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.auth.helpers import AUDIENCE, SECRET, bearer, token
from tests.ops import nginx
from tests.ops.test_metrics import scrape
from tests.ops.test_nginx import BLOB, Front, start_front

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(not nginx.available(), reason="needs /usr/sbin/nginx (nginx-light)")]

VALIDITY = 3  # MEDIA_ACCEL_CACHE of the server below, seconds


@pytest.fixture(scope="module")
def cached_front(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    yield from start_front(database_url, tmp_path_factory.mktemp("nginx-accel-cache"), {
        "FLASKSTREAM_MEDIA_ACCEL": "/_accel/", "FLASKSTREAM_MEDIA_ACCEL_CACHE": str(VALIDITY),
        "FLASKSTREAM_READ_ACCESS": "token", "FLASKSTREAM_JWT_SECRET": SECRET,
        "FLASKSTREAM_JWT_AUDIENCE": AUDIENCE, "FLASKSTREAM_JWT_LEEWAY": "0"})


def app_requests(front: Front) -> float:
    """Requests the app has finished so far (this scrape not included)."""
    samples = scrape(front.server.url)
    return sum(v for (name, _), v in samples.items()
               if name == "flaskstream_request_duration_seconds_count")


def get(front: Front, headers: dict[str, str], path: str = "/media/blob.bin",
        span: tuple[int, int] = (1000, 1999)) -> requests.Response:
    return requests.get(front.url + path, timeout=10,
                        headers={"Range": f"bytes={span[0]}-{span[1]}", **headers})


def test_allowed_answers_are_reused_and_refusals_never(cached_front: Front) -> None:
    good = token(ttl=VALIDITY + 3, read=["/media/*"])
    first = get(cached_front, bearer(good))
    assert first.status_code == 206 and first.content == BLOB[1000:2000]
    assert "X-Accel-Redirect" not in first.headers and "X-Accel-Expires" not in first.headers
    before = app_requests(cached_front)
    for start in (0, 5000, 3 * (1 << 20)):  # other ranges, the same decision
        res = get(cached_front, bearer(good), span=(start, start + 76))
        assert res.status_code == 206 and res.content == BLOB[start:start + 77]
    etag = res.headers["ETag"]
    assert get(cached_front, {**bearer(good), "If-None-Match": etag}).status_code == 304
    assert get(cached_front, {**bearer(good), "If-Match": '"other"'}).status_code == 412
    assert app_requests(cached_front) - before == 1  # only the scrape itself: nginx answered

    # The same URI with other credentials is the app's to decide, every time.
    for headers, status in (({}, 401), (bearer("not-a-jwt"), 401),
                            (bearer(token(secret="x" * 64, read=["/media/*"])), 401),
                            (bearer(token(read=["/media/other.bin"])), 403),
                            ({"Cookie": "x=1"}, 401)):
        before = app_requests(cached_front)
        for _ in range(2):
            res = get(cached_front, headers)
            assert res.status_code == status, (headers, res.status_code)
            assert res.json()["error"]["code"] and BLOB[1000:1100] not in res.content
        assert app_requests(cached_front) - before == 3  # both reached the app (+ the scrape)


def test_query_token_and_path_are_part_of_the_key(cached_front: Front) -> None:
    good = token(ttl=VALIDITY + 3, read=["/media/blob.bin"])
    url = f"/media/blob.bin?access_token={good}"
    assert get(cached_front, {}, path=url).content == BLOB[1000:2000]
    assert get(cached_front, {}, path=url).content == BLOB[1000:2000]
    # Its decision for blob.bin opens nothing else, and no other query shares it.
    assert get(cached_front, {}, path=f"/media/tone.opus?access_token={good}").status_code == 403
    assert get(cached_front, {}, path="/media/blob.bin?access_token=x").status_code == 401
    assert get(cached_front, {}, path="/media/blob.bin").status_code == 401


def test_an_expiring_token_is_not_reused_past_its_exp(cached_front: Front) -> None:
    """X-Accel-Expires is capped at the token's life: refused as soon as it expires,
    although MEDIA_ACCEL_CACHE (3 s) is longer than the 2 s it had left."""
    expires = int(time.time()) + 2
    short = token(exp=expires, read=["/media/*"])
    assert get(cached_front, bearer(short)).status_code == 206
    before = app_requests(cached_front)
    assert get(cached_front, bearer(short)).status_code == 206
    time.sleep(max(0.0, expires - time.time()) + 0.3)
    res = get(cached_front, bearer(short))
    assert res.status_code == 401 and res.json()["error"]["code"]
    assert app_requests(cached_front) - before >= 2  # the refusal came from the app
