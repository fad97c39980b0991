"""Loading a stored upload: ``POST /etl/jobs?upload=<id>`` and ``flask etl load --upload <id>``.

The same CSV of ``public.customers`` (test_anytable.py) is stored by ``PUT
/uploads/<name>`` (test client) or over tus (live gunicorn), then loaded with
its rejects and progress events.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import requests

from tests.etl.helpers import query
from tests.etl.test_anytable import BAD, GOOD, customers, customers_csv  # noqa: F401 - fixture
from tests.tus.live_support import OCTETS, TOKEN, TUS, upload_id

pytestmark = pytest.mark.db
LISTED = ["users", "requests", "public.customers"]


def store(client: Any, data: bytes) -> str:
    resp = client.put("/uploads/customers.csv", data=data, headers={"Content-Type": "text/csv"})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def test_http_loads_a_stored_upload_into_a_listed_table(app, client, customers):  # noqa: F811
    app.config["ETL_TABLES"] = LISTED
    uid = store(client, customers_csv())
    resp = client.post(f"/etl/jobs?table=public.customers&upload={uid}")
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert (body["rows_loaded"], body["rows_rejected"]) == (len(GOOD), len(BAD))
    assert query(customers, "SELECT source FROM flaskstream.etl_jobs WHERE id = :j", j=body["job"]) == \
        [[f"upload:{uid} (customers.csv)"]]
    missing = client.post("/etl/jobs?table=public.customers&upload=" + "0" * 32)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "NO_SUCH_UPLOAD"
    not_listed = client.post(f"/etl/jobs?table=public.nope&upload={uid}")
    assert not_listed.status_code == 403
    assert query(customers, "SELECT count(*) FROM flaskstream.etl_jobs") == [[1]]


def test_cli_loads_a_stored_upload(runner, client, customers):  # noqa: F811
    uid = store(client, customers_csv())
    result = runner.invoke(args=["etl", "load", "--upload", uid, "--table", "public.customers",
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.splitlines()[0])
    assert (summary["rows_loaded"], summary["rows_rejected"]) == (len(GOOD), len(BAD))
    result = runner.invoke(args=["etl", "load", "--upload", "f" * 32, "--table", "public.customers"])
    assert result.exit_code == 1 and "no stored upload" in result.output
    result = runner.invoke(args=["etl", "load", "x.csv", "--upload", uid])
    assert result.exit_code == 2  # PATH or --upload, not both


@pytest.mark.live
def test_a_tus_upload_loads_with_live_progress(start_live_server, customers):  # noqa: F811
    """A resumable upload in two PATCHes, then a load of it with its events on ``etl.<id>``."""
    rows = [customers_csv().decode().splitlines()[0]] + [
        f"u{i}@x.io,User {i},{i % 100},1.5,2,t,2000-01-01,,,,,,free," for i in range(60_000)]
    data = ("\n".join(rows) + "\n").encode()
    server = start_live_server(env={"FLASKSTREAM_API_TOKEN": TOKEN,
                                    "FLASKSTREAM_ETL_TABLES": ",".join(LISTED)})
    created = requests.post(f"{server.url}/uploads/tus/", headers={
        **TUS, "Upload-Length": str(len(data))}, timeout=10)
    url = server.url + created.headers["Location"]
    half = len(data) // 2
    for offset, part in ((0, data[:half]), (half, data[half:])):
        patched = requests.patch(url, data=part, headers={
            **TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS}, timeout=30)
        assert patched.status_code == 204
    events: list[str] = []
    stream = requests.get(f"{server.url}/events/etl.tusjob", stream=True, timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"})

    def listen() -> None:
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                events.append(line[7:])
                if line[7:] in ("done", "error"):
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    loaded = requests.post(f"{server.url}/etl/jobs?table=public.customers&job=tusjob"
                           f"&upload={upload_id(url)}&batch_size=5000",
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["rows_loaded"] == 60_000
    listener.join(30)
    stream.close()
    assert events and events[-1] == "done" and "progress" in events, events
    assert query(customers, "SELECT count(*) FROM public.customers") == [[60_000]]
