"""Extra per-column rules layered on a catalog-described table (pure, declarative).

A ``Preset`` names one of flaskstream's own tables and the rules its columns
follow beyond what their PostgreSQL types say: ``users.email`` is lower-cased
and must look like an address, ``users.age`` is an integer 0..150 that must be
given, and so on. The rules are data (frozen dataclasses); ``apply`` attaches
them to the ``TargetTable`` that ``catalog.describe_table`` read, and
``pgtypes.ColumnCodec`` interprets them with the same block fast paths as the
types (one regex over the joined column, a dict lookup for a small range), so
a site could declare the same rules for a table of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mapping imports this module (TableColumn.rules)
    from flaskstream.etl.mapping import TargetTable

# Plausible, not RFC 5322: one @, no spaces, a dot in the domain (no NUL either).
EMAIL_PATTERN = r"[^@\s\"(),:;<>\[\]\\\x00]+@[^@\s\"(),:;<>\[\]\\\x00]+\.[^@\s\"(),:;<>\[\]\\.\x00]+"
MAX_EMAIL = 254


@dataclass(frozen=True)
class Required:
    """The value must be given: NULL and the empty string are refused, and a CSV
    without the column fails before any row (even where the table allows NULL)."""


@dataclass(frozen=True)
class Lower:
    """Lower-cased after trimming (as ``--lower COLUMN``)."""


@dataclass(frozen=True)
class IntRange:
    """An integer column's values within ``lo..hi`` (None: the type's own bound)."""

    lo: int | None = None
    hi: int | None = None


@dataclass(frozen=True)
class MaxLength:
    """At most ``length`` characters."""

    length: int


@dataclass(frozen=True)
class Matches:
    """The whole value matches ``pattern`` (a regex with no line breaks in what it
    matches, and none of COPY's special characters); ``what`` names it in the reason."""

    pattern: str
    what: str


Rule = Required | Lower | IntRange | MaxLength | Matches
PLAUSIBLE_EMAIL = (Matches(EMAIL_PATTERN, "a plausible email address"), MaxLength(MAX_EMAIL))


@dataclass(frozen=True)
class Preset:
    """A table in flaskstream's schema and its columns' extra rules.

    ``key``: the default upsert conflict target (a unique index of the table);
    ``ignore_extra``: CSV fields no column matches are skipped (the presets'
    behaviour since 0.1: a log export's extra fields are not an error)."""

    name: str
    rules: tuple[tuple[str, tuple[Rule, ...]], ...]
    key: tuple[str, ...] = ()
    ignore_extra: bool = True

    def apply(self, table: TargetTable) -> TargetTable:
        """``table`` with each column's rules attached (``Required`` also makes it NOT
        NULL without a default, so the mapping refuses a CSV that lacks it)."""
        by_column = dict(self.rules)
        unknown = sorted(set(by_column) - {c.name for c in table.columns})
        if unknown:  # the migration and the preset disagree: a bug, not bad input
            raise ValueError(f"preset {self.name}: no column(s) {unknown} in {table.name}")
        columns = []
        for column in table.columns:
            rules = by_column.get(column.name, ())
            if any(isinstance(r, Required) for r in rules):
                column = dataclasses.replace(column, not_null=True, has_default=False)
            columns.append(dataclasses.replace(column, rules=column.rules + rules))
        return dataclasses.replace(table, columns=tuple(columns))


USERS = Preset("users", (
    ("email", (Required(), Lower(), *PLAUSIBLE_EMAIL)),
    ("age", (Required(), IntRange(0, 150))),
    ("name", (MaxLength(1000),)),
), key=("email",))

REQUESTS = Preset("requests", (
    ("time", (Required(),)),
    ("remote_addr", (MaxLength(255),)),
    ("method", (Required(), MaxLength(32))),
    ("path", (Required(),)),
    ("protocol", (MaxLength(32),)),
    ("status", (Required(), IntRange(100, 999))),
    ("bytes", (IntRange(0, None),)),
))

PRESETS = {p.name: p for p in (USERS, REQUESTS)}
