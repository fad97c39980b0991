"""``flask etl ...``: load, export, init-db, jobs, logs.

Commands print one clear line and exit non-zero on failure — never a traceback
for bad input. ``load`` draws a progress bar on stderr when stderr is a
terminal and prints a one-line JSON summary on stdout with ``--json``.

Under the embedded PostgreSQL a command that finds no server running starts
one and stops it at exit (``flaskstream/embedded.py``).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
import time
from typing import IO, Any

import click
from flask import current_app
from flask.cli import with_appcontext

from flaskstream import db
from flaskstream.errorbase import FlaskstreamError
from flaskstream.etl import csvsafe, targets
from flaskstream.etl import export as exporting
from flaskstream.etl.anytable import TableCsv
from flaskstream.etl.bounds import InputError, bounds_from_config, text_codec
from flaskstream.etl.jobs import RejectsFile, get_job, recent_jobs, run_load, valid_job_id
from flaskstream.etl.logs import log_copy_blocks
from flaskstream.etl.pipeline import read_chunks, resume_chunks
from flaskstream.etl.sink import MODES, LoadOptions
from flaskstream.etl.tables import Table


class ProgressBar:
    """``12.3 MB / 40.0 MB  31%  412,000 rows/s  rejects 210`` redrawn on stderr."""

    def __init__(self, total: int | None, stream: IO[str]) -> None:
        self.total = total
        self.stream = stream
        self.started = time.monotonic()

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = data["bytes"] / 1e6
        size = f" / {self.total / 1e6:,.1f} MB {100 * data['bytes'] / self.total:3.0f}%" \
            if self.total else " MB"
        line = (f"\r{done:,.1f}{size}  {data['rows_read'] / elapsed:,.0f} rows/s  "
                f"loaded {data['rows_loaded']:,}  rejects {data['rows_rejected']:,}")
        self.stream.write(line.ljust(78))
        if event != "progress":
            self.stream.write("\n")
        self.stream.flush()


def friendly(func: Any) -> Any:
    """Database and OS failures as one clear line (exit 1), not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (db.DatabaseError, db.InterfaceError, OSError) as exc:
            message = exc.args[0].get("M") if exc.args and isinstance(exc.args[0], dict) \
                else (str(exc) or type(exc).__name__)
            raise click.ClickException(f"database: {message}") from None

    return wrapper


def _source(path: str) -> tuple[IO[bytes], int | None, str]:
    if path == "-":
        return sys.stdin.buffer, None, "stdin"
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    size = os.fstat(handle.fileno()).st_size
    return handle, size or None, os.path.abspath(path)


def _text_encoding(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--encoding`` must name a codec that decodes bytes to text (bounds.text_codec)."""
    try:
        return text_codec(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, separators=(",", ":")))
    if result["status"] != "done":
        raise click.ClickException(result["error"]["message"])
    if not as_json:
        verb = "validated" if result["dry_run"] else f"loaded into {result['table']}"
        click.echo(f"{result['rows_loaded']:,} rows {verb}, {result['rows_rejected']:,} "
                   f"rejected, in {result['seconds']} s ({result['rows_per_s']:,} rows/s)")


def _resume_point(job_id: str, table_name: str, path: str) -> dict[str, Any]:
    """Where a failed ``--commit-every`` job stopped, checked against this run."""
    if path == "-":
        raise click.UsageError("--resume needs the same file again, not stdin")
    with db.connection() as con:
        job = get_job(con, job_id) if valid_job_id(job_id) else None
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    if job["status"] != "failed" or job["checkpoint_offset"] is None:
        raise click.ClickException(f"job {job_id} is {job['status']} with no checkpoint to "
                                   "resume from (only failed --commit-every loads have one)")
    if job["table"] != table_name:
        raise click.ClickException(f"job {job_id} loaded table {job['table']}, not {table_name}")
    return job


def _load(path: str, table: Table | TableCsv, options: LoadOptions, *, rejects: str | None,
          encoding: str, as_json: bool, job: str | None, parser: Any = None,
          resume: dict[str, Any] | None = None,
          source: tuple[IO[bytes], int, str] | None = None) -> None:
    if job is not None and not valid_job_id(job):
        raise click.BadParameter("letters, digits, '.', '_' or '-' (at most 64)", param_hint="--job")
    handle, size, name = source or _source(path)
    owned = source is not None or path != "-"
    stream: Any = handle
    cfg = current_app.config
    extra: dict[str, Any] = {"parser": parser} if parser else {
        "parser_options": {"bounds": bounds_from_config(cfg)}}
    if resume is not None:
        offset = int(resume["checkpoint_offset"])
        chunks = resume_chunks(read_chunks(handle), offset)
        try:
            header = next(chunks)
        except InputError as exc:
            handle.close()
            raise click.ClickException(str(exc)) from None
        stream = itertools.chain([header], chunks)
        extra.setdefault("parser_options", {}).update(
            line_base=int(resume["checkpoint_line"]) - 1, base_offset=offset - len(header))
        name = f"{name} (resuming {resume['id']} at line {int(resume['checkpoint_line']) + 1})"
    err = sys.stderr
    bar = ProgressBar(size, err) if err.isatty() else None
    try:
        rejects_file = RejectsFile(rejects) if rejects else None
    except OSError as exc:
        raise click.ClickException(f"cannot write {rejects}: {exc.strerror}") from None
    try:
        result = run_load(
            None if options.dry_run else db.get_database(), stream, table, options,
            job_id=job, source_name=name, encoding=encoding, rejects=rejects_file,
            field_size_limit=int(cfg["ETL_FIELD_SIZE_LIMIT"]),
            store_rejects=int(cfg["ETL_STORE_REJECTS"]), on_progress=bar, **extra)
    finally:
        if owned:
            handle.close()
    _report(result, as_json)


@click.command("load")
@click.argument("path", required=False)
@click.option("--upload", default=None, metavar="ID",
              help="Load a file stored by /uploads (or a finished tus upload) instead of PATH.")
@click.option("--table", "table_name", default="users", show_default=True,
              help="users/requests (flaskstream's presets) or any [schema.]name the role may "
                   "INSERT into (read from the catalog).")
@click.option("--mode", type=click.Choice(MODES), default="insert", show_default=True,
              help="insert: plain COPY; upsert: merge on the table's key.")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Rows per COPY batch (ETL_BATCH_SIZE).")
@click.option("--rejects", type=click.Path(dir_okay=False), default=None,
              help="Write rejected rows (line, reason, text) to this CSV.")
@click.option("--max-errors", type=click.IntRange(0), default=None,
              help="Abort and roll back when more rows than this are rejected.")
@click.option("--max-error-ratio", type=click.FloatRange(0, 1), default=None,
              help="Abort and roll back when rejected/read passes this (e.g. 0.05).")
@click.option("--commit-every", type=click.IntRange(1), default=None,
              help="Commit every N rows and record a checkpoint (not all-or-nothing).")
@click.option("--dry-run", is_flag=True, help="Validate only; write nothing.")
@click.option("--encoding", default="utf-8", show_default=True, callback=_text_encoding,
              help="A text encoding (utf-8, latin-1, cp1252, ...; not rot13/hex/base64).")
@click.option("--job", default=None, help="Job id (default: random).")
@click.option("--resume", "resume_job", default=None, metavar="JOB",
              help="Continue a failed --commit-every job from its checkpoint (same file).")
@click.option("--json", "as_json", is_flag=True, help="One-line JSON summary on stdout.")
@click.option("--map", "map_", multiple=True, metavar="HEADER=COLUMN",
              help="CSV header HEADER feeds column COLUMN (repeatable).")
@click.option("--no-header", is_flag=True, help="The file has no header (give --columns).")
@click.option("--columns", default=None, metavar="A,B,C", help="Field names of a headerless file.")
@click.option("--ignore-extra", is_flag=True, help="Skip CSV fields no column matches.")
@click.option("--delimiter", default=None, help="Field delimiter (default ,).")
@click.option("--quote", default=None, help='Quote character (default ").')
@click.option("--escape", default=None, help="Escape before a quote inside quotes (default: "
              "the quote doubled).")
@click.option("--null", default=None, help="Unquoted text read as NULL (default: empty).")
@click.option("--skip-lines", type=click.IntRange(0), default=None,
              help="Skip this many lines before the header.")
@click.option("--no-trim", is_flag=True, help="Keep spaces around values.")
@click.option("--lower", multiple=True, metavar="COLUMN", help="Lower-case COLUMN (repeatable).")
@click.option("--key", default=None, metavar="A,B",
              help="Upsert conflict target: a unique index's columns (default: primary key).")
@with_appcontext
@friendly
def load_command(path: str | None, upload: str | None, table_name: str, mode: str, batch_size: int | None,
                 rejects: str | None, max_errors: int | None, max_error_ratio: float | None,
                 commit_every: int | None, dry_run: bool, encoding: str, job: str | None,
                 resume_job: str | None, as_json: bool, map_: tuple[str, ...],
                 **flags: Any) -> None:
    """Load a CSV file (or - for stdin; gzip detected) into a table."""
    cfg = current_app.config
    if (path is None) == (upload is None):
        raise click.UsageError("give PATH (or - for stdin) or --upload ID, not both")
    try:
        table = targets.load_target(table_name, targets.dialect_from({"map": map_, **flags}))
        source = targets.upload_source(upload) if upload is not None else None
    except FlaskstreamError as exc:
        raise click.ClickException(exc.message) from None
    path = path or "-"
    resume = _resume_point(resume_job, table.name, path) if resume_job else None
    if resume is not None:
        mode = resume["mode"]
    if max_errors is None and cfg["ETL_MAX_ERRORS"] is not None:
        max_errors = int(cfg["ETL_MAX_ERRORS"])
    options = LoadOptions(mode=mode, batch_rows=batch_size or int(cfg["ETL_BATCH_SIZE"]),
                          max_errors=max_errors, max_error_ratio=max_error_ratio,
                          commit_every=commit_every, dry_run=dry_run)
    _load(path, table, options, rejects=rejects, encoding=encoding, as_json=as_json,
          job=job, resume=resume, source=source)


@click.command("logs")
@click.argument("path")
@click.option("--rejects", type=click.Path(dir_okay=False), default=None)
@click.option("--max-errors", type=click.IntRange(0), default=None)
@click.option("--encoding", default="utf-8", show_default=True, callback=_text_encoding,
              help="A text encoding (utf-8, latin-1, cp1252, ...; not rot13/hex/base64).")
@click.option("--dry-run", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
@friendly
def logs_command(path: str, rejects: str | None, max_errors: int | None, encoding: str,
                 dry_run: bool, as_json: bool) -> None:
    """Load a web server access log (Combined Log Format) into the requests table."""
    options = LoadOptions(batch_rows=int(current_app.config["ETL_BATCH_SIZE"]),
                          max_errors=max_errors, dry_run=dry_run)
    try:
        table = targets.load_target("requests", None)  # the preset: its rules, from the catalog
    except FlaskstreamError as exc:
        raise click.ClickException(exc.message) from None
    _load(path, table, options, rejects=rejects, encoding=encoding, as_json=as_json,
          job=None, parser=log_copy_blocks)


@click.command("export")
@click.option("--table", "name", default="users", show_default=True,
              help="A table or view: name (schema public) or schema.name.")
@click.option("--output", default="-", show_default=True, help="File path, or - for stdout.")
@click.option("--excel-safe", is_flag=True,
              help="Prefix ' to cells starting with = + - @ tab or CR (spreadsheet formulas).")
@click.option("--columns", default=None, metavar="A,B", help="Only these columns, in this order.")
@with_appcontext
@friendly
def export_command(name: str, output: str, excel_safe: bool, columns: str | None) -> None:
    """Stream a whole table or view out as CSV (with a header)."""
    database = db.get_database()
    con = database.new_connection()
    transform = csvsafe.FormulaGuard().feed if excel_safe else None
    try:
        if not exporting.exportable(con, name):
            where = "" if "." in name else f" in schema {exporting.split_name(con, name)[0]}"
            raise click.ClickException(f"no table or view named {name!r}{where}")
        try:
            sql = exporting.export_sql(con, name, columns=targets.export_columns(con, name, columns))
        except FlaskstreamError as exc:
            raise click.ClickException(exc.message) from None
        if output == "-":
            out = sys.stdout.buffer
            exporting.copy_out(con, sql, out.write, transform)
            out.flush()
            return
        tmp = f"{output}.part"
        try:
            with open(tmp, "wb") as out_file:
                exporting.copy_out(con, sql, out_file.write, transform)
            os.replace(tmp, output)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    finally:
        db.close_quietly(con)


@click.command("init-db")
@with_appcontext
@friendly
def init_db_command() -> None:
    """Create the tables (idempotent; also done at each process's first connection)."""
    # db.Database.ensure_schema() without a connection deadlocks on its own
    # (non-reentrant) lock, so apply the schema on a connection of our own.
    con = db.get_database().new_connection()
    try:
        db.apply_schema(con)
    finally:
        db.close_quietly(con)
    click.echo("schema ready")


@click.command("jobs")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
@friendly
def jobs_command(limit: int, as_json: bool) -> None:
    """Recent load jobs and their state."""
    with db.connection() as con:
        jobs = recent_jobs(con, limit)
    if as_json:
        click.echo(json.dumps(jobs))
        return
    if not jobs:
        click.echo("no jobs")
        return
    click.echo(f"{'id':<18} {'table':<9} {'status':<8} {'read':>11} {'loaded':>11} "
               f"{'rejected':>9}  created")
    for j in jobs:
        click.echo(f"{j['id']:<18} {j['table']:<9} {j['status']:<8} {j['rows_read']:>11,} "
                   f"{j['rows_loaded']:>11,} {j['rows_rejected']:>9,}  {j['created_at'][:19]}"
                   + (f"  {j['error']}" if j["error"] else ""))


COMMANDS = (load_command, logs_command, export_command, init_db_command, jobs_command)

