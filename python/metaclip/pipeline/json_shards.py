"""JSON-lines shards and WebDataset-style tars (``{key}.json`` members beside images).

Two readers build the same table for a shard: pyarrow's JSON reader (C++; tar members are
joined into JSON lines in Rust first), and row by row with Python's ``json``, where a line
or member that is not a JSON object becomes a counted skip. The fast one is used when it
gives exactly what the row-by-row one would (``_arrow_json`` says when not).
"""

from __future__ import annotations

import io
import json
import tarfile
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


def _json_rows(lines: list[bytes]) -> list[dict]:
    """One dict per non-blank line; a line that is not a JSON object becomes a marker row
    (``__skip_row`` = its 1-based line number) that is counted as ``malformed_row``."""
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            rows.append(obj)
        except (ValueError, UnicodeDecodeError):
            rows.append({"__skip_row": i + 1})
    return rows


def _rows_to_table(rows: list[dict], cols: Columns) -> pa.Table:
    """Build a table from JSON objects; values of other types than the column's become
    nulls with a skip reason instead of failing the whole shard."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    names.pop("__skip_row", None)
    data = {}
    skip = [("malformed_row" if "__skip_row" in r else None) for r in rows]
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
            data[name] = pa.array([None if v is None else json.dumps(v) for v in values])
    table = pa.table(data) if data else pa.table({"__empty": pa.nulls(len(rows))})
    return table.append_column("__skip", pa.array(skip, type=pa.string()))


def read_jsonl(path: Path, cols: Columns, use_threads: bool = True) -> pa.Table:
    table = _jsonl_arrow(path, cols, use_threads)
    return _jsonl_rows(path, cols) if table is None else table


def _jsonl_rows(path: Path, cols: Columns) -> pa.Table:
    """Row by row in Python: every line that is not a JSON object is a counted skip."""
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows = _json_rows(lines)
    if rows and all("__skip_row" in r for r in rows):
        # Not one object: the wrong kind of file (e.g. one JSON array), not bad rows.
        at = rows[0]["__skip_row"]
        first = lines[at - 1][:60].decode("utf-8", "replace")
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
    object, a column whose type changes between rows, a text that is not a string (a
    counted skip there), an integer beyond int64, or beyond 2**53 among floats (pyarrow
    would round it to a float; kept as its JSON text there), a nested string that
    pyarrow reads as a timestamp, a list of nothing but nulls, or no rows. Top-level
    strings that pyarrow reads as timestamps are read again as strings; a table with
    lists is read again with its inferred types."""
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


def read_tar(path: Path, cols: Columns, use_threads: bool = True) -> pa.Table:
    """WebDataset layout: members ``{key}.json`` (texts) beside ``{key}.jpg`` etc."""
    table = _tar_arrow(path, cols, use_threads)
    return _tar_rows(path, cols) if table is None else table


def _tar_arrow(path: Path, cols: Columns, use_threads: bool) -> pa.Table | None:
    """The JSON members joined into JSON lines in Rust (each with its key field) and read
    by pyarrow: the table ``_tar_rows`` builds, or None where only it builds it."""
    from metaclip import _core

    got = _core.tar_json_lines(str(path), cols.key)
    if got is None:
        return None
    lines, rows, first_fields, stems, names = got
    table = _arrow_json(pa.py_buffer(lines), cols, use_threads)
    if table is None or table.num_rows != rows or "image_member" in table.column_names:
        return None
    key_type = table.schema.field(cols.key).type
    if not (pa.types.is_string(key_type) or pa.types.is_integer(key_type)):
        return None  # str() of other values is Python's to decide
    if stems:
        images = dict(zip(stems, names, strict=True))
        member = pa.array([images.get(str(k)) for k in table.column(cols.key).to_pylist()])
    else:  # no image members: what pa.array gives for all-None values
        member = pa.nulls(table.num_rows)
    # The row-by-row reader gives each row ``image_member`` after its own fields, so the
    # column follows the first row's fields.
    table = table.add_column(first_fields, "image_member", member)
    return table.append_column("__skip", pa.nulls(table.num_rows, pa.string()))


def _tar_rows(path: Path, cols: Columns) -> pa.Table:
    """Member by member in Python: a member that is not a JSON object is a counted skip."""
    rows: list[dict] = []
    images: dict[str, str] = {}
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                if not m.isfile():
                    continue
                stem, _, ext = m.name.rpartition(".")
                if ext == "json":
                    f = tar.extractfile(m)
                    raw = f.read() if f else b""
                    parsed = _json_rows([raw.replace(b"\n", b" ")])
                    row = parsed[0] if parsed else {"__skip_row": 1}
                    row.setdefault(cols.key, Path(stem).name)
                    rows.append(row)
                elif ext.lower() in ("jpg", "jpeg", "png", "webp"):
                    images[Path(stem).name] = m.name
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read tar ({e})") from None
    for r in rows:
        r["image_member"] = images.get(str(r.get(cols.key)))
    return _rows_to_table(rows, cols)


def write_tar_shard(path: Path, rows: list[dict], key: str = "key") -> None:
    """Write JSON rows as a WebDataset tar (``{key}.json`` members), for tests and demos."""
    with tarfile.open(path, "w") as tar:
        for r in rows:
            data = json.dumps(r, ensure_ascii=False).encode()
            info = tarfile.TarInfo(f"{r[key]}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
