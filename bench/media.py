"""Media benchmark: flaskstream's pread ranges vs werkzeug's ``send_file`` in the
same gunicorn (1 gevent worker), and optionally the lesson's Node server.

    .venv/bin/python bench/media.py [--seconds 5] [--node /tmp/video-server.js]

Figures, side by side in one run (the machine is shared and noisy — compare
ratios, not absolutes):
  1. req/s for random 64 KiB ranges (keep-alive, 2 client processes x 4 connections)
     on a 16 MiB and a 256 MiB file of random bytes; plus "flaskstream-via-flask"
     (the same requests through the blueprint, fast path bypassed), "flask-ceiling", a route
     answering 64 KiB from memory in the same gunicorn (Flask + gunicorn alone), and
     "wsgi-ceiling", the same from a bare WSGI callable (gunicorn alone), and
     "wsgi-pread", a bare callable doing one ``pread`` with a media answer's headers,
     and "wsgi-headers", ``wsgi-ceiling`` with the nine headers of a fast-path answer
     (what sending those headers costs in gunicorn, before any file is read);
  2. MB/s for whole-file transfers of the 256 MiB file (2 concurrent clients);
  3. latency of ``bytes=-65536`` on a 1 GiB (sparse) file: median and p95.
The Node column (``video-server.js`` copied outside the repo) serves one file at
``/video`` and knows no suffix ranges: it gets the equivalent ``bytes=a-b``.
With ``--nginx`` (where /usr/sbin/nginx exists) a second gunicorn runs with
``FLASKSTREAM_MEDIA_ACCEL=/_accel/`` behind nginx rendered from
conf/nginx.conf.template (tests/ops/nginx.py): "accel-via-nginx" is Python's
check plus nginx's ``X-Accel-Redirect`` send, "nginx-proxy" the plain fast
path behind the same nginx. The summary line gives the two ratios issue 17
asks for: fast path / wsgi-ceiling and accel-via-nginx / node.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.live import free_port  # noqa: E402
from tests.ops import nginx  # noqa: E402

KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024
RANGE = 64 * KiB


def start_gunicorn(folder: Path, instance: Path,
                   extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASKSTREAM_")}
    env.update({
        "PORT": str(port), "WEB_CONCURRENCY": "1", "GUNICORN_ACCESSLOG": "",
        "GUNICORN_LOGLEVEL": "warning", "FLASKSTREAM_INSTANCE_PATH": str(instance),
        "FLASKSTREAM_MEDIA_DIR": str(folder),
        # Media routes never touch PostgreSQL; a dummy URL keeps the embedded one off.
        "FLASKSTREAM_DATABASE_URL": "postgresql://unused@127.0.0.1:9/unused",
        # ... and no janitor asks it every few seconds (a traceback each, work in the loop).
        "FLASKSTREAM_ETL_JANITOR_INTERVAL": "0", "FLASKSTREAM_TUS_JANITOR_INTERVAL": "0",
        "FLASKSTREAM_UPLOAD_STAGING_SWEEP_INTERVAL": "0",
    })
    env.update(extra_env or {})
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "conf/gunicorn.conf.py",
                             "bench.media_app:app"], cwd=ROOT, env=env)
    wait_ready(port, "/media/")
    return proc, port


def start_node(script: str, video: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ, PORT=str(port), VIDEO=str(video))
    proc = subprocess.Popen(["node", script], env=env, stdout=subprocess.DEVNULL)
    wait_ready(port, "/video", {"Range": "bytes=0-0"})
    return proc, port


def _ratio_name(label: str) -> str:
    return "fast path" if label == "flaskstream" else label


def wait_ready(port: int, path: str, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path, headers=headers or {})
            if conn.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} not ready")


def get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str],
        buf: bytearray) -> tuple[int, int]:
    """One request on a keep-alive connection; the body is read and discarded."""
    conn.request("GET", path, headers=headers)
    res = conn.getresponse()
    total = 0
    view = memoryview(buf)
    while True:
        n = res.readinto(view)
        if not n:
            break
        total += n
    return res.status, total


def _client_proc(port: int, path: str, size: int, expect: int, seconds: float,
                 conns: int, mode: str, out: multiprocessing.Queue,
                 extra: dict[str, str] | None = None) -> None:
    stop_at = time.monotonic() + seconds
    counts = [0, 0, 0]  # requests, bytes, errors

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        buf = bytearray(MiB)
        while time.monotonic() < stop_at:
            headers = dict(extra or {})
            if mode == "range":
                start = rng.randrange(0, size - RANGE)
                headers["Range"] = f"bytes={start}-{start + RANGE - 1}"
            try:
                status, got = get(conn, path, headers, buf)
            except (OSError, http.client.HTTPException):
                counts[2] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            if status != expect or got != (RANGE if mode == "range" else size):
                counts[2] += 1
            counts[0] += 1
            counts[1] += got
        conn.close()

    threads = [threading.Thread(target=worker, args=(os.getpid() * 100 + i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(tuple(counts))


def load(port: int, path: str, size: int, expect: int, seconds: float, mode: str,
         procs: int = 2, conns: int = 4, extra: dict[str, str] | None = None,
         ) -> tuple[float, float, int, int]:
    """(requests/s, MB/s, errors, requests) over ``seconds`` of closed-loop load."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    started = time.monotonic()
    workers = [multiprocessing.Process(target=_client_proc, args=(
        port, path, size, expect, seconds, conns, mode, queue, extra)) for _ in range(procs)]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    requests_ = sum(r[0] for r in results)
    return (requests_ / elapsed, sum(r[1] for r in results) / elapsed / 1e6,
            sum(r[2] for r in results), requests_)


WRK_SCRIPT = ROOT / "bench" / "media_ranges.lua"


def load_wrk(port: int, path: str, size: int, seconds: float,
             extra: dict[str, str] | None = None) -> tuple[float, float, int, int]:
    """``load``'s figures from ``wrk`` (C, epoll): the same 8 keep-alive connections
    on 2 threads, random 64 KiB ranges from bench/media_ranges.lua. A Python client
    on this 2-core machine saturates near 5k req/s, below what nginx can answer."""
    headers = [arg for name, value in (extra or {}).items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(["wrk", "-t2", "-c8", f"-d{max(1, round(seconds))}s", "-s", str(WRK_SCRIPT),
                          *headers, f"http://127.0.0.1:{port}{path}"],
                         env=dict(os.environ, WRK_SIZE=str(size)), capture_output=True, text=True,
                         check=True).stdout
    requests_ = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = sum(int(n) for n in re.findall(r"Socket errors: connect (\d+), read (\d+), "
                                            r"write (\d+), timeout (\d+)", out)[0]) \
        if "Socket errors" in out else 0
    return rps, rps * RANGE / 1e6, errors + (int(bad.group(1)) if bad else 0), requests_


def serving_pids(proc: subprocess.Popen[bytes] | int) -> list[int]:
    """The processes doing the serving: a master's workers, or the process itself."""
    master = psutil.Process(proc if isinstance(proc, int) else proc.pid)
    return [child.pid for child in master.children()] or [master.pid]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by ``pids`` (a machine-load-proof measure)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:  # nginx's cache loader exits a minute after start
            continue
        total += times.user + times.system
    return total


def latency(port: int, path: str, headers: dict[str, str], count: int) -> tuple[float, float]:
    """(median ms, p95 ms) of sequential requests on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    buf = bytearray(MiB)
    get(conn, path, headers, buf)  # warm
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        status, got = get(conn, path, headers, buf)
        samples.append((time.perf_counter() - t0) * 1000)
        assert status == 206 and got == RANGE, (status, got)
    conn.close()
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def write_random(path: Path, size: int) -> None:
    rng = random.Random(7)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(rng.randbytes(MiB))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--node", help="path to a copy of the lesson's video-server.js")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per range row")
    parser.add_argument("--nginx", action="store_true",
                        help="add accel-via-nginx and nginx-proxy (needs /usr/sbin/nginx)")
    parser.add_argument("--wrk", action="store_true",
                        help="random-range rows from wrk (apt-get install wrk) instead of the "
                             "Python client, for every column alike")
    parser.add_argument("--ranges-only", action="store_true",
                        help="only the random-range rows (skip whole-file and suffix latency)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="fs-bench-media-"))
    folder = base / "media"
    folder.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    stoppers: list[Any] = []
    try:
        write_random(folder / "m16.bin", 16 * MiB)
        write_random(folder / "m256.bin", 256 * MiB)
        with open(folder / "g1.bin", "wb") as f:
            f.truncate(GiB)
        for name in ("m16.bin", "m256.bin", "g1.bin"):  # warm the page cache
            with open(folder / name, "rb") as f:
                while f.read(8 * MiB):
                    pass
        gunicorn, gport = start_gunicorn(folder, base / "instance")
        procs.append(gunicorn)
        servers = {"flaskstream": (gport, "/media/{}"), "send_file": (gport, "/bench/send_file/{}")}
        node_ports: dict[str, int] = {}
        node_pids: dict[str, list[int]] = {}
        if args.node:  # the seed serves one file per process
            for name in ("m16.bin", "m256.bin", "g1.bin"):
                proc, node_ports[name] = start_node(args.node, folder / name)
                node_pids[name] = [proc.pid]
                procs.append(proc)
        client = "wrk -t2 -c8" if args.wrk else "2 procs x 4 keep-alive connections"
        print(f"# media bench {time.strftime('%Y-%m-%d %H:%M')} - 1 gunicorn gevent worker, "
              f"{args.seconds:.0f} s per figure, {client}, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
              f"range rows: median of {args.rounds} interleaved rounds")

        def node_for(name: str) -> int | None:
            return node_ports.get(name)

        proxies: dict[str, int] = {}
        # Whose CPU serves each target: the µs of server CPU per request are the
        # figure a loaded, shared machine cannot distort (req/s it can).
        pids: dict[str, list[int]] = {label: serving_pids(gunicorn) for label in (
            "flaskstream", "send_file", "flaskstream-via-flask", "flask-ceiling", "wsgi-pread",
            "wsgi-ceiling", "pread-inner", "wsgi-headers")}
        if args.nginx:
            accel, aport = start_gunicorn(folder, base / "instance-accel",
                                          {"FLASKSTREAM_MEDIA_ACCEL": "/_accel/"})
            procs.append(accel)
            for label, port in (("accel-via-nginx", aport), ("nginx-proxy", gport)):
                front = nginx.Nginx(base / label, f"127.0.0.1:{port}", folder,
                                    base / "instance-accel" / "uploads").start()
                stoppers.append(front.stop)
                proxies[label] = front.port
                assert front.process is not None
                pids[label] = serving_pids(accel if port == aport else gunicorn) \
                    + serving_pids(front.process)
        summary: dict[str, float] = {}
        cpu_per_request: dict[str, float] = {}

        origin = {"Origin": "http://bench.invalid"}
        for name, size in (("m16.bin", 16 * MiB), ("m256.bin", 256 * MiB)):
            # (label, port, path, extra headers); an Origin header sends the request
            # through Flask (CORS) instead of the WSGI fast path: the blueprint's own rate.
            targets = [(label, port, pattern.format(name), None)
                       for label, (port, pattern) in servers.items()]
            if node_for(name):
                targets.append(("node", node_ports[name], "/video", None))
            targets += [(label, port, f"/media/{name}", None) for label, port in proxies.items()]
            if size == 16 * MiB:  # the ceilings next to the fast path they bound
                targets[1:1] = [("wsgi-ceiling", gport, "/bench/raw", None),
                                ("wsgi-headers", gport, "/bench/raw-headers", None),
                                ("wsgi-pread", gport, "/bench/raw-pread", None),
                                ("pread-inner", gport, "/bench/raw-pread-inner", None)]
                targets += [("flaskstream-via-flask", gport, f"/media/{name}", origin),
                            ("flask-ceiling", gport, "/bench/ceiling", None)]
            results: dict[str, list[float]] = {t[0]: [] for t in targets}
            errors: dict[str, int] = {t[0]: 0 for t in targets}
            cpu: dict[str, list[float]] = {t[0]: [] for t in targets}
            for round_ in range(args.rounds):
                # Every other round backwards: no target always follows the same one.
                for label, port, path, extra in targets[::-1] if round_ % 2 else targets:
                    serving = pids.get(label) or node_pids[name]
                    before = cpu_seconds(serving)
                    if args.wrk:
                        rps, _, errs, count = load_wrk(port, path, size, args.seconds, extra)
                    else:
                        rps, _, errs, count = load(port, path, size, 206, args.seconds, "range",
                                                   extra=extra)
                    cpu[label].append((cpu_seconds(serving) - before) / max(count, 1) * 1e6)
                    results[label].append(rps)
                    errors[label] += errs
            row = [f"{label} {statistics.median(v):6.0f} req/s"
                   + (f" ({errors[label]} errors)" if errors[label] else "")
                   for label, v in results.items()]
            print(f"random 64 KiB ranges, {size // MiB} MiB file: " + " | ".join(row)
                  + f" (load average {os.getloadavg()[0]:.2f})", flush=True)
            print(f"  server CPU per request, {size // MiB} MiB file: " + " | ".join(
                f"{label} {statistics.median(v):5.0f} us" for label, v in cpu.items()), flush=True)
            if size == 16 * MiB:
                summary = {label: statistics.median(v) for label, v in results.items()}
                cpu_per_request = {label: statistics.median(v) for label, v in cpu.items()}
        # (numerator, denominator): req/s ratios; CPU-per-request ratios are the inverse.
        pairs = [("flaskstream", "wsgi-ceiling"), ("flaskstream", "wsgi-pread"),
                 ("flaskstream", "pread-inner"), ("wsgi-pread", "wsgi-ceiling"),
                 ("wsgi-headers", "wsgi-ceiling"), ("accel-via-nginx", "node"),
                 ("flaskstream", "node")]
        for view, figures, invert in (("req/s", summary, False),
                                      ("requests per server CPU-second", cpu_per_request, True)):
            ratios = [f"{_ratio_name(a)} / {_ratio_name(b)} "
                      f"{(figures[b] / figures[a]) if invert else (figures[a] / figures[b]):.2f}"
                      for a, b in pairs if a in figures and b in figures]
            print(f"16 MiB ratios ({view}): " + " | ".join(ratios), flush=True)
        if args.ranges_only:
            return

        row = []
        for label, (port, pattern) in servers.items():
            _, mbs, errors, _ = load(port, pattern.format("m256.bin"), 256 * MiB, 200,
                                  args.seconds, "whole", procs=2, conns=1)
            row.append(f"{label} {mbs:7.0f} MB/s" + (f" ({errors} errors)" if errors else ""))
        nport = node_for("m256.bin")
        if nport:
            _, mbs, errors, _ = load(nport, "/video", 256 * MiB, 200, args.seconds, "whole",
                                  procs=2, conns=1)
            row.append(f"node {mbs:7.0f} MB/s" + (f" ({errors} errors)" if errors else ""))
        print("whole-file 256 MiB, 2 clients: " + " | ".join(row))

        row = []
        for label, (port, pattern) in servers.items():
            count = 200 if label == "flaskstream" else 10
            med, p95 = latency(port, pattern.format("g1.bin"), {"Range": f"bytes=-{RANGE}"}, count)
            row.append(f"{label} median {med:7.2f} ms p95 {p95:7.2f} ms")
        nport = node_for("g1.bin")
        if nport:
            spec = f"bytes={GiB - RANGE}-{GiB - 1}"  # the seed server has no suffix ranges
            med, p95 = latency(nport, "/video", {"Range": spec}, 200)
            row.append(f"node median {med:7.2f} ms p95 {p95:7.2f} ms")
        print("bytes=-65536 of a 1 GiB file: " + " | ".join(row))
    finally:
        for stop in stoppers:
            stop()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
