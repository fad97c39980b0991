"""Text that reaches the events table: strict at the edges, safe for any ``str`` inside;
and which ``Last-Event-ID`` values are ids at all (issue 12, findings 1 and 8)."""

from __future__ import annotations

import pytest

from flaskstream.events import store


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\ud83d", "ok \udc80"])
def test_lone_surrogates_are_refused_when_strict_and_replaced_otherwise(text: str) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        store.data_text(text, strict=True)
    with pytest.raises(ValueError, match="lone surrogate"):
        store.check_event_name(text, strict=True)
    with pytest.raises(ValueError, match="lone surrogate"):
        store.check_key(text, strict=True)
    for safe in (store.data_text(text), store.check_event_name(text), store.check_key(text)):
        assert safe is not None and "\ufffd" in safe
        safe.encode("utf-8")  # what pg8000 will do: must not raise


def test_surrogates_inside_json_data_are_caught_too() -> None:
    data = {"error": {"message": "bad header 'na\udcffme'"}}  # a surrogateescape'd CSV header
    with pytest.raises(ValueError):
        store.data_text(data, strict=True)
    assert store.data_text(data) == '{"error":{"message":"bad header \'na\ufffdme\'"}}'


def test_valid_text_is_unchanged() -> None:
    text = "r\u00e9sum\u00e9 \U0001f600 \u4e2d"
    assert store.data_text(text, strict=True) == text
    assert store.data_text({"t": text}, strict=True) == '{"t":"' + text + '"}'


def test_data_nested_beyond_the_encoder_is_a_value_error() -> None:
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        store.data_text(deep)


def test_huge_integer_keys_are_refused_without_int_to_str_errors() -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        store.check_key(10 ** 5000)
    assert store.check_key(12345) == "12345"


@pytest.mark.parametrize(("raw", "expected"), [
    ("0", 0), ("41", 41), (str(2**63 - 1), 2**63 - 1),
    (str(2**63), None), ("9" * 5000, None), ("", None), (None, None), ("-1", None),
    ("4\u0662", None),  # a non-ASCII digit: str.isdigit() says yes, ids say no
    (" 1", None), ("abc", None),
])
def test_parse_event_id(raw: str | None, expected: int | None) -> None:
    assert store.parse_event_id(raw) == expected
