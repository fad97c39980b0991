"""The staging janitor: request staging files of dead writers go within minutes.

A multipart or raw upload writes ``UPLOAD_DIR/.staging/up-<random>_<pid>@<host>.part``
and removes it in its ``finally``; a worker killed hard (SIGKILL, OOM) runs no
``finally``, and the start-up sweep waits a day (``sweep_staging``). Each
worker runs ``sweep_dead`` every ``UPLOAD_STAGING_SWEEP_INTERVAL`` s
(``flaskstream/janitors.py``). Rules, per owner (pid + host in the name):

- **this host, process gone**: removed at once (nobody can write it again);
- **this host, process alive**: never touched — its request removes it (a pid
  reused by a new process keeps files until the start-up sweep's day is up);
- **another host, or a name without an owner**: removed when *no* file of that
  owner was modified for ``ttl`` s. Judging the owner's newest file, not each
  file, keeps the finished first file of a multipart request whose second file
  is still streaming. The caller keeps ``ttl`` above ``UPLOAD_IDLE_TIMEOUT``,
  the longest a live request goes without writing.

tus staging files (``tus-*``) are not swept here: they belong to a resumable
upload, not to the request that wrote them, and go when it expires.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from flaskstream.uploads.storage import STAGING_SUFFIX, staging_dir, staging_host

OWNED_NAME = re.compile(r"[a-z]+-[0-9a-f]{32}_(?P<pid>[0-9]{1,10})@(?P<host>[A-Za-z0-9.-]{1,64})"
                        + re.escape(STAGING_SUFFIX))
Owner = tuple[int, str] | None  # (pid, host), None: unknown


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks, sends nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def owner_of(name: str) -> Owner:
    match = OWNED_NAME.fullmatch(name)
    return (int(match["pid"]), match["host"]) if match else None


def sweep_dead(upload_dir: str | os.PathLike[str], ttl: float, *, prefix: str = "up-",
               alive: Callable[[int], bool] = pid_alive, host: str | None = None,
               now: float | None = None) -> list[str]:
    """Remove staging files whose writer is gone (rules above); return their names."""
    host = host or staging_host()
    now = time.time() if now is None else now
    files: list[tuple[Path, Owner]] = []
    newest: dict[Owner, float] = {}
    for entry in os.scandir(staging_dir(upload_dir)):
        if not (entry.name.startswith(prefix) and entry.name.endswith(STAGING_SUFFIX)):
            continue
        try:
            mtime = entry.stat().st_mtime
        except FileNotFoundError:  # finished or discarded meanwhile
            continue
        owner = owner_of(entry.name)
        files.append((Path(entry.path), owner))
        newest[owner] = max(newest.get(owner, mtime), mtime)
    removed: list[str] = []
    verdicts: dict[Owner, bool] = {}
    for path, owner in files:
        if owner not in verdicts:
            if owner is not None and owner[1] == host:
                verdicts[owner] = not alive(owner[0])
            else:
                verdicts[owner] = newest[owner] < now - ttl
        if verdicts[owner]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(path.name)
    return removed
