"""The staging janitor's rules (``flaskstream/uploads/janitor.py``), on a real folder.

The live version (a SIGKILLed worker's file goes, a slow live upload survives)
is in ``tests/fault/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flaskstream.uploads import janitor, storage

HEX = "0123456789abcdef" * 2


def staged(tmp_path: Path, name: str, age: float = 0) -> Path:
    path = storage.staging_dir(tmp_path) / name
    path.write_bytes(b"x")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def names(tmp_path: Path) -> set[str]:
    return {p.name for p in storage.staging_dir(tmp_path).iterdir()}


def test_new_staging_files_name_their_writer(tmp_path: Path) -> None:
    with storage.StagingFile.create(tmp_path) as staging:
        assert janitor.owner_of(staging.name) == (os.getpid(), storage.staging_host())


def test_files_of_a_dead_local_process_go_at_once_live_ones_never(tmp_path: Path) -> None:
    host = storage.staging_host()
    dead = staged(tmp_path, f"up-{HEX}_999001@{host}.part")  # fresh, but its writer is gone
    live = staged(tmp_path, f"up-{'a' * 32}_{os.getpid()}@{host}.part", age=86_000)
    removed = janitor.sweep_dead(tmp_path, ttl=60, alive=lambda pid: pid == os.getpid())
    assert removed == [dead.name]
    assert names(tmp_path) == {live.name}  # a slow upload of a live process: kept however old


def test_other_hosts_and_unknown_owners_go_after_the_ttl_judged_by_the_owners_newest_file(
        tmp_path: Path) -> None:
    first = staged(tmp_path, f"up-{'1' * 32}_7@other-host.part", age=600)  # done, a sibling streams
    sibling = staged(tmp_path, f"up-{'2' * 32}_7@other-host.part", age=1)
    stale = staged(tmp_path, f"up-{'3' * 32}_8@other-host.part", age=600)
    legacy_old = staged(tmp_path, f"up-{'4' * 32}.part", age=600)  # no owner in the name
    legacy_new = staged(tmp_path, f"up-{'5' * 32}.part", age=1)
    tus = staged(tmp_path, f"tus-{'6' * 32}_9@other-host.part", age=10**6)  # a resumable upload's
    removed = janitor.sweep_dead(tmp_path, ttl=300, alive=lambda pid: True, host="this-host")
    assert sorted(removed) == sorted([stale.name])
    assert names(tmp_path) == {first.name, sibling.name, legacy_old.name, legacy_new.name, tus.name}
    # legacy files are judged together (one unknown owner): once all are old, all go
    os.utime(legacy_new, (time.time() - 600,) * 2)
    os.utime(sibling, (time.time() - 600,) * 2)
    removed = janitor.sweep_dead(tmp_path, ttl=300, alive=lambda pid: True, host="this-host")
    assert sorted(removed) == sorted([first.name, sibling.name, legacy_old.name, legacy_new.name])
    assert names(tmp_path) == {tus.name}
