"""Extra per-column rules beyond a column's PostgreSQL type (pure, declarative).

The rules are data (frozen dataclasses) that ``mapping.TableColumn.rules``
carries and ``pgtypes.ColumnCodec`` interprets with the same block fast paths
as the types (one regex over the joined column, a dict lookup for a small
integer range), so a table of a site's own could declare them as the presets
do (``presets.py``: ``users.email`` lower-cased and plausible, ``users.age``
0..150 and required, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

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
