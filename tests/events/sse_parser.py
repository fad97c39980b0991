"""A test-only event-stream parser written from the HTML standard (9.2.6).

It follows the algorithm step by step — BOM, CRLF/CR/LF line splitting, field
parsing with one optional leading space, data buffer with trailing-LF removal,
``id`` containing NUL ignored, ``retry`` only as ASCII digits — so that the
encoder's tests check against the standard, not against the encoder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Dispatched:
    type: str
    data: str
    last_event_id: str


@dataclass
class ParseResult:
    events: list[Dispatched] = field(default_factory=list)
    retry: int | None = None
    last_event_id: str = ""
    comments: list[str] = field(default_factory=list)


def split_stream_lines(text: str) -> tuple[list[str], str]:
    """Complete lines and the unterminated rest. The standard's end-of-line is
    CRLF, a lone CR or a lone LF; the alternation tries CRLF first, so a CRLF
    pair is one line end, never two."""
    *lines, rest = re.split(r"\r\n|\r|\n", text)
    return lines, rest


def parse(stream: bytes) -> ParseResult:
    text = stream.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines, _rest = split_stream_lines(text)  # an unterminated last line is never processed
    result = ParseResult()
    data, event_type, id_buffer = "", "", result.last_event_id
    for line in lines:
        if line == "":
            result.last_event_id = id_buffer
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            result.events.append(Dispatched(event_type or "message", data, result.last_event_id))
            data, event_type = "", ""
            continue
        if line.startswith(":"):
            result.comments.append(line[1:])
            continue
        if ":" in line:
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\x00" not in value:
                id_buffer = value
        elif name == "retry":
            if value and all("0" <= c <= "9" for c in value):
                result.retry = int(value)
    return result
