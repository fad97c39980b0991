"""prefetch: the stages run ahead in a helper thread; progress still flows when input stalls."""

from __future__ import annotations

import threading
import time

import pytest

from flaskstream.etl.jobs import run_load
from flaskstream.etl.pipeline import InputError
from flaskstream.etl.prefetch import prefetch
from flaskstream.etl.sink import LoadOptions
from flaskstream.etl.tables import USERS


def test_prefetch_keeps_order_reraises_and_stops_when_closed():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise InputError("boom")

    gen = prefetch(failing())
    assert next(gen) == 1
    with pytest.raises(InputError, match="boom"):
        next(gen)
    pulled = []

    def endless():
        i = 0
        while True:
            pulled.append(i)
            yield i
            i += 1

    gen = prefetch(endless(), depth=2)
    assert next(gen) == 0
    gen.close()
    count = len(pulled)
    time.sleep(0.3)
    assert len(pulled) == count <= 5


def test_prefetch_calls_on_idle_while_the_source_stalls():
    release = threading.Event()
    idle_calls: list[int] = []

    def stalling():
        yield 1
        release.wait(5)
        yield 2

    gen = prefetch(stalling(), on_idle=lambda: idle_calls.append(1), idle_interval=0.02)
    assert next(gen) == 1
    threading.Timer(0.3, release.set).start()
    assert next(gen) == 2  # only after the stall, during which the consumer was told
    assert len(idle_calls) >= 3
    assert list(gen) == []


def test_progress_is_reported_while_the_input_stalls():
    """A paused client must not leave progress at the last throttled tick."""
    # two whole blocks (4,096 rows) go through at once, the third waits for input
    first = b"email,age,name\n" + b"".join(b"u%d@x.io,1,n\n" % i for i in range(9000))
    release = threading.Event()
    events: list[tuple[float, dict]] = []

    def source():
        yield first
        release.wait(5)
        yield b"last@x.io,2,n\n"

    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    result = run_load(None, source(), USERS, LoadOptions(dry_run=True),
                      on_progress=lambda event, data: events.append((time.monotonic() - started,
                                                                     data)),
                      progress_interval=0.05)
    assert result["status"] == "done" and result["rows_read"] == 9001
    during_stall = [data for at, data in events if at < 0.45]
    stalled_at = [d for d in during_stall if d["rows_loaded"] == 2 * 4096 - 1]  # - the header
    # nothing moved during the stall: one event for it, not one per idle interval
    assert len(stalled_at) == 1, events
