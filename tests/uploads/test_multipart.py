"""The pure multipart core: byte-exact at every split, every limit, filename rules.

Regression for werkzeug 3.1.9's stray byte (pallets/werkzeug#3285): a read
boundary inside the closing delimiter must not leak ``\\r`` into the file.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.sansio.multipart import Data, MultipartDecoder

from flaskstream.uploads.multipart import (
    FieldValue,
    FileData,
    FileEnd,
    FileStart,
    FormReader,
    LimitExceeded,
    Limits,
    MultipartError,
    clean_content_type,
    parse_boundary,
    sanitize_filename,
    type_allowed,
)

BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"

Part = tuple[str, str | None, bytes]  # (name, filename or None for a field, content)


def encode(parts: list[Part], boundary: bytes = BOUNDARY, *, padding: bytes = b"",
           epilogue: bytes = b"\r\n") -> bytes:
    out = bytearray(b"preamble is ignored\r\n")
    for name, filename, content in parts:
        out += b"--" + boundary + padding + b"\r\n"
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    out += b"--" + boundary + b"--" + padding + epilogue
    return bytes(out)


def parse(chunks: list[bytes], limits: Limits | None = None,
          boundary: bytes = BOUNDARY) -> tuple[list[tuple[str, str, bytes]], dict[str, str]]:
    reader = FormReader(boundary, limits or Limits())
    files: list[tuple[str, str, bytes]] = []
    fields: dict[str, str] = {}
    current: bytearray | None = None
    start: FileStart | None = None
    for chunk in [*chunks, None]:
        for event in reader.feed(chunk):
            if isinstance(event, FileStart):
                start, current = event, bytearray()
            elif isinstance(event, FileData):
                assert current is not None
                current += event.data
            elif isinstance(event, FileEnd):
                assert start is not None and current is not None
                assert event.size == len(current)
                files.append((start.field, start.filename, bytes(current)))
                current = None
            elif isinstance(event, FieldValue):
                fields[event.name] = event.value
    assert reader.complete
    return files, fields


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(cuts), len(body)]
    return [body[a:b] for a, b in zip(edges, edges[1:], strict=False)]


TRICKY = [
    b"",
    b"x",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"payload ending in CR\r",
    b"\r\n--" + BOUNDARY[:-1],            # almost a delimiter
    b"\r\n--" + BOUNDARY + b"X",          # a delimiter prefix followed by more
    b"x--" + BOUNDARY,                    # not at a line start
    b"-\r\n--\r\n--" + BOUNDARY[:5] + b"\r",
    bytes(range(256)),
]

REPRESENTATIVE = [
    encode([("file", "a.bin", b"payload")]),
    encode([("title", None, "héllo".encode()), ("file", "a.bin", b"\r\n--x\r"),
            ("file2", "b.txt", b"")]),
    encode([("file", "pad.bin", b"data\r")], padding=b" \t "),
    *(encode([("f", "t.bin", t)]) for t in TRICKY),
]


def expected(body: bytes) -> tuple[list[tuple[str, str, bytes]], dict[str, str]]:
    return parse([body])


def test_werkzeug_bug_is_real_and_fixed() -> None:
    """The verified trap: werkzeug adds a stray CR; our reader does not."""
    body = encode([("f", "a.bin", b"payload")], epilogue=b"")
    head, tail = body[:-1], body[-1:]   # ...payload\r\n--B- | -
    decoder = MultipartDecoder(BOUNDARY)
    data = b""
    for chunk in (head, tail, None):
        decoder.receive_data(chunk)
        while (event := decoder.next_event()).__class__.__name__ not in ("NeedData", "Epilogue"):
            if isinstance(event, Data):
                data += event.data
    assert data == b"payload\r"  # upstream behaviour this module exists to fix
    assert parse([head, tail])[0] == [("f", "a.bin", b"payload")]


@pytest.mark.parametrize("body", REPRESENTATIVE, ids=range(len(REPRESENTATIVE)))
def test_every_split_position(body: bytes) -> None:
    want = expected(body)
    for i in range(1, len(body)):
        assert parse([body[:i], body[i:]]) == want, f"split at {i}"


def test_every_pair_of_splits_near_the_end() -> None:
    body = encode([("f", "a.bin", b"tail\r\n-")])
    want = expected(body)
    n = len(body)
    for i in range(n - 70, n):
        for j in range(i + 1, n):
            assert parse(split(body, [i, j])) == want, (i, j)


def test_fast_path_chunks_ending_at_every_position() -> None:
    """Big chunks inside a part skip the decoder's buffer: split them everywhere too."""
    rng = random.Random(4096)
    body = encode([("f", "a.bin", rng.randbytes(9000) + b"\r\n--" + BOUNDARY[:7] + b"\r"),
                   ("g", "b.bin", b"\r" + rng.randbytes(6000) + b"\r\n"),
                   ("h", None, b"x" * 5000)])
    want = expected(body)
    delimiters = [i for i in range(len(body)) if body.startswith(b"\r\n--" + BOUNDARY, i)]
    near = {i for d in delimiters for i in range(d - 60, d + len(BOUNDARY) + 60)}
    for i in sorted(near | set(range(400, len(body), 97))):
        if 400 <= i < len(body):
            assert parse([body[:300], body[300:i], body[i:]]) == want, f"cut at {i}"


def test_randomized_big_chunks() -> None:
    rng = random.Random(7578)
    for _ in range(60):
        contents = [rng.randbytes(rng.randint(0, 30000)) + rng.choice(TRICKY) for _ in range(3)]
        body = encode([(f"f{k}", f"n{k}.bin", c) for k, c in enumerate(contents)])
        cuts, at = [], 0
        while at < len(body):
            at += rng.randint(1, 9000)
            cuts.append(at)
        files, _ = parse(split(body, [c for c in cuts if c < len(body)]))
        assert [f[2] for f in files] == contents


def test_one_byte_at_a_time() -> None:
    body = REPRESENTATIVE[1]
    assert parse([body[i:i + 1] for i in range(len(body))]) == expected(body)


def test_randomized_splits_of_larger_bodies() -> None:
    rng = random.Random(3285)
    for _ in range(200):
        contents = [rng.randbytes(rng.randint(0, 5000)) + rng.choice(TRICKY) for _ in range(3)]
        body = encode([(f"f{k}", f"n{k}.bin", c) for k, c in enumerate(contents)])
        cuts = rng.sample(range(1, len(body)), rng.randint(1, 12))
        files, _ = parse(split(body, cuts))
        assert [f[2] for f in files] == contents


@settings(max_examples=300, deadline=None)
@given(content=st.binary(max_size=600).map(lambda b: b + b"\r\n--" + BOUNDARY[:3]),
       cuts=st.lists(st.integers(min_value=1, max_value=5000), max_size=6))
def test_hypothesis_any_content_any_split(content: bytes, cuts: list[int]) -> None:
    body = encode([("f", "h.bin", content), ("g", None, b"v")])
    cuts = sorted({c % len(body) for c in cuts} - {0})
    files, fields = parse(split(body, cuts))
    assert files == [("f", "h.bin", content)] and fields == {"g": "v"}


# --- malformed bodies fail loudly ------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"",
    b"junk without any boundary",
    encode([("f", "a.bin", b"x" * 100)])[:-30],                  # truncated
    b"--" + BOUNDARY + b"\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n--"
    + BOUNDARY + b"--\r\n",
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; filename="a"\r\n\r\nx\r\n--'
    + BOUNDARY + b"--\r\n",                                        # no name
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="f"; filename="\xff\xfe"'
    b"\r\n\r\nx\r\n--" + BOUNDARY + b"--\r\n",                    # non-UTF-8 header
    encode([("f", None, b"\xff")]),                               # non-UTF-8 field value
])
def test_malformed_bodies_raise(body: bytes) -> None:
    with pytest.raises(MultipartError) as info:
        parse([body])
    assert info.value.code == "MALFORMED_MULTIPART" and info.value.status == 400


def test_long_junk_fails_as_malformed_early() -> None:
    reader = FormReader(BOUNDARY, Limits(part_headers=1024))
    with pytest.raises(MultipartError) as info:
        reader.feed(b"x" * 5000)
    assert info.value.code == "MALFORMED_MULTIPART"


@pytest.mark.parametrize("header,code", [
    ("multipart/form-data", "MALFORMED_MULTIPART"),
    ("multipart/form-data; boundary=", "MALFORMED_MULTIPART"),
    ("multipart/form-data; boundary=" + "a" * 71, "MALFORMED_MULTIPART"),
    ("multipart/form-data; boundary=\"bad\x01\"", "MALFORMED_MULTIPART"),
    ("application/json", "UNSUPPORTED_MEDIA_TYPE"),
    (None, "UNSUPPORTED_MEDIA_TYPE"),
])
def test_parse_boundary_rejects(header: str | None, code: str) -> None:
    with pytest.raises(MultipartError) as info:
        parse_boundary(header)
    assert info.value.code == code


def test_parse_boundary_accepts_quoted() -> None:
    assert parse_boundary('multipart/form-data; boundary="a b:c"') == b"a b:c"


# --- limits --------------------------------------------------------------------------

@pytest.mark.parametrize("limits,body,code", [
    (Limits(body_size=100), encode([("f", "a", b"x" * 200)]), "LIMIT_BODY_SIZE"),
    (Limits(file_size=10), encode([("f", "a", b"x" * 11)]), "LIMIT_FILE_SIZE"),
    (Limits(file_count=2), encode([("f", "a", b"1"), ("f", "b", b"2"), ("f", "c", b"3")]),
     "LIMIT_FILE_COUNT"),
    (Limits(field_count=1), encode([("a", None, b"1"), ("b", None, b"2")]), "LIMIT_FIELD_COUNT"),
    (Limits(field_size=4), encode([("a", None, b"12345")]), "LIMIT_FIELD_SIZE"),
    (Limits(part_headers=64), encode([("a" * 80, None, b"1")]), "LIMIT_PART_HEADERS"),
    (Limits(part_header_count=2), b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; '
     b'name="a"\r\nX-1: 1\r\nX-2: 2\r\n\r\nv\r\n--' + BOUNDARY + b"--\r\n", "LIMIT_PART_HEADERS"),
    (Limits(filename_length=10), encode([("f", "a" * 11, b"1")]), "LIMIT_FILENAME_LENGTH"),
])
def test_each_limit_has_its_code(limits: Limits, body: bytes, code: str) -> None:
    with pytest.raises(LimitExceeded) as info:
        parse([body], limits)
    assert info.value.code == code and info.value.status == 413


def test_limits_at_exactly_the_bound_pass() -> None:
    body = encode([("f", "abcdefghij", b"x" * 10), ("a", None, b"1234")])
    limits = Limits(body_size=len(body), file_size=10, file_count=1, field_count=1,
                    field_size=4, filename_length=10)
    assert parse([body], limits)[0] == [("f", "abcdefghij", b"x" * 10)]


def test_file_size_limit_stops_while_streaming() -> None:
    """The violation is raised by the chunk that crosses it, not at the end of the body."""
    reader = FormReader(BOUNDARY, Limits(file_size=1000))
    head = encode([("f", "a", b"")]).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    reader.feed(head + b"x" * 900)
    with pytest.raises(LimitExceeded):
        reader.feed(b"x" * 200)


def test_header_limit_applies_before_the_blank_line_arrives() -> None:
    reader = FormReader(BOUNDARY, Limits(part_headers=100))
    reader.feed(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n")
    with pytest.raises(LimitExceeded):
        reader.feed(b"X-Long: " + b"y" * 200)


def test_empty_filename_part_is_skipped_and_not_counted() -> None:
    body = encode([("f", "", b""), ("g", "real.txt", b"r")])
    assert parse([body], Limits(file_count=1))[0] == [("g", "real.txt", b"r")]


def test_epilogue_is_dropped_but_counted() -> None:
    body = encode([("f", "a", b"1")], epilogue=b"\r\n" + b"e" * 50)
    assert parse([body])[0] == [("f", "a", b"1")]
    with pytest.raises(LimitExceeded):
        parse([body, b"more" * 10], Limits(body_size=len(body) + 10))


# --- filenames and types ---------------------------------------------------------------

@pytest.mark.parametrize("raw,want", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
    ("a\x00b\x1fc\x7f.txt", "abc.txt"),
    ("e\u0301te\u0301.txt", "\u00e9t\u00e9.txt"),              # NFC
    ("evil\u202egpj.exe", "evilgpj.exe"),                     # bidi override removed
    ("  spaced  ", "spaced"),
    ("..", "upload"),
    ("dir/", "upload"),
    ("日本語のファイル.txt", "日本語のファイル.txt"),
])
def test_sanitize_filename(raw: str, want: str) -> None:
    assert sanitize_filename(raw) == want


def test_sanitize_caps_at_255_bytes_on_a_character_boundary() -> None:
    name = sanitize_filename("é" * 300 + ".jpeg")
    assert len(name.encode()) <= 255 and name.endswith(".jpeg")
    assert name[:-5] == "é" * len(name[:-5])
    assert len(sanitize_filename("x" * 400).encode()) == 255


def test_filename_from_the_wire_is_utf8_and_sanitised() -> None:
    raw = "../ünï\u0000.txt".encode()
    body = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="f"; filename="' + raw
            + b'"\r\n\r\nx\r\n--' + BOUNDARY + b"--\r\n")
    assert parse([body])[0] == [("f", "ünï.txt", b"x")]


def test_content_type_cleaning_and_allow_list() -> None:
    assert clean_content_type("Image/PNG; charset=x") == "image/png"
    assert clean_content_type("not a type") == "application/octet-stream"
    assert type_allowed("a.PNG", "application/octet-stream", [".png"])
    assert type_allowed("a.bin", "image/jpeg", ["image/*"])
    assert not type_allowed("a.exe", "application/x-msdownload", ["image/*", ".png"])
    assert type_allowed("anything", "x/y", [])


def test_a_file_part_carries_its_content_digest_header_verbatim() -> None:
    """The pure core only reports the part's ``Content-Digest`` (any case); the receive
    loop verifies it against the SHA-256 computed on the way."""
    body = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n'
            b"content-digest: sha-256=:abc=:\r\n\r\nxyz\r\n--" + BOUNDARY + b"--\r\n")
    events = FormReader(BOUNDARY).feed(body)
    starts = [e for e in events if isinstance(e, FileStart)]
    assert [s.content_digest for s in starts] == ["sha-256=:abc=:"]
    plain = [e for e in FormReader(BOUNDARY).feed(encode([("f", "a", b"x")]))
             if isinstance(e, FileStart)]
    assert [s.content_digest for s in plain] == [None]
