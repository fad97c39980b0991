"""Many-connection SSE client for bench/sse.py, run as its own process.

One epoll loop holds up to tens of thousands of raw sockets (no thread or
greenlet per connection, so the client is not what runs out of memory), and
parses just enough of each stream to time deliveries: every event the bench
publishes carries ``"t"`` (publish time, ``time.time()``) and ``"phase"`` in
its JSON data.

Protocol on stdin/stdout, one JSON line each:
  → {"ready": N, "seconds": s}      once every connection has its first body bytes
  ← "report"                        → {"phases": {...}, "received": n, "closed": k}
  ← "close"                         close every socket, → {"closed": N}, exit
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import select
import socket
import sys
import time

DATA = re.compile(rb'data: (\{"t":[^\n]*\})\n')


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + 100 if hard == resource.RLIM_INFINITY else min(hard, need + 100)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/events/bench")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    raise_fd_limit(args.n + 50)

    request = (f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    buffers: dict[int, bytes] = {}
    started: set[int] = set()
    latencies: dict[str, list[float]] = {}
    last_recv: dict[str, float] = {}
    closed = 0
    first_seen: dict[tuple[str, object], float] = {}  # (phase, i) → fastest delivery
    ep.register(sys.stdin.fileno(), select.EPOLLIN)
    t0 = time.monotonic()
    opened = 0
    announced = False

    def open_some() -> None:
        nonlocal opened
        pending = opened - len(started)
        while opened < args.n and pending < args.batch:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            s.connect(("127.0.0.1", args.port))
            s.sendall(request)
            s.setblocking(False)
            socks[s.fileno()] = s
            buffers[s.fileno()] = b""
            ep.register(s.fileno(), select.EPOLLIN)
            opened += 1
            pending += 1

    open_some()
    while True:
        for fd, _ in ep.poll(0.5):
            if fd == sys.stdin.fileno():
                line = sys.stdin.readline().strip()
                if line == "report" or not line:
                    phases = {}
                    for phase, values in latencies.items():
                        values.sort()
                        phases[phase] = {
                            "deliveries": len(values),
                            "p50_ms": values[len(values) // 2] * 1000,
                            "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))] * 1000,
                            "max_ms": values[-1] * 1000,
                            "last_recv": last_recv[phase],
                            # Slowest first-delivery: delay before fan-out even began.
                            "worst_first_ms": sorted(
                                (v * 1000 for (p, _), v in first_seen.items() if p == phase),
                                reverse=True)[:5],
                        }
                    print(json.dumps({"phases": phases, "closed": closed,
                                      "received": sum(len(v) for v in latencies.values())}),
                          flush=True)
                if line == "close" or not line:
                    for s in socks.values():
                        s.close()
                    print(json.dumps({"closed": len(socks)}), flush=True)
                    return
                continue
            s = socks.get(fd)
            if s is None:
                continue
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            now = time.time()
            if not chunk:
                ep.unregister(fd)
                closed += 1
                continue
            if fd not in started:
                started.add(fd)
            buf = buffers[fd] + chunk
            cut = buf.rfind(b"\n")
            if cut < 0:
                buffers[fd] = buf
                continue
            for match in DATA.finditer(buf, 0, cut + 1):
                body = json.loads(match.group(1))
                phase = body.get("phase", "default")
                latencies.setdefault(phase, []).append(now - body["t"])
                key = (phase, body.get("i"))
                first_seen[key] = min(first_seen.get(key, 1e9), now - body["t"])
                last_recv[phase] = now
            buffers[fd] = buf[cut + 1:]
        if opened < args.n:
            open_some()
        if not announced and len(started) >= args.n:
            announced = True
            print(json.dumps({"ready": len(started), "seconds": time.monotonic() - t0}),
                  flush=True)


if __name__ == "__main__":
    main()
