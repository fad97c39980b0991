"""``POST /etl/jobs?upload=<id>`` and ``flask etl load --upload`` read the upload through
the storage interface: an upload stored in the bucket loads like a local one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flaskstream import create_app, db
from tests.etl.helpers import query, users_csv
from tests.storage.moto import S3Bucket

pytestmark = pytest.mark.db
MiB = 1 << 20


def test_an_upload_in_the_bucket_is_loaded(app_config: dict[str, Any], s3_bucket: S3Bucket,
                                           clean_db: str) -> None:
    app = create_app({**app_config, "STORAGE_URL": s3_bucket.url(),
                      "STORAGE_PART_SIZE": 5 * MiB})
    try:
        client = app.test_client()
        data = users_csv(200_000)  # ~7.6 MB: more than one part, read back in chunks
        assert len(data) > 5 * MiB
        put = client.put("/uploads/users.csv", data=data, headers={"Content-Type": "text/csv"})
        assert put.status_code == 201, put.json
        uid = put.json["id"]
        assert not (Path(app.config["UPLOAD_DIR"]) / uid).exists()  # only in the bucket
        res = client.post(f"/etl/jobs?table=users&upload={uid}")
        assert res.status_code == 201, res.json
        assert res.json["rows_loaded"] == 200_000
        assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[200_000]]
        query(clean_db, "TRUNCATE flaskstream.users")
        result = app.test_cli_runner().invoke(
            args=["etl", "load", "--upload", uid, "--table", "users", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output.splitlines()[0])["rows_loaded"] == 200_000
        assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[200_000]]
    finally:
        db.get_database(app).close_all()
