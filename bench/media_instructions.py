"""Media benchmark without the noise: user-space instructions per request.

    apt-get install valgrind && .venv/bin/python bench/media_instructions.py

``bench/media.py`` measures req/s on a live gunicorn, and its ratios move by
±10% between runs on a shared machine. This counts, with valgrind's callgrind,
the instructions one random 64 KiB range costs in each of its bare callables
and in the fast path, driven in one process through gunicorn's own request
parser and ``Response`` (the per-header checks included) onto a socket that
discards what it is sent: no kernel, no event loop, the same figure on every
run. Each target runs twice (200 and 1,200 requests); the difference over
1,000 is its cost with start-up taken out.

What it cannot show: system time (the ``pread`` copy, the two ``send``
syscalls), which ``bench/media.py``'s CPU-per-request column has.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FILE_SIZE = 16 << 20
RANGE = 64 * 1024
TARGETS = {  # bench/media.py's labels
    "wsgi-ceiling": "/bench/raw",
    "wsgi-headers": "/bench/raw-headers",
    "wsgi-pread": "/bench/raw-pread",
    "pread-inner": "/bench/raw-pread-inner",
    "fast path": "/media/m16.bin",
}
SHORT, LONG = 200, 1200


def drive(path: str, count: int) -> None:
    """``count`` random ranges of ``path`` through the bench app, as a gevent worker runs it."""
    import prometheus_client  # noqa: F401 - imported before the patch, as in the master
    from gevent import monkey

    monkey.patch_all()
    sys.path.insert(0, str(ROOT))
    import logging

    logging.disable(logging.WARNING)
    from gunicorn.config import Config
    from gunicorn.http import wsgi
    from gunicorn.http.parser import RequestParser

    from bench.media_app import app

    class NullSocket:
        def sendall(self, data: bytes) -> None:
            pass

    cfg, sock, peer, rng = Config(), NullSocket(), ("127.0.0.1", 50000), random.Random(1)
    for _ in range(count):
        start = rng.randrange(0, FILE_SIZE - RANGE)
        raw = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Range: bytes={start}-{start + RANGE - 1}\r\n\r\n").encode()
        request = next(iter(RequestParser(cfg, [raw], peer)))
        response, environ = wsgi.create(request, sock, peer, ("127.0.0.1", 8000), cfg)
        body: Any = app(environ, response.start_response)
        for chunk in body:
            response.write(chunk)
        response.close()
        if hasattr(body, "close"):
            body.close()
        assert response.status and response.status.startswith("206"), (path, response.status)


def instructions(path: str, count: int, env: dict[str, str]) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--drive", path, str(count)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total for {path}:\n{out.stderr[-2000:]}")
    return int(match[1])


def per_request(path: str, env: dict[str, str]) -> float:
    return (instructions(path, LONG, env) - instructions(path, SHORT, env)) / (LONG - SHORT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drive", nargs=2, metavar=("PATH", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args.drive[0], int(args.drive[1]))
        return
    with tempfile.TemporaryDirectory() as base:
        media = Path(base, "media")
        media.mkdir()
        (media / "m16.bin").write_bytes(random.randbytes(FILE_SIZE))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASKSTREAM_")}
        env.update({"FLASKSTREAM_MEDIA_DIR": str(media),
                    "FLASKSTREAM_INSTANCE_PATH": str(Path(base, "instance")),
                    "FLASKSTREAM_DATABASE_URL": "postgresql://unused@127.0.0.1:9/unused",
                    "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(dir=base)})
        with ThreadPoolExecutor(max(1, (os.cpu_count() or 2))) as pool:
            figures = pool.map(lambda path: per_request(path, env), TARGETS.values())
            counts = dict(zip(TARGETS, figures, strict=True))
    ceiling = counts["wsgi-ceiling"]
    print(f"# media instructions per request (callgrind, user space), random 64 KiB ranges "
          f"of a 16 MiB file, {LONG - SHORT} requests")
    for label, count in counts.items():
        print(f"{label:13s} {count / 1000:7.1f} k instructions  ({count - ceiling:+8.0f} vs "
              f"wsgi-ceiling, ceiling / this {ceiling / count:.2f})")


if __name__ == "__main__":
    main()
