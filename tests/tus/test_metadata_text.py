"""tus metadata values read as text (file name and type) must be UTF-8 (issue 12, finding 1):
they are refused at the edge, not guessed with replacement characters."""

from __future__ import annotations

import pytest

from flaskstream.tus import protocol
from flaskstream.uploads import names


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"\xed\xa0\x80.txt", b"ok\xc3"])  # \xed\xa0\x80: U+D800
@pytest.mark.parametrize("key", ["filename", "name", "filetype", "type"])
def test_text_values_that_are_not_utf8_are_400(key: str, raw: bytes) -> None:
    metadata = protocol.parse_metadata(protocol.encode_metadata({key: raw}))
    with pytest.raises(protocol.TusError) as info:
        protocol.file_info(metadata)
    assert (info.value.status, info.value.code) == (400, "TUS_METADATA_INVALID")
    assert "UTF-8" in info.value.message and "codec" not in info.value.message


def test_other_values_stay_opaque_bytes() -> None:
    metadata = protocol.parse_metadata(protocol.encode_metadata({"blob": b"\xff\x00",
                                                                 "filename": "a.txt"}))
    assert metadata["blob"] == b"\xff\x00"
    assert protocol.file_info(metadata) == ("a.txt", None)


def test_client_filename_caps_stored_names_at_255_bytes_and_refuses_huge_ones() -> None:
    stored = names.client_filename("\u00e9" * 300 + ".pdf", 1024)
    assert len(stored.encode()) <= 255 and stored.endswith(".pdf")
    assert names.client_filename("", 1024) == names.FALLBACK_FILENAME
    with pytest.raises(names.FilenameTooLong):
        names.client_filename("a" * 1025, 1024)
    assert names.client_filename("a" * 1024, 1024) == "a" * 255
