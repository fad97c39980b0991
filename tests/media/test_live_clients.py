"""Real HTTP clients against the live gunicorn, each result byte-compared with
the file: curl (-r single/suffix/multi, -C - resume), wget -c, aria2c -x4,
ffprobe/ffmpeg reading MP4s over HTTP — one with its index (moov) at the end,
which they can only read by seeking with ranges."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.media.conftest import MediaServer

pytestmark = pytest.mark.live


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed")
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, cwd=cwd, capture_output=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def blob(media_server: MediaServer) -> bytes:
    return media_server.path("blob.bin").read_bytes()


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order (ftyp, moov, mdat…)."""
    boxes, offset, data = [], 0, path.read_bytes()
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        boxes.append(kind.decode("latin-1"))
        offset += size if size else len(data)
    return boxes


@pytest.fixture(scope="module")
def tail_mp4(media_server: MediaServer) -> Path:
    """The shipped clip remuxed without +faststart: moov after mdat."""
    ffmpeg = need("ffmpeg")
    out = media_server.path("tail.mp4")
    run(ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i",
        str(media_server.path("sample.mp4")), "-c", "copy", "-map", "0", str(out))
    assert top_level_boxes(out).index("moov") > top_level_boxes(out).index("mdat")
    return out


# --- curl -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,start,stop", [
    ("0-99", 0, 100), ("4194304-5242879", 4194304, 5242880), ("-1000", -1000, None)])
def test_curl_range(media_server: MediaServer, blob: bytes, tmp_path: Path,
                    spec: str, start: int, stop: int | None) -> None:
    out = tmp_path / "out"
    result = run(need("curl"), "-sS", "-f", "-r", spec, "-o", str(out), "-w", "%{http_code}",
                 media_server.media_url("blob.bin"))
    assert result.stdout == b"206"
    assert out.read_bytes() == blob[start:stop]


def test_curl_multi_range(media_server: MediaServer, blob: bytes, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(need("curl"), "-sS", "-f", "-r", "0-9,1000000-1000009,-5", "-D", "-",
                 "-o", str(out), media_server.media_url("blob.bin"))
    headers = result.stdout.decode()
    boundary = headers.split("boundary=", 1)[1].split("\r\n", 1)[0]
    body = out.read_bytes()
    assert f"content-length: {len(body)}" in headers.lower()
    payloads = [c.partition(b"\r\n\r\n")[2] for c in
                (b"\r\n" + body).split(b"\r\n--" + boundary.encode())[1:-1]]
    assert payloads == [blob[:10], blob[1000000:1000010], blob[-5:]]


def test_curl_resume(media_server: MediaServer, blob: bytes, tmp_path: Path) -> None:
    out = tmp_path / "blob.bin"
    out.write_bytes(blob[:3_333_333])
    run(need("curl"), "-sS", "-f", "-C", "-", "-o", str(out), media_server.media_url("blob.bin"))
    assert out.read_bytes() == blob


def test_curl_resume_of_complete_file(media_server: MediaServer, blob: bytes, tmp_path: Path) -> None:
    out = tmp_path / "blob.bin"
    out.write_bytes(blob)  # curl asks bytes=<size>- → 416, which it takes as "done"
    run(need("curl"), "-sS", "-C", "-", "-o", str(out), media_server.media_url("blob.bin"))
    assert out.read_bytes() == blob


# --- wget, aria2c -----------------------------------------------------------------------

def test_wget_continue(media_server: MediaServer, blob: bytes, tmp_path: Path) -> None:
    out = tmp_path / "blob.bin"
    out.write_bytes(blob[:1_000_001])
    run(need("wget"), "-q", "-c", "-O", str(out), media_server.media_url("blob.bin"))
    assert out.read_bytes() == blob


def test_aria2c_four_connections(media_server: MediaServer, blob: bytes, tmp_path: Path) -> None:
    run(need("aria2c"), "-q", "-x4", "-s4", "-k1M", "--file-allocation=none",
        "--allow-overwrite=true", "-d", str(tmp_path), "-o", "blob.bin",
        media_server.media_url("blob.bin"))
    assert (tmp_path / "blob.bin").read_bytes() == blob
    log = media_server.access_log.read_text()
    assert log.count('"GET /media/blob.bin HTTP/1.1" 206') >= 2  # really split


# --- ffprobe / ffmpeg ---------------------------------------------------------------------

def framemd5(source: str) -> bytes:
    """Per-packet MD5s of every stream, copied without decoding: equal output
    means ffmpeg read exactly the file's media bytes over HTTP."""
    result = run(need("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i", source,
                 "-map", "0", "-c", "copy", "-f", "framemd5", "-")
    return result.stdout


def probe(source: str) -> bytes:
    return run(need("ffprobe"), "-v", "error", "-show_entries",
               "format=duration,size:stream=codec_name,nb_frames", "-of", "json", source).stdout


def test_ffprobe_and_ffmpeg_faststart_mp4(media_server: MediaServer) -> None:
    url = media_server.media_url("sample.mp4")
    local = str(media_server.path("sample.mp4"))
    assert probe(url) == probe(local)
    assert b'"h264"' in probe(url) and b'"aac"' in probe(url)
    assert framemd5(url) == framemd5(local)


def test_ffprobe_and_ffmpeg_moov_at_end(media_server: MediaServer, tail_mp4: Path) -> None:
    before = media_server.access_log.read_text().count("/media/tail.mp4")
    url = media_server.media_url("tail.mp4")
    assert probe(url) == probe(str(tail_mp4))
    assert framemd5(url) == framemd5(str(tail_mp4))
    log = media_server.access_log.read_text().splitlines()
    tail_lines = [line for line in log if "/media/tail.mp4" in line][before:]
    assert any('" 206 ' in line for line in tail_lines), tail_lines  # it seeked to the moov


def test_ffmpeg_seek_over_http(media_server: MediaServer) -> None:
    url = media_server.media_url("sample.mp4")
    args = ["-ss", "7", "-i"]
    remote = run(need("ffmpeg"), "-hide_banner", "-loglevel", "error", *args, url,
                 "-frames:v", "3", "-f", "framemd5", "-")
    local = run("ffmpeg", "-hide_banner", "-loglevel", "error", *args,
                str(media_server.path("sample.mp4")), "-frames:v", "3", "-f", "framemd5", "-")
    assert remote.stdout == local.stdout and remote.stdout.count(b"\n0,") >= 3
