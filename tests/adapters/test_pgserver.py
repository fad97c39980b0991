"""Contract tests: what ``flaskstream.adapters.pgserver`` assumes of pgserver 0.1.4, and the
embedded server's start / restart / stop on both the private path and the public fallback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pg8000.native
import psutil
import pytest
import requests

from flaskstream import adapters, db, embedded
from flaskstream.adapters import pgserver as pa
from tests.live import ROOT, LiveServer, wait_for

pytestmark = pytest.mark.db


@pytest.mark.parametrize("name", ["pgserver.instances", "pgserver.lock", "pgserver.commands"])
def test_each_start_up_check_holds_on_the_installed_pgserver(name: str) -> None:
    cap = adapters.registered()[name]
    assert cap.check() is None
    assert cap.ok()


def test_pgserver_keeps_handles_per_data_dir_and_locks_its_public_lock_path() -> None:
    pgserver = pa.module()
    server_class = pgserver.PostgresServer
    assert isinstance(server_class._instances, dict)
    assert os.fsdecode(server_class._lock.path) == str(server_class.lock_path)  # the fallback locks this
    assert callable(pgserver.pg_ctl) and callable(pgserver.get_server)
    assert callable(server_class.ensure_postgres_running)


TRY_PGSERVER_LOCK = """
from flaskstream.adapters import pgserver as pa
lock = pa.module().PostgresServer._lock
got = lock.acquire(blocking=False)
print("acquired" if got else "busy")
"""


def _other_process_gets_pgservers_lock() -> str:
    out = subprocess.run([sys.executable, "-c", TRY_PGSERVER_LOCK], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or out.stderr


def test_the_fallback_lock_excludes_pgservers_own_lock_in_other_processes() -> None:
    adapters.reset_all("pgserver.lock")
    with pa.start_lock():  # fcntl.lockf, as fasteners does: POSIX locks are per process
        assert _other_process_gets_pgservers_lock() == "busy"
    assert _other_process_gets_pgservers_lock() == "acquired"


@pytest.fixture
def pgdata() -> Iterator[Path]:
    """Outside pytest's basetemp (reset to 0700 per session: the pgserver user, as root,
    could not enter it)."""
    base = Path(tempfile.mkdtemp(prefix="fs-adapters-"))
    yield base / "pgdata"
    embedded.stop(base / "pgdata")
    shutil.rmtree(base, ignore_errors=True)


def _postmasters(pgdata: Path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and str(pgdata) in " ".join(p.info["cmdline"] or [])]


def _select_one(uri: str) -> list[list[int]]:
    con = pg8000.native.Connection(**db.connect_kwargs(uri))
    try:
        return con.run("SELECT 1")
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.parametrize("disabled", ["", "pgserver"])
def test_start_stop_restart_and_stop_again(pgdata: Path, disabled: str) -> None:
    adapters.reset_all(disabled)
    assert [cap.ok() for name, cap in adapters.registered().items()
            if name.startswith("pgserver.")] == [not disabled] * 3
    uri = embedded.ensure_running(pgdata, own=False)
    assert _select_one(uri) == [[1]]
    postmaster = [p for p in _postmasters(pgdata) if p.ppid() not in
                  {q.pid for q in _postmasters(pgdata)}]
    info = pa.module().utils.PostmasterInfo.read_from_pgdata(pgdata)
    assert info is not None and info.is_running() and info.status == "ready"
    assert [p.pid for p in postmaster] == [info.pid]  # what the fallback signals
    embedded.stop(pgdata)
    assert wait_for(lambda: not _postmasters(pgdata), 15) and embedded.running_uri(pgdata) is None
    again = embedded.ensure_running(pgdata, own=False)  # restarts through this process's handle
    assert _select_one(again) == [[1]]
    embedded.stop(pgdata)
    assert wait_for(lambda: not _postmasters(pgdata), 15)


@pytest.mark.slow
@pytest.mark.live
def test_gunicorn_master_owns_and_stops_the_server_on_the_fallbacks(pgdata: Path) -> None:
    """The master's hooks read FLASKSTREAM_ADAPTERS_DISABLE themselves (no create_app there):
    start, serve, and leave no postgres behind on the public paths."""
    instance = pgdata.parent / "instance"
    server = LiveServer(instance, env={"FLASKSTREAM_ADAPTERS_DISABLE": "pgserver"})
    with server:
        assert requests.get(server.url + "/healthz", timeout=10).json() == {"status": "ok", "db": "ok"}
        served = embedded.pgdata_path(str(instance))
        assert _postmasters(served)
    assert wait_for(lambda: not _postmasters(served), 15), server.log()
    assert "adapter pgserver.commands: disabled by ADAPTERS_DISABLE" in server.log()
