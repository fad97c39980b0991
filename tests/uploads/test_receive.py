"""The read loop's pieces without HTTP: progress throttling, declared length, drain."""

from __future__ import annotations

import io
from typing import Any

import pytest

from flaskstream.uploads import receive


def test_progress_events_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(receive.time, "monotonic", lambda: now[0])
    sent: list[tuple[str, str, Any]] = []
    progress = receive.Progress("p1", 600, lambda ch, data, ev: sent.append((ch, ev, data)))
    for t in (100.0, 100.1, 100.2, 100.3, 100.5, 100.6):
        now[0] = t
        progress.advance(100)
    assert [(e, d["bytes"]) for _, e, d in sent] == [("progress", 100), ("progress", 400),
                                                     ("progress", 600)]
    assert {ch for ch, _, _ in sent} == {"uploads.p1"}
    progress.done([{"id": "x"}])
    assert [e for _, e, _ in sent[-2:]] == ["progress", "done"]
    assert sent[-2][2] == {"bytes": 600, "total": 600}


def test_progress_off_without_id_and_a_failing_bus_never_fails_the_upload() -> None:
    calls = []

    def broken(*args: Any) -> None:
        calls.append(args)
        raise ConnectionError("bus down")

    assert receive.Progress(None, 10, broken).publish is None
    progress = receive.Progress("p2", 10, broken, interval=0)
    progress.advance(5)
    progress.advance(5)
    progress.error("X", "y")
    assert len(calls) == 1 and progress.bytes == 10


def test_declared_length_must_arrive() -> None:
    body = b"x" * 1000
    got = b"".join(receive.read_chunks(io.BytesIO(body), None, 300, None, expected=1000))
    assert got == body
    with pytest.raises(receive.ClientGone):
        list(receive.read_chunks(io.BytesIO(body), None, 300, None, expected=1001))


def test_drain_is_bounded() -> None:
    endless = iter(lambda: b"z" * 65536, None)
    assert receive.drain(endless, max_bytes=1 << 20) is False
    assert receive.drain(iter([b"a", b"b"])) is True
