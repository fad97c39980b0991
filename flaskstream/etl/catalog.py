"""Read a target table's shape from the PostgreSQL catalog, once per load.

Two queries on ``pg_catalog`` (``pg_class``/``pg_index`` with the privileges,
then ``pg_attribute``/``pg_type``/``pg_enum``) give the plain dataclasses of
``mapping`` that the pure core takes: columns, types with their typmods, NOT
NULL, defaults, identity and generated columns, enum labels, array element
types, the primary key and unique indexes, and whether the role may INSERT and
SELECT. Names go to the server only as bound parameters, never spliced into
SQL: a qualified name is matched on ``nspname``/``relname``; an unqualified
one through ``to_regclass`` of its quoted form, so ``search_path`` resolves it
as psql would. Column-level privileges are not consulted (table level only).

A domain column is judged as its base type (the domain's CHECK stays the
server's); a type the core does not know (``citext``, ``money``, a composite)
comes back as ``type=None`` and its values reach the server unjudged.
"""

from __future__ import annotations

import re
from typing import Any

from flaskstream.errors import ApiError
from flaskstream.etl.mapping import TableColumn, TargetTable, quote_ident
from flaskstream.etl.pgtypes import PgType, UnsupportedType, from_typmod

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_PART = re.compile(r'"((?:[^"]|"")+)"|([^\W\d][\w$]*)')
MAX_IDENTIFIER = 63  # NAMEDATALEN - 1, in bytes

_TABLE_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind,
       has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'INSERT'),
       has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'),
       COALESCE((SELECT json_agg(json_build_object(
                    'primary', i.indisprimary,
                    'columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                                FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                                JOIN pg_catalog.pg_attribute a
                                  ON a.attrelid = i.indrelid AND a.attnum = k.attnum))
                    ORDER BY NOT i.indisprimary, i.indexrelid)
                 FROM pg_catalog.pg_index i
                 WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
                   AND i.indpred IS NULL AND i.indexprs IS NULL), '[]')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE """
# Qualified: looked up by name, so a schema the role may not use still answers
# (with no privileges) instead of to_regclass's permission error.
_BY_NAME = "n.nspname = :schema AND c.relname = :table"
_ON_PATH = "c.oid = to_regclass(:qualified)"  # search_path, as psql would resolve it

_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull OR t.typnotnull,
       a.atthasdef AND a.attgenerated = '', a.attidentity, a.attgenerated <> '',
       b.typname, b.typtype, CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       e.typname, e.typtype,
       COALESCE((SELECT array_agg(l.enumlabel::text ORDER BY l.enumsortorder)
                 FROM pg_catalog.pg_enum l WHERE l.enumtypid = COALESCE(e.oid, b.oid)), '{}')
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_catalog.pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'
WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_IDENTITY = {"": "", "a": "always", "d": "by default"}
_LOADABLE_KINDS = {"r", "p", "f"}  # table, partitioned table, foreign table


class BadTableName(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(400, "BAD_TABLE_NAME", message)


class NoSuchTable(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(404, "NO_SUCH_TABLE", message)


def parse_table_name(text: str) -> tuple[str | None, str]:
    """``[schema.]name`` as SQL reads it: unquoted parts fold to lower case
    (ASCII only, as PostgreSQL folds), ``"Quoted"`` parts keep theirs and may
    hold dots and doubled quotes."""
    parts: list[str] = []
    pos = 0
    while True:
        match = _PART.match(text, pos)
        if match is None:
            raise BadTableName(f"not a table name ([schema.]name): {text!r}")
        quoted, bare = match.groups()
        part = quoted.replace('""', '"') if quoted is not None else bare.translate(_ASCII_LOWER)
        if "\x00" in part or len(part.encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER:
            raise BadTableName(f"not a valid identifier (NUL, or longer than 63 bytes): {text!r}")
        parts.append(part)
        pos = match.end()
        if pos == len(text):
            break
        if text[pos] != "." or len(parts) == 2:
            raise BadTableName(f"not a table name ([schema.]name): {text!r}")
        pos += 1
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _pgtype(row: list[Any]) -> PgType | None:
    typname, typtype, typmod, elem_name, elem_type, labels = row[6:12]
    try:
        if elem_name is not None:
            element = PgType("enum", labels=tuple(labels)) if elem_type == "e" else \
                from_typmod(elem_name, typmod)
            return PgType("array", element=element)
        if typtype == "e":
            return PgType("enum", labels=tuple(labels))
        return from_typmod(typname, typmod)
    except UnsupportedType:
        return None


def describe_table(con: Any, name: str) -> TargetTable:
    """The table ``[schema.]name`` (search_path when unqualified) as the core needs it.

    ``con`` is a ``pg8000.native.Connection``. Raises ``BadTableName`` or
    ``NoSuchTable`` (also for a view or sequence: COPY cannot load those).
    """
    schema, table = parse_table_name(name)
    if schema is None:
        rows = con.run(_TABLE_SQL + _ON_PATH, qualified=quote_ident(table))
    else:
        rows = con.run(_TABLE_SQL + _BY_NAME, schema=schema, table=table)
    if not rows:
        raise NoSuchTable(f"no table {name} in the database")
    oid, nspname, relname, relkind, can_insert, can_select, indexes = rows[0]
    if relkind not in _LOADABLE_KINDS:
        raise NoSuchTable(f"{nspname}.{relname} is not a table")
    columns = tuple(
        TableColumn(name=row[0], type=_pgtype(row), type_name=row[1], not_null=bool(row[2]),
                    has_default=bool(row[3]), identity=_IDENTITY.get(row[4], ""),
                    generated=bool(row[5]))
        for row in con.run(_COLUMNS_SQL, oid=oid))
    primary = next((tuple(i["columns"]) for i in indexes if i["primary"]), ())
    unique = tuple(tuple(i["columns"]) for i in indexes)
    return TargetTable(nspname, relname, columns, primary, unique, bool(can_insert), bool(can_select))
