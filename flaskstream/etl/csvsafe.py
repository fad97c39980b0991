"""Formula neutralisation for CSV exports that will be opened in a spreadsheet.

Excel, LibreOffice and Google Sheets run a cell that starts with ``=``, ``+``,
``-`` or ``@`` as a formula (``=HYPERLINK(...)``, ``=cmd|' /C calc'!A0``), and a
leading tab or carriage return does not stop them (OWASP, "CSV Injection").
With ``excel_safe`` such a cell gets a leading ``'``, which spreadsheets show as
text. It is opt-in because it changes data: ``-5`` is exported as ``'-5``, and
reloading such an export keeps the quote.

``neutralise_cell`` is the rule for one value. ``FormulaGuard`` applies it to
the bytes PostgreSQL's ``COPY ... (FORMAT csv)`` writes, chunk by chunk, without
re-encoding anything: it only inserts one ``'`` at the start of a dangerous cell
(inside the quotes when the cell is quoted, where ``'`` needs no escaping), so
quoting, line breaks, NULL (an unquoted empty cell) versus the empty string
(``""``) and every other byte pass through unchanged. The bytes it looks at are
ASCII, so UTF-8 needs no decoding (continuation bytes are >= 0x80).

Pure: no Flask, no driver.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

FORMULA_TRIGGERS = "=+-@\t\r"
_TRIGGER_BYTES = frozenset(FORMULA_TRIGGERS.encode())
_APOSTROPHE = ord("'")
_QUOTE = ord('"')
_SEPARATORS = frozenset(b",\r\n")  # delimiter, and either byte of a record end
_UNQUOTED_END = re.compile(rb"[,\r\n]")

# States of the CSV scanner, between chunks too.
_FIELD_START, _UNQUOTED, _QUOTED_START, _QUOTED, _QUOTE_SEEN = range(5)


def neutralise_cell(value: str) -> str:
    """``value`` as a spreadsheet will show it as text: ``'`` first if it could start a formula."""
    return "'" + value if value[:1] and value[0] in FORMULA_TRIGGERS else value


class FormulaGuard:
    """Streams CSV bytes (comma-separated, ``"``-quoted) with every cell ``neutralise_cell``-ed.

    ``feed`` returns at once what it was given plus the inserted quotes; the
    scanner's state carries over to the next chunk, so a chunk may end anywhere.
    An unquoted cell never starts with CR (any CSV writer quotes it): a CR there
    is the start of a CRLF record end and is left alone.
    """

    def __init__(self) -> None:
        self.state = _FIELD_START

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        state, i, n = self.state, 0, len(chunk)
        while i < n:
            if state == _FIELD_START:
                byte = chunk[i]
                if byte == _QUOTE:
                    out.append(byte)
                    i += 1
                    state = _QUOTED_START
                    continue
                if byte in _SEPARATORS:  # an empty cell, or a record end
                    out.append(byte)
                    i += 1
                    continue
                if byte in _TRIGGER_BYTES:
                    out.append(_APOSTROPHE)
                state = _UNQUOTED
            elif state == _UNQUOTED:
                match = _UNQUOTED_END.search(chunk, i)
                end = n if match is None else match.end()
                out += chunk[i:end]
                i = end
                if match is not None:
                    state = _FIELD_START
            elif state == _QUOTED_START:
                if chunk[i] in _TRIGGER_BYTES:
                    out.append(_APOSTROPHE)
                state = _QUOTED
            elif state == _QUOTED:
                end = chunk.find(b'"', i)
                if end < 0:
                    out += chunk[i:]
                    i = n
                    continue
                out += chunk[i:end + 1]
                i = end + 1
                state = _QUOTE_SEEN
            else:  # _QUOTE_SEEN: the closing quote, or the first of a doubled one
                byte = chunk[i]
                if byte == _QUOTE:
                    out.append(byte)
                    i += 1
                    state = _QUOTED
                elif byte in _SEPARATORS:
                    out.append(byte)
                    i += 1
                    state = _FIELD_START
                else:  # malformed (text after a closing quote): passed through as is
                    state = _UNQUOTED
        self.state = state
        return bytes(out)


def excel_safe(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` of CSV with formula cells neutralised (a generator over ``FormulaGuard``)."""
    guard = FormulaGuard()
    for chunk in chunks:
        yield guard.feed(chunk)
