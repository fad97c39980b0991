"""flaskstream's own preset tables: catalog tables plus declarative rules (pure).

A ``Preset`` names one of flaskstream's tables (in ``FLASKSTREAM_DB_SCHEMA``)
and the rules (``rules.py``) its columns follow beyond what their types say.
``targets.load_target`` reads the table from the catalog once per load, like
any other, and ``Preset.apply`` attaches the rules to that description; the
load then goes through ``anytable.TableCsv`` with every dialect option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from flaskstream.etl.mapping import TargetTable
from flaskstream.etl.rules import PLAUSIBLE_EMAIL, IntRange, Lower, MaxLength, Required, Rule


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
