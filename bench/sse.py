"""SSE benchmark: one gevent worker — memory per idle stream, fan-out latency, throughput.

    .venv/bin/python bench/sse.py [--big 10000] [--subs 1000] [--node]

Measures, against a real gunicorn (1 gevent worker) and PostgreSQL:
  * worker RSS per idle subscriber at 1,000 and 10,000 open streams,
  * publish → receive latency p50/p99 with 1,000 subscribers (POST /events/<ch>
    at 20/s, the timestamp taken just before the POST),
  * deliveries per second for a burst published through the Python API,
  * worker RSS after every client has left.
With ``--node`` the lesson's Node SSE server is measured for RSS per idle
connection in the same run. Clients run in a separate process (bench/sse_client.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flaskstream import create_app, embedded  # noqa: E402
from flaskstream.events.broker import publish  # noqa: E402
from tests.live import LiveServer, free_port  # noqa: E402

MiB = 1024 * 1024


class Clients:
    """bench/sse_client.py in its own process."""

    def __init__(self, port: int, n: int, path: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "sse_client.py"), "--port", str(port),
             "-n", str(n), "--path", path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("client process died")
        return json.loads(line)

    def send(self, command: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("close")
            self.proc.wait(30)


def settle(rss: callable, seconds: float = 1.5) -> int:  # type: ignore[valid-type]
    time.sleep(seconds)
    return rss()


def wait_streams(url: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(url + "/events/stats", timeout=10).json()["open_streams"] == n:
            return
        time.sleep(0.2)
    raise RuntimeError(f"open_streams did not reach {n}")


def idle_rss(server: LiveServer, n: int, path: str) -> tuple[float, float]:
    pid = server.worker_pids()[0]

    def rss() -> int:
        return psutil.Process(pid).memory_info().rss

    base = settle(rss)
    clients = Clients(server.port, n, path)
    ready = clients.read()
    held = settle(rss, 3)
    clients.close()
    wait_streams(server.url, 0)
    print(f"  {n:>6} idle streams: opened in {ready['seconds']:.1f}s, worker RSS "
          f"{base / MiB:.1f} → {held / MiB:.1f} MiB = {(held - base) / n / 1024:.1f} KiB/stream",
          flush=True)
    return (held - base) / n / 1024, base / MiB


def node_rss(ns: list[int]) -> dict[int, float]:
    script = ROOT.parent / "shared" / "anchors" / "node" / "sse-server.js"
    if not script.exists() or not shutil.which("node"):
        return {}
    port = free_port()
    proc = subprocess.Popen(["node", str(script)], env={**os.environ, "PORT": str(port),
                            "INTERVAL_MS": "600000"}, stdout=subprocess.DEVNULL)
    out = {}
    try:
        time.sleep(1)
        for n in ns:
            base = settle(lambda: psutil.Process(proc.pid).memory_info().rss)
            clients = Clients(port, n, "/events")
            clients.read()
            held = settle(lambda: psutil.Process(proc.pid).memory_info().rss, 3)
            clients.close()
            out[n] = (held - base) / n / 1024
            print(f"  node {n:>6} idle connections: {out[n]:.1f} KiB/connection", flush=True)
            time.sleep(2)
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=10000)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--node", action="store_true")
    args = parser.parse_args()

    base_dir = Path(tempfile.mkdtemp(prefix="bench-sse-"))
    url = os.environ.get("DATABASE_URL") or embedded.ensure_running(base_dir / "pgdata", own=True)
    server = LiveServer(base_dir / "live", workers=1, database_url=url, env={
        "FLASKSTREAM_SSE_MAX_STREAMS": str(args.big + 1000),
        "GUNICORN_WORKER_CONNECTIONS": str(args.big + 2000),
        "FLASKSTREAM_SSE_HEARTBEAT": "30",
        "FLASKSTREAM_SSE_QUEUE_SIZE": "1024",
    })
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(base_dir / "api")})
    results: dict[str, object] = {}
    try:
        server.start()
        pid = server.worker_pids()[0]
        print(f"gunicorn 1 gevent worker (pid {pid}); PostgreSQL {url.split('@')[-1]}", flush=True)
        # Warm-up: code paths, pools, listener.
        warm = Clients(server.port, 200, "/events/warm")
        warm.read()
        warm.close()
        wait_streams(server.url, 0)
        start_rss = psutil.Process(pid).memory_info().rss

        if args.big:
            print("RSS per idle stream (GET /events/<channel>):")
            results["kib_per_stream_1k"], _ = idle_rss(server, 1000, "/events/idle")
            results["kib_per_stream_big"], _ = idle_rss(server, args.big, "/events/idle")

        print(f"fan-out to {args.subs} subscribers:")
        clients = Clients(server.port, args.subs, "/events/lat")
        clients.read()
        wait_streams(server.url, args.subs)
        session = requests.Session()
        session.post(server.url + "/events/warm", json={"data": "warm"}, timeout=10)  # pool
        post_ms: list[float] = []
        for i in range(args.events):
            body = {"event": "m", "data": {"t": time.time(), "phase": "latency", "i": i}}
            posted = time.perf_counter()
            assert session.post(server.url + "/events/lat", json=body, timeout=10).status_code == 202
            post_ms.append((time.perf_counter() - posted) * 1000)
            time.sleep(0.05)
        time.sleep(1.0)
        first = time.time()
        with app.app_context():
            for i in range(args.burst):
                publish("lat", {"t": time.time(), "phase": "burst", "i": i}, "m")
        time.sleep(3.0)
        report = clients.send("report")
        clients.close()
        lat = report["phases"]["latency"]
        burst = report["phases"]["burst"]
        rate = burst["deliveries"] / (burst["last_recv"] - first)
        print(f"  latency ({args.events} events × {args.subs}): {lat['deliveries']} deliveries, "
              f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms;"
              f" slowest first deliveries {[round(v) for v in lat['worst_first_ms']]} ms")
        print(f"  burst ({args.burst} events via publish()): {burst['deliveries']} deliveries "
              f"in {burst['last_recv'] - first:.2f}s = {rate:,.0f} deliveries/s "
              f"(p50 {burst['p50_ms']:.0f} ms, p99 {burst['p99_ms']:.0f} ms)")
        post_ms.sort()
        print(f"  POST /events/<ch> answered in p50 {post_ms[len(post_ms) // 2]:.1f} ms, "
              f"slowest {[round(v) for v in post_ms[-5:]]} ms")
        results.update(p50_ms=lat["p50_ms"], p99_ms=lat["p99_ms"], deliveries_per_s=rate,
                       latency_deliveries=lat["deliveries"], burst_deliveries=burst["deliveries"])
        wait_streams(server.url, 0)
        end_rss = settle(lambda: psutil.Process(pid).memory_info().rss, 2)
        print(f"worker RSS after all clients left: {end_rss / MiB:.1f} MiB "
              f"(after warm-up {start_rss / MiB:.1f} MiB)")
        results.update(rss_after_mib=end_rss / MiB, rss_warm_mib=start_rss / MiB)
        stats = requests.get(server.url + "/events/stats", timeout=10).json()
        print("worker counters:", json.dumps(stats["counters"]))
        holders = Clients(server.port, args.subs, "/events/bye")
        holders.read()
        wait_streams(server.url, args.subs)
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
        time.sleep(0.5)  # let the client process read every EOF
        ended = holders.send("report")["closed"]
        holders.close()
        print(f"SIGTERM with {args.subs} streams open: gunicorn exited in {took:.2f}s, "
              f"{ended} streams closed by the server")
        results.update(shutdown_s=took, shutdown_closed=ended)
    finally:
        server.stop()
        if not os.environ.get("DATABASE_URL"):
            embedded.stop(base_dir / "pgdata")
        shutil.rmtree(base_dir, ignore_errors=True)
    if args.node:
        print("Node reference (shared/anchors/node/sse-server.js):")
        results["node"] = node_rss([1000, args.big])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
