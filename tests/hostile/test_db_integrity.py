"""Issue 12, finding 1, through HTTP: a bad request never hands another client its rows.

The issue's reproduction: ``POST /events/x`` with ``{"event": "\\ud800", ...}``
answered 400, but pg8000 had already sent part of the INSERT; the connection went
back to the pool with a reply unread, and ``GET /uploads/<bob>`` then answered
404, 500, and at last 200 with alice's record. Here every way text UTF-8 cannot
encode used to reach a query (publish event/data/id, a CSV header with invalid
UTF-8 through the ETL job's error event, tus metadata) is sent between reads of
two known records, which must come back exactly, every time; and the worker's
backends must return to their baseline.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest
import requests

from flaskstream import db
from tests.hostile.rawhttp import AUTH, token_server
from tests.live import LiveServer, wait_for

JSON = {"Content-Type": "application/json", **AUTH}

HOSTILE: dict[str, dict[str, Any]] = {
    "publish event": {"method": "POST", "path": "/events/x", "headers": JSON,
                      "data": b'{"event": "\\ud800", "data": "x"}'},
    "publish data": {"method": "POST", "path": "/events/x", "headers": JSON,
                     "data": b'{"data": ["ok", "\\udc80"]}'},
    "publish id": {"method": "POST", "path": "/events/x", "headers": JSON,
                   "data": b'{"data": 1, "id": "\\ud800"}'},
    "etl header": {"method": "POST", "path": "/etl/jobs?table=users",
                   "headers": {"Content-Type": "text/csv", **AUTH},
                   "data": b"id,na\xffme,em\xfeail\n1,a,a@example.com\n"},
    "etl row": {"method": "POST", "path": "/etl/jobs?table=users",
                "headers": {"Content-Type": "text/csv", **AUTH},
                "data": b"id,name,email\n1,\xff\xfe,a@example.com\n"},
    "tus metadata": {"method": "POST", "path": "/uploads/tus/",
                     "headers": {"Tus-Resumable": "1.0.0", "Upload-Length": "3", **AUTH,
                                 "Upload-Metadata": "filename " + base64.b64encode(
                                     b"\xed\xa0\x80.txt").decode()},
                     "data": b""},
}


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with token_server(tmp_path_factory.mktemp("integrity"), database_url) as live:
        yield live


@pytest.fixture(scope="module")
def records(server: LiveServer) -> dict[str, dict[str, Any]]:
    """alice's and bob's uploads, as the server first answered them."""
    out = {}
    for name in ("alice", "bob"):
        response = requests.put(f"{server.url}/uploads/{name}.txt", data=f"{name}'s file".encode(),
                                headers=AUTH, timeout=10)
        assert response.status_code == 201
        out[name] = response.json()
    return out


def backends(database_url: str, server: LiveServer) -> int:
    """Open backends of the server's worker (its application_name)."""
    con = pg8000.native.Connection(**db.connect_kwargs(database_url))
    try:
        names = [f"flaskstream:{pid}" for pid in server.worker_pids()]
        return int(con.run("SELECT count(*) FROM pg_stat_activity"
                           " WHERE application_name = ANY(CAST(:n AS text[]))", n=names)[0][0])
    finally:
        con.close()


def assert_everyone_reads_their_own(server: LiveServer, records: dict[str, dict[str, Any]],
                                    rounds: int = 10) -> None:
    for _ in range(rounds):
        for record in records.values():
            response = requests.get(f"{server.url}/uploads/{record['id']}", timeout=10)
            assert response.status_code == 200, response.text
            assert response.json() == {k: v for k, v in record.items()}
    published = requests.post(f"{server.url}/events/after", json={"data": "fine"}, headers=AUTH,
                              timeout=10)
    assert published.status_code == 202 and isinstance(published.json()["id"], int)


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_a_hostile_string_never_shifts_another_clients_answer(
        server: LiveServer, records: dict[str, dict[str, Any]], database_url: str,
        attack: str) -> None:
    assert_everyone_reads_their_own(server, records, rounds=1)
    baseline = backends(database_url, server)
    spec = HOSTILE[attack]
    for _ in range(5):
        response = requests.request(spec["method"], server.url + spec["path"], timeout=30,
                                    headers=spec["headers"], data=spec["data"])
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            error = response.json()["error"]
            assert "codec" not in error["message"] and "surrogates" not in error["message"]
        assert_everyone_reads_their_own(server, records)
    assert wait_for(lambda: backends(database_url, server) <= baseline + 1)
