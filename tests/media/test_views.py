"""The media blueprint through Flask's test client: responses as the core decides,
bodies from pread, path safety, the listing and ``serve_file`` for other blueprints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flaskstream.media import views
from flaskstream.media.views import PreadStream, resolve_media_path, serve_file

DATA = os.urandom(3 * 256 * 1024 + 123)


@pytest.fixture
def clip(media_dir: Path) -> Path:
    path = media_dir / "clip.mp4"
    path.write_bytes(DATA)
    return path


def test_full_get(client: FlaskClient, clip: Path) -> None:
    res = client.get("/media/clip.mp4")
    assert res.status_code == 200
    assert res.data == DATA
    assert res.headers["Content-Length"] == str(len(DATA))
    assert res.headers["Content-Type"] == "video/mp4"
    assert res.headers["Accept-Ranges"] == "bytes"
    assert res.headers["Cache-Control"] == "public, max-age=3600"
    assert res.headers["ETag"].startswith('"') and "Last-Modified" in res.headers


def test_single_range(client: FlaskClient, clip: Path) -> None:
    res = client.get("/media/clip.mp4", headers={"Range": "bytes=262100-524300"})
    assert res.status_code == 206
    assert res.data == DATA[262100:524301]
    assert res.headers["Content-Range"] == f"bytes 262100-524300/{len(DATA)}"
    assert res.headers["Content-Length"] == str(524301 - 262100)


def test_multi_range(client: FlaskClient, clip: Path) -> None:
    res = client.get("/media/clip.mp4", headers={"Range": "bytes=500000-500009,0-9"})
    assert res.status_code == 206
    ctype = res.headers["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("=", 1)[1].encode()
    assert int(res.headers["Content-Length"]) == len(res.data)
    parts = (b"\r\n" + res.data).split(b"\r\n--" + boundary)
    assert parts[-1] == b"--\r\n"
    assert parts[1].endswith(b"\r\n\r\n" + DATA[500000:500010])
    assert parts[2].endswith(b"\r\n\r\n" + DATA[0:10])


def test_head_has_headers_no_body(client: FlaskClient, clip: Path) -> None:
    res = client.head("/media/clip.mp4", headers={"Range": "bytes=0-9"})
    assert res.status_code == 206
    assert res.data == b""
    assert res.headers["Content-Length"] == "10"


def test_304_and_412_have_no_body(client: FlaskClient, clip: Path) -> None:
    etag = client.head("/media/clip.mp4").headers["ETag"]
    res = client.get("/media/clip.mp4", headers={"If-None-Match": etag, "Range": "bytes=0-1"})
    assert res.status_code == 304 and res.data == b"" and res.headers["ETag"] == etag
    res = client.get("/media/clip.mp4", headers={"If-Match": '"nope"'})
    assert res.status_code == 412 and res.data == b""


def test_cache_control_and_max_ranges_are_configurable(app: Flask, clip: Path) -> None:
    app.config.update(MEDIA_CACHE_CONTROL="no-store", MEDIA_MAX_RANGES=2)
    client = app.test_client()
    assert client.head("/media/clip.mp4").headers["Cache-Control"] == "no-store"
    two = client.get("/media/clip.mp4", headers={"Range": "bytes=0-0,1000-1000"})
    assert two.status_code == 206 and two.headers["Cache-Control"] == "no-store"
    three = client.get("/media/clip.mp4", headers={"Range": "bytes=0-0,1000-1000,5000-5000"})
    assert three.status_code == 200 and three.data == DATA


def test_416_has_content_range(client: FlaskClient, clip: Path) -> None:
    res = client.get("/media/clip.mp4", headers={"Range": f"bytes={len(DATA)}-"})
    assert res.status_code == 416
    assert res.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert res.get_json()["error"]["code"] == "RANGE_NOT_SATISFIABLE"


def test_empty_file(client: FlaskClient, media_dir: Path) -> None:
    (media_dir / "empty.wav").write_bytes(b"")
    res = client.get("/media/empty.wav")
    assert res.status_code == 200 and res.data == b"" and res.headers["Content-Length"] == "0"


@pytest.mark.parametrize("name,ctype", [
    ("a.mp4", "video/mp4"), ("a.webm", "video/webm"), ("a.mp3", "audio/mpeg"),
    ("a.m4a", "audio/mp4"), ("a.ogg", "audio/ogg"), ("a.opus", "audio/ogg; codecs=opus"),
    ("a.wav", "audio/wav"), ("a.mkv", "video/x-matroska"), ("a.MP4", "video/mp4"),
    ("a.unknownext", "application/octet-stream"), ("a.txt", "text/plain; charset=utf-8"),
])
def test_content_types(name: str, ctype: str) -> None:
    assert views.content_type_for(name) == ctype


# --- path safety ---------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path: Path, media_dir: Path) -> Path:
    (tmp_path / "secret.txt").write_text("secret")
    (media_dir / "sub").mkdir()
    (media_dir / "sub" / "ok.mp3").write_bytes(b"ID3")
    (media_dir / ".hidden").write_text("x")
    (media_dir / ".git").mkdir()
    (media_dir / ".git" / "config").write_text("x")
    (media_dir / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (media_dir / "inside.mp3").symlink_to(media_dir / "sub" / "ok.mp3")
    (media_dir / "loop").symlink_to(media_dir)
    (media_dir / "to-hidden.txt").symlink_to(media_dir / ".git" / "config")
    return media_dir


@pytest.mark.parametrize("url", [
    "/media/../secret.txt", "/media/%2e%2e/secret.txt", "/media/sub/%2E%2E/../secret.txt",
    "/media/sub/..%2f..%2fsecret.txt", "/media//etc/passwd", "/media/escape.txt",
    "/media/.hidden", "/media/.git/config", "/media/sub", "/media/nope.mp4",
    "/media/sub/%00ok.mp3", "/media/sub\\ok.mp3", "/media/to-hidden.txt",
])
def test_unsafe_paths_are_404(client: FlaskClient, tree: Path, url: str) -> None:
    res = client.get(url, follow_redirects=True)  # "//" is merged by a 308 first
    assert res.status_code == 404, url
    assert b"secret" not in res.data


def test_symlink_inside_is_served(client: FlaskClient, tree: Path) -> None:
    assert client.get("/media/inside.mp3").data == b"ID3"
    assert client.get("/media/sub/ok.mp3").data == b"ID3"


def test_resolve_rejects_absolute(tree: Path) -> None:
    assert resolve_media_path(str(tree), "/etc/passwd") is None
    assert resolve_media_path(str(tree), "sub/ok.mp3") == str(tree / "sub" / "ok.mp3")


def test_listing_skips_undecodable_and_control_names(client: FlaskClient, tree: Path) -> None:
    (tree / os.fsdecode(b"bad\xff.mp3")).write_bytes(b"x")
    (tree / "line\nbreak.mp3").write_bytes(b"x")
    (tree / "café song.mp3").write_bytes(b"x")
    res = client.get("/media/")
    assert res.status_code == 200
    files = {f["name"]: f["url"] for f in res.get_json()["files"]}
    assert files["café song.mp3"] == "/media/caf%C3%A9%20song.mp3"
    assert not any("bad" in name or "break" in name for name in files)
    assert client.get("/media/caf%C3%A9%20song.mp3").data == b"x"


def test_listing(client: FlaskClient, tree: Path) -> None:
    res = client.get("/media/")
    assert res.status_code == 200
    names = [f["name"] for f in res.get_json()["files"]]
    assert names == ["inside.mp3", "sub/ok.mp3"]
    first = res.get_json()["files"][0]
    assert first == {"name": "inside.mp3", "size": 3, "content_type": "audio/mpeg",
                     "url": "/media/inside.mp3"}


# --- the body and serve_file ------------------------------------------------------------

def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_pread_stream_exact_and_closes(clip: Path) -> None:
    fd = os.open(clip, os.O_RDONLY)
    body = PreadStream(fd, [b"<", (10, 300_000), b">"], 65536)
    out = b"".join(body)
    assert out == b"<" + DATA[10:300_000] + b">"
    assert body.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


def test_only_requested_bytes_are_read_at_absolute_offsets(
        client: FlaskClient, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No read from byte 0 up to a range's start (send_file's trap under gunicorn)."""
    reads: list[tuple[int, int]] = []
    real_pread = os.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        reads.append((offset, offset + length))
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", pread)
    size = len(DATA)
    for spec, wanted in [("bytes=-10", [(size - 10, size)]),
                         ("bytes=500000-500009,0-9", [(500000, 500010), (0, 10)]),
                         ("bytes=1000-", [(1000, size)])]:
        reads.clear()
        res = client.get("/media/clip.mp4", headers={"Range": spec})
        assert res.status_code == 206 and DATA[wanted[0][0]:wanted[0][1]] in res.data
        assert sum(b - a for a, b in reads) == sum(b - a for a, b in wanted), spec
        assert all(any(lo <= a and b <= hi for lo, hi in wanted) for a, b in reads), spec
        assert max(b - a for a, b in reads) <= 256 * 1024


def test_pread_stream_closes_on_abort_and_when_never_started(clip: Path) -> None:
    before = open_fds()
    body = PreadStream(os.open(clip, os.O_RDONLY), [(0, len(DATA))], 65536)
    iterator = iter(body)
    next(iterator)
    iterator.close()  # GeneratorExit at the yield
    body.close()
    unstarted = PreadStream(os.open(clip, os.O_RDONLY), [(0, len(DATA))], 65536)
    unstarted.close()
    assert open_fds() == before


def test_pread_stream_raises_when_file_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    body = PreadStream(os.open(path, os.O_RDONLY), [(0, len(DATA))], 256 * 1024)
    iterator = iter(body)
    assert next(iterator) == DATA[: 256 * 1024]
    os.truncate(path, 300_000)
    with pytest.raises(views.FileShrunk):
        list(iterator)
    assert body.fd == -1


def test_serve_file_for_other_blueprints(app: Flask, clip: Path) -> None:
    @app.get("/x/<int:n>")
    def x(n: int):  # noqa: ANN202
        return serve_file(clip, download_name="vidéo clip.mp4", as_attachment=n == 1)

    client = app.test_client()
    res = client.get("/x/1", headers={"Range": "bytes=-5"})
    assert res.status_code == 206 and res.data == DATA[-5:]
    assert res.headers["Content-Type"] == "video/mp4"
    assert res.headers["Content-Disposition"] == (
        "attachment; filename=\"video clip.mp4\"; filename*=UTF-8''vid%C3%A9o%20clip.mp4")
    assert client.get("/x/0").headers["Content-Disposition"].startswith("inline;")


def test_serve_file_missing_is_404(app: Flask, tmp_path: Path) -> None:
    @app.get("/y")
    def y():  # noqa: ANN202
        return serve_file(tmp_path / "missing")

    assert app.test_client().get("/y").status_code == 404


def test_no_descriptor_leaks(client: FlaskClient, clip: Path) -> None:
    client.get("/media/clip.mp4")
    before = open_fds()
    for headers in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=0-9,600000-600009"},
                    {"If-None-Match": "*"}, {"If-Match": '"x"'}, {"Range": "bytes=99999999-"}):
        client.get("/media/clip.mp4", headers=headers).close()
        client.head("/media/clip.mp4", headers=headers).close()
    assert open_fds() == before


def test_reads_only_the_requested_bytes(client: FlaskClient, clip: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real_pread = os.pread

    def spy(fd: int, length: int, offset: int) -> bytes:
        calls.append((offset, length))
        return real_pread(fd, length, offset)

    monkeypatch.setattr(views.os, "pread", spy)
    size = len(DATA)
    assert client.get("/media/clip.mp4", headers={"Range": "bytes=-1000"}).data == DATA[-1000:]
    assert calls == [(size - 1000, 1000)]  # one read at the absolute offset, none from 0
    calls.clear()
    body = client.get("/media/clip.mp4", headers={"Range": "bytes=100-100,600000-700000"}).data
    assert DATA[600000:700001] in body
    assert calls == [(100, 1), (600000, 100001)]
    calls.clear()
    assert client.get("/media/clip.mp4").data == DATA
    assert [length for _, length in calls] == [256 * 1024] * 3 + [123]


# --- the WSGI fast path and Flask agree -------------------------------------------------

@pytest.fixture
def flask_calls(app: Flask) -> list[str]:
    calls: list[str] = []
    app.before_request(lambda: calls.append("flask") and None)
    return calls


def test_fast_path_skips_flask_only_on_the_happy_path(app: Flask, client: FlaskClient, clip: Path,
                                                      media_dir: Path,
                                                      flask_calls: list[str]) -> None:
    fast = app.config["MEDIA_FAST_PATH"]
    for headers in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=0-0,9000-9000"},
                    {"If-None-Match": "*"}, {"If-Match": '"x"'}):
        client.get("/media/clip.mp4", headers=headers).close()
        client.head("/media/clip.mp4", headers=headers).close()
    assert len(flask_calls) == (0 if fast else 10)
    flask_calls.clear()
    (media_dir / "folder").mkdir()
    assert client.get("/media/clip.mp4", headers={"Range": "bytes=99999999-"}).status_code == 416
    assert client.get("/media/nope.mp4").status_code == 404
    assert client.get("/media/folder").status_code == 404
    assert client.get("/media/").status_code == 200
    assert client.get("/media/clip.mp4", headers={"Origin": "https://x.example"}).status_code == 200
    assert client.post("/media/clip.mp4").status_code == 405
    assert len(flask_calls) == 6  # every one of those went to Flask, in both modes


def test_fast_path_and_flask_send_the_same_headers(app: Flask, clip: Path) -> None:
    client = app.test_client()
    etag = client.head("/media/clip.mp4").headers["ETag"]
    cases = ({}, {"Range": "bytes=5-9"}, {"If-None-Match": etag}, {"If-Match": '"x"'},
             {"Range": "bytes=0-0,9000-9000"})
    seen = {}
    for fast in (True, False):
        app.config["MEDIA_FAST_PATH"] = fast
        for index, headers in enumerate(cases):
            res = client.get("/media/clip.mp4", headers={**headers, "X-Request-ID": "r1"})
            got = {k: v for k, v in res.headers.items() if k != "Content-Type"}
            ctype = res.headers.get("Content-Type", "")
            got["Content-Type"] = ctype.split("boundary=")[0] if res.status_code != 412 else ""
            seen.setdefault(index, []).append((res.status_code, got, len(res.data)))
    for index, (fast, slow) in seen.items():
        assert fast == slow, cases[index]
