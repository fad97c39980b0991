"""Object storage: flaskstream into an S3 bucket against boto3 itself, same bucket, same run.

Run from the checkout (a few minutes; moto keeps every object in memory, ~2.5 GiB):

    .venv/bin/python bench/storage.py [--size-mib 1024] [--rounds 3] [--concurrency 8] [--ranges 200]

One moto S3 server in its own process on 127.0.0.1, one gunicorn worker (gevent)
with ``FLASKSTREAM_STORAGE_URL`` on that bucket and its own embedded PostgreSQL.

moto's own ``python -m moto.server`` is werkzeug's development server, which
answers every request with ``Connection: close``: each S3 call then pays a TCP
connect (and, in a gevent worker, a trip through gevent's resolver thread pool),
which no real S3 endpoint charges. By default the bench serves the same moto WSGI
app from gunicorn's threaded worker with keep-alive (``--moto keepalive``), so
both sides reuse pooled connections as they would against S3; ``--moto werkzeug``
keeps the old server for comparison.

Rows (``--rounds`` interleaved rounds, the order of the two sides alternating;
medians of the per-round figures and of the per-round ratios):

1. a ``--size-mib`` upload: ``curl -T`` through flaskstream (streamed into a
   multipart upload) vs boto3's ``upload_file`` of the same file (its transfer
   manager: 8 MiB parts, 10 threads, CRC32 checksums; ``UNSIGNED-PAYLOAD`` as over
   HTTPS, like flaskstream's parts) into the same bucket, with the CPU seconds
   per GiB of each process (moto, the worker, the client);
2. ``--concurrency`` uploads at once through flaskstream: worker RSS growth;
3. random 64 KiB ranges of a 16 MiB object: ``GET /uploads/<id>/content`` with
   ``Range`` vs ``get_object(Range=)`` straight to the bucket, one client each,
   one request of each in turn, with CPU ms per request and S3 requests per range
   (counted in moto's access log).

Prints a Markdown table. Never part of the test run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.uploads import PeakSampler, make_file  # noqa: E402
from tests.live import LiveServer, free_port, wait_for  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
BUCKET = "flaskstream-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}
Row = tuple[str, str, str]


def moto_app() -> Any:
    """moto's S3 WSGI app, for ``gunicorn 'bench.storage:moto_app()'``."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return DomainDispatcherApplication(create_backend_app)


def start_moto(port: int, server: str = "keepalive",
               access_log: Path | None = None) -> subprocess.Popen[bytes]:
    """moto in its own process: gunicorn gthread with keep-alive, or moto's werkzeug server."""
    if server == "keepalive":
        # one process (moto's state is in memory), threads for the 10 boto3 transfer threads
        cmd = [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "32",
               "--keep-alive", "75", "-t", "300", "-b", f"127.0.0.1:{port}",
               "--access-logfile", str(access_log or os.devnull), "bench.storage:moto_app()"]
    else:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1).ok
        except requests.RequestException:
            return False

    if not wait_for(up, 30):
        proc.kill()
        raise RuntimeError("moto server did not start")
    return proc


class CpuMeter:
    """CPU seconds of a set of processes (each with its children) between two reads."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = []
        for pid in pids:
            proc = psutil.Process(pid)
            self.procs += [proc, *proc.children(recursive=True)]

    def read(self) -> float:
        total = 0.0
        for proc in self.procs:
            times = proc.cpu_times()
            total += times.user + times.system
        return total


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (the curl clients)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def curl_put(url: str, path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                             "Expect:", "-T", str(path), url], stdout=subprocess.PIPE)


def measured(run: Callable[[], float], moto: CpuMeter, worker: CpuMeter) -> dict[str, float]:
    """Seconds and CPU seconds (moto, worker, client) of ``run``, which returns its client CPU."""
    moto0, worker0, start = moto.read(), worker.read(), time.monotonic()
    client = run()
    return {"s": time.monotonic() - start, "moto": moto.read() - moto0,
            "worker": worker.read() - worker0, "client": client}


def upload_rows(server: LiveServer, s3: Any, big: Path, rounds: int, moto: CpuMeter,
                worker: CpuMeter, baseline_checksum: str = "crc32") -> list[Row]:
    size = big.stat().st_size
    # boto3's own default is CRC32 per part; "sha256" asks upload_file for the SHA-256
    # checksums flaskstream sends (x-amz-checksum-sha256 on every part), so that the bucket
    # verifies the same thing for both sides.
    extra = {"ChecksumAlgorithm": "SHA256"} if baseline_checksum == "sha256" else None

    def ours() -> float:
        before = children_cpu()
        out = curl_put(server.url + "/uploads/big.bin", big).communicate()[0].decode()
        assert out == "201", out
        return children_cpu() - before

    def theirs() -> float:
        before = time.process_time()
        s3.upload_file(str(big), BUCKET, "direct/big.bin", ExtraArgs=extra)
        return time.process_time() - before

    runs: dict[str, list[dict[str, float]]] = {"ours": [], "theirs": []}
    for n in range(rounds):
        order = ["ours", "theirs"] if n % 2 == 0 else ["theirs", "ours"]
        for side in order:
            runs[side].append(measured(ours if side == "ours" else theirs, moto, worker))
            clean_bucket(s3)  # moto keeps objects in memory: one at a time
    ratios = [t["s"] / o["s"] for o, t in zip(runs["ours"], runs["theirs"], strict=True)]
    rows = []
    for side, name in (("ours", "flaskstream (`curl -T`)"),
                       ("theirs", f"boto3 `upload_file` ({baseline_checksum} checksums)")):
        speeds = [size / r["s"] / 1e6 for r in runs[side]]
        cpu = {k: statistics.median(r[k] for r in runs[side]) * GiB / size
               for k in ("moto", "worker", "client")}
        rows.append((f"{size // MiB} MiB, {name}: MB/s (rounds)",
                     f"{statistics.median(speeds):.0f} ({', '.join(f'{s:.0f}' for s in speeds)})",
                     f"CPU s/GiB: moto {cpu['moto']:.1f}, worker {cpu['worker']:.1f}, "
                     f"client {cpu['client']:.1f}"))
    rows.append(("upload ratio flaskstream / boto3 (median of rounds)",
                 f"**{statistics.median(ratios):.2f}x** ({', '.join(f'{r:.2f}' for r in ratios)})",
                 ""))
    rows.append(cpu_ratio_row("upload", runs["ours"], runs["theirs"]))
    return rows


def cpu_ratio_row(what: str, ours: list[dict[str, float]], theirs: list[dict[str, float]]) -> Row:
    """CPU seconds of all processes of each side, per round, as a ratio: what the wall-clock
    ratio would be on a machine whose cores were all ours, and less moved by other load."""
    ratios = [sum(t[k] for k in ("moto", "worker", "client"))
              / sum(o[k] for k in ("moto", "worker", "client"))
              for o, t in zip(ours, theirs, strict=True)]
    return (f"{what} CPU ratio: all processes' CPU of the direct side / of flaskstream's",
            f"{statistics.median(ratios):.2f}x ({_join(ratios, '.2f')})", "")


def clean_bucket(s3: Any) -> None:
    """Delete every object (flaskstream's rows then point at nothing; the bench never reads them)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])


def concurrent_row(server: LiveServer, small: Path, concurrency: int) -> Row:
    with PeakSampler(server.worker_pids) as sampler:
        baseline = sampler.peak
        start = time.monotonic()
        procs = [curl_put(f"{server.url}/uploads/c{i}.bin", small) for i in range(concurrency)]
        codes = [p.communicate()[0].decode() for p in procs]
        elapsed = time.monotonic() - start
    assert codes == ["201"] * concurrency, codes
    return (f"{concurrency} concurrent uploads of {small.stat().st_size // MiB} MiB: MB/s total",
            f"{concurrency * small.stat().st_size / elapsed / 1e6:.0f}",
            f"worker RSS growth **{(sampler.peak - baseline) / MiB:.1f} MiB**")


def range_rows(server: LiveServer, s3: Any, n: int, rounds: int, moto: CpuMeter,
               worker: CpuMeter, access_log: Path | None) -> list[Row]:
    size = 16 * MiB
    data = random.Random(4).randbytes(size)
    res = requests.put(server.url + "/uploads/ranges.bin", data=data, timeout=120)
    content = server.url + res.json()["url"]
    key = f"bench/{res.json()['id']}"
    session = requests.Session()
    per_round: list[dict[str, float]] = []
    logged = _lines(access_log)
    for r in range(rounds):
        starts = [random.Random(r * n + i).randrange(0, size - 65536) for i in range(n)]
        acc = dict.fromkeys(("ours", "theirs", "moto-ours", "moto-theirs", "worker",
                             "client-ours", "client-theirs"), 0.0)
        for start in starts:  # in turn, so a noisy moment hits both
            header = f"bytes={start}-{start + 65535}"
            m0, w0, c0, t0 = moto.read(), worker.read(), time.process_time(), time.monotonic()
            got = session.get(content, headers={"Range": header}).content
            m1, w1, c1, t1 = moto.read(), worker.read(), time.process_time(), time.monotonic()
            direct = s3.get_object(Bucket=BUCKET, Key=key, Range=header)["Body"].read()
            m2, c2, t2 = moto.read(), time.process_time(), time.monotonic()
            assert got == direct == data[start:start + 65536]
            acc["ours"] += t1 - t0
            acc["theirs"] += t2 - t1
            acc["moto-ours"] += m1 - m0
            acc["moto-theirs"] += m2 - m1
            acc["worker"] += w1 - w0
            acc["client-ours"] += c1 - c0
            acc["client-theirs"] += c2 - c1
        per_round.append(acc)

    def med(k: str) -> float:
        return statistics.median(a[k] for a in per_round)

    ratios = [a["theirs"] / a["ours"] for a in per_round]
    time.sleep(0.5)  # moto logs a request after answering it
    ours_calls = (_lines(access_log) - logged) / (n * rounds) - 1  # less the direct GET each
    calls_text = f", {ours_calls:.2f} S3 requests/range" if access_log else ""
    return [
        ("64 KiB ranges of 16 MiB, flaskstream `GET /uploads/<id>/content`: req/s",
         f"{n / med('ours'):.0f} ({_join(n / a['ours'] for a in per_round)})",
         f"CPU ms/req: moto {med('moto-ours') / n * 1e3:.2f}, worker "
         f"{med('worker') / n * 1e3:.2f}, client {med('client-ours') / n * 1e3:.2f}{calls_text}"),
        ("the same ranges, direct `get_object(Range=)`: req/s",
         f"{n / med('theirs'):.0f} ({_join(n / a['theirs'] for a in per_round)})",
         f"CPU ms/req: moto {med('moto-theirs') / n * 1e3:.2f}, "
         f"client {med('client-theirs') / n * 1e3:.2f}"),
        ("range ratio flaskstream / direct (median of rounds)",
         f"**{statistics.median(ratios):.2f}x** ({_join(ratios, '.2f')})", ""),
        cpu_ratio_row("range",
                      [{"moto": a["moto-ours"], "worker": a["worker"], "client": a["client-ours"]}
                       for a in per_round],
                      [{"moto": a["moto-theirs"], "worker": 0.0, "client": a["client-theirs"]}
                       for a in per_round]),
    ]


def _join(values: Any, spec: str = ".0f") -> str:
    return ", ".join(format(v, spec) for v in values)


def _lines(path: Path | None) -> int:
    if path is None:
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--concurrent-mib", type=int, default=256)
    parser.add_argument("--ranges", type=int, default=200, help="ranges per round")
    parser.add_argument("--moto", choices=("keepalive", "werkzeug"), default="keepalive")
    parser.add_argument("--only", choices=("all", "uploads", "ranges"), default="all")
    parser.add_argument("--baseline-checksum", choices=("crc32", "sha256"), default="crc32",
                        help="the checksum boto3's upload_file sends (its default: crc32)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a flaskstream setting for the worker, e.g. STORAGE_PARTS_IN_FLIGHT=3")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    import boto3
    from botocore.config import Config

    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="fs-bench-storage-"))
    access_log = work / "moto-access.log" if args.moto == "keepalive" else None
    moto_proc = start_moto(port, args.moto, access_log)
    endpoint = f"http://127.0.0.1:{port}"
    loads = [os.getloadavg()[0]]
    try:
        # the baseline signs as flaskstream's part client does (UNSIGNED-PAYLOAD, the body
        # bound by its checksum header): what botocore does by itself over HTTPS, while over
        # moto's plain HTTP it would hash every byte once more
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          config=Config(s3={"payload_signing_enabled": False}))
        s3.create_bucket(Bucket=BUCKET)
        server = LiveServer(work / "instance", workers=1, env={
            "FLASKSTREAM_STORAGE_URL": f"s3://{BUCKET}/bench?endpoint_url={endpoint}",
            "FLASKSTREAM_LIMIT_FILE_SIZE": str(8 << 30), "GUNICORN_TIMEOUT": "120",
            **{"FLASKSTREAM_" + k: v for k, v in (item.split("=", 1) for item in args.set)}})
        with server:
            requests.put(server.url + "/uploads/warm.bin", data=os.urandom(9 * MiB), timeout=60)
            moto, worker = CpuMeter([moto_proc.pid]), CpuMeter(server.worker_pids())
            rows: list[Row] = []
            if args.only in ("all", "uploads"):
                big = make_file(work / "big.bin", args.size_mib * MiB)
                rows += upload_rows(server, s3, big, args.rounds, moto, worker,
                                    args.baseline_checksum)
                loads.append(os.getloadavg()[0])
                small = make_file(work / "small.bin", args.concurrent_mib * MiB)
                rows.append(concurrent_row(server, small, args.concurrency))
                clean_bucket(s3)
            if args.only in ("all", "ranges"):
                rows += range_rows(server, s3, args.ranges, args.rounds, moto, worker, access_log)
            loads.append(os.getloadavg()[0])
    finally:
        moto_proc.terminate()
        moto_proc.wait(10)
        for path in work.glob("*.bin"):
            path.unlink()
    print(f"\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, moto server: {args.moto}, "
          f"settings: {' '.join(args.set) or 'defaults'}, "
          f"load average (1 min) {' / '.join(f'{x:.1f}' for x in loads)}\n")
    print("| what | figure (per round) | notes |\n|---|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
