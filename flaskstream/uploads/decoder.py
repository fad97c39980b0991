"""werkzeug's sans-IO multipart decoder with a byte-exact partial-delimiter look-back.

werkzeug 3.1.9's ``MultipartDecoder`` (pallets/werkzeug#3285): when a read ends
inside a closing delimiter, e.g. ``payload\\r\\n--BOUNDARY-`` | ``-\\r\\n``,
it only holds back a delimiter-length tail, so the ``\\r`` before
``\\n--BOUNDARY-`` leaks into the file as a stray byte. ``ExactMultipartDecoder``
holds back exactly the bytes that could still become a delimiter. Pure: no
Flask, no I/O; ``multipart.FormReader`` drives it.
"""

from __future__ import annotations

import re

from werkzeug.sansio.multipart import LINE_BREAK_RE, MultipartDecoder, State

__all__ = ["ExactMultipartDecoder"]

_DELIMITER_TAIL_RE = re.compile(rb"-|--[ \t]*(?:\r\n?|\n)?|[ \t]*(?:\r\n?|\n)?")


class ExactMultipartDecoder(MultipartDecoder):
    """werkzeug's sans-IO decoder with a correct partial-delimiter look-back.

    ``_last_partial_boundary_index(data)`` must return the first index from
    which ``data`` could still be the start of a delimiter
    (``LB --boundary ( --[ \\t]*LB? | [ \\t]*LB )``) once more bytes arrive;
    everything before it is safe to hand out as part data.
    """

    def __init__(self, boundary: bytes) -> None:
        super().__init__(boundary)
        self._dash_boundary = b"--" + boundary

    def _could_start_delimiter(self, tail: bytes | bytearray | memoryview) -> bool:
        """Is ``tail`` (starting with CR or LF) a prefix of some delimiter?"""
        tail = bytes(tail)  # short: at most a delimiter plus padding
        if tail == b"\r":
            return True
        dash = self._dash_boundary
        for line_break in (b"\r\n", b"\n", b"\r"):
            if not tail.startswith(line_break):
                continue
            rest = bytes(tail[len(line_break):])
            if len(rest) <= len(dash):
                if dash.startswith(rest):
                    return True
            elif rest.startswith(dash) and _DELIMITER_TAIL_RE.fullmatch(rest[len(dash):]):
                return True
        return False

    def _parse_data(self, data: bytes | bytearray, *, start: bool) -> tuple[bytes, int, bool]:
        """werkzeug's ``_parse_data`` with the corrected look-back and fewer copies.

        Same decisions as upstream (3.1.9); the part data is copied once
        (``memoryview.tobytes``) instead of being sliced into a new buffer,
        copied again, and the whole buffer sliced once more for the look-back.
        """
        data_start = 0
        if start:
            match = LINE_BREAK_RE.match(data)
            data_start = match.end() if match is not None else 0
        more_data = True
        if data.find(self._dash_boundary) == -1:
            data_end = del_index = self._last_partial_boundary_index(data, data_start)
        else:
            found = self.boundary_re.search(data)
            if found is not None:
                self.state = State.EPILOGUE if found.group(1).startswith(b"--") else State.PART
                data_end, del_index, more_data = found.start(), found.end(), False
            else:
                data_end = del_index = self._last_partial_boundary_index(data, data_start)
        with memoryview(data) as view:
            chunk = view[data_start:max(data_start, data_end)].tobytes()
        return chunk, del_index, more_data

    def _last_partial_boundary_index(self, data: bytes | bytearray | memoryview,
                                     start: int = 0) -> int:
        n = len(data)
        candidates: list[int] = []
        # Short candidates: a line break in the last len(LB + dash + "-") bytes.
        window_start = max(start, n - (len(self._dash_boundary) + 3))
        for i in range(window_start, n):
            if data[i] in (0x0D, 0x0A):
                candidates.append(i)
        # A long candidate: a complete dash-boundary followed by transport padding.
        end = n
        while end > 0 and data[end - 1] in (0x20, 0x09):
            end -= 1
        dash_at = end - len(self._dash_boundary)
        if end < n and dash_at >= start + 1 and data[dash_at:end] == self._dash_boundary:
            if data[dash_at - 1] == 0x0A and dash_at >= start + 2 and data[dash_at - 2] == 0x0D:
                candidates.append(dash_at - 2)
            elif data[dash_at - 1] in (0x0D, 0x0A):
                candidates.append(dash_at - 1)
        for i in sorted(candidates):
            if self._could_start_delimiter(data[i:]):
                return i
        return n
