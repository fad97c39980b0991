"""The pure encoder: exact bytes for each rule, and a round trip through a
parser written from the HTML standard (tests/events/sse_parser.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flaskstream.events.encode import (
    EncodeError,
    encode_comment,
    encode_event,
    encode_retry,
    json_data,
    split_lines,
)
from tests.events.sse_parser import parse


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "hello"}, b"data: hello\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\rb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\n"}, b"data: a\ndata: \n\n"),  # trailing newline survives
        ({"data": "\n"}, b"data: \ndata: \n\n"),
        ({"data": "a\r\n\r\nb"}, b"data: a\ndata: \ndata: b\n\n"),
        ({"data": "a\u2028b\x0cc\x85d"}, "data: a\u2028b\x0cc\x85d\n\n".encode()),  # not splitlines()
        ({"data": " lead"}, b"data:  lead\n\n"),  # the parser strips exactly one space
        ({"data": ": not a comment"}, b"data: : not a comment\n\n"),
        ({"data": "x", "event": "tick", "id": 7}, b"id: 7\nevent: tick\ndata: x\n\n"),
        ({"data": "x", "id": ""}, b"id: \ndata: x\n\n"),  # resets the last event id
        ({"retry": 3000}, b"retry: 3000\n\n"),
        ({"id": 42, "retry": 0}, b"id: 42\nretry: 0\n\n"),
        ({"data": "é✓😀"}, "data: é✓😀\n\n".encode()),
    ],
)
def test_exact_bytes(kwargs: dict, expected: bytes) -> None:
    assert encode_event(**kwargs) == expected


def test_helpers() -> None:
    assert encode_retry(1500) == b"retry: 1500\n\n"
    assert encode_comment() == b":\n\n"
    assert encode_comment("ping") == b": ping\n\n"
    assert encode_comment("a\nb\r\nc") == b": a\n: b\n: c\n\n"
    assert json_data({"a": [1, "é\n"]}) == '{"a":[1,"é\\n"]}'
    assert split_lines("a\r\nb\rc\nd\u2028e") == ["a", "b", "c", "d\u2028e"]
    assert not encode_event(data="x").startswith(b"\xef\xbb\xbf")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "x", "id": "1\n2"},
        {"data": "x", "id": "1\r"},
        {"data": "x", "id": "a\x00"},
        {"data": "x", "event": "a\nb"},
        {"data": "x", "event": "a\rb"},
        {"data": "x", "event": "\x00"},
        {"retry": "3000"},
        {"retry": 1.5},
        {"retry": -1},
        {"retry": True},
        {"id": True},
        {"id": 1.0},
        {"data": b"bytes"},
        {"data": {"a": 1}},
        {},
        {"data": "\ud800"},  # a lone surrogate is not UTF-8
    ],
)
def test_rejects_what_the_format_cannot_carry(kwargs: dict) -> None:
    with pytest.raises(EncodeError):
        encode_event(**kwargs)


def test_comment_cannot_escape_its_line() -> None:
    parsed = parse(encode_comment("x\ndata: injected") + encode_event("real"))
    assert [e.data for e in parsed.events] == ["real"]


def as_lf(text: str) -> str:
    """The format cannot carry CR: every line break arrives as LF (JSON keeps them)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
_field = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                        blacklist_characters="\r\n\x00"))


@given(
    events=st.lists(
        st.tuples(_text, st.one_of(st.none(), _field), st.one_of(st.none(), _field,
                                                                 st.integers(0, 2**63))),
        max_size=8,
    ),
    retry=st.one_of(st.none(), st.integers(0, 10**9)),
)
def test_round_trip_through_a_spec_parser(events: list, retry: int | None) -> None:
    stream = encode_retry(retry) if retry is not None else b""
    stream += encode_comment("heartbeat")
    expected = []
    last_id = ""
    for data, event, event_id in events:
        stream += encode_event(data, event=event, id=event_id)
        if event_id is not None:
            last_id = str(event_id)
        expected.append((event or "message", as_lf(data), last_id))
    parsed = parse(stream)
    assert [(e.type, e.data, e.last_event_id) for e in parsed.events] == expected
    assert parsed.retry == retry


@given(st.text())
def test_split_lines_matches_the_parser(text: str) -> None:
    try:
        stream = encode_event(text)
    except EncodeError:
        return  # surrogates
    assert [e.data for e in parse(stream).events] == [as_lf(text)]
