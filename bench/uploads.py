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
    ax.set_yscale("symlog", linthresh=16)
    ax.axhline(16, color="grey", linestyle="--", linewidth=1)
    ax.text(1, 17, "16 MiB target", color="grey", fontsize=8)
    ax.set_xlabel("concurrent uploads (N)")
    ax.set_ylabel("worker peak RSS growth (MiB)")
    ax.set_title("flaskstream uploads: streamed vs buffered, one gevent worker")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 10 only; no 1 GiB runs")
    parser.add_argument("--node", type=Path, help="folder with the Node upload server installed")
    parser.add_argument("--small-mib", type=int, default=64)
    parser.add_argument("--hold", type=float, default=15.0)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/flaskstream-bench-uploads"))
    args = parser.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    small = make_file(work / f"s{args.small_mib}.bin", args.small_mib * MiB)
    big = None if args.quick else make_file(work / "big.bin", GiB)
    counts = [1, 10] if args.quick else [1, 10, 100]
    rows: list[dict[str, object]] = []

    instance = Path(tempfile.mkdtemp(prefix="instance-", dir=work))
    server = LiveServer(instance, workers=1, env={
        "FLASKSTREAM_BENCH_BUFFERED_ROUTE": "true",
        "FLASKSTREAM_LIMIT_BODY_SIZE": str(8 * GiB),
        "FLASKSTREAM_LIMIT_FILE_SIZE": str(8 * GiB),
        "GUNICORN_TIMEOUT": "120",
    })
    server.start(timeout=120)
    try:
        pids = server.worker_pids
        requests.put(server.url + "/uploads/warm.bin", data=b"w" * MiB, timeout=30)
        for route in ("streamed", "buffered"):
            url = server.url + ("/uploads" if route == "streamed" else "/uploads/buffered")
            for n in counts:
                need = n * small.stat().st_size * 2
                if route == "buffered" and psutil.virtual_memory().available < need:
                    print(f"skip buffered N={n}: needs ~{need / GiB:.1f} GiB free RAM")
                    continue
                result = run_concurrent(url, small, n, pids)
                rows.append({"label": f"flaskstream {route}, {args.small_mib} MiB",
                             "route": route, "size": f"{args.small_mib} MiB", "n": n, **result})
                print(json.dumps(rows[-1]), flush=True)
                clear_uploads(server)
        if big is not None:
            for n in (1, 10):
                result = run_concurrent(server.url + "/uploads", big, n, pids)
                rows.append({"label": "flaskstream streamed, 1 GiB", "route": "streamed",
                             "size": "1 GiB", "n": n, **result})
                print(json.dumps(rows[-1]), flush=True)
                clear_uploads(server)
            result = in_flight(server.url + "/uploads", big, 100, pids, args.hold, "4M")
            rows.append({"label": "flaskstream streamed, 1 GiB", "route": "streamed (in flight)",
                         "size": "1 GiB", "n": 100, **result})
            print(json.dumps(rows[-1]), flush=True)
            staging = instance / "uploads" / ".staging"
            left = os.listdir(staging) if staging.exists() else []
            print(f"staging files left after 100 cut-off uploads: {len(left)}")
    finally:
        server.stop()
        shutil.rmtree(instance, ignore_errors=True)

    if args.node:
        dest = Path(tempfile.mkdtemp(prefix="node-", dir=work))
        proc, url = start_node(args.node, dest)
        try:
            for path, n in ([(small, 1), (small, 10)] + ([(big, 1)] if big else [])):
                result = run_concurrent(url, path, n, lambda: [proc.pid], ok_codes=("200",))
                size = "1 GiB" if path == big else f"{args.small_mib} MiB"
                rows.append({"label": f"node busboy, {size}", "route": "node busboy",
                             "size": size, "n": n, **result})
                print(json.dumps(rows[-1]), flush=True)
                for f in dest.iterdir():
                    f.unlink()
        finally:
            proc.kill()
            proc.wait()
            shutil.rmtree(dest, ignore_errors=True)

    print(f"\nUploads, {dt.date.today().isoformat()}, one gunicorn gevent worker, curl -F clients\n")
    print("| route | size | N | MB/s (aggregate) | worker RSS idle (MiB) | peak RSS growth (MiB) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        mbps = "—" if r["mbps"] != r["mbps"] else f"{r['mbps']:.0f}"  # NaN → in flight
        fail = f" ({r['failed']} failed)" if r["failed"] else ""
        print(f"| {r['route']} | {r['size']} | {r['n']} | {mbps}{fail} | "
              f"{r['rss_base']:.0f} | {r['rss_growth']:.1f} |")
    out = ROOT / "bench" / "uploads-rss.png"
    plot([r for r in rows if r["route"] != "node busboy" or r["size"] != "1 GiB"], out)
    print(f"\nplot: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
