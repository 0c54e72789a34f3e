"""WebDataset-style tar shards: ``{key}.json`` members (the rows) beside ``{key}.jpg`` etc.

The JSON members are joined into JSON lines in Rust and read like a JSON-lines shard
(``json_shards``), or, where that would not give the same table, member by member with
``tarfile``. A tar cut short is an ``InputError`` in both readers, with the same words.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from metaclip._tar import IMAGE_EXTS, StrictTarInfo, truncated
from metaclip.exceptions import InputError
from metaclip.pipeline.json_shards import (
    MAX_TEXT_BYTES,
    Skip,
    _arrow_json,
    _json_row,
    _rows_to_table,
    row_bytes_limit,
)

if TYPE_CHECKING:
    from metaclip.pipeline.config import Columns


def read_tar(
    path: Path, cols: Columns, use_threads: bool = True, max_text_bytes: int = MAX_TEXT_BYTES
) -> pa.Table:
    """WebDataset layout: members ``{key}.json`` (texts) beside ``{key}.jpg`` etc. A tar cut
    short (see ``metaclip._tar``) is an ``InputError``."""
    table = _tar_arrow(path, cols, use_threads, max_text_bytes)
    return _tar_rows(path, cols, max_text_bytes) if table is None else table


def _tar_arrow(
    path: Path, cols: Columns, use_threads: bool, max_text_bytes: int = MAX_TEXT_BYTES
) -> pa.Table | None:
    """The JSON members joined into JSON lines in Rust (each with its key field) and read
    by pyarrow: the table ``_tar_rows`` builds, or None where only it builds it."""
    from metaclip import _core

    got = _core.tar_json_lines(str(path), cols.key, row_bytes_limit(max_text_bytes))
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


def _tar_rows(path: Path, cols: Columns, max_text_bytes: int = MAX_TEXT_BYTES) -> pa.Table:
    """Member by member in Python: a member that is not a JSON object, or longer than
    ``row_bytes_limit`` (not read), is a counted skip."""
    limit = row_bytes_limit(max_text_bytes)
    rows: list[dict] = []
    images: dict[str, str] = {}
    try:
        with tarfile.open(path, tarinfo=StrictTarInfo) as tar:
            for m in tar:
                if not m.isfile():
                    continue
                stem, _, ext = m.name.rpartition(".")
                if ext == "json":
                    if m.size > limit:
                        row: dict = Skip("too_long")
                    else:
                        f = tar.extractfile(m)
                        raw = f.read() if f else b""
                        row = _json_row(raw.replace(b"\n", b" "))
                    row.setdefault(cols.key, Path(stem).name)
                    rows.append(row)
                elif ext.lower() in IMAGE_EXTS:
                    images[Path(stem).name] = m.name
    except tarfile.ReadError as e:
        # tarfile's own words for a member's data cut short; its other words on one line
        # (tarfile.open lists what each decompressor said, a line each)
        why = truncated(path) if str(e) == "unexpected end of data" else " ".join(str(e).split())
        raise InputError(f"{path}: cannot read tar ({why})") from None
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
