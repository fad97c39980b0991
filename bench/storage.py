"""Object storage: flaskstream into an S3 bucket against boto3 itself, same bucket, same run.

Run from the checkout (a few minutes; moto keeps every object in memory, ~3 GiB):

    .venv/bin/python bench/storage.py [--size-mib 1024] [--concurrency 8] [--ranges 300]

One moto S3 server in its own process (``python -m moto.server``) on 127.0.0.1,
one gunicorn worker (gevent) with ``FLASKSTREAM_STORAGE_URL`` on that bucket and
its own embedded PostgreSQL. Rows:

1. a ``--size-mib`` upload: ``curl -T`` through flaskstream (streamed into a
   multipart upload) vs boto3's ``upload_file`` of the same file (its transfer
   manager: 8 MiB parts, 10 threads) into the same bucket;
2. ``--concurrency`` uploads at once through flaskstream: worker RSS growth;
3. random 64 KiB ranges of a 16 MiB object: ``GET /uploads/<id>/content`` with
   ``Range`` vs ``get_object(Range=)`` straight to the bucket, one client, in turn.

Prints a Markdown table. Never part of the test run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.uploads import PeakSampler, make_file  # noqa: E402
from tests.live import LiveServer, free_port, wait_for  # noqa: E402

MiB = 1024 * 1024
BUCKET = "flaskstream-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1).ok
        except requests.RequestException:
            return False

    if not wait_for(up, 30):
        proc.kill()
        raise RuntimeError("moto server did not start")
    return proc


def curl_put(url: str, path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                             "Expect:", "-T", str(path), url], stdout=subprocess.PIPE)


def upload_rows(server: LiveServer, s3: object, big: Path, concurrency: int,
                small: Path) -> list[tuple[str, str, str]]:
    rows = []
    start = time.monotonic()
    code = curl_put(server.url + "/uploads/big.bin", big).communicate()[0].decode()
    ours = big.stat().st_size / (time.monotonic() - start) / 1e6
    assert code == "201", code
    start = time.monotonic()
    s3.upload_file(str(big), BUCKET, "direct/big.bin")  # type: ignore[attr-defined]
    theirs = big.stat().st_size / (time.monotonic() - start) / 1e6
    s3.delete_object(Bucket=BUCKET, Key="direct/big.bin")  # type: ignore[attr-defined]
    rows.append((f"{big.stat().st_size // MiB} MiB, flaskstream (`curl -T`)", f"{ours:.0f}", ""))
    rows.append((f"{big.stat().st_size // MiB} MiB, boto3 `upload_file`", f"{theirs:.0f}", ""))
    rows.append(("ratio flaskstream / boto3", f"{ours / theirs:.2f}x", ""))
    with PeakSampler(server.worker_pids) as sampler:
        baseline = sampler.peak
        start = time.monotonic()
        procs = [curl_put(f"{server.url}/uploads/c{i}.bin", small) for i in range(concurrency)]
        codes = [p.communicate()[0].decode() for p in procs]
        elapsed = time.monotonic() - start
    assert codes == ["201"] * concurrency, codes
    rows.append((f"{concurrency} concurrent uploads of {small.stat().st_size // MiB} MiB",
                 f"{concurrency * small.stat().st_size / elapsed / 1e6:.0f}",
                 f"{(sampler.peak - baseline) / MiB:.1f}"))
    return rows


def range_rows(server: LiveServer, s3: object, n: int) -> list[tuple[str, str, str]]:
    size = 16 * MiB
    data = random.Random(4).randbytes(size)
    res = requests.put(server.url + "/uploads/ranges.bin", data=data, timeout=120)
    content = server.url + res.json()["url"]
    key = f"bench/{res.json()['id']}"
    starts = [random.Random(i).randrange(0, size - 65536) for i in range(n)]
    session = requests.Session()
    timings = {"flaskstream": 0.0, "direct": 0.0}
    for start in starts:  # in turn, so a noisy moment hits both
        t0 = time.monotonic()
        got = session.get(content, headers={"Range": f"bytes={start}-{start + 65535}"})
        t1 = time.monotonic()
        direct = s3.get_object(Bucket=BUCKET, Key=key,  # type: ignore[attr-defined]
                               Range=f"bytes={start}-{start + 65535}")["Body"].read()
        t2 = time.monotonic()
        assert got.content == direct == data[start:start + 65536]
        timings["flaskstream"] += t1 - t0
        timings["direct"] += t2 - t1
    ours, theirs = n / timings["flaskstream"], n / timings["direct"]
    return [("64 KiB ranges of 16 MiB, flaskstream `GET /uploads/<id>/content`", f"{ours:.0f} req/s", ""),
            ("64 KiB ranges of 16 MiB, direct `get_object(Range=)`", f"{theirs:.0f} req/s", ""),
            ("ratio flaskstream / direct", f"{ours / theirs:.2f}x", "")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--concurrent-mib", type=int, default=256)
    parser.add_argument("--ranges", type=int, default=300)
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    port = free_port()
    moto = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="fs-bench-storage-"))
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        server = LiveServer(work / "instance", workers=1, env={
            "FLASKSTREAM_STORAGE_URL": f"s3://{BUCKET}/bench?endpoint_url={endpoint}",
            "FLASKSTREAM_LIMIT_FILE_SIZE": str(8 << 30), "GUNICORN_TIMEOUT": "120"})
        with server:
            requests.put(server.url + "/uploads/warm.bin", data=os.urandom(9 * MiB), timeout=60)
            big = make_file(work / "big.bin", args.size_mib * MiB)
            small = make_file(work / "small.bin", args.concurrent_mib * MiB)
            rows = upload_rows(server, s3, big, args.concurrency, small)
            rows += range_rows(server, s3, args.ranges)
    finally:
        moto.terminate()
        moto.wait(10)
        for path in work.glob("*.bin"):
            path.unlink()
    print(f"\n{dt.date.today()} — load average {os.getloadavg()[0]:.1f}\n")
    print("| what | MB/s or req/s | worker RSS growth (MiB) |\n|---|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
