"""What the upload route tests (``test_views*.py``) share: multipart bodies, and checks
that an upload left nothing behind (no stored file or object, no row)."""

from __future__ import annotations

from flask import Flask

from flaskstream import db
from tests.storage.moto import stored_leftovers

BOUNDARY = "xYzZY-flaskstream-test"
CT = f"multipart/form-data; boundary={BOUNDARY}"


def form(*parts: tuple[str, str | None, bytes], content_type: str = "application/octet-stream"
         ) -> bytes:
    out = bytearray()
    for name, filename, content in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
            out += f"Content-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n" \
                .encode()
        else:
            out += f"Content-Disposition: {disposition}\r\n\r\n".encode()
        out += content + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def leftovers(app: Flask) -> list[str]:
    """Files in UPLOAD_DIR, plus objects and open multipart uploads when on S3."""
    return stored_leftovers(app)


def rows(app: Flask) -> int:
    with app.app_context(), db.connection() as con:
        return int(con.run("SELECT count(*) FROM flaskstream.uploads")[0][0])


def assert_nothing_stored(app: Flask) -> None:
    assert leftovers(app) == []
    assert rows(app) == 0
