"""``flaskstream/leases.py``: the heartbeat and the periodic janitor loop, in real threads."""

from __future__ import annotations

import threading

import pytest

from flaskstream import leases
from tests.live import wait_for


def test_heartbeat_beats_survives_errors_and_stops_when_told() -> None:
    beats: list[int] = []

    def beat() -> bool:
        beats.append(1)
        if len(beats) == 2:
            raise ConnectionError("database hiccup")  # logged; the next beat still comes
        return True

    heartbeat = leases.Heartbeat(beat, 0.02).start()
    assert wait_for(lambda: len(beats) >= 4, timeout=5)
    heartbeat.stop()
    assert heartbeat.stopped.is_set()
    count = len(beats)
    threading.Event().wait(0.1)
    assert len(beats) == count  # no beat after stop


def test_heartbeat_ends_when_a_beat_says_the_lease_is_gone() -> None:
    beats: list[int] = []
    heartbeat = leases.Heartbeat(lambda: bool(beats.append(1)), 0.02).start()
    assert wait_for(heartbeat.stopped.is_set, timeout=5)
    assert beats == [1]


def test_run_every_starts_one_loop_per_owner_and_name_and_retries_failures() -> None:
    owner = object()
    calls: list[int] = []

    def task() -> None:
        calls.append(1)
        raise RuntimeError("try again next round")

    stop = leases.run_every(owner, "test-janitor", 0.02, task, first_delay=0)
    assert stop is not None
    try:
        assert leases.run_every(owner, "test-janitor", 0.02, task) is None  # already running
        assert leases.run_every(object(), "off", 0, task) is None  # 0 = off
        assert wait_for(lambda: len(calls) >= 3, timeout=5)
    finally:
        stop.set()
    again: list[threading.Event | None] = []
    assert wait_for(lambda: again.append(leases.run_every(owner, "test-janitor", 0.02, task,
                                                          first_delay=60)) or again[-1],
                    timeout=5)  # the loop ended and forgot its key: it can start again
    again[-1].set()  # type: ignore[union-attr]


def test_a_janitor_that_keeps_failing_logs_its_traceback_once_per_run_of_failures(
        caplog: pytest.LogCaptureFixture) -> None:
    """A database down for an hour must not fill the log with one traceback per pass."""
    calls: list[int] = []

    def task() -> None:
        calls.append(1)
        if len(calls) != 4:  # fails, fails, fails, succeeds, fails, ...
            raise ConnectionError("database down")

    with caplog.at_level("WARNING", logger="flaskstream.leases"):
        stop = leases.run_every(object(), "test-failing", 0.02, task, first_delay=0)
        assert stop is not None
        assert wait_for(lambda: len(calls) >= 6, timeout=5)
        stop.set()
    failures = [r for r in caplog.records if "test-failing pass failed" in r.getMessage()]
    with_traceback = [i for i, r in enumerate(failures) if r.exc_info]
    assert len(failures) >= 5
    assert with_traceback[:2] == [0, 3]  # the first failure, then the first after the success
    assert all("database down" in r.getMessage() for r in failures)
