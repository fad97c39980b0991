"""HTTP routes of the events pattern: subscribe, publish, tick demo, token streaming, stats.

Every stream is a generator over ``encode.py``; headers are fixed before the
first yield and cleanup (unsubscribe, admission slot, socket watcher) happens in
``finally``, which runs whether the stream ends itself, the client leaves
(``GeneratorExit`` at a ``yield``) or the worker shuts down.

Nothing here ever answers a stream request with a non-200 status once the
request is well-formed: EventSource gives up for good on any other status, so
"come back later" (admission cap, shutdown, database down) is a 200 stream with
a jittered ``retry:`` that ends at once.
"""

from __future__ import annotations

import hmac
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from flaskstream import auth, db, jsonbody
from flaskstream.auth import bearer_token
from flaskstream.errors import ApiError
from flaskstream.events import cli, store
from flaskstream.events.broker import Broker, get_broker, publish
from flaskstream.events.encode import encode_comment, encode_event, encode_retry, json_data
from flaskstream.events.lifecycle import PeerWatch
from flaskstream.events.streams import Stream, Subscriber
from flaskstream.events.tokens import answer_tokens, is_sse_accept

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
REPLAY_PAGE = 500
LISTENER_READY_TIMEOUT = 5.0
LAST_ID_ECHO = 256  # characters of an unknown Last-Event-ID echoed in the reset event


class _StreamBody:
    """The response iterable: releases the stream even if its generator never ran.

    A generator's ``finally`` only runs once it has started; a HEAD request or a
    server that fails before the first ``next()`` would leak the admission slot,
    subscription and socket watcher. The WSGI server always calls ``close()``.
    """

    __slots__ = ("gen", "release")

    def __init__(self, gen: Iterator[bytes], release: Callable[[], None] | None) -> None:
        self.gen = gen
        self.release = release

    def __iter__(self) -> Iterator[bytes]:
        return self.gen

    def close(self) -> None:
        try:
            self.gen.close()  # type: ignore[attr-defined]
        finally:
            if self.release is not None:
                self.release()


def _stream_response(body: Iterator[bytes], content_type: str = SSE_CONTENT_TYPE,
                     release: Callable[[], None] | None = None) -> Response:
    if request.method == "HEAD":  # headers only: never open an endless body
        body.close()  # type: ignore[attr-defined]
        if release is not None:
            release()
        body = iter(())
    response = Response(_StreamBody(body, release), status=200, content_type=content_type,
                        direct_passthrough=True)
    response.headers["Cache-Control"] = "no-cache, no-transform"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _jittered_retry(app: Flask) -> bytes:
    base = int(app.config["SSE_RETRY_MS"])
    return encode_retry(base + random.randint(0, int(app.config["SSE_RETRY_JITTER_MS"])))


def _come_back_later(app: Flask, reason: str) -> Response:
    """A 200 stream that only says when to reconnect (EventSource stops on non-200),
    then closes the connection: a worker at its cap keeps no idle keep-alive for it."""
    body = _jittered_retry(app) + encode_comment(reason)
    closing = Stream("rejected")
    closing.sock = request.environ.get("gunicorn.socket")

    def once() -> Iterator[bytes]:
        try:
            yield body
        finally:
            closing.finish(close=True)

    return _stream_response(once())


def _release(broker: Broker, stream: Stream, watch: PeerWatch) -> None:
    """Idempotent cleanup (the generator's ``finally`` normally did it already)."""
    watch.stop()
    broker.close_stream(stream)


@contextmanager
def _lifetime(broker: Broker, stream: Stream, watch: PeerWatch) -> Iterator[None]:
    """Wrap a stream generator's body: cleanup in ``finally``, however it ends.

    ``GeneratorExit`` at a ``yield`` means the server stopped iterating because a
    write to the client failed: a disconnect the socket watch did not see.
    """
    try:
        yield
    except GeneratorExit:
        stream.end("disconnect")
        raise
    finally:
        watch.stop()
        stream.finish()
        broker.close_stream(stream)


def _wait(stream: Stream, watch: PeerWatch, timeout: float) -> None:
    """Sleep until woken or ``timeout``; turn a closed client socket into ``reason``."""
    stream.wait(max(0.0, timeout))
    if stream.peer_check and watch.gone():
        stream.end("disconnect")


def _last_event_id() -> str | None:
    value = request.headers.get("Last-Event-ID")
    if value is None:
        value = request.args.get("lastEventId")
    return value.strip() if value is not None else None


# --- subscribe ---------------------------------------------------------------


@bp.get("/events")
def subscribe_many() -> Response:
    channels = request.args.getlist("channel")
    if not channels:
        raise ApiError(400, "CHANNEL_REQUIRED", "give one or more ?channel=NAME")
    return _subscribe(channels)


@bp.get("/events/<channel>")
def subscribe_one(channel: str) -> Response:
    return _subscribe([channel])


def _subscribe(channels: list[str]) -> Response:
    unique = list(dict.fromkeys(channels))
    if len(unique) > store.MAX_CHANNELS:
        raise ApiError(400, "TOO_MANY_CHANNELS", f"at most {store.MAX_CHANNELS} channels")
    for name in unique:
        store.check_channel(name)  # InvalidChannel: a 400 INVALID_CHANNEL
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    broker = get_broker(app)
    if not broker.ensure_listener(LISTENER_READY_TIMEOUT):
        return _come_back_later(app, "event bus unavailable")
    sub = Subscriber(unique, broker.queue_size)
    if not broker.open_stream(sub):
        return _come_back_later(app, "too many streams on this worker")
    watch = PeerWatch(request.environ, sub)
    return _stream_response(_subscription(app, broker, sub, watch, _last_event_id(),
                                          auth.stream_deadline()),
                            release=lambda: _release(broker, sub, watch))


def _resume_point(app: Flask, broker: Broker, sub: Subscriber, current: int,
                  raw_last: str | None) -> tuple[int, bytes | None, bool]:
    """(id to continue after, reset event or None, whether to replay from the table)."""
    if raw_last is None or raw_last == "":
        return current, None, False
    with db.get_database(app).connection() as con:
        top = store.max_id(con)
        reason = None
        last = store.parse_event_id(raw_last)  # unusable (text, 5,000 digits) = unknown
        if last is None or last > top:
            reason = "unknown-id"  # never given out, or from the future: the store was reset
        elif last < store.pruned_through(con, list(sub.channels)):
            reason = "retention"
        if reason is None and last is not None:
            return last, None, True
    broker.count("resets")
    body = json_data({"reason": reason, "lastEventId": raw_last[:LAST_ID_ECHO], "id": top})
    return top, encode_event(body, event="reset", id=top), False


def _subscription(app: Flask, broker: Broker, sub: Subscriber, watch: PeerWatch,
                  raw_last: str | None, deadline: float | None = None) -> Iterator[bytes]:
    """``deadline``: the token's ``exp`` (epoch s); the stream ends there with ``auth-expired``."""
    heartbeat = float(app.config["SSE_HEARTBEAT"])
    with _lifetime(broker, sub, watch):
        current = broker.subscribe(sub)  # before any replay: nothing can fall between
        try:
            sent, reset, replaying = _resume_point(app, broker, sub, current, raw_last)
        except (db.DatabaseError, db.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("subscribe: cannot read the event store: %s", exc)
            yield _jittered_retry(app) + encode_comment("event store unavailable")
            return
        head = encode_event(retry=int(app.config["SSE_RETRY_MS"]),
                            id=sent if not raw_last else None)
        yield head + encode_comment(f"worker {broker.pid}") + (reset or b"")
        if replaying:
            broker.count("replays")
            while sub.reason is None:
                try:
                    with db.get_database(app).connection() as con:
                        page = store.replay(con, list(sub.channels), sent, REPLAY_PAGE)
                except (db.DatabaseError, db.InterfaceError, OSError, TimeoutError) as exc:
                    log.warning("replay interrupted: %s", exc)  # the client resumes from `sent`
                    yield _jittered_retry(app)
                    return
                if page:
                    broker.count("replayed_events", len(page))
                    sent = page[-1].id
                    yield b"".join(encode_event(e.data, event=e.event, id=e.id) for e in page)
                while sub.queue and sub.queue[0].id <= sent:
                    sub.queue.popleft()  # already replayed
                if len(page) < REPLAY_PAGE:
                    break
        last_write = time.monotonic()
        while sub.reason is None:
            if deadline is not None and time.time() >= deadline:  # even while events flow
                sub.end("auth-expired")
                continue
            chunks = []
            while sub.queue:
                delivery = sub.queue.popleft()
                if delivery.id > sent:
                    chunks.append(delivery.payload)
                    sent = delivery.id
            now = time.monotonic()
            if chunks:
                yield b"".join(chunks)
                last_write = now
            elif now - last_write >= heartbeat:
                yield encode_comment()
                last_write = now
            else:
                _wait(sub, watch, auth.until(deadline, heartbeat - (now - last_write)))
        if sub.reason == "auth-expired":  # the page fetches a new token, then reconnects
            yield encode_event(json_data({"reason": "token expired"}), event="auth-expired",
                               retry=int(app.config["SSE_RETRY_MS"]))
        if sub.reason == "shutdown":
            broker.count("shutdown_ended")
            yield _jittered_retry(app)


# --- publish -----------------------------------------------------------------


@bp.post("/events/<channel>")
def publish_route(channel: str) -> tuple[Response, int]:
    limit = int(current_app.config["EVENTS_MAX_BODY"])
    body = jsonbody.read_json(limit) if request.is_json else None
    if not isinstance(body, dict) or "data" not in body:
        raise ApiError(400, "INVALID_EVENT", 'send JSON {"event": "...", "data": any, "id"?: key}')
    event = body.get("event")
    if event is not None and not isinstance(event, str):
        raise ApiError(400, "INVALID_EVENT", "event must be a string")
    try:
        event_id = publish(channel, body["data"], event, key=body.get("id"), strict=True)
    except ValueError as exc:
        raise ApiError(400, "INVALID_EVENT", str(exc)) from None
    except (db.DatabaseError, db.InterfaceError, OSError, TimeoutError) as exc:
        log.warning("publish on %r failed: %s", channel, exc)
        raise ApiError(503, "EVENT_STORE_UNAVAILABLE", "the event store cannot be written now",
                       headers={"Retry-After": "2"}) from None
    return jsonify({"id": event_id}), 202


# --- demo, tokens, stats -----------------------------------------------------


def _float_arg(name: str, default: float, low: float, high: float) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be a number") from None
    if not low <= value <= high:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be between {low} and {high}")
    return value


@bp.get("/events/tick")
def tick() -> Response:
    """The classic demo: per-connection ``tick`` events ``{"ts", "id"}`` every ``interval`` s."""
    interval = _float_arg("interval", 1.0, 0.01, 3600.0)
    raw_last = _last_event_id()
    start = store.parse_event_id(raw_last) or 0  # an unusable id starts the count afresh
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    broker = get_broker(app)
    stream = Stream("tick")
    if not broker.open_stream(stream):
        return _come_back_later(app, "too many streams on this worker")
    watch = PeerWatch(request.environ, stream)

    def ticks() -> Iterator[bytes]:
        with _lifetime(broker, stream, watch):
            yield encode_retry(int(app.config["SSE_RETRY_MS"]))
            n, due = start, time.monotonic()
            while stream.reason is None:
                n += 1
                yield encode_event(json_data({"ts": int(time.time() * 1000), "id": n}),
                                   event="tick", id=n)
                due += interval
                while stream.reason is None and time.monotonic() < due:
                    _wait(stream, watch, due - time.monotonic())
            if stream.reason == "shutdown":
                yield _jittered_retry(app)

    return _stream_response(ticks(), release=lambda: _release(broker, stream, watch))


@bp.get("/stream/tokens")
def tokens() -> Response:
    """Word-by-word answer: chunked text/plain, or SSE ``token`` events and a ``done``."""
    prompt = request.args.get("prompt", "")
    max_tokens = int(_float_arg("max_tokens", 200, 0, 10000))
    delay = _float_arg("delay", float(current_app.config["TOKENS_DELAY"]), 0.0, 10.0)
    as_sse = is_sse_accept(request.headers.get("Accept", ""))
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    broker = get_broker(app)
    stream = Stream("tokens")
    if not broker.open_stream(stream):
        if as_sse:
            return _come_back_later(app, "too many streams on this worker")
        raise ApiError(503, "TOO_MANY_STREAMS", "too many streams on this worker",
                       headers={"Retry-After": "5"})
    watch = PeerWatch(request.environ, stream)
    words = answer_tokens(prompt, max_tokens)

    def generate() -> Iterator[bytes]:
        sent = 0
        try:
            with _lifetime(broker, stream, watch):
                for index, word in enumerate(words):
                    if index:
                        _wait(stream, watch, delay)  # the "model" thinking; wakes on disconnect
                    if stream.reason is not None:
                        return
                    if as_sse:
                        yield encode_event(json_data({"index": index, "text": word}), event="token")
                    else:
                        yield word.encode("utf-8")
                    sent += 1
                if as_sse:
                    yield encode_event(json_data({"tokens": sent}), event="done")
        finally:
            if sent < len(words):
                log.info("token stream stopped after %d of %d tokens (%s)",
                         sent, len(words), stream.reason or "client gone")

    content_type = SSE_CONTENT_TYPE if as_sse else "text/plain; charset=utf-8"
    return _stream_response(generate(), content_type,
                            release=lambda: _release(broker, stream, watch))


def _has_admin_token() -> bool:
    """True when no ``API_TOKEN`` is set, or this request carries it (constant-time)."""
    expected = current_app.config["API_TOKEN"]
    if not expected:
        return True
    given = bearer_token()
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@bp.get("/events/stats")
def stats() -> Response:
    """This worker's counters (each worker answers for itself).

    Channel names say who is listening to what (``uploads.<id>``, ``etl.<id>``,
    a customer's channel): with ``API_TOKEN`` set they are shown only to a
    request carrying it; anyone else gets the aggregate counts.
    """
    snapshot = get_broker().snapshot()
    if not _has_admin_token():
        del snapshot["channels"]
    response = jsonify(snapshot)
    response.headers["Cache-Control"] = "no-store"
    return response



cli.register(bp.cli)
