"""Loads against the real PostgreSQL: CLI, run_load and the sink's failure paths."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path

import pytest

from flaskstream import db
from flaskstream.etl.jobs import RejectsFile, run_load
from flaskstream.etl.sink import LoadOptions
from flaskstream.etl.tables import USERS
from tests.etl.helpers import chunked, query, users_csv

pytestmark = pytest.mark.db


def load(runner, path: Path, *args: str):
    result = runner.invoke(args=["etl", "load", str(path), "--json", *args])
    summary = json.loads(result.output.splitlines()[0]) if result.output.startswith("{") else None
    return result, summary


def users(url: str) -> list[list]:
    return query(url, "SELECT email, age, name FROM flaskstream.users ORDER BY email")


def test_valid_and_invalid_rows_are_loaded_and_rejected_with_reasons(runner, clean_db, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"email,age,name\n"
                    b"A@X.io,1, Ann \n"
                    b"b@x.io,abc,Bob\n"
                    b"c@x.io,3,\"multi\nline\"\n"
                    b"nope,4,D\n"
                    b"a@x.io,5,dup of line 2\n")
    rejects = tmp_path / "rejects.csv"
    result, summary = load(runner, src, "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == (5, 2, 3)
    assert users(clean_db) == [["a@x.io", 1, "Ann"], ["c@x.io", 3, "multi\nline"]]
    assert rejects.read_text().splitlines() == [
        "line,reason,text",
        "3,age: not a valid integer: 'abc',\"b@x.io,abc,Bob\"",
        "6,email: not a plausible email address: 'nope',\"nope,4,D\"",
        '7,"duplicate key value violates unique constraint ""users_email_key"" '
        '(Key (email)=(a@x.io) already exists.)","a@x.io,5,dup of line 2"',
    ]
    stored = query(clean_db, "SELECT line, left(reason, 20) FROM flaskstream.etl_rejects WHERE job_id = :j "
                   "ORDER BY line", j=summary["job"])
    assert stored == [[3, "age: not a valid int"], [6, "email: not a plausib"],
                      [7, "duplicate key value "]]
    job = query(clean_db, "SELECT status, rows_read, rows_loaded, rows_rejected FROM flaskstream.etl_jobs")
    assert job == [["done", 5, 2, 3]]


def test_bom_non_utf8_and_sql_shaped_values(runner, clean_db, tmp_path):
    src = tmp_path / "in.csv"
    evil = "x'); DROP TABLE users; --\t\\N"
    src.write_bytes("\ufeffemail,age,name\n".encode() + f'e@x.io,1,"{evil}"\n'.encode()
                    + b"f@x.io,2,caf\xe9\n")
    result, summary = load(runner, src)
    assert result.exit_code == 0, result.output
    assert users(clean_db) == [["e@x.io", 1, evil]]
    assert summary["rows_rejected"] == 1


def test_missing_required_column_fails_before_any_write(runner, clean_db, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"mail,age\nx@y.io,1\n")
    result = runner.invoke(args=["etl", "load", str(src)])
    assert result.exit_code == 1
    assert "Error: header is missing required column(s) email for table users" in result.output
    assert "Traceback" not in result.output
    assert users(clean_db) == []
    assert query(clean_db, "SELECT status FROM flaskstream.etl_jobs") == [["failed"]]


def test_gzip_and_empty_file(runner, clean_db, tmp_path):
    src = tmp_path / "in.csv.gz"
    src.write_bytes(gzip.compress(users_csv(3)))
    assert load(runner, src)[1]["rows_loaded"] == 3
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result, summary = load(runner, empty)
    assert result.exit_code == 0 and summary["rows_read"] == 0 and summary["status"] == "done"


def test_bad_input_is_a_clear_error(runner, clean_db, tmp_path):
    result = runner.invoke(args=["etl", "load", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1 and "cannot read" in result.output
    trunc = tmp_path / "t.csv.gz"
    trunc.write_bytes(gzip.compress(users_csv(2000))[:-30])
    result = runner.invoke(args=["etl", "load", str(trunc)])
    assert result.exit_code == 1 and "Error: truncated gzip input" in result.output
    assert users(clean_db) == []


def test_max_errors_aborts_and_rolls_back(runner, clean_db, tmp_path):
    query(clean_db, "INSERT INTO flaskstream.users (email, age) VALUES ('keep@x.io', 1)")
    src = tmp_path / "in.csv"
    src.write_bytes(users_csv(3000, bad_every=100))  # 30 bad rows
    result = runner.invoke(args=["etl", "load", str(src), "--max-errors", "10",
                                 "--batch-size", "500"])
    assert result.exit_code == 1
    assert "rows rejected, more than --max-errors 10; nothing was loaded" in result.output
    assert users(clean_db) == [["keep@x.io", 1, None]]
    result = runner.invoke(args=["etl", "load", str(src), "--max-error-ratio", "0.001"])
    assert result.exit_code == 1 and "more than 0.1%" in result.output
    assert load(runner, src, "--max-errors", "30")[1]["rows_loaded"] == 2970


def test_upsert_is_idempotent_and_updates(runner, clean_db, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"email,age,name\na@x.io,1,A\nb@x.io,2,B\na@x.io,3,A again\n")
    for _ in range(2):
        result, summary = load(runner, src, "--mode", "upsert")
        assert summary["status"] == "done", result.output
        assert users(clean_db) == [["a@x.io", 3, "A again"], ["b@x.io", 2, "B"]]
    src.write_bytes(b"email,age,name\nb@x.io,20,\n")
    load(runner, src, "--mode", "upsert")
    assert users(clean_db) == [["a@x.io", 3, "A again"], ["b@x.io", 20, None]]


def test_dry_run_writes_nothing(runner, clean_db, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(users_csv(10, bad_every=5))
    result, summary = load(runner, src, "--dry-run")
    assert (summary["rows_loaded"], summary["rows_rejected"]) == (8, 2)
    assert users(clean_db) == [] and query(clean_db, "SELECT count(*) FROM flaskstream.etl_jobs") == [[0]]


def _kill_on_first_progress(url: str):
    """Terminate the load's backend at its first progress event with rows read.

    ``pg_terminate_backend(pid, timeout)`` waits until the backend has exited,
    so the loader's next statement fails for certain: without the wait, a loaded
    machine could let one more COMMIT through and move the checkpoint.
    """
    pid: list[int] = []
    killed = threading.Event()

    def on_connect(con) -> None:
        pid.append(con.run("SELECT pg_backend_pid()")[0][0])

    def on_progress(event: str, data: dict) -> None:
        if event == "progress" and pid and not killed.is_set() and data["rows_read"]:
            killed.set()
            assert query(url, "SELECT pg_terminate_backend(:p, 10000)", p=pid[0]) == [[True]]

    return on_connect, on_progress, killed


def _kill_after_first_commit(url: str):
    """Like ``_kill_on_first_progress``, but in the second batch, after one commit."""
    on_connect, on_progress, killed = _kill_on_first_progress(url)
    seen: list[int] = []

    def later(event: str, data: dict) -> None:
        if data["rows_loaded"] and not seen:
            seen.append(data["rows_loaded"])
        elif seen and data["rows_loaded"] > seen[0]:
            on_progress(event, data)

    return on_connect, later, killed


def test_connection_killed_mid_load_leaves_table_unchanged(app, clean_db):
    on_connect, on_progress, killed = _kill_on_first_progress(clean_db)
    data = users_csv(60_000)
    with app.app_context():
        result = run_load(db.get_database(), chunked(data, 65536), USERS,
                          LoadOptions(batch_rows=5000, chunk_size=65536),
                          on_connect=on_connect, on_progress=on_progress)
    assert killed.is_set()
    assert result["status"] == "failed"
    assert result["error"]["code"] in ("DATABASE_CONNECTION_LOST", "DATABASE_ERROR")
    assert users(clean_db) == []
    assert query(clean_db, "SELECT status, error IS NOT NULL FROM flaskstream.etl_jobs") == [["failed", True]]


def test_commit_every_keeps_checkpointed_rows_after_a_kill(app, clean_db):
    on_connect, later, killed = _kill_after_first_commit(clean_db)
    data = users_csv(60_000)
    with app.app_context():
        result = run_load(db.get_database(), chunked(data, 8192), USERS,
                          LoadOptions(batch_rows=1000, chunk_size=8192, commit_every=1000),
                          on_connect=on_connect, on_progress=later, progress_interval=0)
    assert result["status"] == "failed" and killed.is_set()
    committed, line, offset = query(
        clean_db, "SELECT rows_committed, checkpoint_line, checkpoint_offset FROM flaskstream.etl_jobs")[0]
    assert committed >= 1000 and users(clean_db)[0][0].startswith("user")
    assert query(clean_db, "SELECT count(*) FROM flaskstream.users") == [[committed]]
    assert line == committed + 1  # header + one line per row
    assert offset == len(b"\n".join(data.split(b"\n")[:line])) + 1


def test_resume_from_checkpoint_loads_the_rest_exactly_once(app, runner, clean_db, tmp_path):
    on_connect, later, killed = _kill_after_first_commit(clean_db)
    src = tmp_path / "in.csv.gz"
    data = "\ufeffemail,age,name\n".encode() + users_csv(20_000, bad_every=1000)[15:]
    src.write_bytes(gzip.compress(data))
    with app.app_context(), open(src, "rb") as handle:
        first = run_load(db.get_database(), handle, USERS,
                         LoadOptions(batch_rows=1000, chunk_size=8192, commit_every=1000),
                         job_id="first", on_connect=on_connect, on_progress=later,
                         progress_interval=0)
    assert first["status"] == "failed" and killed.is_set()
    committed, line = query(clean_db, "SELECT rows_committed, checkpoint_line FROM flaskstream.etl_jobs")[0]
    bad_lines = [n + 2 for n in range(999, 20_000, 1000)]  # header is line 1
    assert 0 < committed < 19_980
    assert committed == line - 1 - sum(b <= line for b in bad_lines)
    result, summary = load(runner, src, "--resume", "first", "--commit-every", "5000",
                           "--rejects", str(tmp_path / "r.csv"))
    assert result.exit_code == 0, result.output
    assert query(clean_db, "SELECT count(*), count(DISTINCT email) FROM flaskstream.users") == \
        [[19_980, 19_980]]
    rejected_lines = [int(r.split(",")[0]) for r in
                      (tmp_path / "r.csv").read_text().splitlines()[1:]]
    assert rejected_lines == [b for b in bad_lines if b > line]  # only lines after the checkpoint
    again = runner.invoke(args=["etl", "load", str(src), "--resume", summary["job"]])
    assert again.exit_code == 1 and "no checkpoint to resume from" in again.output


def test_export_round_trip(runner, clean_db, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b'email,age,name\na@x.io,1,"quote "" and, comma"\nb@x.io,2,\n'
                    + "c@x.io,3,\"new\nline ünï\"\n".encode())
    assert load(runner, src)[1]["rows_loaded"] == 3
    out = tmp_path / "out.csv"
    result = runner.invoke(args=["etl", "export", "--table", "users", "--output", str(out)])
    assert result.exit_code == 0, result.output
    before = users(clean_db)
    query(clean_db, "TRUNCATE flaskstream.users")
    assert load(runner, out)[1]["rows_loaded"] == 3
    assert users(clean_db) == before
    result = runner.invoke(args=["etl", "export", "--table", "pg_class"])
    assert result.exit_code == 1 and "no table or view named 'pg_class'" in result.output


def test_logs_command(runner, clean_db, tmp_path):
    log = tmp_path / "access.log"
    log.write_text(
        '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 '
        '"http://x/" "Mozilla/4.08"\n'
        'garbage line\n'
        '::1 - - [11/Nov/2024:01:02:03 +0000] "POST /etl/jobs HTTP/1.1" 201 - "-" "curl/8"\n')
    result = runner.invoke(args=["etl", "logs", str(log), "--json"])
    summary = json.loads(result.output.splitlines()[0])
    assert (summary["rows_loaded"], summary["rows_rejected"]) == (2, 1)
    rows = query(clean_db, "SELECT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), "
                 "method, path, status, bytes, referrer, agent FROM flaskstream.requests ORDER BY id")
    assert rows == [["2000-10-10 20:55:36", "GET", "/a.gif", 200, 2326, "http://x/",
                     "Mozilla/4.08"],
                    ["2024-11-11 01:02:03", "POST", "/etl/jobs", 201, None, None, "curl/8"]]


def test_jobs_and_init_db(runner, clean_db, tmp_path):
    assert runner.invoke(args=["etl", "init-db"]).output.strip() == "schema ready"
    assert runner.invoke(args=["etl", "jobs"]).output.strip() == "no jobs"
    src = tmp_path / "in.csv"
    src.write_bytes(users_csv(2))
    summary = load(runner, src, "--job", "nightly-1")[1]
    assert summary["job"] == "nightly-1"
    out = runner.invoke(args=["etl", "jobs"]).output
    assert "nightly-1" in out and "done" in out
    again = runner.invoke(args=["etl", "load", str(src), "--job", "nightly-1"])
    assert again.exit_code == 1 and "exists already" in again.output


def test_rejects_file_keeps_original_bytes(app, clean_db, tmp_path):
    path = tmp_path / "r.csv"
    with app.app_context():
        run_load(db.get_database(), iter([b"email,age\na@x.io,\xff\xfe\n"]), USERS,
                 LoadOptions(), rejects=RejectsFile(str(path)))
    assert path.read_bytes().splitlines()[1].endswith(b'"a@x.io,\xff\xfe"')
