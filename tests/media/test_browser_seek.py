"""``<video>`` seeking in headless Chromium against the live gunicorn: metadata,
a seek to 4.5 s and a decoded frame there, for the faststart MP4, an MP4 with
its index at the end and the WebM — through Range requests answered with 206."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.live import ROOT
from tests.media.conftest import MediaServer

pytestmark = [pytest.mark.live, pytest.mark.e2e, pytest.mark.skipif(
    not os.path.exists("/usr/bin/chromium"), reason="/usr/bin/chromium is missing")]


def test_video_element_seeks(media_server: MediaServer) -> None:
    import shutil

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    shutil.copy(ROOT / "media" / "sample.webm", media_server.path("clip.webm"))
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i",
                    str(media_server.path("sample.mp4")), "-c", "copy", "-map", "0",
                    str(media_server.path("moov-last.mp4"))], check=True, timeout=60)
    before = len(media_server.access_log.read_text().splitlines())
    names = ["sample.mp4", "moov-last.mp4", "clip.webm"]
    out = subprocess.run(
        [sys.executable, "-m", "tests.media.browser_seek", media_server.url + "/media/",
         *(media_server.media_url(name) for name in names)],
        cwd=ROOT, capture_output=True, timeout=120, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout)
    played = [r for r in results if "skipped" not in r]
    assert any(r["src"].endswith(".webm") for r in played)  # every Chromium plays VP8/Opus
    for r in played:
        assert r["duration"] > 5 and abs(r["currentTime"] - 4.5) < 0.1, r
        assert r["readyState"] >= 2 and r["width"] == 640 and r["litPixels"], r
    log = media_server.access_log.read_text().splitlines()[before:]
    for r in played:
        name = r["src"].rsplit("/", 1)[1]
        assert any(f"/media/{name} HTTP/1.1\" 206" in line for line in log), (name, log)
