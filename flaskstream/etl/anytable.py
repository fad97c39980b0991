"""CSV into any table the catalog describes: dialect, NULLs, mapping, codecs (pure).

``TableCsv(table, dialect)`` is the parser ``jobs.run_load`` drives for a
``--table [schema.]name`` load: bytes → decoded text → records
(``pipeline.read_records`` with the dialect's delimiter/quote/escape) → the
header mapped onto the table (``mapping.plan_load``, before any row) →
per-column trimming, lower-casing and NULLs → ``pgtypes.ColumnCodec`` for each
written column → COPY text blocks, a reject (line, column, reason) for every
bad value.

**Quoted empty vs unquoted empty.** COPY's CSV mode reads ``,"",`` as an empty
string and ``,,`` as NULL. Python 3.11's ``csv`` gives ``""`` for both (the
3.12 ``QUOTE_NOTNULL`` reader option does not exist here), so
``mark_quoted_empty`` runs between decoding and ``csv.reader``: a regex
tokenizer that starts only at field boundaries and consumes whole quoted
fields replaces every *field* that is exactly two quotes by ``SENTINEL``
(``\\x02\\x03``: two ASCII characters, so byte offsets for checkpoints stay
exact in every encoding). After parsing, a field equal to ``SENTINEL`` is the
empty string, an unquoted empty field (or the ``--null`` string) is NULL.
A candidate (two quotes between delimiters or line breaks, found by one C-speed
regex search) is a field exactly when the quotes before it are even in number:
with the quote doubling itself, every quote opens, closes or half-escapes, so
parity is the quote state (carried across the decoder's pieces, which end on
line breaks but may end inside a quoted field). With another ``--escape``
parity says nothing, and a slower tokenizer consumes whole quoted fields.
Input that holds ``\\x02\\x03`` itself is refused as a whole.
Limits: with ``--null X`` (not empty) a quoted ``"X"`` is NULL too; a quote
inside an unquoted field (not CSV) is literal to ``csv`` and may end the
marking's sync for the rest of that piece.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from flaskstream.etl.bounds import Bounds, InputError
from flaskstream.etl.mapping import (
    CopyTarget,
    LoadPlan,
    MappingError,
    MissingColumns,
    TargetTable,
    _copy_escape,
    plan_load,
    quote_ident,
)
from flaskstream.etl.pipeline import (
    BLOCK_ROWS,
    DEFAULT_FIELD_SIZE_LIMIT,
    CopyBlock,
    Progress,
    RecordBlock,
    Reject,
    csv_text,
    decode,
    gunzip_if_needed,
    read_records,
    take_header,
)
from flaskstream.etl.presets import Preset
from flaskstream.etl.rules import Lower
from flaskstream.etl.tables import HeaderError, _positions, _undecodable_reason

SENTINEL = "\x02\x03"
FIELDS_PER_BLOCK = 32_768  # parsed fields per record block (see TableCsv._block_rows)


class BadDialect(InputError):
    code = "BAD_DIALECT"
    status = 400


class BadKey(MappingError):
    code = "BAD_KEY"


@dataclass(frozen=True)
class CsvDialect:
    """How the file is written and how its values are normalised (CLI flags = query args)."""

    delimiter: str = ","
    quote: str = '"'
    escape: str | None = None  # None: the quote doubles itself (COPY's default)
    null: str = ""  # the unquoted text that is NULL
    header: bool = True
    columns: tuple[str, ...] = ()  # names of a headerless file's fields
    skip_lines: int = 0  # physical lines skipped before the header (or the first row)
    trim: bool = True
    lower: tuple[str, ...] = ()  # columns lower-cased after trimming
    ignore_extra: bool = False
    overrides: dict[str, str] = field(default_factory=dict)  # --map csv_header=column
    key: tuple[str, ...] = ()  # upsert conflict target (default: the primary key)

    def __post_init__(self) -> None:
        for name in ("delimiter", "quote", "escape"):
            value = getattr(self, name)
            if value is not None and (len(value) != 1 or value in "\r\n" or value in SENTINEL):
                raise BadDialect(f"{name} must be one character (not a line break)")
        if self.delimiter == self.quote:
            raise BadDialect("delimiter and quote must differ")
        if not self.header and not self.columns:
            raise BadDialect("a file without a header needs its column names (--columns a,b,c)")
        if self.header and self.columns:
            raise BadDialect("--columns names the fields of a file without a header "
                             "(add --no-header)")

    def csv_dialect(self) -> type[csv.Dialect]:
        escaped = self.escape is not None and self.escape != self.quote
        attrs = {"delimiter": self.delimiter, "quotechar": self.quote, "doublequote": not escaped,
                 "escapechar": self.escape if escaped else None, "strict": False}
        return type("LoadDialect", (csv.excel,), attrs)


def mark_quoted_empty(texts: Iterable[str], dialect: CsvDialect,
                      marked: list[bool] | None = None) -> Iterator[str]:
    """Replace each field written ``""`` by ``SENTINEL`` (see the module docstring).

    ``marked[0]`` becomes True at the first replacement: until then no record
    parsed from the texts yielded so far holds ``SENTINEL``, and the encoder
    skips looking for it (a scan per column per block).
    """
    marked = marked if marked is not None else [False]
    if dialect.escape not in (None, dialect.quote):
        yield from _mark_escaped(texts, dialect, marked)
        return
    d, q = re.escape(dialect.delimiter), re.escape(dialect.quote)
    # The literal first (the lookbehind after it) lets re skip ahead at C speed.
    candidate = re.compile(f"{q}{q}(?<![^{d}\\n\\r]{q}{q})(?![^{d}\\r\\n])")
    quote = dialect.quote
    inside = False
    for text in texts:
        _refuse_marker(text)
        if quote not in text:
            yield text
            continue
        out, last, counted = [], 0, 0
        for match in candidate.finditer(text):  # C speed; few matches (real "" fields)
            start = match.start()
            inside ^= text.count(quote, counted, start) % 2 == 1  # each quote toggles
            counted = start
            if not inside:  # a field of its own, not an escaped quote inside one
                marked[0] = True
                out.append(text[last:start])
                out.append(SENTINEL)
                last = counted = match.end()
        inside ^= text.count(quote, counted) % 2 == 1
        if not out:
            yield text
            continue
        out.append(text[last:])
        yield "".join(out)


def _refuse_marker(text: str) -> None:
    if SENTINEL in text:
        raise InputError("the input holds the bytes 0x02 0x03, which the loader uses to "
                         "tell quoted empty fields from NULLs")


def _mark_escaped(texts: Iterable[str], dialect: CsvDialect, marked: list[bool]) -> Iterator[str]:
    """``mark_quoted_empty`` with an escape character other than the quote: quote
    parity no longer tells the state, so a tokenizer consumes whole quoted fields."""
    d, q, e = (re.escape(c) for c in (dialect.delimiter, dialect.quote, dialect.escape or ""))
    body = f"(?:[^{q}{e}]|{e}.)*"
    start, end = f"(?<![^{d}\\n\\r])", f"(?![^{d}\\r\\n])"
    token = re.compile(f"(?P<empty>{start}{q}{q}{end})|{start}{q}{body}(?P<close>{q})?", re.S)
    rest = re.compile(f"{body}(?P<close>{q})?", re.S)
    inside = False
    for text in texts:
        _refuse_marker(text)
        pos = 0
        if inside:
            match = rest.match(text)
            assert match is not None  # body* matches the empty string
            pos, inside = match.end(), match.group("close") is None
            if inside:
                yield text
                continue
        out, last = [], 0
        for match in token.finditer(text, pos):
            if match.group("empty"):
                marked[0] = True
                out.append(text[last:match.start()])
                out.append(SENTINEL)
                last, inside = match.end(), False
            else:
                inside = match.group("close") is None
        out.append(text[last:])
        yield "".join(out)


def _skip_lines(blocks: Iterable[RecordBlock], lines: int) -> Iterator[RecordBlock]:
    """Drop the records that start on the first ``lines`` physical lines."""
    for block in blocks:
        if lines and block.lines and block.lines[0] <= lines:
            keep = [i for i, line in enumerate(block.lines) if line > lines]
            block = RecordBlock([block.records[i] for i in keep], [block.lines[i] for i in keep],
                                [r for r in block.rejects if r.line > lines], block.end_line,
                                block.position)
        yield block


class TableCsv:
    """A CSV load into one catalog-described table; ``blocks`` is the parser,
    ``plan`` is known once the header (or ``--columns``) has been mapped."""

    def __init__(self, table: TargetTable, dialect: CsvDialect | None = None,
                 preset: Preset | None = None) -> None:
        self.preset = preset
        self.table = preset.apply(table) if preset is not None else table
        self.dialect = dialect or CsvDialect()
        self.name = preset.name if preset is not None else f"{table.schema}.{table.name}"
        self.plan: LoadPlan | None = None
        self._lower = frozenset(self.dialect.lower).union(
            c.name for c in self.table.columns if any(isinstance(r, Lower) for r in c.rules))
        self._marked = [False]  # mark_quoted_empty replaced a field (see there)

    def _block_rows(self) -> int:
        """Records per block, fewer for wide tables: a parsed record costs a list slot
        and a ``str`` per field, and a block's records, their columns and its COPY
        text are alive together. 16 columns: 2,048 rows (4,096 measured 13 MiB more
        peak RSS and no fewer instructions); 3 (the presets): ``BLOCK_ROWS``."""
        width = max(1, len(self.table.columns))
        return max(256, min(BLOCK_ROWS, FIELDS_PER_BLOCK // width))

    def copy_target(self, upsert: bool = False) -> CopyTarget:
        """The sink's target; call after the first block (the plan is known then).
        An empty file into a preset loads nothing into the preset's columns (as
        since 0.1); into another table it is an error (no field feeds a column)."""
        if self.plan is None and self.preset is not None:
            self.plan = self._plan([name for name, _ in self.preset.rules])
        if self.plan is None:
            raise MappingError(f"no field of the CSV feeds a column of {self.name}")
        columns = tuple(c.name for c in self.plan.targets)
        return CopyTarget(self.table.qualified, columns, self._key(columns) if upsert else (),
                          tuple(c.type_name for c in self.plan.targets), self.name)

    def _key(self, columns: Sequence[str]) -> tuple[str, ...]:
        """The upsert conflict target: ``--key`` naming a unique index, else the primary key."""
        key = self.dialect.key or (self.preset.key if self.preset else ()) or self.table.primary_key
        if not key:
            return ()
        if self.dialect.key and frozenset(key) not in map(frozenset, self.table.unique_keys):
            raise BadKey(f"--key {','.join(key)}: no primary key or unique index of {self.name} "
                         "has exactly these columns", key)
        missing = [c for c in key if c not in columns]
        if missing:
            raise BadKey(f"the CSV does not feed key column(s) {', '.join(missing)}", missing)
        return tuple(key)

    def blocks(self, chunks: Iterable[bytes], _table: Any = None, *, encoding: str = "utf-8",
               progress: Progress | None = None, field_size_limit: int = DEFAULT_FIELD_SIZE_LIMIT,
               bounds: Bounds | None = None, line_base: int = 0,
               base_offset: int = 0) -> Iterator[CopyBlock]:
        """Bytes → COPY text blocks; ``MappingError`` at the first block if the
        names cannot feed the table (nothing read or written after it)."""
        progress = progress if progress is not None else Progress()
        bounds = bounds or Bounds()
        texts = decode(gunzip_if_needed(chunks, bounds=bounds), encoding, progress,
                       max_line=bounds.max_line)
        records = _skip_lines(read_records(
            mark_quoted_empty(texts, self.dialect, self._marked), field_size_limit=field_size_limit,
            dialect=self.dialect.csv_dialect(), encoding=encoding, line_base=line_base,
            base_offset=base_offset, bounds=bounds, block_rows=self._block_rows()),
            self.dialect.skip_lines)
        if self.dialect.header:
            header, records = take_header(records)
            if header is None:
                return
            names: Sequence[str] = [h.replace(SENTINEL, "").strip() for h in header]
        else:
            names = self.dialect.columns
        self.plan = self._plan(names)
        unknown = sorted(frozenset(self.dialect.lower) - {c.name for c in self.plan.targets})
        if unknown:
            raise MappingError(f"--lower names column(s) {', '.join(map(quote_ident, unknown))} "
                               "the load does not write", unknown)
        for block in records:
            yield self.encode_block(block, progress)

    def encode_records(self, blocks: Iterable[RecordBlock], names: Sequence[str],
                       progress: Progress) -> Iterator[CopyBlock]:
        """Records whose fields are named ``names`` → COPY text blocks: the CSV's
        plan, rules and codecs for another parser too (the access-log pipeline,
        ``logs.py``), so a table's rules are declared and judged in one place."""
        self.plan = self._plan(names)
        for block in blocks:
            yield self.encode_block(block, progress)

    def _plan(self, names: Sequence[str]) -> LoadPlan:
        """``plan_load``; a preset skips extra fields and, as since 0.1, reports a
        missing required column as ``BAD_HEADER`` naming the header it found."""
        ignore_extra = self.dialect.ignore_extra or bool(self.preset and self.preset.ignore_extra)
        try:
            return plan_load(self.table, names, overrides=self.dialect.overrides,
                             ignore_extra=ignore_extra)
        except MissingColumns as exc:
            if self.preset is None:
                raise
            found = ", ".join(names) or "(nothing)"
            raise HeaderError(f"header is missing required column(s) {', '.join(exc.columns)} "
                              f"for table {self.name}; found: {found}") from None

    def encode_block(self, block: RecordBlock, progress: Progress) -> CopyBlock:
        """One block of records → COPY text of its good rows + a reject per bad row."""
        assert self.plan is not None
        plan, width = self.plan, self.plan.width
        records, lines = block.records, block.lines
        rejects: list[Reject] = list(block.rejects)
        # As many records as physical lines: none spans two, so no field holds a line break.
        one_line_each = bool(lines) and not rejects and block.end_line - lines[0] + 1 == len(lines)
        if list(map(len, records)).count(width) != len(records) or progress.dirty:
            records, lines = self._well_formed(records, lines, width, rejects, progress.dirty)
        text = ""
        if records:
            fields = list(zip(*records, strict=True))
            errors: dict[int, list[str]] = {}
            columns: list[Sequence[str]] = []
            for source, codec, target in zip(plan.sources, plan.codecs, plan.targets, strict=True):
                lazy = codec is not None and codec.trims_lazily and self.dialect.trim and \
                    target.name not in self._lower
                values, nulls = self._values(fields[source], target.name, trim=not lazy)
                columns.append(codec.encode(values, errors, nulls=nulls, newline_free=one_line_each,
                                            prepare=self._trimmed if lazy else None)
                               if codec is not None else list(map(_copy_escape, values)))
            rows = list(map("\t".join, zip(*columns, strict=True)))
            if errors:
                lines = list(lines)
                for i in sorted(errors, reverse=True):  # a few deletes (memmove) per block
                    rejects.append(Reject(lines[i], "; ".join(errors[i]),
                                          csv_text(v.replace(SENTINEL, '""') for v in records[i])))
                    del rows[i], lines[i]
            if rows:
                text = "\n".join(rows) + "\n"
        rejects.sort(key=lambda r: r.line)
        progress.rows_read += len(lines) + len(rejects)
        return CopyBlock(text, lines, rejects, block.end_line, block.position)

    def _values(self, raw: Sequence[str], column: str,
                trim: bool = True) -> tuple[list[str | None], list[int]]:
        """Trimmed (unless ``--no-trim``, or ``trim`` False: the codec trims the values
        its fast path does not settle, with ``_trimmed``), lower-cased if asked, NULLs
        as None; and where the NULLs are (the codec need not look for them again)."""
        trim = trim and self.dialect.trim
        values: list[Any] = list(map(str.strip, raw)) if trim else list(raw)
        if column in self._lower:
            values = list(map(str.lower, values))
        nulls = _positions(values, self.dialect.null)
        for i in nulls:
            values[i] = None
        if self._marked[0]:
            for i in _positions(values, SENTINEL):
                values[i] = ""
        return values, nulls

    def _trimmed(self, value: str) -> str | None:
        """What ``_values`` makes of one value when trimming: a value that is all
        spaces, or the NULL string in spaces, is NULL. An empty one is a quoted
        empty field (``_values`` made the unquoted ones NULL): it stays empty."""
        if not value:
            return value
        value = value.strip()
        return None if value == self.dialect.null else value

    @staticmethod
    def _well_formed(records: list[list[str]], lines: list[int], width: int,
                     rejects: list[Reject], dirty: bool) -> tuple[list[list[str]], list[int]]:
        """Drop blank lines; reject records of the wrong width or with undecodable bytes."""
        kept, kept_lines = [], []
        for record, line in zip(records, lines, strict=True):
            if not record:
                continue
            reason = _undecodable_reason(record) if dirty else None
            if reason is None and len(record) != width:
                reason = f"expected {width} fields, found {len(record)}"
            if reason is None:
                kept.append(record)
                kept_lines.append(line)
            else:
                rejects.append(Reject(line, reason, csv_text(record)))
        return kept, kept_lines
