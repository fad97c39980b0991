"""tus benchmark: throughput and worker memory of resumable uploads, and how fast a resume starts.

Run from the checkout (about a minute, ~10 GB of disk churn):

    .venv/bin/python bench/tus.py [--size-mib 1024] [--concurrency 10 100]

One gunicorn worker (gevent), the session's embedded PostgreSQL. Side by side
in one run, on the same file:

- ``PUT /uploads/<name>`` with ``curl -T`` — the plain raw upload (baseline);
- tus, one ``PATCH`` of the whole file with curl (how tus-js-client streams);
- tus with tuspy, 64 MiB chunks, with and without a sha1 ``Upload-Checksum``;
- N = 10 and 100 concurrent tus PATCHes (curl) sharing the size — the worker's peak RSS growth;
- takeover latency: a PATCH whose client vanished (the server's socket stays
  open and silent) holds the upload; a new ``HEAD`` must get the offset. Median
  of several trials, in seconds.

Each row is the best of two rounds (the machine is shared). Prints a Markdown
table. Never part of the test run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live import LiveServer  # noqa: E402

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


class Peak(threading.Thread):
    """Peak RSS of the server's workers above their baseline, sampled every 20 ms."""

    def __init__(self, server: LiveServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.base = sum(server.worker_rss().values())
        self.peak = self.base
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, sum(self.server.worker_rss().values()))

    def stop(self) -> float:
        self.done.set()
        self.join()
        return (self.peak - self.base) / MiB


ROUNDS = 2


def measure(server: LiveServer, size: int, run: Callable[[], None]) -> tuple[float, float]:
    """Best MB/s and highest RSS growth over ``ROUNDS`` runs (the machine is shared and noisy)."""
    best, worst_rss = 0.0, 0.0
    for _ in range(ROUNDS):
        peak = Peak(server)
        peak.start()
        started = time.perf_counter()
        run()
        elapsed = time.perf_counter() - started
        best, worst_rss = max(best, size / elapsed / 1e6), max(worst_rss, peak.stop())
    return best, worst_rss


def create(server: LiveServer, size: int) -> str:
    response = requests.post(f"{server.url}/uploads/tus/", headers={
        **TUS, "Upload-Length": str(size)}, timeout=30)
    response.raise_for_status()
    return server.url + response.headers["Location"]


def curl(*args: str) -> None:
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", *args], check=True)


def curl_patch(url: str, path: Path) -> list[str]:
    return ["-X", "PATCH", "-T", str(path), "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
            "-H", f"Content-Type: {OCTETS}", "-H", "Expect:", url]


def tuspy(server: LiveServer, path: Path, checksum: bool) -> None:
    from tusclient import client

    uploader = client.TusClient(server.url + "/uploads/tus/").uploader(
        file_path=str(path), chunk_size=64 * MiB, upload_checksum=checksum)
    uploader.upload()


def takeover_latency(server: LiveServer, trials: int) -> list[float]:
    """A PATCH that stalls after 1 MiB (its client gone silent) and a HEAD that resumes."""
    results = []
    for _ in range(trials):
        url = create(server, 8 * MiB)
        path = url.split(server.url, 1)[1]
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall((f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                      f"Upload-Offset: 0\r\nContent-Type: {OCTETS}\r\n"
                      f"Content-Length: {8 * MiB}\r\n\r\n").encode() + os.urandom(MiB))
        time.sleep(0.3)
        started = time.perf_counter()
        offset = requests.head(url, headers=TUS, timeout=30).headers["Upload-Offset"]
        results.append(time.perf_counter() - started)
        assert offset == str(MiB), offset
        sock.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--checkpoint-mib", type=int, default=None,
                        help="FLASKSTREAM_TUS_CHECKPOINT_BYTES in MiB (default: the app's)")
    args = parser.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="bench-tus-", dir=os.environ.get("BENCH_DIR")))
    source = work / "src.bin"
    with open(source, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MiB))
    with open(source, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    server = LiveServer(work / "instance", workers=1, env={
        "GUNICORN_ACCESSLOG": "", "FLASKSTREAM_TUS_MAX_SIZE": str(64 << 30),
        "FLASKSTREAM_LIMIT_FILE_SIZE": str(64 << 30), "FLASKSTREAM_LIMIT_BODY_SIZE": str(64 << 30),
        **({"FLASKSTREAM_TUS_CHECKPOINT_BYTES": str(args.checkpoint_mib * MiB)}
           if args.checkpoint_mib is not None else {})})
    rows: list[tuple[str, str, str]] = []
    try:
        server.start()
        mbps, rss = measure(server, size, lambda: curl("-T", str(source), "-H", "Expect:",
                                                       f"{server.url}/uploads/src.bin"))
        rows.append(("raw `PUT /uploads/<name>` (curl -T)", f"{mbps:.0f}", f"{rss:.1f}"))
        urls = []

        def one_patch() -> None:
            urls.append(create(server, size))
            curl(*curl_patch(urls[-1], source))

        mbps, rss = measure(server, size, one_patch)
        uid = urls[-1].rsplit("/", 1)[1]
        stored = requests.get(f"{server.url}/uploads/{uid}", timeout=30).json()
        assert stored["sha256"] == digest
        rows.append(("tus, one PATCH (curl)", f"{mbps:.0f}", f"{rss:.1f}"))
        for checksum in (False, True):
            mbps, rss = measure(server, size, lambda c=checksum: tuspy(server, source, c))
            label = "tus, tuspy 64 MiB chunks" + (" + sha1 Upload-Checksum" if checksum else "")
            rows.append((label, f"{mbps:.0f}", f"{rss:.1f}"))
        for n in args.concurrency:
            each = max(size // n, MiB)
            small = work / f"each-{n}.bin"
            with open(source, "rb") as src, open(small, "wb") as dst:
                dst.write(src.read(each))

            def concurrent(n: int = n, each: int = each, small: Path = small) -> None:
                targets = [create(server, each) for _ in range(n)]
                procs = [subprocess.Popen(["curl", "-sS", "-f", "-o", "/dev/null",
                                           *curl_patch(u, small)]) for u in targets]
                assert all(p.wait() == 0 for p in procs)

            mbps, rss = measure(server, each * n, concurrent)
            rows.append((f"tus, {n} concurrent PATCHes of {each // MiB} MiB (curl)",
                         f"{mbps:.0f}", f"{rss:.1f}"))
        latencies = takeover_latency(server, 7)
    except BaseException:
        print(server.log(), file=sys.stderr)
        raise
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.size_mib} MiB per upload, 1 gevent worker, {psutil.cpu_count()} cores, "
          f"best of {ROUNDS} rounds\n")
    print("| upload | MB/s | worker peak RSS growth (MiB) |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    print(f"\ntakeover (HEAD while a vanished client's PATCH holds the upload): median "
          f"{statistics.median(latencies):.2f} s, max {max(latencies):.2f} s over {len(latencies)}")


if __name__ == "__main__":
    main()
