"""The pure tus core, one test per rule of the tus 1.0.0 specification (quoted in the names)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flaskstream.tus import protocol
from flaskstream.tus.protocol import TusError


def error_of(func, *args, **kwargs) -> TusError:
    with pytest.raises(TusError) as info:
        func(*args, **kwargs)
    return info.value


# --- Tus-Resumable / Tus-Version ------------------------------------------------------


def test_supported_version_passes() -> None:
    protocol.check_version("PATCH", "1.0.0")


@pytest.mark.parametrize("value", [None, "", "0.2.2", "1.0", "2.0.0", "1.0.0,0.2.2"])
def test_unsupported_version_is_412_with_tus_version(value: str | None) -> None:
    err = error_of(protocol.check_version, "HEAD", value)
    assert err.status == 412
    assert err.headers == {"Tus-Version": "1.0.0"}


def test_options_request_ignores_tus_resumable() -> None:
    protocol.check_version("OPTIONS", None)
    protocol.check_version("OPTIONS", "9.9.9")


def test_options_headers_advertise_versions_extensions_size_algorithms() -> None:
    headers = protocol.options_headers(1073741824)
    assert headers["Tus-Version"] == "1.0.0"
    assert headers["Tus-Max-Size"] == "1073741824"
    extensions = headers["Tus-Extension"].split(",")
    for name in ("creation", "creation-with-upload", "creation-defer-length", "termination",
                 "checksum", "expiration"):
        assert name in extensions
    algorithms = headers["Tus-Checksum-Algorithm"].split(",")
    assert "sha1" in algorithms  # "The Server MUST support at least the SHA1 checksum algorithm"
    assert all(a == a.lower() and a.isascii() for a in algorithms)


def test_options_without_max_size_omits_header() -> None:
    assert "Tus-Max-Size" not in protocol.options_headers(None)


# --- Upload-Offset / Upload-Length --------------------------------------------------------


@pytest.mark.parametrize("value,expected", [("0", 0), ("70", 70), (" 100 ", 100),
                                            ("9223372036854775807", 2**63 - 1)])
def test_non_negative_integers(value: str, expected: int) -> None:
    assert protocol.parse_non_negative("Upload-Offset", value) == expected


@pytest.mark.parametrize("value", ["-1", "+1", "1.5", "0x10", "", "1 2", "١٢", "9223372036854775808"])
def test_offset_must_be_a_non_negative_integer(value: str) -> None:
    assert error_of(protocol.parse_non_negative, "Upload-Offset", value).status == 400


def test_missing_offset_is_400() -> None:
    assert error_of(protocol.parse_non_negative, "Upload-Offset", None).status == 400


def test_offsets_must_match_else_409() -> None:
    protocol.check_offset(70, 70)
    err = error_of(protocol.check_offset, 70, 0)
    assert err.status == 409


# --- creation ------------------------------------------------------------------------------


def test_creation_with_length() -> None:
    assert protocol.parse_creation("100", None, None) == protocol.Creation(100)


def test_creation_with_deferred_length() -> None:
    assert protocol.parse_creation(None, "1", None).deferred


@pytest.mark.parametrize("value", ["0", "2", "true", ""])
def test_defer_length_other_than_1_is_400(value: str) -> None:
    assert error_of(protocol.parse_creation, None, value, None).status == 400


def test_creation_needs_a_length_or_deferral() -> None:
    assert error_of(protocol.parse_creation, None, None, None).status == 400
    assert error_of(protocol.parse_creation, "5", "1", None).status == 400


def test_length_over_max_size_is_413() -> None:
    assert protocol.parse_creation("1024", None, 1024).length == 1024
    assert error_of(protocol.parse_creation, "1025", None, 1024).status == 413


def test_deferred_length_is_set_once_then_immutable() -> None:
    assert protocol.resolve_length(None, None, 10, None) is None
    assert protocol.resolve_length(None, "300", 200, None) == 300
    assert protocol.resolve_length(300, "300", 200, None) == 300
    assert protocol.resolve_length(300, None, 200, None) == 300
    assert error_of(protocol.resolve_length, 300, "301", 200, None).status == 400
    assert error_of(protocol.resolve_length, None, "100", 200, None).status == 400
    assert error_of(protocol.resolve_length, None, "2000", 0, 1000).status == 413


def test_body_budget_and_declared_length() -> None:
    assert protocol.body_budget(70, 100, None) == 30
    assert protocol.body_budget(70, None, 1000) == 930
    assert protocol.body_budget(70, None, None) is None
    protocol.check_declared_body(30, 30)
    protocol.check_declared_body(None, 30)
    assert error_of(protocol.check_declared_body, 31, 30).status == 413


# --- PATCH content type --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["application/offset+octet-stream",
                                   "Application/Offset+Octet-Stream",
                                   "application/offset+octet-stream; charset=binary"])
def test_offset_octet_stream_accepted(value: str) -> None:
    protocol.check_patch_content_type(value)


@pytest.mark.parametrize("value", [None, "", "application/octet-stream", "text/plain"])
def test_other_content_types_are_415(value: str | None) -> None:
    assert error_of(protocol.check_patch_content_type, value).status == 415


# --- Upload-Metadata -------------------------------------------------------------------------


def test_metadata_example_from_the_spec() -> None:
    header = "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
    assert protocol.parse_metadata(header) == {
        "filename": b"world_domination_plan.pdf", "is_confidential": None}


def test_metadata_empty_value_with_space_and_empty_header() -> None:
    assert protocol.parse_metadata("flag ") == {"flag": None}
    assert protocol.parse_metadata("") == {}
    assert protocol.parse_metadata(None) == {}


@pytest.mark.parametrize("header", [
    "a b,a c",             # keys MUST be unique
    "a Zm9v,",             # key MUST NOT be empty (a trailing comma leaves an empty pair)
    "na\u00efve Zm9v",     # non-ASCII key
    "a\tb Zm9v",           # control character in a key
    "key not*base64",      # value MUST be Base64
    "key Zm9v YmFy",       # a value has no spaces
    "key Zm9",             # bad padding
    "a Zm9v,,b YmFy",      # empty pair
])
def test_invalid_metadata_is_400(header: str) -> None:
    assert error_of(protocol.parse_metadata, header).status == 400


@given(st.dictionaries(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                             blacklist_characters=","), min_size=1, max_size=20),
                       st.one_of(st.none(), st.binary(min_size=1, max_size=64)), max_size=8))
def test_metadata_round_trips(metadata: dict[str, bytes | None]) -> None:
    assert protocol.parse_metadata(protocol.encode_metadata(metadata)) == metadata


def test_file_info_uses_the_keys_clients_send() -> None:
    md = protocol.parse_metadata(protocol.encode_metadata({"filename": "r\u00e9sum\u00e9.pdf",
                                                           "filetype": "application/pdf"}))
    assert protocol.file_info(md) == ("r\u00e9sum\u00e9.pdf", "application/pdf")
    md = protocol.parse_metadata(protocol.encode_metadata({"name": "a.png", "type": "image/png"}))
    assert protocol.file_info(md) == ("a.png", "image/png")
    assert protocol.file_info({}) == (None, None)


# --- Upload-Checksum ---------------------------------------------------------------------------


def test_checksum_example_from_the_spec() -> None:
    checksum = protocol.parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
    assert checksum is not None
    hasher = checksum.hasher()
    hasher.update(b"hello world")
    assert checksum.matches(hasher)
    other = checksum.hasher()
    other.update(b"hello world!")
    assert not checksum.matches(other)


def test_sha256_checksum() -> None:
    digest = base64.b64encode(hashlib.sha256(b"abc").digest()).decode()
    checksum = protocol.parse_checksum(f"sha256 {digest}")
    assert checksum is not None and checksum.algorithm == "sha256"


def test_unsupported_algorithm_is_400() -> None:
    err = error_of(protocol.parse_checksum, "crc32 AAAAAA==")
    assert err.status == 400


@pytest.mark.parametrize("header", ["sha1", "sha1 ", "SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
                                    "sha1 not-base64!", "sha1 AAAA"])
def test_malformed_checksum_is_400(header: str) -> None:
    assert error_of(protocol.parse_checksum, header).status == 400


def test_mismatch_status_is_460() -> None:
    assert protocol.checksum_mismatch("sha1").status == 460
    assert protocol.parse_checksum(None) is None


# --- Upload-Expires and HEAD headers ------------------------------------------------------------


def test_upload_expires_is_an_imf_fixdate() -> None:
    moment = dt.datetime(2014, 6, 25, 16, 0, 0, 123, tzinfo=dt.UTC)
    assert protocol.http_date(moment) == "Wed, 25 Jun 2014 16:00:00 GMT"
    cest = dt.timezone(dt.timedelta(hours=2))
    assert protocol.http_date(moment.astimezone(cest)) == "Wed, 25 Jun 2014 16:00:00 GMT"


def test_expired() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert protocol.expired(now, now)
    assert not protocol.expired(now + dt.timedelta(seconds=1), now)


def test_head_headers() -> None:
    headers = protocol.upload_headers(offset=70, length=100, metadata="a Yg==", expires=None)
    assert headers == {"Upload-Offset": "70", "Upload-Length": "100", "Upload-Metadata": "a Yg==",
                       "Cache-Control": "no-store"}
    deferred = protocol.upload_headers(offset=0, length=None, metadata=None, expires=None)
    assert deferred["Upload-Defer-Length"] == "1" and "Upload-Length" not in deferred


def test_method_override() -> None:
    assert protocol.effective_method("POST", "patch") == "PATCH"
    assert protocol.effective_method("POST", None) == "POST"
    assert protocol.effective_method("post", " ") == "POST"
