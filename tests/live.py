"""A real gunicorn (gevent worker, conf/gunicorn.conf.py) for end-to-end tests.

Started as a subprocess on a free 127.0.0.1 port with its own instance and
upload folders, ready once ``/healthz`` answers 200, stopped by PID (SIGTERM,
then SIGKILL after a grace period). Used by the ``live_server`` fixtures and by
the benchmarks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(
        self,
        instance_path: Path,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        database_url: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.instance_path = Path(instance_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path or self.instance_path / "gunicorn.log"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("FLASKSTREAM_") and k != "DATABASE_URL"}
        self.env.update({
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": str(workers),
            "FLASKSTREAM_INSTANCE_PATH": str(self.instance_path),
            "GUNICORN_ACCESSLOG": "",
            "GUNICORN_GRACEFUL_TIMEOUT": "5",
            "PYTHONUNBUFFERED": "1",
        })
        if database_url:
            self.env["FLASKSTREAM_DATABASE_URL"] = database_url
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> LiveServer:
        self.instance_path.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's life
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "conf/gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200 \
                        and len(self.worker_pids()) >= self.workers:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn not healthy within {timeout}s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [c.pid for c in children if "postgres" not in c.name()]

    def worker_rss(self) -> dict[int, int]:
        rss = {}
        for pid in self.worker_pids():
            try:
                rss[pid] = psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return rss

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM the master and wait; SIGKILL the group if it does not go."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(self.pid).children(recursive=True):
                child.kill()
            self.process.kill()
            return self.process.wait(5)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
