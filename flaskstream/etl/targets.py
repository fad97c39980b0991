"""What a load reads from and writes into, resolved once before it starts.

``load_target``: a preset (``users``, ``requests``) or any table the catalog
describes (read once per load); ``dialect_from``: CLI flags / query arguments
as a ``CsvDialect``; ``upload_source``: a file stored by ``/uploads`` or a
finished tus upload (``--upload`` / ``?upload=``). Shared by the CLI and the
HTTP view so that both accept the same things and fail the same way.
"""

from __future__ import annotations

from typing import IO, Any

from flaskstream import db, schema
from flaskstream.errors import ApiError
from flaskstream.etl import export as exporting
from flaskstream.etl.anytable import BadDialect, CsvDialect, TableCsv
from flaskstream.etl.catalog import describe_table
from flaskstream.etl.mapping import quote_ident
from flaskstream.etl.presets import PRESETS
from flaskstream.storage import get_storage
from flaskstream.storage.reader import open_stored
from flaskstream.uploads import records


def load_target(name: str, dialect: CsvDialect | None) -> TableCsv:
    """A preset (``users``, ``requests``: flaskstream's own, in its schema, with the
    extra rules of ``presets.py``) or any table the catalog describes and the
    connected role may INSERT into; its shape is read once, here, for the whole
    load. The CSV options apply to both."""
    preset = PRESETS.get(name)
    con = db.get_database().new_connection()
    try:
        table = describe_table(con, f"{schema.of(con).quoted}.{quote_ident(name)}"
                               if preset is not None else name)
    finally:
        db.close_quietly(con)
    if not table.can_insert:
        raise ApiError(403, "TABLE_NOT_WRITABLE",
                       f"the connected role may not INSERT into {table.schema}.{table.name}")
    return TableCsv(table, dialect, preset)


def dialect_from(flags: dict[str, Any]) -> CsvDialect | None:
    """The CSV dialect of ``flags`` (CLI option names), or None when all are defaults."""
    given = {k: v for k, v in flags.items() if v not in (None, False, ())}
    if not given:
        return None
    overrides: dict[str, str] = {}
    for item in flags.get("map") or ():
        header, sep, column = item.partition("=")
        if not sep or not header or not column:
            raise BadDialect(f"--map wants csv_header=column, not {item!r}")
        overrides[header] = column

    def names(value: str | None) -> tuple[str, ...]:
        return tuple(n.strip() for n in (value or "").split(",") if n.strip())

    return CsvDialect(
        delimiter=flags.get("delimiter") or ",", quote=flags.get("quote") or '"',
        escape=flags.get("escape"), null=flags.get("null") or "",
        header=not flags.get("no_header"), columns=names(flags.get("columns")),
        skip_lines=int(flags.get("skip_lines") or 0), trim=not flags.get("no_trim"),
        lower=tuple(flags.get("lower") or ()), ignore_extra=bool(flags.get("ignore_extra")),
        overrides=overrides, key=names(flags.get("key")))


def upload_source(upload_id: str) -> tuple[IO[bytes], int, str]:
    """The stored bytes of upload ``upload_id`` (its ``uploads`` row, then the stored object):
    (open file, size, source name for the job row). 404 ``NO_SUCH_UPLOAD`` if either is gone."""
    with db.connection() as con:
        upload = records.get_upload(con, upload_id)
    if upload is None:
        raise ApiError(404, "NO_SUCH_UPLOAD", f"no stored upload {upload_id!r}")
    opened = open_stored(get_storage(), upload.id)  # UPLOAD_DIR or the bucket (STORAGE_URL)
    if opened is None:
        raise ApiError(404, "NO_SUCH_UPLOAD", f"upload {upload.id} has no stored file")
    handle, size = opened
    return handle, size, f"upload:{upload.id} ({upload.filename})"


_COLUMNS_SQL = ("SELECT a.attname FROM pg_catalog.pg_attribute a "
                "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname = :n AND a.attnum > 0 AND NOT a.attisdropped")


def export_columns(con: Any, name: str, text: str | None) -> tuple[str, ...]:
    """``--columns a,b`` / ``?columns=a,b`` of an export, each a column of ``name``
    (``[schema.]name`` as ``export.exportable`` reads it); () for all of them."""
    wanted = tuple(c.strip() for c in (text or "").split(",") if c.strip())
    if not wanted:
        return ()
    schema, relation = exporting.split_name(con, name)
    have = {row[0] for row in con.run(_COLUMNS_SQL, s=schema, n=relation)}
    unknown = [c for c in wanted if c not in have]
    if unknown:
        raise ApiError(400, "UNKNOWN_COLUMN", f"{name} has no column(s) "
                       f"{', '.join(map(repr, unknown))}")
    return wanted
