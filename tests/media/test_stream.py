"""PreadStream's read path under gevent: RWF_NOWAIT from the page cache, the
thread-pool offload for chunks that would wait for the disk, and the fallbacks."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from flaskstream.media import stream
from flaskstream.media.stream import PreadStream

DATA = os.urandom(1_000_003)
pytestmark = pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs RWF_NOWAIT (Linux)")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "f.bin"
    file.write_bytes(DATA)
    return file


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, func: Any, args: tuple[Any, ...]) -> bytes:
        self.calls.append(args[1:])
        return func(*args)


def body(path: Path, offload: Any, ranges: list[tuple[int, int]], chunk: int = 65536) -> bytes:
    return b"".join(PreadStream(os.open(path, os.O_RDONLY), list(ranges), chunk, offload))


def test_cached_chunks_are_read_without_offload(path: Path) -> None:
    os.pread(fd := os.open(path, os.O_RDONLY), len(DATA), 0)  # warm the cache
    os.close(fd)
    offload = Recorder()
    assert body(path, offload, [(5, 700_000), (999_000, 1_000_003)]) == \
        DATA[5:700_000] + DATA[999_000:]
    assert offload.calls == []


def test_uncached_chunk_goes_to_the_pool(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[int] = []

    def would_block(fd: int, buffers: list[Any], offset: int, flags: int) -> int:
        probes.append(offset)
        raise BlockingIOError(errno.EAGAIN, "not cached")

    monkeypatch.setattr(stream.os, "preadv", would_block)
    offload = Recorder()
    assert body(path, offload, [(100, 200_100)]) == DATA[100:200_100]
    assert offload.calls == [(65536, 100), (65536, 65636), (65536, 131172), (3392, 196708)]
    assert probes == [65635, 131171, 196707, 200099]  # each chunk's last byte


def test_cached_probe_reads_in_place(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.preadv
    probes: list[tuple[int, int]] = []

    def spy(fd: int, buffers: list[Any], offset: int, flags: int) -> int:
        probes.append((offset, len(buffers[0])))
        return real(fd, buffers, offset, flags)

    monkeypatch.setattr(stream.os, "preadv", spy)
    offload = Recorder()
    assert body(path, offload, [(0, 70_000)]) == DATA[:70_000]
    assert probes == [(65535, 1), (69999, 1)] and offload.calls == []


def test_filesystem_without_nowait_falls_back_to_pread(path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(*args: Any) -> int:
        raise OSError(errno.EOPNOTSUPP, "no RWF_NOWAIT here")

    monkeypatch.setattr(stream.os, "preadv", unsupported)
    offload = Recorder()
    assert body(path, offload, [(0, len(DATA))]) == DATA
    assert offload.calls == []


def test_cold_file_reads_exact_bytes(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # evict (where the filesystem can)
    os.close(fd)
    assert body(path, Recorder(), [(0, len(DATA))], chunk=256 * 1024) == DATA


def test_no_offload_outside_gevent() -> None:
    assert stream.gevent_offload() is None  # pytest is not monkey-patched
