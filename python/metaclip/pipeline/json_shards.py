"""JSON-lines shards, and the JSON rows that WebDataset tars hold (``tar_shards.py``).

Two readers build the same table for a shard: pyarrow's JSON reader (C++; tar members are
joined into JSON lines in Rust first), and row by row with Python's ``json``, where a line
or member that is not a JSON object becomes a counted skip. The fast one is used when it
gives exactly what the row-by-row one would (``_arrow_json`` says when not).

No line or member is read longer than ``row_bytes_limit`` (a counted ``too_long`` skip,
never in memory).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from metaclip.exceptions import InputError

if TYPE_CHECKING:
    from metaclip.pipeline.config import Columns

# JSON-lines blocks parsed at once: a line must fit in one (longer ones go row by row).
JSONL_BLOCK = 16 << 20
# Integers above 2**53 do not fit a double exactly: the row-by-row path keeps a float
# column holding such an integer as JSON text (``pa.array`` refuses to round it).
EXACT_LIMIT = 2.0**53
# Config.max_text_bytes's default.
MAX_TEXT_BYTES = 1 << 20
# Blocks the row-by-row reader reads JSON lines in.
_LINES_BLOCK = 1 << 20
# Where a line may hold a lone surrogate: escaped (\ud800-\udfff), or encoded, which
# Python's ``json`` decodes ('surrogatepass'). Only such lines are checked in full. (Two
# patterns, each led by a literal, search ~10x faster than one that has both.)
_SURROGATE_HINTS = (re.compile(rb"\\u[dD][89a-fA-F]"), re.compile(rb"\xed[\xa0-\xbf]"))


def row_bytes_limit(max_text_bytes: int) -> int:
    """The most bytes read of one JSON line or tar member; a longer one is a counted
    ``too_long`` skip, never read into memory (a decompression bomb, say). Room for a text
    of ``max_text_bytes`` however it is escaped (JSON spends at most 6 bytes on one byte
    of text, ``\\u0001``) beside the row's other fields, and never less than pyarrow's
    reader takes in one line (an object may span two blocks): a line that the fast path
    reads is never one that the row-by-row path skips."""
    return max(2 * JSONL_BLOCK, 8 * max_text_bytes)


class Skip(dict):
    """A line or member that gives no row (an empty one, counted as skipped), and why:
    ``malformed_row``, ``invalid_utf8`` or ``too_long``."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def _json_row(line: bytes | None, flagged: bool = True) -> dict:
    """The JSON object on a line (``None``: a line too long to read), or a ``Skip``: a
    line that is not a JSON object (``malformed_row``), or not text: bytes that are not
    UTF-8, or a lone surrogate, escaped or encoded, anywhere in it (``invalid_utf8``:
    neither Arrow nor a parquet file can hold one, and the text is not what the writer
    meant). ``flagged``: whether the line may hold one (False: ``_may_hold_surrogate``
    found none where it looked)."""
    if line is None:
        return Skip("too_long")
    try:
        obj = json.loads(line)
    except UnicodeDecodeError:  # a ValueError too: first
        return Skip("invalid_utf8")
    except ValueError:
        return Skip("malformed_row")
    if not isinstance(obj, dict):
        return Skip("malformed_row")
    if flagged and _may_hold_surrogate(line) and _has_lone_surrogate(obj):
        return Skip("invalid_utf8")
    return obj


def _may_hold_surrogate(data: bytes) -> bool:
    return any(hint.search(data) for hint in _SURROGATE_HINTS)


def _has_lone_surrogate(obj: dict) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _as_written(v: object) -> str | None:
    """A value of a column of mixed types: a string as it is, anything else as its JSON
    text (5 → "5", true → "true", [1] → "[1]"), null as null."""
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v)


def _rows_to_table(rows: list[dict], cols: Columns) -> pa.Table:
    """Build a table from JSON objects (``Skip`` rows: empty, with their reason); values
    of other types than the text column's become nulls with a skip reason instead of
    failing the whole shard.

    A column whose values Arrow cannot hold in one type (a number among strings, strings
    among objects, an integer beyond int64) is a string column of the values as written:
    strings as they are, other values as their JSON text, so a key ``5`` among string keys
    is ``"5"`` (its decimal digits, the key its coins hash), and no string gains quotes.
    The key column is no exception: it holds what the user wrote."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    data = {}
    skip = [(r.reason if isinstance(r, Skip) else None) for r in rows]
    for name in names:
        values = [r.get(name) for r in rows]
        if name == cols.text:
            is_list = any(isinstance(v, list) for v in values)
            clean = []
            for i, v in enumerate(values):
                if is_list and isinstance(v, str):
                    v = [v]  # a lone text in a pool of text lists
                ok = (
                    isinstance(v, list) and all(isinstance(x, str) for x in v)
                    if is_list
                    else isinstance(v, str)
                )
                if v is not None and not ok:
                    skip[i] = skip[i] or "non_string_text"
                    v = None
                clean.append(v)
            typ = pa.list_(pa.large_string()) if is_list else pa.large_string()
            data[name] = pa.array(clean, type=typ)
            continue
        try:
            data[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types, huge ints
            data[name] = pa.array([_as_written(v) for v in values], pa.string())
    table = pa.table(data) if data else pa.table({"__empty": pa.nulls(len(rows))})
    return table.append_column("__skip", pa.array(skip, type=pa.string()))


def read_jsonl(
    path: Path, cols: Columns, use_threads: bool = True, max_text_bytes: int = MAX_TEXT_BYTES
) -> pa.Table:
    table = _jsonl_arrow(path, cols, use_threads)
    return _jsonl_rows(path, cols, max_text_bytes) if table is None else table


def _lines(path: Path, limit: int) -> Iterator[tuple[bytes | None, bool]]:
    """The file's lines without their newline, each with whether it may hold a lone
    surrogate (``_may_hold_surrogate``, searched once per block of the file, not per
    line); ``None`` for a line longer than ``limit`` bytes, never held in memory whole."""
    with path.open("rb") as f:
        pending: list[bytes] | None = []  # a line's start (None: too long, dropped)
        pending_bytes = 0
        while block := f.read(_LINES_BLOCK):
            flagged = _may_hold_surrogate(block)
            lines = block.split(b"\n")
            rest = lines.pop()  # goes on in the next block
            start = 0
            if lines and pending_bytes:  # the line under way ends in this block
                yield _whole(pending, pending_bytes, lines[0], limit)
                pending, pending_bytes, start = [], 0, 1
            for line in itertools.islice(lines, start, None):
                yield (line if len(line) <= limit else None), flagged
            if rest:
                pending_bytes += len(rest)
                if pending is not None and pending_bytes <= limit:
                    pending.append(rest)
                else:
                    pending = None
        if pending_bytes:  # the last line, without a newline
            yield _whole(pending, pending_bytes, b"", limit)


def _whole(
    parts: list[bytes] | None, size: int, end: bytes, limit: int
) -> tuple[bytes | None, bool]:
    """A line read in parts (``_lines``), with its flag."""
    if parts is None or size + len(end) > limit:
        return None, False
    line = b"".join([*parts, end])
    return line, _may_hold_surrogate(line)


def _jsonl_rows(path: Path, cols: Columns, max_text_bytes: int = MAX_TEXT_BYTES) -> pa.Table:
    """Row by row in Python: every line that is not a JSON object is a counted skip."""
    rows = []
    first_bad: tuple[int, bytes] | None = None
    for number, (line, flagged) in enumerate(_lines(path, row_bytes_limit(max_text_bytes)), 1):
        if line is not None and not line.strip():
            continue
        row = _json_row(line, flagged)
        if first_bad is None and isinstance(row, Skip) and row.reason == "malformed_row":
            first_bad = (number, line or b"")
        rows.append(row)
    if first_bad and all(isinstance(r, Skip) and r.reason == "malformed_row" for r in rows):
        # Not one object: the wrong kind of file (e.g. one JSON array), not bad rows.
        at, text = first_bad
        first = text[:60].decode("utf-8", "replace")
        raise InputError(
            f"{path}: no line is a JSON object (line {at}: {first!r}); JSON-lines "
            "shards hold one object per line"
        )
    return _rows_to_table(rows, cols)


def _jsonl_arrow(path: Path, cols: Columns, use_threads: bool) -> pa.Table | None:
    """The shard through pyarrow's JSON reader (C++, ~6x the row-by-row path) when it gives
    the table that path builds (see ``_arrow_json``); else None."""
    table = _arrow_json(path, cols, use_threads)
    if table is None:
        return None
    return table.append_column("__skip", pa.nulls(table.num_rows, pa.string()))


def _arrow_json(source: Path | pa.Buffer, cols: Columns, use_threads: bool) -> pa.Table | None:
    """JSON lines (a file or a buffer) read by pyarrow, typed as the row-by-row path types
    them; None where only that path builds the right table: a line that is not a JSON
    object, or not UTF-8 (pyarrow does not check) or holding a lone surrogate, a column
    whose type changes between rows, a text that is not a string (a counted skip there),
    an integer beyond int64, or beyond 2**53 among floats (pyarrow would round it to a
    float; kept as its JSON text there), a nested string that pyarrow reads as a
    timestamp, a list of nothing but nulls, or no rows. Top-level strings that pyarrow
    reads as timestamps are read again as strings; a table with lists is read again with
    its inferred types."""
    import pyarrow.json as pj

    def read(explicit: pa.Schema | None = None) -> pa.Table:
        return pj.read_json(
            source if isinstance(source, Path) else pa.BufferReader(source),
            read_options=pj.ReadOptions(use_threads=use_threads, block_size=JSONL_BLOCK),
            parse_options=pj.ParseOptions(
                explicit_schema=explicit, unexpected_field_behavior="infer"
            ),
        )

    try:
        table = read()
        schema = table.schema
        stamps = any(pa.types.is_timestamp(f.type) for f in schema)
        # pyarrow (26) misreads a list whose first items are null while it infers the
        # items' type ([null, 1] -> [1, 0]); read with the inferred types it is right.
        lists = any(_has_type(f.type, pa.types.is_list) for f in schema)
        if stamps or lists:  # one more read, with the types given
            fields = [
                f.with_type(pa.string()) if pa.types.is_timestamp(f.type) else f for f in schema
            ]
            table = read(pa.schema(fields))
        table.validate(full=True)  # UTF-8: rows that are not are skips row by row
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError):
        return None
    if table.num_rows == 0 or table.num_columns == 0:
        return None
    for i, field in enumerate(table.schema):
        if _has_type(field.type, _is_timestamp_or_null_list) or _has_huge_float(table.column(i)):
            return None
        if field.name == cols.text:
            typ = _text_type(table.column(i))
            if typ is None:
                return None
            table = table.set_column(i, field.name, table.column(i).cast(typ))
    return table


def _text_type(col: pa.ChunkedArray) -> pa.DataType | None:
    """The row-by-row path's type for a text column read by pyarrow (None: that path
    must judge it: texts that are not strings, or lists holding a null)."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_null(t):
        return pa.large_string()
    if pa.types.is_list(t) and (pa.types.is_string(t.value_type) or pa.types.is_null(t.value_type)):
        if pc.list_flatten(col).null_count == 0:
            return pa.list_(pa.large_string())
    return None


def _is_timestamp_or_null_list(t: pa.DataType) -> bool:
    # Lists of nulls only: pyarrow (26) gives them fewer items than their offsets say.
    return pa.types.is_timestamp(t) or (pa.types.is_list(t) and pa.types.is_null(t.value_type))


def _has_type(t: pa.DataType, test) -> bool:
    if test(t):
        return True
    return any(_has_type(t.field(i).type, test) for i in range(t.num_fields))


def _has_huge_float(col: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a float in ``col`` (at any depth) is at least 2**53: where it was an integer
    literal (beyond int64, or mixed with floats), pyarrow rounded it. Float literals that
    large take the row-by-row path too, which types them the same."""
    t = col.type
    if pa.types.is_floating(t):
        top = pc.max(pc.abs(col)).as_py()
        return top is not None and top >= EXACT_LIMIT
    if pa.types.is_struct(t):
        return any(_has_huge_float(pc.struct_field(col, [i])) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_huge_float(pc.list_flatten(col))
    return False
