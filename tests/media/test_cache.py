"""The fast path's open-file cache: reused while the path still names the same
snapshot, never serving a replaced, rewritten, deleted or escaped file, bounded,
and never closing a descriptor a request is still reading."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from flaskstream import create_app
from flaskstream.media import cache as cache_module
from flaskstream.media import files
from flaskstream.media.cache import OpenFileCache


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = files.open_contained

    def spy(root: str, subpath: str) -> tuple[int, str] | None:
        calls.append(subpath)
        return real(root, subpath)

    monkeypatch.setattr(files, "open_contained", spy)
    return calls


def read_all(cache: OpenFileCache, root: Path, name: str) -> bytes | None:
    entry = cache.acquire(str(root), name)
    if entry is None:
        return None
    try:
        return os.pread(entry.fd, entry.info.size + 1, 0)
    finally:
        cache.release(entry)


def test_reused_while_unchanged(media_dir: Path, opens: list[str]) -> None:
    (media_dir / "a.bin").write_bytes(b"one")
    cache = OpenFileCache(8)
    assert [read_all(cache, media_dir, "a.bin") for _ in range(3)] == [b"one"] * 3
    assert opens == ["a.bin"]


def test_replaced_rewritten_or_deleted_is_never_served_stale(media_dir: Path) -> None:
    path = media_dir / "a.bin"
    path.write_bytes(b"one")
    cache = OpenFileCache(8)
    assert read_all(cache, media_dir, "a.bin") == b"one"
    (media_dir / "new").write_bytes(b"two")
    os.replace(media_dir / "new", path)  # same size, new inode
    assert read_all(cache, media_dir, "a.bin") == b"two"
    before = os.stat(path)
    with open(path, "r+b") as f:  # same inode, same size, new bytes
        f.write(b"TWO")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    assert read_all(cache, media_dir, "a.bin") == b"TWO"
    path.unlink()
    assert read_all(cache, media_dir, "a.bin") is None


def test_symlink_swapped_to_outside_is_refused(tmp_path: Path, media_dir: Path) -> None:
    (media_dir / "real.bin").write_bytes(b"inside")
    (tmp_path / "secret.bin").write_bytes(b"secret")
    link = media_dir / "link.bin"
    link.symlink_to(media_dir / "real.bin")
    cache = OpenFileCache(8)
    assert read_all(cache, media_dir, "link.bin") == b"inside"
    link.unlink()
    link.symlink_to(tmp_path / "secret.bin")
    assert read_all(cache, media_dir, "link.bin") is None


def test_bounded_and_closes_what_it_drops(media_dir: Path) -> None:
    for n in range(5):
        (media_dir / f"{n}.bin").write_bytes(b"x" * n)
    before = open_fds()
    cache = OpenFileCache(2)
    for n in range(5):
        assert read_all(cache, media_dir, f"{n}.bin") == b"x" * n
    assert len(cache.entries) == 2 and open_fds() == before + 2
    cache.clear()
    assert open_fds() == before


def test_an_entry_in_use_is_closed_only_by_its_last_user(media_dir: Path) -> None:
    (media_dir / "a.bin").write_bytes(b"first")
    (media_dir / "b.bin").write_bytes(b"other")
    cache = OpenFileCache(1)
    held = cache.acquire(str(media_dir), "a.bin")
    assert held is not None
    assert read_all(cache, media_dir, "b.bin") == b"other"  # pushes a.bin out
    assert os.pread(held.fd, 5, 0) == b"first"  # still open for the request reading it
    cache.release(held)
    with pytest.raises(OSError):
        os.fstat(held.fd)
    cache.clear()


def test_size_zero_means_no_caching(media_dir: Path, opens: list[str]) -> None:
    (media_dir / "a.bin").write_bytes(b"one")
    before = open_fds()
    cache = OpenFileCache(0)
    assert [read_all(cache, media_dir, "a.bin") for _ in range(2)] == [b"one"] * 2
    assert opens == ["a.bin", "a.bin"] and open_fds() == before


def test_fast_path_serves_the_new_file_after_a_replace(app_config: dict[str, Any],
                                                      media_dir: Path) -> None:
    client = create_app({**app_config, "MEDIA_OPEN_FILE_CACHE_VALID": 0}).test_client()
    path = media_dir / "clip.mp4"
    path.write_bytes(b"a" * 1000)
    first = client.get("/media/clip.mp4", headers={"Range": "bytes=0-9"})
    assert first.data == b"a" * 10
    (media_dir / "tmp").write_bytes(b"b" * 1000)
    os.replace(media_dir / "tmp", path)
    second = client.get("/media/clip.mp4", headers={"Range": "bytes=0-9"})
    assert second.data == b"b" * 10 and second.headers["ETag"] != first.headers["ETag"]
    path.unlink()
    assert client.get("/media/clip.mp4").status_code == 404


def test_idle_entries_are_closed_at_the_next_request(media_dir: Path) -> None:
    (media_dir / "a.bin").write_bytes(b"one")
    (media_dir / "b.bin").write_bytes(b"two")
    before = open_fds()
    cache = OpenFileCache(8, inactive=0.2)
    assert read_all(cache, media_dir, "a.bin") == b"one"
    assert open_fds() == before + 1
    time.sleep(0.3)
    assert read_all(cache, media_dir, "b.bin") == b"two"  # a.bin is closed on the way
    assert list(cache.entries) == [(str(media_dir), "b.bin")] and open_fds() == before + 1
    cache.clear()


@pytest.fixture
def path_stats(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the cache ``stat``s (its descriptor ``fstat``s are not counted)."""
    calls: list[str] = []
    real = os.stat

    def spy(path: str, *args: Any, **kwargs: Any) -> os.stat_result:
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache_module.os, "stat", spy)
    return calls


def test_within_validity_no_path_stat_and_a_rewrite_in_place_shows_at_once(
        media_dir: Path, path_stats: list[str]) -> None:
    path = media_dir / "a.bin"
    path.write_bytes(b"one")
    cache = OpenFileCache(8, valid=30)
    assert [read_all(cache, media_dir, "a.bin") for _ in range(5)] == [b"one"] * 5
    assert len(path_stats) == 1  # the first request's; the next four fstat the descriptor
    with open(path, "r+b") as f:  # same inode, new size: the descriptor's fstat sees it
        f.write(b"three")
    assert read_all(cache, media_dir, "a.bin") == b"three"


def test_a_rename_over_is_served_as_its_old_snapshot_until_the_validity_ends(
        media_dir: Path) -> None:
    path = media_dir / "a.bin"
    path.write_bytes(b"one")
    cache = OpenFileCache(8, valid=0.3)
    assert read_all(cache, media_dir, "a.bin") == b"one"
    (media_dir / "new").write_bytes(b"two")
    os.replace(media_dir / "new", path)
    assert read_all(cache, media_dir, "a.bin") == b"one"  # consistent, old, within 0.3 s
    time.sleep(0.4)
    assert read_all(cache, media_dir, "a.bin") == b"two"
    path.unlink()
    time.sleep(0.4)
    assert read_all(cache, media_dir, "a.bin") is None
    cache.clear()
