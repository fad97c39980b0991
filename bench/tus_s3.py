"""tus on S3: a resumable upload into parts + tail objects against a raw PUT, same bucket, same run.

Run from the checkout (a minute or two; moto keeps the objects in memory, they are
deleted after each row):

    .venv/bin/python bench/tus_s3.py [--size-mib 256] [--rounds 3]

One moto S3 server in its own process on 127.0.0.1 (``bench/storage.py``'s), one
gunicorn worker (gevent) with ``FLASKSTREAM_STORAGE_URL`` on that bucket and 8 MiB
parts. Rows, interleaved round by round so a noisy moment hits all of them:

1. ``PUT /uploads/<name>`` (curl -T): a streaming multipart upload (the baseline);
2. tus, one PATCH of the whole file (curl): parts as they fill, the running SHA-256;
3. tus, four PATCHes (curl): each ends in a tail object the next one reads back,
   and the SHA-256 is computed by reading the completed object back once.

Prints the median MB/s of each row, the median of its per-round ratios to the PUT, the
worker's peak RSS growth, and ``os.getloadavg()``. Never part of the test run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.storage import BUCKET, CREDENTIALS, curl_put, start_moto  # noqa: E402
from bench.uploads import PeakSampler, make_file  # noqa: E402
from tests.live import LiveServer, free_port  # noqa: E402

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def put_row(server: LiveServer, path: Path) -> str:
    code = curl_put(server.url + "/uploads/big.bin", path).communicate()[0].decode()
    assert code == "201", code
    return str(requests.get(server.url + "/uploads?limit=1", timeout=10).json()["uploads"][0]["id"])


def tus_row(server: LiveServer, path: Path, patches: int) -> str:
    size = path.stat().st_size
    created = requests.post(server.url + "/uploads/tus/", headers={
        **TUS, "Upload-Length": str(size)}, timeout=10)
    url = server.url + created.headers["Location"]
    step = -(-size // patches)
    for start in range(0, size, step):
        length = min(step, size - start)
        # curl streams a byte range of the file as the body: nothing buffered here
        cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH",
               "-H", "Expect:", "-H", "Tus-Resumable: 1.0.0", "-H", f"Content-Type: {OCTETS}",
               "-H", f"Upload-Offset: {start}", "-H", f"Content-Length: {length}",
               "--data-binary", "@-", url]
        with open(path, "rb") as f:
            f.seek(start)
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert proc.stdin is not None
            left = length
            while left:
                block = f.read(min(left, 4 * MiB))
                proc.stdin.write(block)
                left -= len(block)
            proc.stdin.close()
            code = proc.stdout.read().decode() if proc.stdout else ""
            proc.wait()
        assert code == "204", code
    return url.rsplit("/", 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    port = free_port()
    moto = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="fs-bench-tus-s3-"))
    rows: dict[str, Callable[[LiveServer, Path], str]] = {
        "raw `PUT /uploads/<name>` (curl -T) — baseline": put_row,
        "tus, one PATCH of the whole file (running SHA-256)": lambda s, p: tus_row(s, p, 1),
        "tus, 4 PATCHes (tails read back; SHA-256 read back once)": lambda s, p: tus_row(s, p, 4),
    }
    speeds: dict[str, list[float]] = {name: [] for name in rows}
    growth: dict[str, float] = {name: 0.0 for name in rows}
    loads = [os.getloadavg()[0]]
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=BUCKET)
        server = LiveServer(work / "instance", workers=1, env={
            "FLASKSTREAM_STORAGE_URL": f"s3://{BUCKET}/bench?endpoint_url={endpoint}",
            "FLASKSTREAM_TUS_MAX_SIZE": str(8 << 30), "GUNICORN_TIMEOUT": "120"})
        with server:
            requests.put(server.url + "/uploads/warm.bin", data=os.urandom(9 * MiB), timeout=60)
            path = make_file(work / "big.bin", args.size_mib * MiB)
            for _ in range(args.rounds):
                for name, run in rows.items():
                    with PeakSampler(server.worker_pids) as sampler:
                        baseline = sampler.peak
                        started = time.monotonic()
                        upload_id = run(server, path)
                        speeds[name].append(path.stat().st_size / (time.monotonic() - started)
                                            / 1e6)
                    growth[name] = max(growth[name], (sampler.peak - baseline) / MiB)
                    assert requests.delete(f"{server.url}/uploads/{upload_id}",
                                           timeout=30).status_code == 204
                loads.append(os.getloadavg()[0])
    finally:
        moto.terminate()
        moto.wait(10)
        for leftover in work.glob("*.bin"):
            leftover.unlink()
    base = speeds[next(iter(rows))]
    print(f"\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC — {args.size_mib} MiB, "
          f"{args.rounds} interleaved rounds, load average {min(loads):.1f}–{max(loads):.1f}\n")
    print("| upload into S3 | MB/s: median (rounds) | × PUT | worker peak RSS growth (MiB) |")
    print("|---|---:|---:|---:|")
    for name in rows:
        median = statistics.median(speeds[name])
        ratio = statistics.median(x / b for x, b in zip(speeds[name], base, strict=True))
        rounds = " ".join(f"{x:.0f}" for x in speeds[name])
        print(f"| {name} | {median:.0f} ({rounds}) | {ratio:.2f} | {growth[name]:.1f} |")


if __name__ == "__main__":
    main()
