"""The uploads memory proof: streamed vs buffered, N concurrent curl uploads, one gunicorn worker.

Run from the checkout (takes a few minutes and ~25 GB of disk churn):

    .venv/bin/python bench/uploads.py [--quick] [--node /tmp/node-anchor]

For each route (flaskstream's streamed ``POST /uploads`` and the deliberately
buffered ``POST /uploads/buffered``, which exists only with
``FLASKSTREAM_BENCH_BUFFERED_ROUTE=true``) and N in 1, 10, 100 it starts N
``curl -F file=@...`` at once and reports aggregate MB/s and the worker's peak
RSS growth over its idle baseline. Then the streamed route with 1 GiB files
(N = 1 and 10 complete; N = 100 *in flight*: 100 rate-limited 1 GiB uploads
held open for a while, then cut off — 100 GiB of disk is not assumed), and,
with ``--node``, the lesson's Node/busboy server on the same files.

Prints a Markdown table and writes ``bench/uploads-rss.png``. Never part of the
test run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
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

from tests.live import LiveServer, free_port  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB


def make_file(path: Path, size: int) -> Path:
    if path.exists() and path.stat().st_size == size:
        return path
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(block[i % 4096:] + block[:i % 4096])
    return path


class PeakSampler:
    """Polls the RSS of some processes every 20 ms and keeps the maximum of their sum."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.02)

    def __enter__(self) -> PeakSampler:
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def curl_upload(url: str, path: Path, field: str = "file", rate: str | None = None
                ) -> subprocess.Popen[bytes]:
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect:",
           "-F", f"{field}=@{path}", url]
    if rate:
        cmd[1:1] = ["--limit-rate", rate]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_concurrent(url: str, path: Path, n: int, pids: Callable[[], list[int]],
                   ok_codes: tuple[str, ...] = ("200", "201")) -> dict[str, float]:
    """N simultaneous curl uploads; aggregate MB/s and peak RSS growth (MiB)."""
    with PeakSampler(pids) as sampler:
        baseline = sampler.peak
        start = time.monotonic()
        procs = [curl_upload(url, path) for _ in range(n)]
        codes = [p.communicate()[0].decode() for p in procs]
        elapsed = time.monotonic() - start
    failed = [c for c in codes if c not in ok_codes]
    size = path.stat().st_size
    return {"mbps": n * size / elapsed / 1e6, "seconds": elapsed,
            "rss_base": baseline / MiB, "rss_growth": (sampler.peak - baseline) / MiB,
            "failed": len(failed)}


def in_flight(url: str, path: Path, n: int, pids: Callable[[], list[int]], hold: float,
              rate: str) -> dict[str, float]:
    """N rate-limited uploads held open for ``hold`` seconds, then killed (client disconnect)."""
    with PeakSampler(pids) as sampler:
        baseline = sampler.peak
        procs = [curl_upload(url, path, rate=rate) for _ in range(n)]
        time.sleep(hold)
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
        time.sleep(1)
    return {"mbps": float("nan"), "seconds": hold, "rss_base": baseline / MiB,
            "rss_growth": (sampler.peak - baseline) / MiB, "failed": 0}


def clear_uploads(server: LiveServer) -> None:
    while True:
        listing = requests.get(server.url + "/uploads?limit=500", timeout=30).json()["uploads"]
        if not listing:
            return
        for item in listing:
            requests.delete(f"{server.url}/uploads/{item['id']}", timeout=30)


def start_node(node_dir: Path, dest: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "UPLOAD_DIR": str(dest),
           "MAX_FILE_BYTES": str(4 * GiB)}
    proc = subprocess.Popen(["node", "upload-server.js"], cwd=node_dir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/upload"
    for _ in range(100):
        try:
            requests.get(url, timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("node upload server did not start")


def plot(rows: list[dict[str, object]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        series.setdefault(str(row["label"]), []).append((int(row["n"]),  # type: ignore[call-overload]
                                                         float(row["rss_growth"])))  # type: ignore[arg-type]
    for label, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1, linscale=0.5)
    top = max(float(r["rss_growth"]) for r in rows)  # type: ignore[arg-type]
    ax.set_ylim(0, top * 2)
    ax.axhline(16, color="grey", linestyle="--", linewidth=1)
    ax.text(1.05, 18, "16 MiB target", color="grey", fontsize=8)
    ax.set_xlabel("concurrent uploads (N)")
    ax.set_ylabel("worker peak RSS growth (MiB)")
    ax.set_title("flaskstream uploads: streamed vs buffered, one gevent worker")
    ax.legend(fontsize=8, loc="center right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def warm_up(server: LiveServer) -> None:
    """Concurrent small uploads first, so the worker's DB pool and imports are not
    counted as upload memory."""
    from concurrent.futures import ThreadPoolExecutor

    def put(i: int) -> None:
        requests.put(f"{server.url}/uploads/warm{i}.bin", data=b"w" * 100_000, timeout=30)

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(put, range(40)))
    clear_uploads(server)


def median_run(url: str, path: Path, pids: Callable[[], list[int]], ok: tuple[str, ...]
               ) -> dict[str, float]:
    return run_concurrent(url, path, 1, pids, ok_codes=ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 10 only; no 1 GiB runs")
    parser.add_argument("--node", type=Path, help="folder with the Node upload server installed")
    parser.add_argument("--small-mib", type=int, default=64)
    parser.add_argument("--hold", type=float, default=15.0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--headline-only", action="store_true",
                        help="only the interleaved single 1 GiB flaskstream-vs-Node trials")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/flaskstream-bench-uploads"))
    args = parser.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    small = make_file(work / f"s{args.small_mib}.bin", args.small_mib * MiB)
    big = None if args.quick else make_file(work / "big.bin", GiB)
    counts = [1, 10] if args.quick else [1, 10, 100]
    small_label = f"{args.small_mib} MiB"
    rows: list[dict[str, object]] = []
    headline: list[str] = []

    instance = Path(tempfile.mkdtemp(prefix="instance-", dir=work))
    server = LiveServer(instance, workers=1, env={
        "FLASKSTREAM_BENCH_BUFFERED_ROUTE": "true",
        "FLASKSTREAM_LIMIT_BODY_SIZE": str(8 * GiB),
        "FLASKSTREAM_LIMIT_FILE_SIZE": str(8 * GiB),
        "GUNICORN_TIMEOUT": "120",
    })
    node_dest = Path(tempfile.mkdtemp(prefix="node-", dir=work))
    node: tuple[subprocess.Popen[bytes], str] | None = None
    server.start(timeout=120)
    try:
        if args.node:
            node = start_node(args.node, node_dest)
        pids = server.worker_pids
        warm_up(server)

        def clear_node() -> None:
            for f in node_dest.iterdir():
                f.unlink()

        # 1. Single-upload throughput, flaskstream and Node interleaved (noisy machine).
        if big is not None and node is not None:
            ours, theirs = [], []
            node_pid = node[0].pid
            digest = file_sha256(big)
            for _ in range(args.trials):
                ours.append(median_run(server.url + "/uploads", big, pids, ("201",))["mbps"])
                stored = requests.get(server.url + "/uploads?limit=1", timeout=30).json()
                if stored["uploads"][0]["sha256"] != digest:
                    raise SystemExit(f"SHA-256 mismatch: {stored} != {digest}")
                clear_uploads(server)
                theirs.append(median_run(node[1], big, lambda: [node_pid], ("200",))["mbps"])
                clear_node()
            ours.sort()
            theirs.sort()
            headline.append(
                f"Single 1 GiB `curl -F` upload, median of {args.trials} interleaved trials: "
                f"flaskstream {ours[len(ours) // 2]:.0f} MB/s (SHA-256 + fsync included, "
                f"stored SHA-256 equal to the file's every time; "
                f"all: {', '.join(f'{x:.0f}' for x in ours)}) vs Node/busboy "
                f"{theirs[len(theirs) // 2]:.0f} MB/s (no hash, no fsync; all: "
                f"{', '.join(f'{x:.0f}' for x in theirs)}).")
            print(headline[-1], flush=True)

        if args.headline_only:
            return

        # 2. Streamed (and Node) at N = 1, 10, 100; buffered last, on a fresh worker.
        targets = [("streamed", server.url + "/uploads", pids, ("201",))]
        if node is not None:
            node_pid = node[0].pid
            targets.append(("node busboy", node[1], lambda: [node_pid], ("200",)))
        for route, url, who, ok in targets:
            for n in counts:
                result = run_concurrent(url, small, n, who, ok_codes=ok)
                label = "node busboy" if route == "node busboy" else "flaskstream streamed"
                rows.append({"label": f"{label}, {small_label}", "route": route,
                             "size": small_label, "n": n, **result})
                print(json.dumps(rows[-1]), flush=True)
                clear_uploads(server)
                clear_node()

        # 3. Streamed 1 GiB: N = 1, 10 complete; N = 100 in flight.
        if big is not None:
            for n in (1, 10):
                result = run_concurrent(server.url + "/uploads", big, n, pids, ok_codes=("201",))
                rows.append({"label": "flaskstream streamed, 1 GiB", "route": "streamed",
                             "size": "1 GiB", "n": n, **result})
                print(json.dumps(rows[-1]), flush=True)
                clear_uploads(server)
            result = in_flight(server.url + "/uploads", big, 100, pids, args.hold, "4M")
            rows.append({"label": "flaskstream streamed, 1 GiB", "route": "streamed (in flight)",
                         "size": "1 GiB", "n": 100, **result})
            print(json.dumps(rows[-1]), flush=True)
            staging = instance / "uploads" / ".staging"
            cut = time.monotonic()
            while os.listdir(staging) and time.monotonic() - cut < 60:
                time.sleep(0.1)
            left = os.listdir(staging)
            headline.append(f"100 rate-limited (4 MB/s) 1 GiB uploads held in flight for "
                            f"{args.hold:.0f} s, then cut off: {len(left)} staging files left "
                            f"{time.monotonic() - cut:.1f} s later; no final files, no rows "
                            f"({len(requests.get(server.url + '/uploads', timeout=30).json()['uploads'])}"
                            " listed).")
            print(headline[-1], flush=True)
        # 4. The buffered route, on a fresh worker (its heap stays grown afterwards).
        server.stop()
        server.start(timeout=120)
        warm_up(server)
        for n in counts:
            need = n * small.stat().st_size * 2
            if psutil.virtual_memory().available < need:
                print(f"skip buffered N={n}: needs ~{need / GiB:.1f} GiB free RAM")
                continue
            result = run_concurrent(server.url + "/uploads/buffered", small, n,
                                    server.worker_pids, ok_codes=("201",))
            rows.append({"label": f"flaskstream buffered, {small_label}", "route": "buffered",
                         "size": small_label, "n": n, **result})
            print(json.dumps(rows[-1]), flush=True)
            clear_uploads(server)
    finally:
        server.stop()
        shutil.rmtree(instance, ignore_errors=True)
        if node is not None:
            node[0].kill()
            node[0].wait()
        shutil.rmtree(node_dest, ignore_errors=True)

    print(f"\nUploads, {dt.date.today().isoformat()}, one gunicorn gevent worker, curl -F clients\n")
    for line in headline:
        print(f"- {line}")
    print("\n| route | size | N | MB/s (aggregate) | RSS idle (MiB) | peak RSS growth (MiB) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        mbps = "in flight" if r["mbps"] != r["mbps"] else f"{r['mbps']:.0f}"  # NaN
        fail = f" ({r['failed']} failed)" if r["failed"] else ""
        print(f"| {r['route']} | {r['size']} | {r['n']} | {mbps}{fail} | "
              f"{r['rss_base']:.0f} | {r['rss_growth']:.1f} |")
    out = ROOT / "bench" / "uploads-rss.png"
    plot(rows, out)
    print(f"\nplot: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
