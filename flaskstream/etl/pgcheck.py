"""Exact per-value checks of PostgreSQL's input functions, for ``pgtypes`` (pure).

Each ``check_*`` takes the CSV text and returns the text to hand to COPY
(unescaped), or raises ``Invalid`` with the reason. Where a check is stricter
than the server, ``pgtypes``' docstring says so. The standard library does the
parsing where it reads the same language as the server (``decimal`` for
numeric rounding, ``json`` for JSON, ``ipaddress`` for IPv6, ``struct`` for
real's range); where it does not (Python's ``int`` takes Unicode digits, its
``ipaddress`` refuses leading zeros PostgreSQL takes), the grammar is here.
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

from flaskstream.etl.pgtime import PG_SPACE
from flaskstream.etl.tables import Invalid

INT_RANGES = {"int2": (-(1 << 15), (1 << 15) - 1), "int4": (-(1 << 31), (1 << 31) - 1),
              "int8": (-(1 << 63), (1 << 63) - 1)}
INT_LABELS = {"int2": "smallint", "int4": "integer", "int8": "bigint"}
_D = r"[0-9](?:_?[0-9])*"
_INT = re.compile(r"([+-]?)(?:0[xX]((?:_?[0-9a-fA-F])+)|0[oO]((?:_?[0-7])+)|0[bB]((?:_?[01])+)|"
                  f"({_D}))")
_NUMERIC = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLOAT = _NUMERIC
_SPECIAL_FLOATS = {"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
MAX_NUMERIC_DIGITS = 1000  # a limit of the core, not of the server
NUMERIC_MAX_EXPONENT = (2 ** 31 - 1) // 2
NUMERIC_MAX_SCALE = 0x3FFF  # NUMERIC_DSCALE_MAX
NUMERIC_MAX_WHOLE_DIGITS = 131072  # (NUMERIC_WEIGHT_MAX + 1) * DEC_DIGITS


def _short(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def check_int(value: str, *, name: str) -> str:
    int_value(value, name=name)
    return value.strip(PG_SPACE)


def int_value(value: str, *, name: str) -> int:
    """The number an integer column of type ``name`` reads from ``value``, as
    PostgreSQL 16 reads it; ``Invalid`` if it does not or it is out of range."""
    text = value.strip(PG_SPACE)
    match = _INT.fullmatch(text)
    if match is None:
        raise Invalid(f"not a valid {INT_LABELS[name]}: {_short(value)}")
    sign, hexa, octal, binary, decimal = match.groups()
    digits, base = next((d, b) for d, b in ((hexa, 16), (octal, 8), (binary, 2), (decimal, 10))
                        if d is not None)
    digits = digits.replace("_", "").lstrip("0") or "0"
    lo, hi = INT_RANGES[name]
    number = int(sign + digits, base) if len(digits) <= 64 else hi + 1  # 64: int() stays cheap
    if not lo <= number <= hi:
        raise Invalid(f"{_short(value)} out of range for {INT_LABELS[name]}")
    return number


def check_numeric(value: str, *, precision: int | None, scale: int | None) -> str:
    """numeric_in's rules: an exponent within +-(2^31-1)/2, at most 16383 digits
    after the point (after rounding to the typmod's scale) and a leading digit
    below 10^131072; with a typmod, round half away from zero, then fit ``p``."""
    text = value.strip(PG_SPACE)
    word = text.lower()
    if word == "nan":
        return text
    if word in _SPECIAL_FLOATS:
        if precision is not None:
            raise Invalid(f"infinity does not fit numeric({precision},{scale})")
        return text
    if _NUMERIC.fullmatch(text) is None:
        raise Invalid(f"not a valid numeric: {_short(value)}")
    mantissa, _, exponent_text = word.partition("e")
    exponent_text = exponent_text.lstrip("+-").lstrip("0")
    if len(mantissa) > MAX_NUMERIC_DIGITS or len(exponent_text) > 10 or \
            int(exponent_text or 0) > NUMERIC_MAX_EXPONENT:
        raise Invalid(f"numeric too long or exponent too large: {_short(value)}")
    number = Decimal(text)
    if precision is None:
        fraction = len(mantissa.partition(".")[2])
        if max(0, fraction - int(word.partition("e")[2] or 0)) > NUMERIC_MAX_SCALE or \
                (number and number.adjusted() >= NUMERIC_MAX_WHOLE_DIGITS):
            raise Invalid(f"{_short(value)} overflows numeric")
        return text
    scale = scale or 0
    if number and number.adjusted() + 1 > precision - scale:  # too big even before rounding
        raise Invalid(f"{_short(value)} does not fit numeric({precision},{scale})")
    if number and number.adjusted() >= -scale - 1:  # else it rounds to zero
        with localcontext(Context(prec=precision + 10)):
            rounded = number.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
        if rounded and rounded.adjusted() + 1 > precision - scale:
            raise Invalid(f"{_short(value)} does not fit numeric({precision},{scale})")
    return text


def check_float(value: str, *, single: bool) -> str:
    text = value.strip(PG_SPACE)
    label = "real" if single else "double precision"
    if text.lower() in _SPECIAL_FLOATS:
        return text
    if _FLOAT.fullmatch(text) is None:
        raise Invalid(f"not a valid {label}: {_short(value)}")
    number = float(text)
    mantissa = text.lower().partition("e")[0]
    underflow = number == 0 and any(c in mantissa for c in "123456789")
    if single and not underflow and number not in (float("inf"), float("-inf")):
        try:
            number = struct.unpack("f", struct.pack("f", number))[0]
        except OverflowError:
            number = float("inf")
        underflow = number == 0 and any(c in mantissa for c in "123456789")
    if underflow or number in (float("inf"), float("-inf")):
        raise Invalid(f"{_short(value)} out of range for {label}")
    return text


def _prefixes(*words: str, shortest: int = 1) -> set[str]:
    return {w[:n] for w in words for n in range(shortest, len(w) + 1)}


_TRUE = _prefixes("true", "yes") | _prefixes("on", shortest=2) | {"1"}
_FALSE = _prefixes("false", "no") | _prefixes("off", shortest=2) | {"0"}
# The common spellings as they stand, for the columnar fast path (a dict lookup).
BOOL_WORDS = {w: "t" for w in ("t", "true", "TRUE", "True", "1", "y", "yes", "YES", "on")} | \
    {w: "f" for w in ("f", "false", "FALSE", "False", "0", "n", "no", "NO", "off")}


def check_bool(value: str) -> str:
    word = value.strip(PG_SPACE).lower()
    if word in _TRUE:
        return "t"
    if word in _FALSE:
        return "f"
    raise Invalid(f"not a boolean (true/false, yes/no, on/off, 1/0): {_short(value)}")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, *, length: int | None) -> str:
    if "\x00" in value:
        raise Invalid("NUL byte in text")
    if not value.isascii() and not _encodable(value):
        raise Invalid("undecodable byte in text (wrong encoding?)")
    if length is not None and len(value) > length and value[length:].strip(" "):
        raise Invalid(f"longer than {length} characters")
    return value


def text_misfits(values: list[str], length: int | None) -> list[int]:
    """Rows a text column must look at one by one (NUL, bad bytes, too long)."""
    joined = "".join(values)
    bad = "\x00" in joined or not (joined.isascii() or _encodable(joined))
    if not bad and (length is None or not values or max(map(len, values)) <= length):
        return []
    return [i for i, v in enumerate(values) if "\x00" in v or not _encodable(v) or
            (length is not None and len(v) > length)]


_UUID = re.compile(r"(\{)?[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}(?(1)\})")


def check_uuid(value: str) -> str:
    if _UUID.fullmatch(value) is None:
        raise Invalid(f"not a uuid: {_short(value)}")
    return value


_BYTEA = re.compile(r"\\x(?:[ \t\n\r]*[0-9a-fA-F]{2})*[ \t\n\r]*")


def check_bytea(value: str) -> str:
    if _BYTEA.fullmatch(value) is None:
        raise Invalid(f"not \\x-hex bytea: {_short(value)}")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(name)


def _jsonb_strings_ok(doc: object) -> bool:
    """jsonb stores text: no NUL and no lone surrogate from a \\u escape."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or not _encodable(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


# One decoder for every value: json.loads with options builds a new one per call.
# Numbers stay strings: the server has no size limit on them.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=str, parse_float=str)


def check_json(value: str, *, binary: bool) -> str:
    if not value.isascii() and not _encodable(value):
        raise Invalid("undecodable byte in JSON (wrong encoding?)")
    try:
        doc = _JSON.decode(value)
    except (ValueError, RecursionError):
        raise Invalid(f"not valid JSON: {_short(value)}") from None
    # NUL and lone surrogates reach a decoded string only through a \u escape
    # (raw control characters are invalid JSON; raw surrogates were refused above).
    if binary and "\\u" in value and not _jsonb_strings_ok(doc):
        raise Invalid("jsonb cannot hold \\u0000 or an unpaired surrogate")
    return value


_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_BITS = re.compile(r"[0-9]{1,3}")


def check_inet(value: str, *, cidr: bool) -> str:
    address, slash, bits_text = value.partition("/")
    label = "cidr" if cidr else "inet"
    match = _IPV4.fullmatch(address)
    try:
        if match is not None:
            octets = [int(o) for o in match.groups()]
            if max(octets) > 255:
                raise ValueError
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(bytes(octets))
        elif "%" in address:  # a zone id: Python takes it, PostgreSQL does not
            raise ValueError
        else:
            ip = ipaddress.IPv6Address(address)
        if slash and not _BITS.fullmatch(bits_text):
            raise ValueError
        bits = int(bits_text) if slash else ip.max_prefixlen
        if bits > ip.max_prefixlen:
            raise ValueError
    except ValueError:
        raise Invalid(f"not a valid {label}: {_short(value)}") from None
    if cidr and int(ip) & ((1 << (ip.max_prefixlen - bits)) - 1):
        raise Invalid(f"cidr has bits set right of the mask: {_short(value)}")
    return value


def check_enum(value: str, *, labels: frozenset[str]) -> str:
    if value not in labels:
        shown = ", ".join(sorted(labels)[:10])
        raise Invalid(f"{_short(value)} is not one of the labels ({shown})")
    return value


ARRAY_SPACE = " \t\n\r\v\f"
MAX_DIMENSIONS = 6  # PostgreSQL's MAXDIM
_ARRAY_TOKEN = re.compile(r'[ \t\n\r\v\f]*(?:([{},])|"((?:[^"\\]|\\.)*)"|'
                          r'((?:[^{}",\\ \t\n\r\v\f]|\\.)(?:[^{}",\\]|\\.)*))', re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)


def _array_elements(text: str) -> tuple[list[str | None], list[int]]:
    """Parse a ``{...}`` literal into its flat elements and its shape."""
    tokens = [(m.group(1), m.group(2), m.group(3)) for m in _ARRAY_TOKEN.finditer(text)]
    if "".join(m.group(0) for m in _ARRAY_TOKEN.finditer(text)).strip(ARRAY_SPACE) != \
            text.strip(ARRAY_SPACE):
        raise ValueError("stray characters")
    elements: list[str | None] = []
    pos = 0

    def value(depth: int) -> list[int]:  # returns the shape of the sub-array read
        nonlocal pos
        if depth > MAX_DIMENSIONS:
            raise ValueError("too many dimensions")
        if pos >= len(tokens) or tokens[pos][0] != "{":
            raise ValueError("expected {")
        pos += 1
        shapes: list[list[int]] = []
        scalars = 0
        if pos < len(tokens) and tokens[pos][0] == "}":
            pos += 1
            if depth > 1:
                raise ValueError("empty inner array")
            return [0]
        while True:
            if pos >= len(tokens):
                raise ValueError("unterminated")
            punct, quoted, bare = tokens[pos]
            if punct == "{":
                shapes.append(value(depth + 1))
            elif punct is None:
                pos += 1
                scalars += 1
                if quoted is not None:
                    elements.append(_UNESCAPE.sub(r"\1", quoted))
                else:
                    word = _UNESCAPE.sub(r"\1", bare.strip(ARRAY_SPACE))
                    elements.append(None if bare.strip(ARRAY_SPACE).upper() == "NULL" else word)
            else:
                raise ValueError("empty element")
            if pos >= len(tokens) or tokens[pos][0] not in (",", "}"):
                raise ValueError("expected , or }")
            pos += 1
            if tokens[pos - 1][0] == "}":
                break
        if shapes and (scalars or any(s != shapes[0] for s in shapes)):
            raise ValueError("not rectangular")
        return [len(shapes), *shapes[0]] if shapes else [scalars]

    shape = value(1)
    if pos != len(tokens):
        raise ValueError("text after the array")
    return elements, shape


def check_array(value: str, *, element: Callable[[str], str]) -> str:
    try:
        elements, _shape = _array_elements(value)
    except ValueError as exc:
        raise Invalid(f"malformed array literal ({exc}): {_short(value)}") from None
    for item in elements:
        if item is not None:
            try:
                element(item)
            except Invalid as exc:
                raise Invalid(f"array element: {exc}") from None
    return value
