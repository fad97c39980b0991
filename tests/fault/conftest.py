"""Fixtures of the fault suite: a PostgreSQL this suite may kill, and a gunicorn on it.

``FaultDatabase`` is an embedded server (pgserver, the project's own
``flaskstream.embedded``) in a temporary folder, never the session's shared
server: the tests SIGKILL its postmaster and start it again on the same data.
The gunicorn runs short leases and janitor intervals so that what a killed
worker left behind is gone within seconds (the defaults say minutes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from flaskstream import embedded
from tests.conftest import truncate_all
from tests.live import LiveServer, wait_for

FAULT_ENV = {
    "FLASKSTREAM_ETL_JOB_LEASE": "2",
    "FLASKSTREAM_ETL_JANITOR_INTERVAL": "0.5",
    "FLASKSTREAM_UPLOAD_STAGING_SWEEP_INTERVAL": "0.3",
    "FLASKSTREAM_TUS_LOCK_LEASE": "2",
    "FLASKSTREAM_TUS_LOCK_POLL": "0.2",
    "FLASKSTREAM_TUS_LOCK_WAIT": "8",
    "FLASKSTREAM_TUS_CHECKPOINT_BYTES": str(1 << 20),
    "FLASKSTREAM_DB_CONNECT_TIMEOUT": "2",
    "FLASKSTREAM_EVENTS_POLL_SECONDS": "0.5",
    "FLASKSTREAM_SSE_HEARTBEAT": "1",
}
RECOVERY_SECONDS = 10  # "the service answers again within seconds"


class FaultDatabase:
    def __init__(self, base: Path) -> None:
        self.pgdata = base / "pgdata"
        self.url = embedded.ensure_running(self.pgdata, own=True)

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])

    def kill_postmaster(self) -> None:
        """SIGKILL the postmaster; its backends notice and exit (killed if they linger)."""
        master = psutil.Process(self.postmaster_pid())
        children = master.children(recursive=True)
        master.kill()
        master.wait(10)
        _gone, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:  # a backend still attached to shared memory blocks the restart
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def restart(self) -> None:
        assert embedded.ensure_running(self.pgdata) == self.url

    def stop(self) -> None:
        embedded.stop(self.pgdata)


@pytest.fixture(scope="package")
def fault_db() -> Iterator[FaultDatabase]:
    base = Path(tempfile.mkdtemp(prefix="fs-fault-pg-"))
    database = FaultDatabase(base)
    try:
        yield database
    finally:
        database.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def server(fault_db: FaultDatabase, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LiveServer]:
    """One gunicorn (1 gevent worker: the one a test kills) on the fault database."""
    live = LiveServer(tmp_path_factory.mktemp("fault"), env=FAULT_ENV, workers=1,
                      database_url=fault_db.url)
    with live:
        yield live


@pytest.fixture
def clean(server: LiveServer, fault_db: FaultDatabase) -> LiveServer:
    truncate_all(fault_db.url)
    for entry in upload_dir(server).iterdir():
        if entry.is_file():
            entry.unlink()
    return server


def upload_dir(server: LiveServer) -> Path:
    return server.instance_path / "uploads"


def staging(server: LiveServer, prefix: str = "up-") -> list[Path]:
    folder = upload_dir(server) / ".staging"
    return sorted(folder.glob(f"{prefix}*.part")) if folder.exists() else []


def stored_files(server: LiveServer) -> set[str]:
    return {p.name for p in upload_dir(server).iterdir() if p.is_file()}


def listed(server: LiveServer) -> list[dict]:
    response = requests.get(f"{server.url}/uploads?limit=200", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["uploads"]


def healthy(server: LiveServer) -> bool:
    try:
        return requests.get(f"{server.url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def respawned(server: LiveServer, dead: int) -> bool:
    try:
        pids = server.worker_pids()
    except psutil.NoSuchProcess:  # the dead worker vanished while being listed
        return False
    return pids not in ([], [dead]) and healthy(server)


def kill_worker(server: LiveServer) -> tuple[int, float]:
    """SIGKILL the worker; wait for gunicorn's new one to answer. (old pid, seconds to recover)"""
    (pid,) = server.worker_pids()
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    assert wait_for(lambda: respawned(server, pid), timeout=RECOVERY_SECONDS, interval=0.1), \
        server.log()
    return pid, time.monotonic() - started


def raw_request(server: LiveServer, head: bytes, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head + body)
    return sock
