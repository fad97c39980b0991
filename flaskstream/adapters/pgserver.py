"""pgserver 0.1.4 internals, behind named capabilities.

pgserver caches one ``PostgresServer`` handle per data directory and process
(``PostgresServer._instances``), serialises starts across processes with a file
lock (``PostgresServer._lock``, a fasteners ``InterProcessLock`` on the public
``PostgresServer.lock_path``) and makes its ``pg_ctl`` wrapper at import time
(re-exported as ``pgserver.pg_ctl``). Capabilities
(``tests/adapters/test_pgserver.py`` pins each):

``pgserver.instances``  ``cached_server(pgdata)``: this process's handle for
    ``pgdata``, to restart a server it started before. Fallback: the public
    ``get_server(pgdata, cleanup_mode=None)``, which returns that same cached handle
    (its restart then goes through ``ensure_postgres_running`` as well).
``pgserver.lock``  ``start_lock()``: pgserver's own inter-process lock. Fallback: a
    POSIX record lock (``fcntl.lockf``, the call fasteners makes) on the same
    ``lock_path``, so the two still exclude each other.
``pgserver.commands``  ``stop_server(pgdata, info)``: ``pg_ctl stop -m fast``.
    Fallback: SIGINT to the postmaster (PostgreSQL's documented fast shutdown),
    then wait for it to exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flaskstream.adapters.registry import capability


def module() -> Any:
    """Import pgserver quietly: as root without XDG_RUNTIME_DIR, platformdirs warns
    at import that it falls back to /tmp/runtime-0 — expected here, and noise in
    every ``flask`` command's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver
        import pgserver.utils

    return pgserver


def _check_instances() -> str | None:
    instances = getattr(module().PostgresServer, "_instances", None)
    if not isinstance(instances, dict):
        return "PostgresServer._instances is no longer a dict"
    return None


def _check_lock() -> str | None:
    lock = getattr(module().PostgresServer, "_lock", None)
    if not (callable(getattr(lock, "__enter__", None)) and callable(getattr(lock, "__exit__", None))):
        return "PostgresServer._lock is no longer a context manager"
    return None


def _check_commands() -> str | None:
    if not callable(getattr(module(), "pg_ctl", None)):
        return "pgserver.pg_ctl is gone"
    return None


INSTANCES = capability("pgserver.instances", _check_instances, "get_server()")
LOCK = capability("pgserver.lock", _check_lock, "fcntl.lockf on PostgresServer.lock_path")
COMMANDS = capability("pgserver.commands", _check_commands, "SIGINT to the postmaster")


def cached_server(pgdata: Path) -> Any:
    """This process's pgserver handle for ``pgdata``, or None if it made none."""
    pgserver = module()
    resolved = pgdata.resolve()
    if INSTANCES.ok():
        return pgserver.PostgresServer._instances.get(resolved)
    if not resolved.exists():  # get_server would create a handle (and start a server)
        return None
    # get_server returns the cached handle when there is one; without one it
    # builds (and starts) a new handle, which is what the caller does next anyway.
    return pgserver.get_server(resolved, cleanup_mode=None)


@contextlib.contextmanager
def start_lock() -> Iterator[None]:
    """pgserver's inter-process lock around a (re)start."""
    server_class = module().PostgresServer
    if LOCK.ok():
        with server_class._lock:
            yield
        return
    path = Path(server_class.lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def stop_server(pgdata: Path, pid: int, *, user: str | None, timeout: float = 30) -> None:
    """Fast shutdown of the postmaster ``pid`` serving ``pgdata``; waits until it is gone.

    Raises ``subprocess.CalledProcessError``/``TimeoutExpired`` (pg_ctl) or
    ``TimeoutError`` (fallback) when it does not stop in time.
    """
    if COMMANDS.ok():
        module().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=timeout)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"postmaster {pid} still running after {timeout} s")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A stopped child of ours stays a zombie until reaped; the postmaster is pg_ctl's.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return Path(f"/proc/{pid}").exists() and _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
