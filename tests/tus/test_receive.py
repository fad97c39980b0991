"""The PATCH streaming loop without a server: exact bytes, budget, short bodies, lease checks."""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flaskstream import schema
from flaskstream.tus import checkpoint, receive, store


class FakeCon:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        schema.attach(self, schema.SchemaNames(schema.DEFAULT_SCHEMA))  # as db's connections are

    def run(self, sql: str, **params: Any) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def keeper(answers: list[Any] | None = None, **kwargs: Any) -> receive.LeaseKeeper:
    con = FakeCon(answers if answers is not None else [[[False]]] * 100)

    @contextlib.contextmanager
    def connect() -> Iterator[FakeCon]:
        yield con

    options = {"lease": 10.0, "interval": 0.0, "idle_timeout": None, **kwargs}
    return receive.LeaseKeeper(connect, "0" * 32, "token", **options)


class Trickle(io.RawIOBase):
    """Returns at most ``step`` bytes per read, like a socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pos = data, step, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = min(self.step, size if size >= 0 else self.step)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_appends_exact_bytes_and_hashes(tmp_path: Path, step: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"head")
    data = bytes(range(256)) * 40
    hasher = hashlib.sha1()
    seen: list[int] = []
    written = receive.append_body(path, Trickle(data, step), keeper(), chunk_size=1000,
                                  budget=len(data), hasher=hasher, declared=len(data),
                                  on_chunk=seen.append)
    assert written == len(data)
    assert path.read_bytes() == b"head" + data
    assert hasher.digest() == hashlib.sha1(data).digest()
    assert seen[-1] == len(data) and seen == sorted(seen)


def test_one_byte_over_budget_is_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    with pytest.raises(receive.LengthExceeded) as info:
        receive.append_body(path, Trickle(b"x" * 11, 11), keeper(), chunk_size=64, budget=10,
                            hasher=None)
    assert info.value.written == 0  # type: ignore[attr-defined]
    assert path.read_bytes() == b""


def test_short_body_is_a_disconnect_that_keeps_what_arrived(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    with pytest.raises(receive.ClientGone) as info:
        receive.append_body(path, Trickle(b"abc", 2), keeper(), chunk_size=64, budget=None,
                            hasher=None, declared=10)
    assert info.value.written == 3  # type: ignore[attr-defined]
    assert path.read_bytes() == b"abc"


def test_read_errors_become_client_gone(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise OSError("connection reset")

    path = tmp_path / "f"
    path.write_bytes(b"")
    with pytest.raises(receive.ClientGone):
        receive.append_body(path, Broken(), keeper(), chunk_size=64, budget=None, hasher=None)


def test_release_request_stops_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    k = keeper([[[True]]])  # the first renewal reports a release request
    with pytest.raises(receive.TakenOver) as info:
        receive.append_body(path, Trickle(b"abcdef", 3), k, chunk_size=3, budget=None,
                            hasher=None)
    assert info.value.written == 0  # type: ignore[attr-defined]


def test_lost_lease_stops_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    k = keeper([[]])  # renewal matched no row: the lease belongs to someone else
    with pytest.raises(receive.LeaseExpired):
        receive.append_body(path, Trickle(b"abcdef", 3), k, chunk_size=3, budget=None,
                            hasher=None)
    assert path.read_bytes() == b""


def test_lease_running_out_locally_stops_writes_even_if_renewal_fails(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    k = keeper([RuntimeError("database down")] * 10, lease=1.0)  # valid_until = now + 0
    time.sleep(0.01)
    with pytest.raises(receive.LeaseExpired):
        receive.append_body(path, Trickle(b"abcdef", 3), k, chunk_size=3, budget=None,
                            hasher=None)
    assert path.read_bytes() == b""


def test_store_renew_raises_when_not_held() -> None:
    with pytest.raises(store.LeaseLost):
        store.renew(FakeCon([[]]), "0" * 32, "t", 5)
    assert store.renew(FakeCon([[[True]]]), "0" * 32, "t", 5) is True


def test_checkpointer_commits_every_n_bytes_and_reports_errors() -> None:
    committed: list[int] = []
    checkpoints = checkpoint.Checkpointer(committed.append, 100)
    for written in (40, 99, 100, 150, 199, 200, 260):
        checkpoints.maybe(written)
    checkpoints.wait()
    assert committed == [100, 200]

    def failing(written: int) -> None:
        raise store.LeaseLost("x")

    broken = checkpoint.Checkpointer(failing, 10)
    broken.maybe(10)  # the error surfaces at the next chunk, not inside the commit
    with pytest.raises(store.LeaseLost):
        broken.maybe(11)
    with pytest.raises(store.LeaseLost):
        broken.wait()
    disabled = checkpoint.Checkpointer(failing, 0)
    disabled.maybe(10**9)
    disabled.wait()


def test_a_greenlet_killed_mid_query_does_not_return_its_connection_to_the_pool() -> None:
    """Regression (found by bench/tus.py): killing the lease watcher inside a query gave the
    next borrower of that pooled connection the previous query's reply."""
    from greenlet import GreenletExit

    from flaskstream import db

    assert db.is_connection_lost(GreenletExit())
    assert db.is_connection_lost(KeyboardInterrupt())
    assert not db.is_connection_lost(ValueError("an ordinary error in the caller's code"))


def test_salvage_returns_what_gunicorn_buffered_before_an_interrupted_read() -> None:
    """A takeover thrown into a blocked read leaves the received bytes in gunicorn's
    buffers; salvage hands them back (and empties them), capped at the body's length."""
    from gunicorn.http.body import Body, ChunkedReader, LengthReader
    from gunicorn.http.unreader import Unreader

    class Source(Unreader):
        def __init__(self, pieces: list[bytes]) -> None:
            super().__init__()
            self.pieces = pieces

        def chunk(self, size_hint: int | None = None) -> bytes:
            if not self.pieces:
                raise receive.TakenOver("another request took over")
            return self.pieces.pop(0)

    body = Body(LengthReader(Source([b"abc", b"defg"]), 100))
    with pytest.raises(receive.TakenOver):
        body.read(50)
    assert receive.salvage_gunicorn_buffers(body) == b"abcdefg"
    assert receive.salvage_gunicorn_buffers(body) == b""  # handed back once
    assert body.failed  # the connection is not reused

    chunked = Body(ChunkedReader(None, Source([b"3\r\nabc"])))
    with pytest.raises(receive.TakenOver):
        chunked.read(50)
    assert receive.salvage_gunicorn_buffers(chunked) == b""  # framing state unknown: nothing
    assert receive.salvage_gunicorn_buffers(object()) == b""
