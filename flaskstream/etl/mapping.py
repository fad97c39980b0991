"""Which CSV field feeds which column of a table read from the catalog (pure).

``plan_load(table, names, ...)`` runs before any row is read, so a file that
cannot feed the table fails as a whole with an error naming the columns, and
nothing is written. ``names`` are the CSV's header fields, or the
``--columns a,b,c`` list of a headerless file; both are matched the same way:

1. ``overrides`` (``--map csv_header=column``) first, by exact header text;
2. the exact column name;
3. case- and space-insensitive: trimmed, case-folded, runs of spaces and
   underscores equal (``"First Name"`` feeds ``first_name``).

A field that matches no column is an error (``UnknownColumns``), or skipped
with ``ignore_extra``. So is one that names an identity ``ALWAYS`` or a
generated column: those are never written. A writable column no field feeds is
left out of the COPY column list, so the server gives it its default (identity
``BY DEFAULT`` included) or NULL - unless it is NOT NULL without a default
(``MissingColumns``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flaskstream.errorbase import FixedError
from flaskstream.etl.pgtypes import ColumnCodec, PgType
from flaskstream.etl.rules import Rule
from flaskstream.etl.tables import _escape


@dataclass(frozen=True)
class TableColumn:
    """A column as the catalog describes it (``catalog.describe_table``)."""

    name: str
    type: PgType | None  # None: a type the core does not judge (the server does)
    type_name: str = "text"  # format_type(), for messages
    not_null: bool = False
    has_default: bool = False  # a DEFAULT expression (not counting generated ones)
    identity: str = ""  # "", "always" or "by default"
    generated: bool = False
    rules: tuple[Rule, ...] = ()  # extra rules beyond the type (rules.py: the presets')

    @property
    def writable(self) -> bool:
        return not self.generated and self.identity != "always"

    @property
    def required(self) -> bool:
        """NOT NULL with nothing to fill it when the CSV does not."""
        return self.not_null and not self.has_default and not self.identity and not self.generated


@dataclass(frozen=True)
class TargetTable:
    schema: str
    name: str
    columns: tuple[TableColumn, ...]
    primary_key: tuple[str, ...] = ()
    unique_keys: tuple[tuple[str, ...], ...] = ()  # plain (non-partial) unique indexes
    can_insert: bool = True
    can_select: bool = True

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


@dataclass(frozen=True)
class CopyTarget:
    """What the sink writes: a relation (SQL text, quoted, maybe schema-qualified),
    the COPY column list, the upsert conflict key and each column's SQL type (for
    the upsert stage). Built from a ``LoadPlan`` (or the log pipeline's ``Table``)."""

    relation: str
    columns: tuple[str, ...]
    key: tuple[str, ...] = ()
    stage_types: tuple[str, ...] = ()
    label: str = ""


class MappingError(FixedError, ValueError):
    """The CSV's fields cannot feed the table; raised before any row is read."""

    code, status = "BAD_HEADER", 422

    def __init__(self, message: str, columns: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.columns = tuple(columns)


class UnknownColumns(MappingError):
    code = "UNKNOWN_COLUMN"


class MissingColumns(MappingError):
    code = "MISSING_COLUMN"


class UnwritableColumns(MappingError):
    code = "UNWRITABLE_COLUMN"


def quote_ident(name: str) -> str:
    """PostgreSQL's quote_ident, always quoting (safe for any name without NUL)."""
    if "\x00" in name:
        raise MappingError("a column name cannot contain NUL")
    return '"' + name.replace('"', '""') + '"'


def fold(name: str) -> str:
    """The case- and space-insensitive form of a name."""
    return re.sub(r"[\s_]+", "_", name.strip()).casefold()


def _shown(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


@dataclass(frozen=True)
class LoadPlan:
    """The COPY column list and, for each of its columns, the CSV field and codec."""

    table: TargetTable
    targets: tuple[TableColumn, ...]
    sources: tuple[int, ...]  # CSV field index of each target
    width: int  # fields per record
    skipped: tuple[str, ...] = ()  # CSV fields ignored (ignore_extra)
    defaulted: tuple[str, ...] = ()  # writable columns left to their default or NULL
    codecs: tuple[ColumnCodec | None, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        codecs = tuple(ColumnCodec(c.name, c.type, not_null=c.not_null, rules=c.rules)
                       if c.type else None for c in self.targets)
        object.__setattr__(self, "codecs", codecs)

    @property
    def copy_columns(self) -> str:
        """``("a", "b")`` for ``COPY table (...) FROM STDIN``."""
        return "(" + ", ".join(quote_ident(c.name) for c in self.targets) + ")"

    def copy_rows(self, records: Sequence[Sequence[str | None]],
                  errors: dict[int, list[str]]) -> list[str]:
        """COPY text lines (no newline) of a block of records of ``width`` fields;
        the reasons of bad rows go to ``errors[row]`` and their lines must be dropped."""
        if not records:
            return []
        fields = list(zip(*records, strict=True))
        columns: list[Sequence[str]] = []
        for source, codec in zip(self.sources, self.codecs, strict=True):
            values = fields[source]
            if codec is None:  # not judged here: escaped as it is, the server decides
                columns.append(tuple(map(_copy_escape, values)))
            else:
                columns.append(codec.encode(values, errors))
        return list(map("\t".join, zip(*columns, strict=True)))


def _copy_escape(value: str | None) -> str:
    return "\\N" if value is None else _escape(value)


def _match(table: TargetTable, name: str) -> TableColumn | None:
    for column in table.columns:
        if column.name == name:
            return column
    folded = [c for c in table.columns if fold(c.name) == fold(name)]
    if len(folded) > 1:
        raise MappingError(f"{name!r} matches columns {_shown([c.name for c in folded])} "
                           f"of {table.name}; name one with a mapping", [name])
    return folded[0] if folded else None


def plan_load(table: TargetTable, names: Sequence[str], *,
              overrides: Mapping[str, str] | None = None,
              ignore_extra: bool = False) -> LoadPlan:
    """Map the CSV's field names to the table's columns, or raise ``MappingError``."""
    overrides = dict(overrides or {})
    absent = [h for h in overrides if h not in names]
    if absent:
        raise UnknownColumns(f"mapping names field(s) {_shown(absent)} the CSV does not have; "
                             f"fields: {_shown(names)}", absent)
    by_name = {c.name: c for c in table.columns}
    targets: list[TableColumn] = []
    sources: list[int] = []
    unknown: list[str] = []
    unwritable: list[str] = []
    skipped: list[str] = []
    fed: dict[str, str] = {}
    for index, name in enumerate(names):
        if name in overrides:
            column = by_name.get(overrides[name])
            if column is None:
                raise UnknownColumns(f"mapping {name}={overrides[name]}: table {table.name} "
                                     f"has no column {overrides[name]!r}", [overrides[name]])
        else:
            column = _match(table, name)
        if column is None or not column.writable:
            (skipped if ignore_extra else unknown if column is None else unwritable).append(name)
            continue
        if column.name in fed:
            raise MappingError(f"fields {fed[column.name]!r} and {name!r} both feed column "
                               f"{column.name!r}", [column.name])
        fed[column.name] = name
        targets.append(column)
        sources.append(index)
    if unknown:
        raise UnknownColumns(f"table {table.schema}.{table.name} has no column for field(s) "
                             f"{_shown(unknown)}; columns: {_shown([c.name for c in table.columns])}",
                             unknown)
    if unwritable:
        raise UnwritableColumns(f"field(s) {_shown(unwritable)} feed identity ALWAYS or generated "
                                "columns, which are never written (ignore them or map them away)",
                                unwritable)
    missing = [c.name for c in table.columns if c.name not in fed and c.required]
    if missing:
        raise MissingColumns(f"the CSV has no field for NOT NULL column(s) {_shown(missing)} "
                             f"of {table.schema}.{table.name}, which have no default", missing)
    if not targets:
        raise MappingError(f"no field of the CSV feeds a column of {table.schema}.{table.name}")
    defaulted = tuple(c.name for c in table.columns if c.writable and c.name not in fed)
    return LoadPlan(table, tuple(targets), tuple(sources), len(names), tuple(skipped), defaulted)
