"""ETL benchmark: flaskstream's load vs `psql \\copy` (the limit) vs a naive
pipeline (same stages, batched multi-row INSERTs of 1,000 rows), in one run.

    .venv/bin/python bench/etl.py                    # 1M rows + a 1 GB on-the-fly run
    .venv/bin/python bench/etl.py --big-gb 10        # the full 10 GB run (long)
    .venv/bin/python bench/etl.py --big-gb 0 --rows 200000
    .venv/bin/python bench/etl.py --big-gb 1 --typed only --repeat 0   # 1 GB into the typed table
    .venv/bin/python bench/etl.py --big-gb 0 --typed no --repeat 2 --presets-in-process 200000  # presets

Each loader runs in its own process (bench/etl_loader.py or psql) and its
peak RSS is read from ``wait4``. The big input is generated while it is piped
into the loader's stdin, never stored. The database is $DATABASE_URL or an
embedded PostgreSQL in a temporary folder, stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pg8000.native  # noqa: E402
import pgserver  # noqa: E402

from bench import etl_typed  # noqa: E402
from flaskstream import db, embedded, schema  # noqa: E402

PSQL = Path(pgserver.__file__).parent / "pginstall/bin/psql"  # whichever venv runs this
LOADER = [sys.executable, str(ROOT / "bench/etl_loader.py")]


def row(i: int, rng: random.Random, invalid: float) -> tuple[str, str | None]:
    """One CSV line and, when valid, its pre-cleaned COPY text line."""
    email, age, name = f"User{i}@Example.com", rng.randint(0, 150), f" Name {i} "
    r = rng.random()
    if r < invalid / 4:
        return f"bad-email-{i},{age},{name}\n", None
    if r < invalid / 2:
        return f"{email},abc,{name}\n", None
    if r < invalid * 3 / 4:
        return f"{email},{200 + age},{name}\n", None
    if r < invalid:
        return f",{age},{name}\n", None
    return f"{email},{age},{name}\n", f"{email.lower()}\t{age}\t{name.strip()}\n"


def write_inputs(folder: Path, rows: int, invalid: float) -> tuple[Path, Path, int]:
    rng = random.Random(42)
    csv_path, clean_path = folder / "users.csv", folder / "users-clean.tsv"
    valid = 0
    with open(csv_path, "w") as raw, open(clean_path, "w") as clean:
        raw.write("email,age,name\n")
        for start in range(0, rows, 10_000):
            lines = [row(i, rng, invalid) for i in range(start, min(rows, start + 10_000))]
            raw.write("".join(line for line, _ in lines))
            good = [c for _, c in lines if c]
            valid += len(good)
            clean.write("".join(good))
    return csv_path, clean_path, valid


def big_input(total_bytes: int, invalid: float):
    """~total_bytes of unique-email CSV, made by stamping a template block."""
    rng = random.Random(7)
    template = "".join(row(i, rng, invalid)[0] for i in range(20_000)).replace(
        "User", "U@@@@@@@@x").replace("bad-email-", "bad@@@@@@@@-").encode()
    yield b"email,age,name\n"
    sent, block = 0, 0
    while sent < total_bytes:
        data = template.replace(b"@@@@@@@@", b"%08d" % block)
        block += 1
        sent += len(data)
        yield data


LAST_CPU: list[float] = [0.0]  # CPU seconds (user + system) of the last loader waited for


def wait_rusage(proc: subprocess.Popen) -> tuple[int, float]:
    """Wait for ``proc``; return (exit status, peak RSS in MiB); its CPU time goes to LAST_CPU."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    LAST_CPU[0] = usage.ru_utime + usage.ru_stime
    return proc.returncode, usage.ru_maxrss / 1024


def truncate(url: str) -> None:
    con = schema.attach(pg8000.native.Connection(**db.connect_kwargs(url)), schema.SchemaNames("flaskstream"))
    db.apply_schema(con)
    con.run("TRUNCATE flaskstream.users, flaskstream.etl_jobs, flaskstream.etl_rejects")
    con.run("CHECKPOINT")
    con.close()


def run_loader(kind: str, url: str, path: str, feed=None) -> dict:
    (etl_typed.truncate if kind == "typed" else truncate)(url)
    proc = subprocess.Popen([*LOADER, kind, url, path], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE if feed else None)
    started = time.monotonic()
    if feed:
        for chunk in feed:
            proc.stdin.write(chunk)
        proc.stdin.close()
    out = proc.stdout.read()
    code, rss = wait_rusage(proc)
    if code != 0:
        raise SystemExit(f"{kind} loader failed ({code})")
    result = json.loads(out.splitlines()[-1])
    if result.get("status", "done") != "done":
        raise SystemExit(f"{kind} load failed: {result.get('error')}")
    result["wall_s"] = round(time.monotonic() - started, 2)
    result["peak_rss_mib"] = round(rss, 1)
    return result


def run_psql(url: str, clean: Path, rows: int, typed: bool = False) -> dict:
    (etl_typed.truncate if typed else truncate)(url)
    started = time.monotonic()
    command = etl_typed.psql_copy(clean) if typed \
        else f"\\copy flaskstream.users (email, age, name) FROM '{clean}'"
    proc = subprocess.Popen([str(PSQL), url, "-q", "-c", command])
    code, rss = wait_rusage(proc)
    seconds = time.monotonic() - started
    if code != 0:
        raise SystemExit("psql failed")
    size = clean.stat().st_size
    return {"rows_read": rows, "rows_loaded": rows, "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds), "mb_per_s": round(size / seconds / 1e6, 2),
            "bytes": size, "peak_rss_mib": round(rss, 1)}


def line(name: str, r: dict) -> str:
    return (f"| {name} | {r['rows_read']:,} | {r.get('rows_rejected', 0):,} | {r['seconds']} | "
            f"{r['rows_per_s']:,} | {r['mb_per_s']} | {r['peak_rss_mib']} |")


def typed_comparison(url: str, work: Path, args: argparse.Namespace) -> None:
    """1M rows into a site's typed table: flaskstream vs psql \\copy, interleaved rounds."""
    if args.repeat < 1:  # --repeat 0: only the big run
        return
    etl_typed.create(url)
    csv_path, clean_path, valid = etl_typed.write_inputs(work, args.rows, args.invalid)
    print(f"typed input: {args.rows:,} rows, {csv_path.stat().st_size / 1e6:.1f} MB, "
          f"{args.rows - valid:,} invalid", flush=True)
    runs: dict[str, list[dict]] = {}
    for round_ in range(args.repeat):
        for kind in ("psql", "typed"):
            r = run_psql(url, clean_path, valid, typed=True) if kind == "psql" \
                else run_loader("typed", url, str(csv_path))
            r["cpu_s"] = round(LAST_CPU[0], 2)
            runs.setdefault(kind, []).append(r)
            print(f"round {round_ + 1} typed {kind}: {r['seconds']} s, {r['rows_per_s']:,} "
                  f"rows/s, {r['peak_rss_mib']} MiB, client CPU {r['cpu_s']} s, "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
    best = {kind: min(samples, key=lambda r: r["seconds"]) for kind, samples in runs.items()}
    print(f"\n{etl_typed.TABLE} (16 columns, 14 types), best of {args.repeat}")
    print("| loader | rows read | rejected | s | rows/s | MB/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(line("psql \\copy (pre-cleaned)", best["psql"]))
    print(line(f"flaskstream `etl load --table {etl_typed.TABLE}`", best["typed"]))
    print(f"\ntyped: flaskstream / psql \\copy (same valid rows): "
          f"{best['typed']['rows_loaded'] / best['typed']['seconds'] / (valid / best['psql']['seconds']):.0%}"
          " (rows loaded per second)\n", flush=True)


def typed_big(url: str, args: argparse.Namespace) -> None:
    """``--big-gb`` of customers CSV generated while it is piped into the typed loader."""
    etl_typed.create(url)  # empty, with its indexes
    r = run_loader("typed", url, "-", feed=etl_typed.big_input(int(args.big_gb * 1e9), args.invalid))
    r["cpu_s"] = round(LAST_CPU[0], 2)
    print(f"typed load, {args.big_gb:g} GB on the fly (load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}):", r, flush=True)
    print("| loader | rows read | rejected | s | rows/s | MB/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(line(f"flaskstream `etl load --table {etl_typed.TABLE}`, {args.big_gb:g} GB on the fly", r))
    print(flush=True)


def presets_in_process(rows: int, rounds: int) -> None:
    """The users preset's parse + validate stage in this process, no database:
    the catalog path (``TableCsv`` + ``presets.USERS``) against the hand-written
    ``tables.USERS`` stage, interleaved rounds, best of each; same COPY text."""
    from flaskstream.etl.anytable import TableCsv
    from flaskstream.etl.mapping import TableColumn, TargetTable
    from flaskstream.etl.pgtypes import PgType
    from flaskstream.etl.pipeline import Progress
    from flaskstream.etl.presets import USERS
    from flaskstream.etl.tables import USERS as HAND_WRITTEN
    from flaskstream.etl.tables import csv_copy_blocks

    table = TargetTable("flaskstream", "users", (  # as the catalog reads it (tests/etl/test_presets.py)
        TableColumn("id", PgType("int8"), "bigint", not_null=True, identity="always"),
        TableColumn("email", PgType("text"), "text", not_null=True),
        TableColumn("age", PgType("int4"), "integer"), TableColumn("name", PgType("text"), "text")),
        primary_key=("id",), unique_keys=(("id",), ("email",)))
    rng = random.Random(1)
    data = ("email,age,name\n" + "".join(row(i, rng, 0.02)[0] for i in range(rows))).encode()
    chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    stages = {
        "catalog preset": lambda: "".join(b.text for b in TableCsv(table, None, USERS).blocks(
            iter(chunks), progress=Progress())),
        "hand-written table": lambda: "".join(b.text for b in csv_copy_blocks(
            iter(chunks), HAND_WRITTEN, progress=Progress()))}
    texts = {name: stage() for name, stage in stages.items()}
    print(f"in-process, {rows:,} users rows: same COPY text: {len(set(texts.values())) == 1}")
    best = dict.fromkeys(stages, float("inf"))
    for round_ in range(rounds):
        for name in sorted(stages, reverse=round_ % 2 == 1):
            started = time.perf_counter()
            stages[name]()
            best[name] = min(best[name], time.perf_counter() - started)
    print(", ".join(f"{name} {s:.3f} s" for name, s in best.items()) +
          f"; catalog / hand-written time: {best['catalog preset'] / best['hand-written table']:.2f}"
          f" (best of {rounds}, load average {os.getloadavg()[0]:.1f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--invalid", type=float, default=0.02)
    parser.add_argument("--big-gb", type=float, default=1.0, help="0 to skip the big run")
    parser.add_argument("--big-dry-run", action="store_true",
                        help="the big run validates only (no database writes, no disk needed)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--plain-table", action="store_true",
                        help="drop users' unique/primary key/check constraints first (COPY "
                             "then costs the server much less: shows the Python side's limit)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of the 1M-row comparison; the best of each is reported "
                             "(0: none, only the --big-gb run)")
    parser.add_argument("--typed", choices=("also", "only", "no"), default="also",
                        help="the typed site table (public.customers, etl_typed.py) too, "
                             "only, or not")
    parser.add_argument("--presets-in-process", type=int, default=0, metavar="ROWS",
                        help="then time the users preset's stage in this process on ROWS "
                             "rows (200000): catalog path vs the hand-written table (run "
                             "last: a loader forked after it would start at our peak RSS)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fs-etl-bench-"))
    url = os.environ.get("DATABASE_URL")
    pgdata = work / "pgdata"
    if not url:
        url = embedded.ensure_running(pgdata, own=True)
    try:
        if args.plain_table:
            truncate(url)
            con = pg8000.native.Connection(**db.connect_kwargs(url))
            con.run("ALTER TABLE flaskstream.users DROP CONSTRAINT IF EXISTS users_email_key, "
                    "DROP CONSTRAINT IF EXISTS users_pkey, DROP CONSTRAINT IF EXISTS users_age_check")
            con.close()
        if args.typed != "no":
            typed_comparison(url, work, args)
            if args.big_gb > 0:
                typed_big(url, args)
        if args.typed == "only":
            return
        csv_path, clean_path, valid = write_inputs(work, args.rows, args.invalid)
        print(f"input: {args.rows:,} rows, {csv_path.stat().st_size / 1e6:.1f} MB, "
              f"{args.rows - valid:,} invalid", flush=True)
        runs: dict[str, list[dict]] = {}
        kinds = ["psql", "pipeline", "pipeline-table"] + \
            ([] if args.skip_naive else ["naive", "insert-sink"])
        for round_ in range(args.repeat):  # interleaved, so every loader sees the same noise
            for kind in kinds:
                r = run_psql(url, clean_path, valid) if kind == "psql" \
                    else run_loader(kind, url, str(csv_path))
                runs.setdefault(kind, []).append(r)
                print(f"round {round_ + 1} {kind}: {r['seconds']} s, {r['rows_per_s']:,} rows/s, "
                      f"{r['peak_rss_mib']} MiB, load average {os.getloadavg()[0]:.1f}", flush=True)
        results = {kind: min(samples, key=lambda r: r["seconds"]) for kind, samples in runs.items()}
        if args.big_gb > 0:
            results["big"] = run_loader("pipeline-dry" if args.big_dry_run else "pipeline", url, "-",
                                        feed=big_input(int(args.big_gb * 1e9), args.invalid))
            print(f"flaskstream load, {args.big_gb} GB on the fly:", results["big"], flush=True)
        print()
        print(f"best of {args.repeat} interleaved rounds (the machine is shared and noisy)")
        print("| loader | rows read | rejected | s | rows/s | MB/s | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(line("psql \\copy (pre-cleaned)", results["psql"]))
        print(line("flaskstream `etl load`", results["pipeline"]))
        print(line("the same, hand-written `tables.USERS` stage", results["pipeline-table"]))
        if "naive" in results:
            print(line("naive: row-at-a-time stages + INSERT x1000", results["naive"]))
            print(line("flaskstream stages + INSERT x1000 sink", results["insert-sink"]))
        if "big" in results:
            dry = " (--dry-run)" if args.big_dry_run else ""
            print(line(f"flaskstream, {args.big_gb:g} GB generated on the fly{dry}", results["big"]))
        p = results["pipeline"]["rows_per_s"]
        print(f"\npipeline / psql \\copy: {p / results['psql']['rows_per_s']:.0%}; catalog "
              f"preset / hand-written table: {p / results['pipeline-table']['rows_per_s']:.2f}x",
              end="")
        if "naive" in results:
            print(f"; pipeline / naive: {p / results['naive']['rows_per_s']:.1f}x; pipeline / "
                  f"INSERT sink: {p / results['insert-sink']['rows_per_s']:.1f}x", end="")
        print()
        if args.presets_in_process:
            presets_in_process(args.presets_in_process, max(args.repeat, 1) * 2 + 1)
    finally:
        if pgdata.exists():
            embedded.stop(pgdata)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
