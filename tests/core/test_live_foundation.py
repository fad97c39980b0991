"""The foundation end to end: real gunicorn (gevent), real PostgreSQL.

These start their own servers (embedded PostgreSQL in a temporary instance
folder, or a second server for DATABASE_URL) because what they prove is how
the service owns and survives its database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pg8000.native
import psutil
import pytest
import requests

from flaskstream import db, embedded
from tests import live
from tests.live import ROOT, LiveServer

pytestmark = [pytest.mark.live, pytest.mark.db]


def postmasters(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(cmdline):
            found.append(proc)
    return found


def wait_for(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    return live.wait_for(predicate, timeout, interval=0.1)


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder outside pytest's basetemp: pytest resets /tmp/pytest-of-<user> to
    0700 whenever a session starts, which would lock out the ``pgserver`` user
    that PostgreSQL runs as when we are root."""
    path = Path(tempfile.mkdtemp(prefix="fs-live-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_embedded_postgres_is_shared_kept_and_stopped(outside_tmp: Path) -> None:
    instance = outside_tmp / "instance"
    pgdata = embedded.pgdata_path(str(instance))
    server = LiveServer(instance, workers=2)  # no database URL at all
    with server:
        assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok", "db": "ok"}
        assert len(server.worker_pids()) == 2
        assert len(postmasters(pgdata)) == 1, "both workers must share one embedded server"
        # Both workers connected to that one server.
        uri = embedded.running_uri(pgdata)
        assert uri is not None
        con = pg8000.native.Connection(**db.connect_kwargs(uri))
        workers = set(server.worker_pids())

        def connected_workers() -> set[int]:
            rows = con.run("SELECT application_name FROM pg_stat_activity "
                           "WHERE application_name LIKE 'flaskstream:%'")
            return {int(r[0].split(":")[1]) for r in rows} & workers

        # Which worker accepts a connection is up to the kernel: keep requests in
        # flight concurrently until each worker has served one (and so connected).
        with ThreadPoolExecutor(16) as pool:
            deadline = time.monotonic() + 30
            while connected_workers() != workers and time.monotonic() < deadline:
                list(pool.map(lambda _: requests.get(server.url + "/healthz", timeout=5), range(64)))
        assert connected_workers() == workers, "both workers use the one embedded server"
        con.run("CREATE TABLE kept (v text)")
        con.run("INSERT INTO kept VALUES ('survives restarts')")
        con.close()
    assert wait_for(lambda: not postmasters(pgdata)), "gunicorn left postgres running"

    with LiveServer(instance, workers=1) as again:
        assert requests.get(again.url + "/healthz", timeout=5).status_code == 200
        con = pg8000.native.Connection(**db.connect_kwargs(embedded.running_uri(pgdata) or ""))
        assert con.run("SELECT v FROM kept") == [["survives restarts"]]
        con.close()
    assert wait_for(lambda: not postmasters(pgdata))


@pytest.fixture
def second_postgres(outside_tmp: Path) -> Iterator[Path]:
    pgdata = outside_tmp / "second" / "pgdata"
    embedded.ensure_running(pgdata, own=False)
    yield pgdata
    embedded.stop(pgdata)


@pytest.mark.slow
def test_database_url_is_used_and_health_follows_the_database(
    second_postgres: Path, tmp_path: Path
) -> None:
    url = embedded.running_uri(second_postgres)
    assert url is not None
    with LiveServer(tmp_path / "inst", database_url=url) as server:
        health = requests.get(server.url + "/healthz", timeout=5)
        assert health.json() == {"status": "ok", "db": "ok"}
        con = pg8000.native.Connection(**db.connect_kwargs(url))
        # The schema was created in *this* server, and no embedded one was started.
        assert con.run("SELECT value FROM flaskstream.flaskstream_meta WHERE key = 'schema'") == [["1"]]
        con.close()
        assert not (tmp_path / "inst" / "pgdata").exists()

        embedded.stop(second_postgres)
        down = requests.get(server.url + "/healthz", timeout=10)
        assert down.status_code == 503
        assert down.json()["status"] == "degraded"
        assert down.json()["db"] != "ok"
        assert requests.get(server.url + "/", timeout=5).status_code == 200  # still serving

        embedded.ensure_running(second_postgres, own=False)
        ok = wait_for(lambda: requests.get(server.url + "/healthz", timeout=5).status_code == 200)
        assert ok, requests.get(server.url + "/healthz", timeout=5).text + server.log()
        assert server.process is not None and server.process.poll() is None  # no restart


def test_flask_routes_command_lists_the_contract(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASKSTREAM_")}
    env["FLASKSTREAM_INSTANCE_PATH"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "routes"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "/healthz" in out
    assert "core.index" in out
