"""``POST /etl/jobs?upload=<id>`` reads the upload: only a caller who may read it (its
owner, or read claims covering it) can load it, as ``GET /uploads/<id>/content``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth.helpers import bearer, token, token_config
from tests.etl.helpers import query, users_csv

pytestmark = pytest.mark.db


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, **token_config()}


def test_a_stored_upload_loads_only_for_a_caller_who_may_read_it(client, clean_db):
    alice = bearer(token(sub="alice", write=["/uploads", "/etl/jobs"]))
    bob = bearer(token(sub="bob", write=["/uploads", "/etl/jobs"]))
    reader = bearer(token(sub="carol", write=["/etl/jobs"], read=["/uploads/*"]))
    stored = client.put("/uploads/users.csv", data=users_csv(5), headers=alice)
    assert stored.status_code == 201, stored.get_json()
    uid = stored.get_json()["id"]
    refused = client.post(f"/etl/jobs?upload={uid}", headers=bob)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "FORBIDDEN"
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[0]]
    assert query(clean_db, "SELECT count(*) FROM flaskstream.etl_jobs") == [[0]]
    assert client.post(f"/etl/jobs?upload={uid}", headers=alice).status_code == 201
    assert client.post(f"/etl/jobs?upload={uid}&mode=upsert", headers=reader).status_code == 201
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[5]]
