"""``flask etl`` as a real process: stdin input, exit statuses, no tracebacks.

CliRunner turns an escaped exception into exit code 1 too, so these run the
command the way an operator does and read its real status and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.etl.helpers import query, users_csv
from tests.live import ROOT

pytestmark = pytest.mark.db


def flask_etl(args: list[str], database_url: str, tmp_path: Path,
              stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASKSTREAM_")}
    env.update(DATABASE_URL=database_url, FLASKSTREAM_INSTANCE_PATH=str(tmp_path / "inst"))
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "etl", *args],
                          cwd=ROOT, env=env, input=stdin, capture_output=True, timeout=60)


def test_load_from_stdin_then_bad_input_exits_1_with_one_line(clean_db, tmp_path):
    done = flask_etl(["load", "-", "--json"], clean_db, tmp_path, users_csv(20, bad_every=10))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[0])
    assert (summary["status"], summary["rows_loaded"], summary["rows_rejected"]) == ("done", 18, 2)
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[18]]
    exported = flask_etl(["export", "--table", "users", "--output", "-"], clean_db, tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.decode().splitlines()
    assert lines[0] == "id,email,age,name" and len(lines) == 19
    assert "user0@example.com,0,User 0" in lines[1]

    bad = flask_etl(["load", "-"], clean_db, tmp_path, b"mail,age\nx@y.io,1\n")
    assert bad.returncode == 1
    assert b"Error: header is missing required column(s) email" in bad.stderr
    assert b"Traceback" not in bad.stderr + bad.stdout
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[18]]


def test_unreachable_database_is_a_clear_error(tmp_path):
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path}"  # no socket there
    result = flask_etl(["load", "-"], nowhere, tmp_path, users_csv(2))
    assert result.returncode == 1
    last = result.stderr.decode().splitlines()[-1]
    assert last.startswith("Error: ") and ("database" in last or "connection" in last), last
    assert b"Traceback" not in result.stderr + result.stdout
