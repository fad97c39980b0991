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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from flaskstream import auth, db
from flaskstream.access import policy
from flaskstream.errors import ApiError
from flaskstream.etl import cli, csvsafe, targets
from flaskstream.etl import export as exporting
from flaskstream.etl.anytable import TableCsv
from flaskstream.etl.bounds import InputError, InputTooLarge, bounds_from_config, text_codec
from flaskstream.etl.jobs import LoadJob, get_job, new_job_id, recent_jobs, valid_job_id
from flaskstream.etl.sink import MODES, LoadOptions

log = logging.getLogger(__name__)

bp = Blueprint("etl", __name__, cli_group="etl")
for _command in cli.COMMANDS:
    bp.cli.add_command(_command)

READ_CHUNK = 256 * 1024
DIALECT_ARGS = ("columns", "delimiter", "quote", "escape", "null", "key")
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
                    raise ClientDisconnected(f"client disconnected after {received} of "
                                             f"{declared} bytes")
                return
            received += len(chunk)
            if limit is not None and received > limit:
                raise InputTooLarge("PAYLOAD_TOO_LARGE", f"body larger than {limit} bytes")
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
    except multipart.LimitExceeded as exc:
        raise InputTooLarge(exc.code, f"multipart: {exc.message}") from None
    except multipart.MultipartError as exc:  # the same reader as POST /uploads: same answer
        raise InputError(f"multipart: {exc.message}", code=exc.code, status=exc.status) from None
    if reader.file_count == 0:
        raise InputError("multipart body has no file part")


class ClientDisconnected(InputError):
    code = "CLIENT_DISCONNECTED"
    status = 400


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
    """Stream the body (CSV, gzip or one multipart file), or a stored upload
    (``?upload=<id>``), into a table → summary."""
    cfg = current_app.config
    table = _load_table(request.args.get("table", "users"))
    job_id = request.args.get("job") or new_job_id()
    if not valid_job_id(job_id):
        raise ApiError(400, "BAD_JOB_ID", "job: letters, digits, '.', '_' or '-' (at most 64)")
    options = _load_options(cfg)
    try:
        encoding = text_codec(request.args.get("encoding", "utf-8"))
    except InputError as exc:
        raise ApiError(400, "BAD_ENCODING", str(exc)) from None
    limit = cfg["ETL_MAX_BODY"]
    upload_id = request.args.get("upload")
    if upload_id is not None:
        _check_may_read_upload(upload_id)
    stored = targets.upload_source(upload_id) if upload_id is not None else None
    if stored is None and limit is not None and (request.content_length or 0) > int(limit):
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"body larger than {limit} bytes")
    job = LoadJob(
        db.get_database(), table, options, job_id=job_id,
        source_name=stored[2] if stored else f"http:{request.remote_addr or '-'}",
        store_rejects=int(cfg["ETL_STORE_REJECTS"]),
        on_progress=None if options.dry_run else _publisher(job_id))
    try:
        result = job.execute(stored[0] if stored else _body_chunks(limit), encoding=encoding,
                             field_size_limit=int(cfg["ETL_FIELD_SIZE_LIMIT"]),
                             bounds=bounds_from_config(cfg))
    finally:
        if stored is not None:
            stored[0].close()
    if result["status"] == "done":
        return jsonify(result), 200 if options.dry_run else 201
    return jsonify(result), job.status or STATUS.get(result["error"]["code"], 500)


def _check_may_read_upload(upload_id: str) -> None:
    """Loading a stored upload reads it: the caller needs what ``GET /uploads/<id>/content``
    needs (read access, or owning it), else one client could load another's file."""
    found = auth.require_claims("READ") if auth.token_mode("READ") else None
    if found is None or found.can_read(f"/uploads/{upload_id}/content") or \
            found.owns(policy.owner_of("upload", upload_id)):
        return
    raise auth.forbidden(f"the token's read claim does not cover /uploads/{upload_id}")


def _load_options(cfg: Any) -> LoadOptions:
    mode = request.args.get("mode", "insert")
    if mode not in MODES:
        raise ApiError(400, "BAD_REQUEST", f"mode must be one of {', '.join(MODES)}")
    ratio = request.args.get("max_error_ratio")
    try:
        max_ratio = float(ratio) if ratio else None
    except ValueError:
        raise ApiError(400, "BAD_REQUEST", "max_error_ratio must be a number") from None
    max_errors = _int_arg("max_errors")
    if max_errors is None and cfg["ETL_MAX_ERRORS"] is not None:
        max_errors = int(cfg["ETL_MAX_ERRORS"])
    return LoadOptions(
        mode=mode, batch_rows=_int_arg("batch_size", 1) or int(cfg["ETL_BATCH_SIZE"]),
        max_errors=max_errors, max_error_ratio=max_ratio,
        commit_every=_int_arg("commit_every", 1),
        dry_run=request.args.get("dry_run", "").lower() in ("1", "true", "yes"))


def _load_table(name: str) -> TableCsv:
    """The target of ``POST /etl/jobs``: only a table of ``ETL_TABLES`` (else 403);
    dialect options as query arguments, named as the CLI's flags."""
    if name not in exporting.allowed_tables(current_app.config["ETL_TABLES"]):
        raise ApiError(403, "TABLE_NOT_ALLOWED", f"table {name!r} is not open for loading "
                       "(FLASKSTREAM_ETL_TABLES)")
    args = request.args
    flags: dict[str, Any] = {k: args.get(k) for k in DIALECT_ARGS}
    flags.update({k: _flag_arg(k) for k in ("no_header", "ignore_extra", "no_trim")})
    flags.update(map=tuple(args.getlist("map")), lower=tuple(args.getlist("lower")),
                 skip_lines=_int_arg("skip_lines"))
    return targets.load_target(name, targets.dialect_from(flags))  # errors carry their status


# Job fields that name who sent a load and where it ran: shown only with the token.
PRIVATE_JOB_FIELDS = ("source", "worker")


def _public_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job as this caller may see it: counts and status for all, addresses for the token."""
    if auth.has_api_token():
        return job
    return {key: value for key, value in job.items() if key not in PRIVATE_JOB_FIELDS}


@bp.get("/etl/jobs")
def list_jobs() -> Response:
    limit = min(_int_arg("limit", 1) or 20, 1000)
    return jsonify({"jobs": [_public_job(job) for job in recent_jobs(
        db.get_db(), limit, owner=auth.listing_owner("/etl/jobs"))]})


@bp.get("/etl/jobs/<job_id>")
def show_job(job_id: str) -> Response:
    job = get_job(db.get_db(), job_id) if valid_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "NOT_FOUND", f"no job {job_id}")
    return jsonify(_public_job(job))


def _csv_response(body: Iterable[bytes], filename: str) -> Response:
    response = Response(body, mimetype="text/csv", direct_passthrough=True)
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _export_body(sql: str, transform: Callable[[bytes], bytes] | None = None
                 ) -> Iterable[bytes]:
    """The body of a COPY OUT response, holding one of this worker's export slots (else 503).

    A HEAD gets the same headers and an empty body: it will never be read, so it
    takes no slot and opens nothing.
    """
    if request.method == "HEAD":
        return ()
    retry = {"Retry-After": str(exporting.RETRY_AFTER_SECONDS)}
    slot = current_app.extensions["flaskstream.etl.exports"].take()
    if slot is None:
        raise ApiError(503, "EXPORTS_BUSY", "too many exports in progress; retry shortly",
                       headers=retry)
    database = db.get_database()
    try:
        con = database.new_connection()
    except (db.DatabaseError, db.InterfaceError, OSError):
        slot.release()
        raise ApiError(503, "DATABASE_UNAVAILABLE", "the database refused a connection for "
                       "this export; retry shortly", headers=retry) from None
    except BaseException:
        slot.release()
        raise
    return exporting.ExportBody(database, sql, slot, con, transform=transform,
                                stall_timeout=float(current_app.config["ETL_EXPORT_STALL_TIMEOUT"]))


def _flag_arg(name: str) -> bool:
    raw = request.args.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ApiError(400, "BAD_REQUEST", f"{name} must be 1 or 0")


@bp.get("/etl/jobs/<job_id>/rejects")
def job_rejects(job_id: str) -> Response:
    """The stored rejects of a job as CSV (line, reason, text), streamed."""
    if not valid_job_id(job_id) or get_job(db.get_db(), job_id) is None:
        raise ApiError(404, "NOT_FOUND", f"no job {job_id}")
    sql = (f"COPY (SELECT line, reason, text FROM {db.qualified('etl_rejects')} WHERE job_id = "
           f"'{job_id}' ORDER BY line) TO STDOUT WITH (FORMAT csv, HEADER)")  # id validated
    return _csv_response(_export_body(sql), f"{job_id}-rejects.csv")


@bp.get("/etl/export.csv")
def export_csv() -> Response:
    """A table or view of ``ETL_TABLES`` streamed out as CSV (constant memory, first byte at once).

    ``?excel_safe=1`` neutralises cells a spreadsheet would run as formulas (``csvsafe.py``);
    ``?columns=a,b`` exports those columns only, in that order.
    """
    name = request.args.get("table", "users")
    excel_safe = _flag_arg("excel_safe")
    if not exporting.valid_relation_name(name):
        raise ApiError(400, "BAD_TABLE_NAME",
                       "table must be a name or schema.name (letters, digits, '_', '$')")
    if name not in exporting.allowed_tables(current_app.config["ETL_TABLES"]):
        raise ApiError(403, "TABLE_NOT_ALLOWED", f"table '{name}' is not open for export "
                       "(FLASKSTREAM_ETL_TABLES)")
    if not exporting.exportable(db.get_db(), name):
        raise ApiError(404, "UNKNOWN_TABLE", f"no table or view named '{name}'")
    transform = csvsafe.FormulaGuard().feed if excel_safe else None
    columns = targets.export_columns(db.get_db(), name, request.args.get("columns"))
    return _csv_response(_export_body(exporting.export_sql(db.get_db(), name, columns=columns), transform),
                         f"{name}.csv")


@bp.record_once
def _export_slots(state: Any) -> None:
    state.app.extensions["flaskstream.etl.exports"] = exporting.ExportSlots(
        int(state.app.config["ETL_MAX_EXPORTS"]))
