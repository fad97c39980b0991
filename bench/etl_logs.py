"""``flask etl logs``' load, old vs new, in this process, on a generated access log.

    .venv/bin/python bench/etl_logs.py --lines 200000 --rounds 5

``preset`` is today's path: ``logs.log_copy_blocks`` judged by the ``requests``
preset (``TableCsv`` over the table as the catalog reads it + ``presets.REQUESTS``).
``hand-written`` is the path it replaced: the same parser into ``tables.validate``
with ``HAND_WRITTEN_REQUESTS``, the old ``tables.REQUESTS`` kept here only for this
comparison. Both run through ``jobs.run_load`` as ``etl logs --dry-run`` does
(progress, rejects, batches; no database: the COPY is the same for both, and the
shared machine's server time would only add noise). Rounds are interleaved,
best of each; the two must write the same COPY text and rejects (checked first).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flaskstream.etl import presets  # noqa: E402
from flaskstream.etl.anytable import TableCsv  # noqa: E402
from flaskstream.etl.jobs import run_load  # noqa: E402
from flaskstream.etl.logs import log_copy_blocks, parse_log_lines  # noqa: E402
from flaskstream.etl.pipeline import CopyBlock, Progress, decode, gunzip_if_needed  # noqa: E402
from flaskstream.etl.sink import LoadOptions  # noqa: E402
from flaskstream.etl.tables import Column, Mapping, Table, validate  # noqa: E402

# flaskstream.requests as the catalog reads it (tests/etl/test_logs.py checks it against the server)
from tests.etl.test_logs import REQUESTS_TABLE as CATALOG_REQUESTS  # noqa: E402

HAND_WRITTEN_REQUESTS = Table("requests", (  # the old tables.REQUESTS, bench-only
    Column("time", "text", required=True),
    Column("remote_addr", "text", max_length=255),
    Column("method", "text", required=True, max_length=32),
    Column("path", "text", required=True),
    Column("protocol", "text", max_length=32),
    Column("status", "int", required=True, min=100, max=999),
    Column("bytes", "int", min=0),
    Column("referrer", "text"),
    Column("agent", "text"),
))
OLD_MAPPING = Mapping(HAND_WRITTEN_REQUESTS, tuple(range(9)), 9)


def generate(lines: int, invalid: float = 0.02) -> bytes:
    """Combined Log Format lines, ``invalid`` of them bad in ways both paths judge alike."""
    rng = random.Random(7)
    out = []
    for i in range(lines):
        r = rng.random()
        status = "099" if r < invalid / 3 else rng.choice(("200", "200", "304", "404", "500"))
        method = "M" * 40 if invalid / 3 <= r < invalid * 2 / 3 else rng.choice(("GET", "POST"))
        size = rng.choice(("-", str(rng.randint(0, 1 << 20))))
        line = (f'10.{i % 256}.{i // 256 % 256}.1 - - [{1 + i % 28:02d}/Nov/2026:'
                f'{i % 24:02d}:{i % 60:02d}:{i * 7 % 60:02d} +0000] "{method} /p/{i}?q={r:.4f} '
                f'HTTP/1.1" {status} {size} "https://ref.example/{i % 97}" "agent/{i % 13}"')
        out.append("garbage" if invalid * 2 / 3 <= r < invalid else line)
    return ("\n".join(out) + "\n").encode()


def old_parser(chunks: Iterable[bytes], table: Any, *, encoding: str = "utf-8",
               progress: Progress | None = None, **_: object) -> Iterator[CopyBlock]:
    """The log parser as it was before the preset took over (tables.validate)."""
    progress = progress if progress is not None else Progress()
    return validate(parse_log_lines(decode(gunzip_if_needed(chunks), encoding, progress)),
                    OLD_MAPPING, progress)


def run(kind: str, chunks: list[bytes], texts: list[str] | None = None) -> float:
    table: Any = TableCsv(CATALOG_REQUESTS, None, presets.REQUESTS) if kind == "preset" \
        else HAND_WRITTEN_REQUESTS
    parser: Any = log_copy_blocks if kind == "preset" else old_parser
    if texts is not None:  # the check run: collect what the sink would COPY
        blocks = parser(iter(chunks), table, progress=Progress())
        texts.extend(b.text + "".join(f"{r.line}:{r.reason}\n" for r in b.rejects) for b in blocks)
        return 0.0
    started = time.perf_counter()
    result = run_load(None, iter(chunks), table, LoadOptions(dry_run=True), parser=parser,
                      source_name="bench")
    elapsed = time.perf_counter() - started
    assert result["status"] == "done", result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = generate(args.lines)
    chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    outputs: dict[str, list[str]] = {"preset": [], "hand-written": []}
    for kind, texts in outputs.items():
        run(kind, chunks, texts)
    same = "".join(outputs["preset"]) == "".join(outputs["hand-written"])
    print(f"{args.lines:,} log lines, {len(data) / 1e6:.1f} MB: same COPY text and rejects: {same}")
    best = dict.fromkeys(outputs, float("inf"))
    for round_ in range(args.rounds):
        for kind in sorted(best, reverse=round_ % 2 == 1):
            best[kind] = min(best[kind], run(kind, chunks))
            print(f"round {round_ + 1} {kind}: {best[kind]:.3f} s best so far, "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print(", ".join(f"{kind} {s:.3f} s ({args.lines / s:,.0f} lines/s)" for kind, s in best.items())
          + f"; preset / hand-written time: {best['preset'] / best['hand-written']:.2f} "
          f"(best of {args.rounds}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
