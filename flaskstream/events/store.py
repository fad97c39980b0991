"""SQL for the events table: insert-and-notify, reads for fan-out and replay, retention;
and how to wait on the LISTEN connection without missing a buffered notification.

Every function takes an open ``pg8000.native.Connection``; none imports Flask.

Why the advisory lock in ``insert_event``: ids come from a sequence, and two
concurrent inserts can *commit* in the opposite order of their ids (id 7 visible
before id 6). A reader that keeps "the highest id I have seen" would then skip
id 6 for good. Taking one transaction-level lock around the insert makes commit
order equal id order, so "everything with id > N" is a complete answer both for
the LISTEN connection catching up and for a client replaying from
``Last-Event-ID``. The price is that publishes are serialised (one short
autocommit statement each, a few hundred to a few thousand per second) — the
same order a single Redis stream or Kafka partition imposes.

NOTIFY carries only the id (ASCII digits): pg8000 decodes payloads as ASCII and
a non-ASCII payload desynchronises the connection; bodies are read from the
table, which also makes a missed or overflowed notification harmless.

Table names, the lock key and the channel come from the connection's install
(``flaskstream.schema.of``): two schemas in one database are two event buses.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, NamedTuple

from flaskstream import schema
from flaskstream.errorbase import FixedError

MAX_CHANNELS = 32
RESERVED_CHANNELS = frozenset({"tick", "stats"})  # paths under /events/ taken by other routes
_CHANNEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,199}\Z")
_KEY_MAX = 200


class StoredEvent(NamedTuple):
    id: int
    channel: str
    event: str | None
    data: str | None  # None when read by the listener for a channel nobody here watches


class InvalidChannel(FixedError, ValueError):
    """A channel name the store refuses (a ``ValueError``: ``publish`` answers it as bad input)."""

    code, status = "INVALID_CHANNEL", 400


def check_channel(name: str) -> str:
    """A channel name, or ``InvalidChannel``: 1–200 of ``A-Z a-z 0-9 _ . : @ -``, not reserved.

    The charset keeps names safe in URLs, logs and SQL identifiers-by-value, and
    leaves room for ``uploads.<id>`` / ``etl.<id>`` style names.
    """
    if not isinstance(name, str) or not _CHANNEL.match(name):
        raise InvalidChannel(f"invalid channel name {name!r}: use 1-200 of A-Z a-z 0-9 _ . : @ -")
    if name in RESERVED_CHANNELS:
        raise InvalidChannel(f"channel name {name!r} is reserved")
    return name


_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_text(text: str, what: str, *, strict: bool) -> str:
    """``text`` made encodable as UTF-8: lone surrogates (JSON ``"\\ud800"``, or
    ``surrogateescape``d bytes of a bad CSV) refused when ``strict``, else replaced
    by U+FFFD.

    pg8000 encodes parameters while it sends a query: a code point UTF-8
    cannot encode fails halfway through and leaves the connection out of step
    (see ``db.Connection``), so nothing unencodable may reach ``insert_event``.
    """
    if not _SURROGATE.search(text):
        return text
    if strict:
        raise ValueError(f"{what} must be valid Unicode text (it holds a lone surrogate)")
    return _SURROGATE.sub("\ufffd", text)


def data_text(data: Any, *, strict: bool = False) -> str:
    """What goes on the wire: ``str`` as is, anything else as compact JSON."""
    if isinstance(data, str):
        text = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError("event data must be str or JSON-serialisable, not bytes")
    else:
        try:
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except RecursionError:
            raise ValueError("event data is nested too deeply") from None
        except (TypeError, ValueError):  # their text is Python's (class names): not shown
            raise ValueError("event data must be JSON-serialisable (no NaN or Infinity)") from None
    if "\x00" in text:
        raise ValueError("event data must not contain NUL")
    return unicode_text(text, "event data", strict=strict)


def check_event_name(event: str | None, *, strict: bool = False) -> str | None:
    if event is None:
        return None
    if not isinstance(event, str) or re.search(r"[\r\n\x00]", event) or len(event) > 200:
        raise ValueError("event name must be a str of at most 200 characters without CR, LF, NUL")
    return unicode_text(event, "event name", strict=strict)


def check_key(key: Any, *, strict: bool = False) -> str | None:
    if key is None:
        return None
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise ValueError("idempotency key must be a string or an integer")
    if isinstance(key, int) and not -(10 ** _KEY_MAX) < key < 10 ** _KEY_MAX:
        raise ValueError(f"idempotency key must be 1-{_KEY_MAX} characters without NUL")
    key = str(key)
    if not key or len(key) > _KEY_MAX or "\x00" in key:
        raise ValueError(f"idempotency key must be 1-{_KEY_MAX} characters without NUL")
    return unicode_text(key, "idempotency key", strict=strict)


def notify_channel(con: Any) -> str:
    """The NOTIFY channel of ``con``'s install (``flaskstream_events`` by default)."""
    return schema.of(con).channel("events")


@lru_cache(maxsize=64)
def _sql(template: str, names: schema.SchemaNames) -> str:
    """``template`` with this install's qualified tables, lock key and channel."""
    return template.format(
        events=names.qualified("events"), events_pruned=names.qualified("events_pruned"),
        lock_key=names.lock_key("events.publish"), channel=names.channel("events"))


def sql(con: Any, template: str) -> str:
    return _sql(template, schema.of(con))


INSERT_SQL = """
WITH commit_mode AS (SELECT set_config('synchronous_commit', CAST(:sync AS text), true)),
lock AS (SELECT pg_advisory_xact_lock({lock_key}) FROM commit_mode),
ins AS (
    INSERT INTO {events} (channel, event, data, idem_key)
    SELECT CAST(:channel AS text), CAST(:event AS text), CAST(:data AS text), CAST(:key AS text)
    FROM lock
    ON CONFLICT (channel, idem_key) WHERE idem_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT id, pg_notify('{channel}', id::text) FROM ins
"""


def insert_event(con: Any, channel: str, data: str, event: str | None, key: str | None,
                 *, durable: bool = False) -> tuple[int, bool]:
    """Store one event and NOTIFY its id (one autocommit statement).

    Returns ``(id, created)``; with a ``key`` already used on this channel the
    existing event's id comes back with ``created=False`` (a retried POST).

    ``durable=False`` commits with ``synchronous_commit = off`` for this one
    transaction: the publish (and so every subscriber) does not wait for the WAL
    flush, which under a busy disk is most of the latency. A PostgreSQL crash can
    then lose the newest fraction of a second of events, never reorder or
    corrupt them.
    """
    rows = con.run(sql(con, INSERT_SQL), channel=channel, event=event, data=data, key=key,
                   sync="on" if durable else "off")
    if rows:
        return int(rows[0][0]), True
    rows = con.run(sql(con, "SELECT id FROM {events} WHERE channel = :c AND idem_key = :k"),
                   c=channel, k=key)
    if not rows:  # pruned between the conflict and this read: store it again
        return insert_event(con, channel, data, event, key, durable=durable)
    return int(rows[0][0]), False


def fetch_after(con: Any, after_id: int, watched: list[str], limit: int) -> list[StoredEvent]:
    """Events with id > ``after_id`` on every channel, bodies only for ``watched`` ones."""
    rows = con.run(sql(
        con, "SELECT id, channel, event, CASE WHEN channel = ANY(CAST(:w AS text[])) THEN data END"
        " FROM {events} WHERE id > :after ORDER BY id LIMIT :limit"),
        w=watched, after=after_id, limit=limit,
    )
    return [StoredEvent(int(r[0]), r[1], r[2], r[3]) for r in rows]


def bodies(con: Any, ids: list[int]) -> dict[int, str]:
    """``data`` of the given event ids (those still stored)."""
    rows = con.run(sql(con, "SELECT id, data FROM {events} WHERE id = ANY(CAST(:ids AS bigint[]))"),
                   ids=ids)
    return {int(r[0]): r[1] for r in rows}


def replay(con: Any, channels: list[str], after_id: int, limit: int) -> list[StoredEvent]:
    """Stored events of ``channels`` with id > ``after_id``, oldest first, one page."""
    rows = con.run(sql(
        con, "SELECT id, channel, event, data FROM {events}"
        " WHERE channel = ANY(CAST(:chs AS text[])) AND id > :after ORDER BY id LIMIT :limit"),
        chs=channels, after=after_id, limit=limit,
    )
    return [StoredEvent(int(r[0]), r[1], r[2], r[3]) for r in rows]


MAX_EVENT_ID = 2**63 - 1  # ids are bigint


def parse_event_id(raw: str | None) -> int | None:
    """A ``Last-Event-ID`` as an event id, or None when it cannot be one.

    Only ASCII digits of a value that fits a bigint: anything else (a
    5,000-digit number, which ``int()`` refuses past 4,300 digits, or text) is
    "an id this server never gave out", answered like an unknown id.
    """
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if value <= MAX_EVENT_ID else None


def max_id(con: Any) -> int:
    return int(con.run(sql(con, "SELECT COALESCE(max(id), 0) FROM {events}"))[0][0])


def pruned_through(con: Any, channels: list[str]) -> int:
    """Highest id retention removed from any of ``channels`` (0 if none)."""
    rows = con.run(sql(
        con, "SELECT COALESCE(max(through_id), 0) FROM {events_pruned}"
        " WHERE channel = ANY(CAST(:chs AS text[])) OR channel = '*'"),
        chs=channels,
    )
    return int(rows[0][0])


PRUNE_SQL = """
WITH cutoff AS (
    SELECT GREATEST(
        COALESCE((SELECT id FROM {events} ORDER BY id DESC OFFSET :keep LIMIT 1), 0),
        COALESCE((SELECT max(id) FROM {events}
                  WHERE created_at < now() - make_interval(secs => :secs)), 0)) AS id
), gone AS (
    DELETE FROM {events} WHERE id <= (SELECT id FROM cutoff) RETURNING channel, id
), marked AS (
    INSERT INTO {events_pruned} AS p (channel, through_id, pruned_at)
    SELECT channel, max(id), now() FROM gone GROUP BY channel
    ON CONFLICT (channel) DO UPDATE
        SET through_id = GREATEST(p.through_id, EXCLUDED.through_id),
            pruned_at = EXCLUDED.pruned_at
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM marked)
"""

TRIM_MARKS_SQL = """
WITH old AS (
    DELETE FROM {events_pruned} WHERE channel <> '*' AND (
        pruned_at < now() - make_interval(secs => :secs)
        OR channel IN (SELECT channel FROM {events_pruned} WHERE channel <> '*'
                       ORDER BY pruned_at DESC OFFSET :keep))
    RETURNING through_id
)
INSERT INTO {events_pruned} AS p (channel, through_id, pruned_at)
SELECT '*', max(through_id), now() FROM old HAVING max(through_id) IS NOT NULL
ON CONFLICT (channel) DO UPDATE
    SET through_id = GREATEST(p.through_id, EXCLUDED.through_id), pruned_at = now()
"""


def prune(con: Any, keep_count: int, keep_seconds: float) -> int:
    """Apply retention: keep the newest ``keep_count`` events and none older than
    ``keep_seconds``; remember per channel what was removed. Returns rows deleted.

    The per-channel marks are bounded the same way; marks that age out are folded
    into the ``'*'`` row, which can only make a later ``reset`` more cautious.
    """
    deleted = int(con.run(sql(con, PRUNE_SQL), keep=int(keep_count), secs=float(keep_seconds))[0][0])
    con.run(sql(con, TRIM_MARKS_SQL), keep=int(keep_count), secs=float(keep_seconds))
    return deleted
