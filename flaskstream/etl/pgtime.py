"""Date, time, timestamp and interval checks for ``pgtypes`` (pure: no driver).

PostgreSQL's date/time input accepts a zoo of spellings, several of which mean
different things under different ``DateStyle`` settings (``01/02/2020``) or at
different moments (``today``, ``now``). A loader that must say *before COPY*
whether a value will load, and load the same thing on every server, accepts
only the unambiguous ISO 8601 forms below and rejects the rest (a documented
difference: PostgreSQL would accept them). Every value accepted here is
accepted by PostgreSQL with the same meaning; the property test in
tests/etl/test_pgtypes.py checks it against the real server.

* date: ``YYYY-M[M]-D[D]`` (year 0001-9999), ``infinity``, ``-infinity``.
* time: ``H[H]:MM[:SS[.fraction]]``; 24:00:00 and a leap second 60 as
  PostgreSQL has them; fractions rounded to microseconds as the server does.
* timestamp: a date, optionally ``T`` or one space and a time; no offset
  (PostgreSQL silently drops one on ``timestamp``; here it is a reject).
* timestamptz: as timestamp, plus an optional offset right after the time:
  ``Z``, ``±H[H]``, ``±HH:MM``, ``±HHMM``, ``±HH:MM:SS`` (at most 15:59:59).
  Without an offset the server's ``TimeZone`` setting applies. Zone names
  (``Europe/Paris``, ``UTC``) are rejected.
* interval: ISO 8601 ``P[nY][nM][nW][nD][T[nH][nM][n[.f]S]]`` (unsigned
  integers, a fraction on seconds only), or PostgreSQL's verbose
  ``[@] n unit [n unit ...] [ago]`` with signed integers of up to 6 digits,
  units microsecond(s)/us/usec(s), millisecond(s)/ms/msec(s), second(s)/s/sec(s),
  minute(s)/m/min(s), hour(s)/h/hr(s), day(s)/d, week(s)/w, month(s)/mon(s),
  year(s)/y/yr(s), each unit once. Parts may touch (``1d2h``) only where the
  server reads them apart: after ``d``, ``h``, ``m``, ``mon``, ``s`` or ``y``
  and before a digit or ``+`` (any other spelling, or a ``-``, makes the
  server read ``w2d`` as a date and refuse it). Not accepted: ``1 day 02:00``
  clock parts, fractions in verbose form, decades/centuries/millennia.

Leading and trailing whitespace is allowed, as the server allows it.
"""

from __future__ import annotations

import re
from datetime import date

from flaskstream.etl.tables import Invalid

PG_SPACE = " \t\n\r\v\f"  # isspace() in the C locale: what PostgreSQL trims
_DATE = r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
_TIME = r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
_OFFSET = r"(Z|z|[+-][0-9]{1,2}(?::[0-9]{2}(?::[0-9]{2})?|[0-9]{2})?)"
DATE_RE = re.compile(_DATE)
TIME_RE = re.compile(_TIME)
TIMESTAMP_RE = re.compile(f"{_DATE}(?:[T ]{_TIME})?")
TIMESTAMPTZ_RE = re.compile(f"{_DATE}(?:[T ]{_TIME}{_OFFSET}?)?")
INFINITIES = ("infinity", "-infinity", "+infinity")
MAX_OFFSET = 15 * 3600 + 59 * 60 + 59  # PostgreSQL's TZDISP_LIMIT - 1
# Fast paths (values matching need no further check): 4-digit year, days <= 28.
FAST_DATE = r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
# Any fraction: rounding one up at most carries into the next day, which is valid.
FAST_CLOCK = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?"
FAST_TIMESTAMP = f"{FAST_DATE}(?:[ T]{FAST_CLOCK})?"
FAST_TIMESTAMPTZ = f"{FAST_DATE}(?:[ T]{FAST_CLOCK}(?:Z|[+-](?:0[0-9]|1[0-4])(?::?[0-5][0-9])?)?)?"


def _date(year: str, month: str, day: str, value: str) -> None:
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        raise Invalid(f"date out of range: {value!r}") from None


def _clock(hour: str, minute: str, second: str | None, fraction: str | None, value: str) -> None:
    """PostgreSQL's field checks: hour <= 24, minute <= 59, second <= 60, the
    fraction rounded to microseconds, 24:00:00 only exactly, and at most one day."""
    h, m, s = int(hour), int(minute), int(second or 0)
    micro = round(float("0." + fraction) * 1_000_000) if fraction else 0  # rint, as the server
    if h > 24 or m > 59 or s > 60 or (h == 24 and (m or s or micro)) or \
            (h * 3600 + m * 60 + s) * 1_000_000 + micro > 86_400_000_000:
        raise Invalid(f"time out of range: {value!r}")


def _offset(text: str, value: str) -> None:
    if text in ("Z", "z"):
        return
    digits = text[1:].replace(":", "")
    if ":" not in text and len(digits) > 2:  # +HHMM
        parts = [digits[:-2], digits[-2:]]
    else:
        parts = text[1:].split(":")
    h, m, s = (int(p) for p in (parts + ["0", "0"])[:3])
    if m > 59 or s > 59 or h * 3600 + m * 60 + s > MAX_OFFSET:
        raise Invalid(f"time zone offset out of range: {value!r}")


def check_date(value: str) -> str:
    text = value.strip(PG_SPACE)
    match = DATE_RE.fullmatch(text)
    if match is None:
        if text.lower() in INFINITIES:
            return text
        raise Invalid(f"not an ISO date (YYYY-MM-DD): {value!r}")
    year, month, day = match.groups()
    _date(year, month, day, value)
    return text


def check_time(value: str) -> str:
    text = value.strip(PG_SPACE)
    match = TIME_RE.fullmatch(text)
    if match is None:
        raise Invalid(f"not a time (HH:MM[:SS[.f]]): {value!r}")
    hour, minute, second, fraction = match.groups()
    _clock(hour, minute, second, fraction, value)
    return text


def check_timestamp(value: str, *, with_zone: bool) -> str:
    text = value.strip(PG_SPACE)
    match = (TIMESTAMPTZ_RE if with_zone else TIMESTAMP_RE).fullmatch(text)
    if match is None:
        if text.lower() in INFINITIES:
            return text
        form = "YYYY-MM-DD[ HH:MM[:SS[.f]][offset]]" if with_zone else "YYYY-MM-DD[ HH:MM[:SS[.f]]]"
        raise Invalid(f"not an ISO timestamp ({form}): {value!r}")
    groups = match.groups()
    _date(groups[0], groups[1], groups[2], value)
    if groups[3] is not None:
        _clock(groups[3], groups[4], groups[5], groups[6], value)
    if with_zone and groups[7] is not None:
        _offset(groups[7], value)
    return text


_UNITS = {
    "microsecond": ("microsecond", "microseconds", "us", "usec", "usecs"),
    "millisecond": ("millisecond", "milliseconds", "ms", "msec", "msecs"),
    "second": ("second", "seconds", "s", "sec", "secs"),
    "minute": ("minute", "minutes", "m", "min", "mins"),
    "hour": ("hour", "hours", "h", "hr", "hrs"),
    "day": ("day", "days", "d"),
    "week": ("week", "weeks", "w"),
    "month": ("month", "months", "mon", "mons"),
    "year": ("year", "years", "y", "yr", "yrs"),
}
_UNIT_OF = {spelling: unit for unit, spellings in _UNITS.items() for spelling in spellings}
_UNIT_ALTERNATIVES = "|".join(sorted(_UNIT_OF, key=len, reverse=True))
_VERBOSE_PART = re.compile(f"([+-]?[0-9]{{1,6}})[ \\t]*({_UNIT_ALTERNATIVES})(?![a-z])", re.I | re.A)
_VERBOSE = re.compile(f"(?:@[ \\t]*)?(?:{_VERBOSE_PART.pattern}[ \\t]*)+(?:ago)?", re.I | re.A)
_ISO_INTERVAL = re.compile(r"P(?=[0-9]|T[0-9])(?:[0-9]{1,6}Y)?(?:[0-9]{1,6}M)?(?:[0-9]{1,6}W)?"
                           r"(?:[0-9]{1,6}D)?(?:T(?=[0-9])(?:[0-9]{1,6}H)?(?:[0-9]{1,6}M)?(?:[0-9]{1,6}(?:\.[0-9]{1,6})?S)?)?")


# Spellings the server's date tokenizer knows (datetktbl), so that a digit or ``+``
# right after them starts a new field; after any other, ``w2d`` is read as one
# (date-like) field and refused. Checked against PostgreSQL (tests/etl/test_pgtypes_server.py).
_TOUCHING_UNITS = frozenset({"d", "h", "m", "mon", "s", "y"})


def check_interval(value: str) -> str:
    text = value.strip(PG_SPACE)
    if _ISO_INTERVAL.fullmatch(text):
        return text
    if _VERBOSE.fullmatch(text):
        parts = list(_VERBOSE_PART.finditer(text))
        units = [_UNIT_OF[m.group(2).lower()] for m in parts]
        if len(units) != len(set(units)):
            raise Invalid(f"interval names a unit twice: {value!r}")
        for part, following in zip(parts, parts[1:], strict=False):
            if following.start() == part.end() and (
                    part.group(2).lower() not in _TOUCHING_UNITS or text[part.end()] == "-"):
                raise Invalid(f"interval parts need a space between them: {value!r}")
        return text
    raise Invalid(f"not an interval (ISO 8601 P... or 'n unit ...'): {value!r}")
