"""``gunicorn.zero_copy`` (adapters/sendfile.py) on the installed gunicorn and gevent:
the capability's check, the cooperative ``os.sendfile`` loop on a gevent socket, and
``RangeFile``'s fallbacks. The worker-level behaviour is in tests/media/test_sendfile_live.py."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import gevent
import pytest
from gevent import socket as gsocket
from gunicorn.http import wsgi as gunicorn_wsgi

from flaskstream import adapters
from flaskstream.adapters import sendfile


class Shrunk(RuntimeError):
    pass


def range_file(fd: int, offset: int, count: int, sent: list[int],
               released: list[bool] | None = None) -> sendfile.RangeFile:
    done = released if released is not None else []
    return sendfile.RangeFile(fd, offset, count, release=lambda: done.append(True),
                              read=lambda: os.pread(fd, count, offset), on_sent=sent.append,
                              shrunk=Shrunk)


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[int, bytes]:
    data = os.urandom(3 << 20)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def test_the_capability_holds_on_the_installed_gunicorn() -> None:
    cap = adapters.registered()["gunicorn.zero_copy"]
    assert cap.check() is None
    assert cap.ok()
    assert issubclass(sendfile.RangeFile, gunicorn_wsgi.FileWrapper)  # what workers test


def test_send_range_waits_cooperatively_for_a_slow_reader(data_file: tuple[int, bytes]) -> None:
    fd, data = data_file
    out, into = gsocket.socketpair()
    out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # many EAGAINs on the way
    offset, count = 12345, (2 << 20) + 7
    ticks: list[int] = []
    sent: list[int] = []

    def reader() -> bytes:
        got = bytearray()
        while len(got) < count:
            ticks.append(len(got))
            got += into.recv(16384)
            gevent.sleep(0)
        return bytes(got)

    try:
        receiving = gevent.spawn(reader)
        assert sendfile.send_range(out, range_file(fd, offset, count, sent)) == count
        assert receiving.get(timeout=10) == data[offset:offset + count]
    finally:
        out.close()
        into.close()
    assert sent == [count]
    assert len(ticks) > 10  # the reader ran while the range was being sent


def test_a_file_shorter_than_the_range_raises_the_callers_error(
        data_file: tuple[int, bytes]) -> None:
    fd, data = data_file
    out, into = gsocket.socketpair()
    sent: list[int] = []
    try:
        receiving = gevent.spawn(lambda: into.recv(1 << 20))
        with pytest.raises(Shrunk):
            sendfile.send_range(out, range_file(fd, len(data) - 100, 200, sent))
        assert receiving.get(timeout=10) == data[-100:]
    finally:
        out.close()
        into.close()
    assert sent == [100]  # what did go out is counted, nothing more


def test_iterated_it_yields_the_callers_read_and_releases_once(
        data_file: tuple[int, bytes]) -> None:
    fd, data = data_file
    released: list[bool] = []
    body = range_file(fd, 10, 90, [], released)
    assert list(body) == [data[10:100]]
    body.close()
    body.close()
    assert released == [True]


def test_it_does_not_apply_outside_gunicorns_gevent_worker() -> None:
    assert not sendfile.zero_copy_applies({"wsgi.file_wrapper": object})
    # gunicorn's wrapper, but this test process is not gevent-patched: plain pread path.
    assert not sendfile.zero_copy_applies({"wsgi.file_wrapper": gunicorn_wsgi.FileWrapper,
                                           "gunicorn.socket": None})
