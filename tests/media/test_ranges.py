"""The pure Range/precondition core: one test per RFC 9110 rule, plus properties."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flaskstream.media import ranges as r
from flaskstream.media.ranges import Decision, RangeNotSatisfiable, evaluate, parse_ranges

SIZE = 1000
ETAG = r.make_etag(0x1234, SIZE, 1_700_000_000_123_456_789)
LM = 1_700_000_000
LM_DATE = r.http_date(LM)
EARLIER = r.http_date(LM - 60)
LATER = r.http_date(LM + 60)


def decide(method: str = "GET", size: int = SIZE, max_ranges: int = 16, **headers: str) -> Decision:
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return evaluate(method, named, size, ETAG, LM, max_ranges)


# --- Range forms (§14.1.2) ----------------------------------------------------------

def test_closed_range_is_inclusive() -> None:
    assert decide(Range="bytes=0-99") == Decision(206, ((0, 100),))


def test_first_byte_only() -> None:  # whitenoise answers 416 here
    assert decide(Range="bytes=0-0") == Decision(206, ((0, 1),))


def test_last_pos_past_end_is_clamped() -> None:
    assert decide(Range="bytes=900-5000") == Decision(206, ((900, 1000),))


def test_open_range_to_the_end() -> None:
    assert decide(Range="bytes=990-") == Decision(206, ((990, 1000),))


def test_bytes_0_open_is_206_not_200() -> None:  # Safari probes with it
    assert decide(Range="bytes=0-") == Decision(206, ((0, 1000),))


def test_suffix_range() -> None:
    assert decide(Range="bytes=-10") == Decision(206, ((990, 1000),))


def test_suffix_longer_than_file_is_whole_file() -> None:
    assert decide(Range="bytes=-5000") == Decision(206, ((0, 1000),))


def test_suffix_zero_is_416() -> None:
    assert decide(Range="bytes=-0") == Decision(416)


def test_start_at_or_past_end_is_416() -> None:
    assert decide(Range="bytes=1000-") == Decision(416)
    assert decide(Range="bytes=1000-2000") == Decision(416)


def test_unsatisfiable_spec_dropped_when_another_is_satisfiable() -> None:
    assert decide(Range="bytes=5000-6000, 0-9") == Decision(206, ((0, 10),))


def test_unit_is_case_insensitive_and_ows_allowed() -> None:
    assert decide(Range="Bytes= 0-9 ,\t500-509") == Decision(206, ((0, 10), (500, 510)))


def test_empty_list_elements_are_allowed() -> None:
    assert decide(Range="bytes=,0-9,,") == Decision(206, ((0, 10),))


def test_zero_length_file() -> None:
    assert decide(size=0, Range="bytes=0-") == Decision(416)
    assert decide(size=0, Range="bytes=-5") == Decision(200)


# --- invalid Range is ignored (§14.2), never 400/416 ------------------------------------

@pytest.mark.parametrize("header", [
    "bytes=abc", "bytes=5-1", "bytes=1-2-3", "bytes=--5", "bytes=0x10-20", "bytes=", "bytes",
    "items=0-5", "bytes 0-5", "bytes=1 -5", "bytes=-", "bytes=٣-٤", "bytes=+1-2",
])
def test_invalid_or_unknown_unit_is_ignored(header: str) -> None:
    assert decide(Range=header) == Decision(200)


def test_one_invalid_spec_ignores_the_whole_header() -> None:
    assert decide(Range="bytes=0-1,9-3") == Decision(200)


# --- robustness ----------------------------------------------------------------------

def test_huge_numbers_do_not_overflow() -> None:
    assert decide(Range="bytes=0-18446744073709551615") == Decision(206, ((0, 1000),))
    assert decide(Range="bytes=18446744073709551615-") == Decision(416)
    assert decide(Range="bytes=-" + "9" * 10_000) == Decision(206, ((0, 1000),))
    assert decide(Range="bytes=" + "0" * 5000 + "5-9") == Decision(206, ((5, 10),))


def test_apache_killer_header_is_cheap() -> None:
    header = "bytes=0-," + ",".join(f"5-{k}" for k in range(1300))
    started = time.perf_counter()
    assert decide(Range=header) == Decision(200)
    assert time.perf_counter() - started < 0.5  # generous: it must not be quadratic


def test_ten_thousand_ranges_is_full_200() -> None:
    header = "bytes=" + ",".join(f"{k}-{k}" for k in range(0, 20_000, 2))
    assert decide(size=100_000, Range=header) == Decision(200)


# --- multi-range (§14.6) and the nginx rule -------------------------------------------

def test_multi_range_keeps_requested_order() -> None:
    assert decide(Range="bytes=500-599,0-99") == Decision(206, ((500, 600), (0, 100)))


def test_overlapping_ranges_coalesce() -> None:
    assert decide(Range="bytes=0-199,100-299") == Decision(206, ((0, 300),))


def test_nearly_adjacent_ranges_coalesce() -> None:
    assert decide(Range="bytes=0-99,150-199") == Decision(206, ((0, 200),))
    assert decide(Range="bytes=0-99,500-599").ranges == ((0, 100), (500, 600))


def test_coalesced_range_takes_its_earliest_members_place() -> None:
    got = decide(Range="bytes=800-899,0-9,850-999")
    assert got == Decision(206, ((800, 1000), (0, 10)))


def test_more_than_max_ranges_is_full_200() -> None:
    header = "bytes=" + ",".join(f"{k * 10}-{k * 10}" for k in range(17))
    assert decide(Range=header) == Decision(200)
    assert decide(Range=header, max_ranges=17).status == 206


def test_ranges_adding_up_past_size_is_full_200() -> None:
    assert decide(Range="bytes=0-,0-") == Decision(200)
    assert decide(Range="bytes=0-599,400-999") == Decision(200)


def test_decision_multipart_flag() -> None:
    assert decide(Range="bytes=0-9,500-509").multipart
    assert not decide(Range="bytes=0-9").multipart


# --- preconditions, §13.2.2 order ---------------------------------------------------------

def test_if_match_mismatch_is_412() -> None:
    assert decide(If_Match='"other"') == Decision(412)


def test_if_match_uses_strong_comparison() -> None:
    assert decide(If_Match=f"W/{ETAG}") == Decision(412)
    assert decide(If_Match=f'"x", {ETAG}') == Decision(200)
    assert decide(If_Match="*") == Decision(200)


def test_if_unmodified_since_earlier_is_412() -> None:
    assert decide(If_Unmodified_Since=EARLIER) == Decision(412)
    assert decide(If_Unmodified_Since=LM_DATE) == Decision(200)


def test_if_match_wins_over_if_unmodified_since() -> None:
    assert decide(If_Match=ETAG, If_Unmodified_Since=EARLIER) == Decision(200)


def test_invalid_if_unmodified_since_is_ignored() -> None:
    assert decide(If_Unmodified_Since="yesterday") == Decision(200)


def test_if_none_match_hit_is_304() -> None:
    assert decide(If_None_Match=ETAG) == Decision(304)
    assert decide(If_None_Match=f'"a", W/{ETAG}') == Decision(304)  # weak comparison
    assert decide(If_None_Match="*") == Decision(304)


def test_if_none_match_on_unsafe_method_is_412() -> None:
    assert decide("DELETE", If_None_Match=ETAG) == Decision(412)


def test_if_modified_since_not_newer_is_304() -> None:
    assert decide(If_Modified_Since=LM_DATE) == Decision(304)
    assert decide(If_Modified_Since=EARLIER) == Decision(200)


def test_if_none_match_miss_skips_if_modified_since() -> None:
    assert decide(If_None_Match='"other"', If_Modified_Since=LATER) == Decision(200)


def test_412_comes_before_304() -> None:
    assert decide(If_Match='"other"', If_None_Match=ETAG) == Decision(412)


def test_preconditions_apply_even_with_a_range() -> None:
    assert decide(Range="bytes=0-9", If_None_Match=ETAG) == Decision(304)
    assert decide(Range="bytes=0-9", If_Match='"nope"') == Decision(412)


def test_if_range_strong_etag_match_serves_range() -> None:
    assert decide(Range="bytes=0-9", If_Range=ETAG) == Decision(206, ((0, 10),))


def test_if_range_mismatch_serves_full() -> None:
    assert decide(Range="bytes=0-9", If_Range='"stale"') == Decision(200)


def test_if_range_weak_etag_never_matches() -> None:
    assert decide(Range="bytes=0-9", If_Range=f"W/{ETAG}") == Decision(200)


def test_if_range_no_substring_match() -> None:
    assert decide(Range="bytes=0-9", If_Range=ETAG[:-3] + '"') == Decision(200)


def test_if_range_date_must_match_exactly() -> None:
    assert decide(Range="bytes=0-9", If_Range=LM_DATE) == Decision(206, ((0, 10),))
    assert decide(Range="bytes=0-9", If_Range=LATER) == Decision(200)
    assert decide(Range="bytes=0-9", If_Range="not a date") == Decision(200)


def test_range_ignored_for_other_methods() -> None:
    assert decide("POST", Range="bytes=0-9") == Decision(200)


def test_head_mirrors_get() -> None:
    assert decide("HEAD", Range="bytes=0-9") == Decision(206, ((0, 10),))


def test_all_three_http_date_forms() -> None:
    for form in ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                 "Sun Nov  6 08:49:37 1994"):
        assert r.parse_http_date(form) == 784111777


# --- validators and framing ---------------------------------------------------------------

def test_etag_is_strong_and_tracks_stat() -> None:
    assert r.make_etag(1, 2, 3) == '"1-2-3"'
    assert r.make_etag(1, 2, 3) != r.make_etag(1, 2, 4)


def test_parse_etags() -> None:
    assert r.parse_etags('"a,b", W/"c" ,"d"') == ['"a,b"', 'W/"c"', '"d"']
    assert r.parse_etags("*") == ["*"]
    assert r.parse_etags('"a" junk') is None
    assert r.parse_etags('"unterminated') is None


def test_multipart_exact_bytes() -> None:
    data = bytes(range(256)) * 4
    plan = r.plan_multipart([(0, 3), (10, 12)], len(data), "video/mp4", boundary="B")
    body = b"".join(head + data[a:b] for head, a, b in plan.parts) + plan.tail
    assert body == (
        b"--B\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-2/1024\r\n\r\n\x00\x01\x02"
        b"\r\n--B\r\nContent-Type: video/mp4\r\nContent-Range: bytes 10-11/1024\r\n\r\n\x0a\x0b"
        b"\r\n--B--\r\n"
    )
    assert plan.content_length == len(body)
    assert plan.content_type == "multipart/byteranges; boundary=B"


def test_boundary_is_random() -> None:
    assert r.new_boundary() != r.new_boundary()


def test_content_range_strings() -> None:
    assert r.content_range(0, 100, 1000) == "bytes 0-99/1000"
    assert r.unsatisfied_range(1000) == "bytes */1000"


# --- properties --------------------------------------------------------------------------

specs = st.one_of(
    st.tuples(st.integers(0, 3000), st.one_of(st.none(), st.integers(0, 3000))).map(
        lambda t: f"{t[0]}-" if t[1] is None else f"{t[0]}-{t[0] + t[1]}"),
    st.integers(0, 3000).map(lambda n: f"-{n}"),
)


@given(st.text(max_size=200), st.integers(0, 5000))
def test_any_header_text_is_safe(header: str, size: int) -> None:
    try:
        result = parse_ranges(header, size)
    except RangeNotSatisfiable:
        return
    for start, stop in result or []:
        assert 0 <= start < stop <= size


@given(st.lists(specs, min_size=1, max_size=20), st.integers(1, 4000))
def test_valid_specs_yield_clamped_ranges(items: list[str], size: int) -> None:
    header = "bytes=" + ",".join(items)
    decision = evaluate("GET", {"Range": header}, size, ETAG, LM)
    assert decision.status in (200, 206, 416)
    if decision.status == 206:
        covered = [b for a, z in decision.ranges for b in range(a, z)]
        assert len(covered) == len(set(covered)) <= size  # no byte sent twice
        assert all(0 <= a < z <= size for a, z in decision.ranges)


@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 300)), min_size=1, max_size=16))
def test_coalesce_preserves_bytes_and_separates(pairs: list[tuple[int, int]]) -> None:
    ranges = [(a, a + n) for a, n in pairs]
    merged = r.coalesce(ranges)
    wanted = {b for a, z in ranges for b in range(a, z)}
    got = {b for a, z in merged for b in range(a, z)}
    assert wanted <= got
    ordered = sorted(merged)
    for (_, stop), (start, _) in zip(ordered, ordered[1:], strict=False):
        assert start > stop + r.COALESCE_GAP
    # every extra byte lies in a gap no bigger than COALESCE_GAP
    assert len(got - wanted) <= r.COALESCE_GAP * len(ranges)


@given(st.lists(st.tuples(st.integers(0, 999), st.integers(1, 50)), min_size=2, max_size=8),
       st.binary(min_size=1000, max_size=1000))
def test_multipart_length_is_exact_and_parses_back(pairs: list[tuple[int, int]],
                                                   data: bytes) -> None:
    ranges = [(a, min(a + n, 1000)) for a, n in pairs]
    plan = r.plan_multipart(ranges, 1000, "application/octet-stream")
    body = b"".join(head + data[a:b] for head, a, b in plan.parts) + plan.tail
    assert len(body) == plan.content_length
    delimiter = b"\r\n--" + plan.boundary.encode()
    chunks = (b"\r\n" + body).split(delimiter)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    for chunk, (a, b) in zip(chunks[1:-1], ranges, strict=True):
        head, _, payload = chunk.partition(b"\r\n\r\n")
        assert f"Content-Range: bytes {a}-{b - 1}/1000".encode() in head
        assert payload == data[a:b]


# --- single_range: the fast path's shortcut agrees with evaluate ------------------------

@pytest.mark.parametrize("header,expected", [
    ("bytes=0-0", (0, 1)), ("bytes=0-", (0, 100)), ("bytes=5-9", (5, 10)),
    ("bytes=007-010", (7, 11)), ("bytes=99-", (99, 100)), ("bytes=0-999999999999999999", (0, 100)),
    ("bytes=9-5", None), ("bytes=100-", None), ("bytes=-5", None), ("bytes= 0-5", None),
    ("bytes=0-5,7-9", None), ("Bytes=0-5", None), ("bytes=\u0663-\u0665", None),
    ("bytes=0-5 ", None), ("bytes=1234567890123456789-", None),
])
def test_single_range(header: str, expected: tuple[int, int] | None) -> None:
    assert r.single_range(header, 100) == expected
    if expected is not None:
        assert evaluate("GET", {"Range": header}, 100, '"e"', 0) == Decision(206, (expected,))


def test_single_range_fuzz_agrees_with_evaluate() -> None:
    rng = random.Random(3)
    for _ in range(3000):
        size = rng.randrange(0, 50)
        first = rng.choice(["", str(rng.randrange(0, 60)), "0" + str(rng.randrange(0, 9))])
        last = rng.choice(["", str(rng.randrange(0, 60))])
        header = f"bytes={first}-{last}"
        got = r.single_range(header, size)
        if got is not None:
            assert evaluate("GET", {"Range": header}, size, '"e"', 0) == Decision(206, (got,))
        elif first and int(first) < size and (not last or int(last) >= int(first)):
            raise AssertionError(f"declined a simple satisfiable range: {header} of {size}")
