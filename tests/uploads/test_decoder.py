"""The sans-IO decoder itself: transport padding, bounded look-back, part count, no private API.

Issue 12, finding 2: werkzeug's decoder kept every blank after
``\\r\\n--BOUNDARY`` and rescanned it per chunk. Ours holds back at most a
delimiter, ``MAX_PADDING`` blanks and a line break, and refuses more padding.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaskstream.uploads.decoder import MAX_PADDING, Data, DecodeError, Part, PartDecoder, State
from flaskstream.uploads.multipart import FormReader, LimitExceeded, Limits, MultipartError
from tests.uploads.test_multipart import BOUNDARY, TRICKY, encode, parse, split

HOLD_BACK = len(b"\r\n--" + BOUNDARY) + MAX_PADDING + 2  # the most a decoder may keep


def test_padding_up_to_the_cap_is_a_delimiter() -> None:
    body = encode([("f", "a.bin", b"data\r"), ("g", None, b"v")], padding=b" \t" * (MAX_PADDING // 2))
    assert parse([body]) == ([("f", "a.bin", b"data\r")], {"g": "v"})


@pytest.mark.parametrize("chunk", [1, 1000, 64 << 10])
def test_more_padding_than_the_cap_is_malformed_at_once(chunk: int) -> None:
    """64 MiB of blanks after a boundary: refused within the first cap+1 blanks fed."""
    reader = FormReader(BOUNDARY)
    head = encode([("f", "a.bin", b"x")]).split(b"x\r\n--", 1)[0] + b"x\r\n--" + BOUNDARY
    reader.feed(head)
    fed = 0
    with pytest.raises(MultipartError) as info:
        while fed < 64 << 20:
            reader.feed(b" " * chunk)
            fed += chunk
            assert reader.decoder.buffered <= HOLD_BACK
    assert info.value.code == "MALFORMED_MULTIPART" and info.value.status == 400
    assert fed <= MAX_PADDING + chunk
    assert "blanks after a boundary" in info.value.message


def test_blanks_after_a_boundary_inside_data_are_held_back_bounded() -> None:
    """Data that repeats ``\\r\\n--BOUNDARY`` + blanks + a non-break stays data, bounded."""
    trap = b"\r\n--" + BOUNDARY + b" " * 500 + b"x"
    content = trap * 200
    body = encode([("f", "t.bin", content)])
    reader = FormReader(BOUNDARY)
    got = bytearray()
    for piece in split(body, list(range(7, len(body), 97))):
        for event in reader.feed(piece):
            if hasattr(event, "data"):
                got += event.data
        assert reader.decoder.buffered <= HOLD_BACK
    reader.feed(None)
    assert bytes(got) == content


def test_big_chunks_inside_a_part_are_views_not_copies() -> None:
    decoder = PartDecoder(BOUNDARY)
    head = encode([("f", "a.bin", b"")]).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    assert isinstance(decoder.feed(head)[0], Part)
    chunk = random.Random(1).randbytes(1 << 20).replace(b"\r", b"r").replace(b"\n", b"n")
    (event,) = decoder.feed(chunk)
    assert isinstance(event, Data) and isinstance(event.data, memoryview)
    assert event.data.obj is chunk and bytes(event.data) == chunk and decoder.buffered == 0


def test_decoder_errors_are_plain_messages() -> None:
    decoder = PartDecoder(BOUNDARY)
    with pytest.raises(DecodeError, match="^part headers are not UTF-8$"):
        decoder.feed(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"\xff\"\r\n\r\n")


def test_close_delimiter_then_epilogue_drops_everything() -> None:
    decoder = PartDecoder(BOUNDARY)
    decoder.feed(encode([("f", None, b"1")]))
    assert decoder.state is State.EPILOGUE
    assert decoder.feed(b" " * 10_000) == [] and decoder.buffered == 0


@settings(max_examples=300, deadline=None)
@given(contents=st.lists(st.binary(max_size=300) | st.sampled_from(TRICKY), min_size=1,
                         max_size=3),
       padding=st.text(alphabet=" \t", max_size=40).map(str.encode),
       cuts=st.lists(st.integers(min_value=1, max_value=10_000), max_size=8))
def test_hypothesis_random_padding_and_splits(contents: list[bytes], padding: bytes,
                                              cuts: list[int]) -> None:
    """Any content, any transport padding, any split points: byte-exact, bounded buffer."""
    body = encode([(f"f{k}", f"n{k}.bin", c) for k, c in enumerate(contents)], padding=padding)
    cuts = sorted({c % len(body) for c in cuts} - {0})
    files, _ = parse(split(body, cuts))
    assert [f[2] for f in files] == contents


@settings(max_examples=150, deadline=None)
@given(content=st.binary(min_size=0, max_size=9000),
       cut=st.integers(min_value=1, max_value=20_000), step=st.integers(min_value=1, max_value=5000))
def test_hypothesis_regular_reads(content: bytes, cut: int, step: int) -> None:
    """A first read of any length, then fixed-size reads (how a server reads a body)."""
    body = encode([("f", "r.bin", content + b"\r\n--" + BOUNDARY[:9])])
    first = cut % len(body) or 1
    files, _ = parse(split(body, list(range(first, len(body), step))))
    assert files == [("f", "r.bin", content + b"\r\n--" + BOUNDARY[:9])]


def test_every_part_counts_towards_the_part_limit() -> None:
    """Finding 9: 20,000 parts with filename="" used to pass every limit."""
    body = encode([("f", "", b"")] * 20_000 + [("g", "real.txt", b"r")])
    with pytest.raises(LimitExceeded) as info:
        parse([body], Limits(part_count=200))
    assert info.value.code == "LIMIT_PART_COUNT" and info.value.status == 413
    mixed = encode([("f", "", b"")] * 2 + [("a", None, b"1"), ("g", "real.txt", b"r")])
    assert parse([mixed], Limits(part_count=4))[0] == [("g", "real.txt", b"r")]
    with pytest.raises(LimitExceeded):
        parse([mixed], Limits(part_count=3))


def test_no_werkzeug_private_name_outside_adapters() -> None:
    """Issue 13's rule, for the modules this decoder replaced."""
    root = Path(__file__).resolve().parents[2] / "flaskstream" / "uploads"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in (
                    "_parse_data", "_last_partial_boundary_index", "_dash_boundary"):
                raise AssertionError(f"{path.name} uses werkzeug's private {node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "werkzeug.sansio.multipart":
                raise AssertionError(f"{path.name} imports werkzeug's decoder")


@pytest.mark.parametrize("unit", [b"--a", b"\n--aX", b"\r--a-", b"\r\n--a \tX"])
def test_near_delimiters_of_a_one_byte_boundary_are_data(unit: bytes) -> None:
    """Content made of the boundary itself (not at a line start, or not completed)."""
    content = unit * 30_000
    body = encode([("f", "a.bin", content)], boundary=b"a")
    rng = random.Random(len(unit))
    cuts = sorted(rng.sample(range(1, len(body)), 40))
    assert parse(split(body, cuts), boundary=b"a")[0] == [("f", "a.bin", content)]


@pytest.mark.parametrize("blanks", [MAX_PADDING, MAX_PADDING + 1])
def test_the_padding_cap_holds_at_every_split(blanks: int) -> None:
    """Cap reached: a delimiter at every read boundary; one blank more: refused at every one."""
    body = encode([("f", "a.bin", b"data"), ("g", None, b"v")], padding=b" " * blanks)
    start = body.index(b"data") + 4
    for i in range(start, start + blanks + len(BOUNDARY) + 8, 7):
        if blanks == MAX_PADDING:
            assert parse([body[:i], body[i:]]) == ([("f", "a.bin", b"data")], {"g": "v"}), i
        else:
            with pytest.raises(MultipartError, match="blanks after a boundary"):
                parse([body[:i], body[i:]])
