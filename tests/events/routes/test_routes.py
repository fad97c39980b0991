"""Routes through Flask's test client (real PostgreSQL, listener thread, no gunicorn)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flaskstream import db
from flaskstream.events import store
from flaskstream.events.broker import get_broker, publish
from flaskstream.events.streams import Delivery, Subscriber
from flaskstream.events.tokens import answer_tokens
from tests.events.sse_parser import parse
from tests.events.stream_reader import Stream


def test_publish_route_and_python_api(app: Flask, client: FlaskClient) -> None:
    response = client.post("/events/orders", json={"event": "created", "data": {"n": 1}})
    assert response.status_code == 202
    first = response.get_json()["id"]
    with app.app_context():
        second = publish("orders", "plain text")
    assert second > first
    with app.app_context(), db.connection() as con:
        rows = store.replay(con, ["orders"], 0, 10)
    assert [(r.id, r.event, r.data) for r in rows] == [
        (first, "created", '{"n":1}'), (second, None, "plain text")]


def test_publish_key_is_idempotent(client: FlaskClient) -> None:
    a = client.post("/events/c", json={"data": 1, "id": "req-1"}).get_json()["id"]
    b = client.post("/events/c", json={"data": 1, "id": "req-1"}).get_json()["id"]
    c = client.post("/events/c", json={"data": 1, "id": "req-2"}).get_json()["id"]
    assert a == b and c > a


@pytest.mark.parametrize(
    ("url", "body", "code"),
    [
        ("/events/ok", {"event": "x"}, "INVALID_EVENT"),  # no data
        ("/events/ok", ["not", "an", "object"], "INVALID_EVENT"),
        ("/events/ok", {"data": 1, "event": "a\nb"}, "INVALID_EVENT"),
        ("/events/ok", {"data": 1, "event": 5}, "INVALID_EVENT"),
        ("/events/ok", {"data": "nul\x00"}, "INVALID_EVENT"),
        ("/events/b%20ad", {"data": 1}, "INVALID_EVENT"),
        ("/events/stats", {"data": 1}, "INVALID_EVENT"),  # reserved name
    ],
)
def test_publish_rejects(client: FlaskClient, url: str, body: Any, code: str) -> None:
    response = client.post(url, json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_publish_needs_token_when_set(app: Flask, client: FlaskClient) -> None:
    app.config["API_TOKEN"] = "s3cret"
    assert client.post("/events/x", json={"data": 1}).status_code == 401
    ok = client.post("/events/x", json={"data": 1}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 202


def test_subscribe_headers_and_live_events(app: Flask, client: FlaskClient) -> None:
    stream = Stream(client, "/events/live")
    try:
        headers = stream.response.headers
        assert stream.response.status_code == 200
        assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert headers["Cache-Control"] == "no-cache, no-transform"
        assert headers["X-Accel-Buffering"] == "no"
        for hop in ("Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length"):
            assert hop not in headers
        stream.head()
        assert parse(stream.body).retry == 3000
        with app.app_context():
            ids = [publish("live", f"m{i}\nline2", "note") for i in range(3)]
            publish("other", "not for us")
        events = stream.read(3)
        assert [(e.type, e.data, e.last_event_id) for e in events] == [
            ("note", f"m{i}\nline2", str(ids[i])) for i in range(3)]
        time.sleep(0.5)
        stream.read(4, timeout=0.5)
        assert b"\n:\n\n" in stream.body  # heartbeat comments while idle
    finally:
        stream.close()
    assert get_broker(app).snapshot()["open_streams"] == 0


def test_replay_from_last_event_id_then_live(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        ids = [publish("r", i) for i in range(5)]
        publish("elsewhere", "x")
    for kwargs in ({"headers": {"Last-Event-ID": str(ids[1])}},):
        stream = Stream(client, "/events/r", **kwargs)
        try:
            assert [e.data for e in stream.read(3)] == ["2", "3", "4"]
            with app.app_context():
                later = publish("r", "live")
            events = stream.read(4)
            assert [e.last_event_id for e in events] == [str(i) for i in ids[2:]] + [str(later)]
        finally:
            stream.close()
    stream = Stream(client, f"/events/r?lastEventId={ids[3]}")
    try:
        assert [e.data for e in stream.read(2)] == ["4", "live"]
    finally:
        stream.close()


def test_many_channels_merge_in_id_order(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        first = publish("a", "a1")
        publish("b", "b1")
        publish("c", "c1")
        publish("a", "a2")
    stream = Stream(client, f"/events?channel=a&channel=b&lastEventId={first - 1}")
    try:
        assert [e.data for e in stream.read(3)] == ["a1", "b1", "a2"]
    finally:
        stream.close()
    assert client.get("/events").status_code == 400


def test_fresh_subscriber_gets_current_id_so_a_reconnect_misses_nothing(
        app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        before = publish("f", "before")
    stream = Stream(client, "/events/f")
    stream.head()
    assert parse(stream.body).last_event_id == str(before)
    stream.close()
    with app.app_context():
        publish("f", "while away")
    again = Stream(client, "/events/f", headers={"Last-Event-ID": str(before)})
    try:
        assert [e.data for e in again.read(1)] == ["while away"]
    finally:
        again.close()


@pytest.mark.parametrize("last", ["1", "banana", "999999", "\u00b2"])
def test_reset_when_the_id_cannot_be_resumed(app: Flask, client: FlaskClient, last: str) -> None:
    with app.app_context():
        ids = [publish("old", i) for i in range(5)]
        with db.connection() as con:
            store.prune(con, 2, 3600)  # keeps ids[3:], so id 1 is beyond retention
    stream = Stream(client, "/events/old", headers={"Last-Event-ID": last})
    try:
        events = stream.read(1)
        assert events[0].type == "reset"
        assert events[0].last_event_id == str(ids[-1])
        with app.app_context():
            nxt = publish("old", "after reset")
        assert [e.data for e in stream.read(2)][1:] == ["after reset"]
        assert stream.read(2)[1].last_event_id == str(nxt)
    finally:
        stream.close()


def test_retention_by_count_and_age(app: Flask) -> None:
    app.config.update(EVENTS_RETENTION_COUNT=10, EVENTS_PRUNE_INTERVAL=0)
    app.extensions.pop("flaskstream.events", None)
    with app.app_context():
        for i in range(40):
            publish(f"ret{i % 3}", i)
        with db.connection() as con:
            assert con.run("SELECT count(*) FROM flaskstream.events")[0][0] <= 11
            con.run("UPDATE flaskstream.events SET created_at = now() - interval '2 days'")
        publish("ret0", "fresh")
        with db.connection() as con:
            assert con.run("SELECT data FROM flaskstream.events") == [["fresh"]]
            marks = con.run("SELECT count(*) FROM flaskstream.events_pruned")[0][0]
    assert marks <= 4


def test_admission_cap_answers_200_with_retry(app: Flask, client: FlaskClient) -> None:
    app.config["SSE_MAX_STREAMS"] = 1
    app.extensions.pop("flaskstream.events", None)
    held = Stream(client, "/events/cap")
    held.head()
    try:
        over = client.get("/events/cap")  # ends by itself
        assert over.status_code == 200
        assert over.headers["Content-Type"].startswith("text/event-stream")
        assert parse(over.data).retry is not None and parse(over.data).events == []
        assert client.get("/healthz").status_code == 200
        assert get_broker(app).snapshot()["counters"]["rejected"] == 1
    finally:
        held.close()


def test_slow_subscriber_is_cut_off_not_waited_for() -> None:
    sub = Subscriber(["x"], maxsize=3)
    events = [Delivery(i, b"data: d\n\n") for i in range(1, 6)]
    assert [sub.offer(e) for e in events] == [True, True, True, False, False]
    assert sub.reason == "slow" and not sub.queue


def test_tick(client: FlaskClient) -> None:
    stream = Stream(client, "/events/tick?interval=0.05", headers={"Last-Event-ID": "10"})
    try:
        events = stream.read(3)
        assert [e.type for e in events] == ["tick"] * 3
        assert [e.last_event_id for e in events] == ["11", "12", "13"]
        body = json.loads(events[0].data)
        assert body["id"] == 11 and body["ts"] > 1.7e12
    finally:
        stream.close()
    assert client.get("/events/tick?interval=0").status_code == 400


def test_tokens_plain_and_sse(app: Flask, client: FlaskClient) -> None:
    words = answer_tokens("why stream?")
    plain = client.get("/stream/tokens?prompt=why%20stream%3F")
    assert plain.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert plain.get_data(as_text=True) == "".join(words)
    sse = client.get("/stream/tokens?prompt=why%20stream%3F",
                     headers={"Accept": "text/event-stream"})
    events = parse(sse.data).events
    assert [e.type for e in events] == ["token"] * len(words) + ["done"]
    assert "".join(json.loads(e.data)["text"] for e in events[:-1]) == "".join(words)


def test_tokens_stop_when_the_client_leaves(app: Flask, client: FlaskClient) -> None:
    response = client.get("/stream/tokens?prompt=x&delay=0.01", buffered=False)
    it = iter(response.response)
    next(it), next(it)
    response.close()  # GeneratorExit at the yield: no more work
    snap = get_broker(app).snapshot()
    assert snap["open_streams"] == 0 and snap["counters"]["closed"] == 1


def test_stats_route(client: FlaskClient) -> None:
    body = client.get("/events/stats").get_json()
    assert {"pid", "open_streams", "subscribers", "channels", "counters", "listener"} <= set(body)


def test_cli_publish(app: Flask, runner: Any) -> None:
    result = runner.invoke(args=["events", "publish", "cli.ch", '{"pct": 50}', "--json",
                                 "--event", "progress"])
    assert result.exit_code == 0, result.output
    event_id = int(result.output.strip())
    with app.app_context(), db.connection() as con:
        assert con.run("SELECT event, data FROM flaskstream.events WHERE id = :i", i=event_id) == [
            ["progress", '{"pct":50}']]
    bad = runner.invoke(args=["events", "publish", "bad channel", "x"])
    assert bad.exit_code != 0


def test_head_and_unstarted_streams_release_their_slot(app: Flask, client: FlaskClient) -> None:
    head = client.head("/events/h")
    assert head.status_code == 200 and head.headers["Content-Type"].startswith("text/event-stream")
    assert head.data == b""
    never_read = client.get("/events/h", buffered=False)
    assert get_broker(app).snapshot()["open_streams"] == 1
    never_read.close()  # what a WSGI server does when it fails before the first next()
    snap = get_broker(app).snapshot()
    assert snap["open_streams"] == 0 and snap["subscribers"] == 0


def test_listener_reconnects_and_rereads_what_it_missed(app: Flask, client: FlaskClient) -> None:
    stream = Stream(client, "/events/gap")
    stream.head()
    with app.app_context(), db.connection() as con:
        killed = con.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE 'SELECT id, channel, event, CASE%' AND pid <> pg_backend_pid()")
        assert killed == [[True]]
        ids = [publish("gap", f"during gap {i}") for i in range(3)]  # before it is back
    try:
        events = stream.read(3)
        assert [int(e.last_event_id) for e in events] == ids
        assert get_broker(app).snapshot()["counters"]["listener_reconnects"] >= 1
    finally:
        stream.close()
