"""HTTP routes of the etl pattern (and the ``flask etl`` command group).

``POST /etl/jobs`` reads ``request.stream`` in chunks straight through the
pipeline into a COPY during the request: nothing is buffered, and a client that
disconnects mid-upload makes the read fail inside the COPY stream, which rolls
the load back. Progress goes out on the SSE channel ``etl.<id>`` (at most 4 per
second, then ``done`` or ``error``); the job row is readable from every worker.
Exports and rejects are streamed with COPY TO STDOUT (``export.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from flaskstream import db
from flaskstream.errors import ApiError
from flaskstream.etl import cli
from flaskstream.etl import export as exporting
from flaskstream.etl.jobs import get_job, new_job_id, recent_jobs, run_load, valid_job_id
from flaskstream.etl.pipeline import InputError
from flaskstream.etl.sink import MODES, LoadOptions
from flaskstream.etl.tables import TABLES

log = logging.getLogger(__name__)

bp = Blueprint("etl", __name__, cli_group="etl")
for _command in cli.COMMANDS:
    bp.cli.add_command(_command)

READ_CHUNK = 256 * 1024
STATUS = {"BAD_HEADER": 422, "BAD_INPUT": 422, "TOO_MANY_ERRORS": 422, "JOB_EXISTS": 409,
          "CLIENT_DISCONNECTED": 400, "DATABASE_CONNECTION_LOST": 503, "DATABASE_ERROR": 500,
          "LOAD_FAILED": 500, "PAYLOAD_TOO_LARGE": 413}


def _int_arg(name: str, minimum: int = 0) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "BAD_REQUEST", f"{name} must be an integer") from None
    if value < minimum:
        raise ApiError(400, "BAD_REQUEST", f"{name} must be >= {minimum}")
    return value


def _body_chunks(limit: int | None) -> Iterator[bytes]:
    """The request body, raw or the one file part of a multipart form."""
    stream = request.stream
    content_type = request.headers.get("Content-Type", "")
    received = 0

    declared = request.content_length

    def raw() -> Iterator[bytes]:
        nonlocal received
        while True:
            chunk = stream.read(READ_CHUNK)
            if not chunk:
                # gunicorn sets wsgi.input_terminated, so Flask hands us its raw
                # input: a client gone mid-body looks like a short body. Never
                # load a truncated body.
                if declared is not None and received < declared:
                    raise InputError(f"client disconnected after {received} of "
                                     f"{declared} bytes")
                return
            received += len(chunk)
            if limit is not None and received > limit:
                raise InputError(f"body larger than {limit} bytes")
            yield chunk

    if not content_type.lower().startswith("multipart/form-data"):
        return raw()
    from flaskstream.uploads import multipart

    try:
        boundary = multipart.parse_boundary(content_type)
    except Exception as exc:  # noqa: BLE001 - any unusable header is a 400
        raise ApiError(400, "BAD_REQUEST", f"multipart: {exc}") from None
    return _file_part(raw(), multipart.FormReader(boundary, multipart.Limits(
        body_size=None, file_size=None, file_count=1)))


def _file_part(chunks: Iterator[bytes], reader: Any) -> Iterator[bytes]:
    from flaskstream.uploads import multipart

    try:
        for chunk in chunks:
            for event in reader.feed(chunk):
                if isinstance(event, multipart.FileData):
                    yield bytes(event.data)
        reader.feed(None)
    except multipart.MultipartError as exc:
        raise InputError(f"multipart: {exc}") from None
    if reader.file_count == 0:
        raise InputError("multipart body has no file part")


def _publisher(job_id: str) -> Any:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    channel = f"etl.{job_id}"

    def publish(event: str, data: dict[str, Any]) -> None:
        try:
            from flaskstream.events.broker import publish as broker_publish

            broker_publish(channel, data, event, app=app)
        except Exception:  # noqa: BLE001 - progress must never break a load
            log.warning("could not publish %s on %s", event, channel, exc_info=True)

    return publish


@bp.post("/etl/jobs")
def create_job() -> tuple[Response, int]:
    """Stream the body (CSV, gzip or one multipart file) into a table → summary."""
    cfg = current_app.config
    table = TABLES.get(request.args.get("table", "users"))
    if table is None:
        raise ApiError(400, "UNKNOWN_TABLE", f"table must be one of {', '.join(sorted(TABLES))}")
    mode = request.args.get("mode", "insert")
    if mode not in MODES:
        raise ApiError(400, "BAD_REQUEST", f"mode must be one of {', '.join(MODES)}")
    job_id = request.args.get("job") or new_job_id()
    if not valid_job_id(job_id):
        raise ApiError(400, "BAD_JOB_ID", "job: letters, digits, '.', '_' or '-' (at most 64)")
    ratio = request.args.get("max_error_ratio")
    try:
        max_ratio = float(ratio) if ratio else None
    except ValueError:
        raise ApiError(400, "BAD_REQUEST", "max_error_ratio must be a number") from None
    max_errors = _int_arg("max_errors")
    if max_errors is None and cfg["ETL_MAX_ERRORS"] is not None:
        max_errors = int(cfg["ETL_MAX_ERRORS"])
    options = LoadOptions(
        mode=mode, batch_rows=_int_arg("batch_size", 1) or int(cfg["ETL_BATCH_SIZE"]),
        max_errors=max_errors, max_error_ratio=max_ratio,
        commit_every=_int_arg("commit_every", 1),
        dry_run=request.args.get("dry_run", "").lower() in ("1", "true", "yes"))
    limit = cfg["ETL_MAX_BODY"]
    if limit is not None and (request.content_length or 0) > int(limit):
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"body larger than {limit} bytes")
    result = run_load(
        db.get_database(), _body_chunks(limit), table, options, job_id=job_id,
        source_name=f"http:{request.remote_addr or '-'}",
        encoding=request.args.get("encoding", "utf-8"),
        field_size_limit=int(cfg["ETL_FIELD_SIZE_LIMIT"]),
        store_rejects=int(cfg["ETL_STORE_REJECTS"]),
        on_progress=None if options.dry_run else _publisher(job_id))
    if result["status"] == "done":
        return jsonify(result), 200 if options.dry_run else 201
    code = result["error"]["code"]
    message = result["error"]["message"].lower()
    if "disconnect" in message:
        code = result["error"]["code"] = "CLIENT_DISCONNECTED"
    elif message.startswith("body larger than"):  # a chunked body past ETL_MAX_BODY
        code = result["error"]["code"] = "PAYLOAD_TOO_LARGE"
    return jsonify(result), STATUS.get(code, 500)


@bp.get("/etl/jobs")
def list_jobs() -> Response:
    limit = min(_int_arg("limit", 1) or 20, 1000)
    return jsonify({"jobs": recent_jobs(db.get_db(), limit)})


@bp.get("/etl/jobs/<job_id>")
def show_job(job_id: str) -> Response:
    job = get_job(db.get_db(), job_id) if valid_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "NOT_FOUND", f"no job {job_id}")
    return jsonify(job)


def _csv_response(chunks: Iterator[bytes], filename: str) -> Response:
    response = Response(chunks, mimetype="text/csv", direct_passthrough=True)
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/etl/jobs/<job_id>/rejects")
def job_rejects(job_id: str) -> Response:
    """The stored rejects of a job as CSV (line, reason, text), streamed."""
    if not valid_job_id(job_id) or get_job(db.get_db(), job_id) is None:
        raise ApiError(404, "NOT_FOUND", f"no job {job_id}")
    database = db.get_database()
    con = database.new_connection()
    sql = (f"COPY (SELECT line, reason, text FROM {database.names.qualified('etl_rejects')} WHERE job_id = "
           f"'{job_id}' ORDER BY line) TO STDOUT WITH (FORMAT csv, HEADER)")  # id validated
    return _csv_response(exporting.stream_copy_out(database, sql, con), f"{job_id}-rejects.csv")


@bp.get("/etl/export.csv")
def export_csv() -> Response:
    """A whole table or view streamed out as CSV (constant memory, first byte at once)."""
    name = request.args.get("table", "users")
    database = db.get_database()
    con = database.new_connection()
    try:
        ok = exporting.exportable(con, name)
    except BaseException:
        db.close_quietly(con)
        raise
    if not ok:
        db.close_quietly(con)
        raise ApiError(404, "UNKNOWN_TABLE", f"no table or view named {name!r}")
    return _csv_response(exporting.stream_copy_out(database, exporting.export_sql(con, name), con),
                         f"{name}.csv")
