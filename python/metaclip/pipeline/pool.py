"""Reading a pool: parquet, JSON-lines or WebDataset-style tar shards.

Every shard is read into one Arrow table with the user's columns intact plus the
standard columns the stages need: ``__key`` (sample key), ``__text`` (large_string, nulls
for unusable texts), ``__image`` (unit key for image-level sampling) and ``__lang``
(optional). Rows whose text cannot be used are never dropped here: they keep a null
``__text`` and a reason in ``__skip`` so the stages count them.

JSON-lines shards and the JSON members of tars are read in ``json_shards``.
"""

from __future__ import annotations

import glob
import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip._arrow import contiguous
from metaclip.exceptions import InputError
from metaclip.pipeline import json_shards, tar_shards
from metaclip.pipeline.config import Columns

if TYPE_CHECKING:
    import pyarrow.parquet as pq

SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".tar": "tar"}
SKIP_REASONS = (
    "null_text", "non_string_text", "invalid_utf8", "too_long", "malformed_row", "null_key",
)  # fmt: skip


@dataclass(frozen=True)
class Shard:
    path: Path
    kind: str
    index: int

    @property
    def name(self) -> str:
        """Names the shard's work files: its file, not its place in the pool (removing a
        shard leaves the others' work in place)."""
        digest = hashlib.sha256(str(self.path).encode()).hexdigest()[:12]
        return f"{self.path.stem}-{digest}"


def discover(spec: str | Path | list[str | Path]) -> list[Shard]:
    """Shards of a pool: a file, a directory (all known suffixes) or a glob; sorted by path.

    Only regular files (or links to them) are shards: a FIFO, device or socket named as a
    shard is an ``InputError`` (reading one would wait for a writer, or never end); one
    in a folder or matched by a glob is passed over, as files of other suffixes are."""
    specs = spec if isinstance(spec, list) else [spec]
    paths: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            paths += [q for q in p.rglob("*") if q.suffix in SUFFIXES and q.is_file()]
        elif p.is_file():
            paths.append(p)
        elif p.exists():
            raise InputError(f"{p}: not a regular file ({_kind(p)}); pool shards are files")
        else:
            paths += [q for q in map(Path, glob.glob(str(s), recursive=True)) if q.is_file()]
    paths = sorted({p.resolve() for p in paths if p.suffix in SUFFIXES})
    if not paths:
        raise InputError(f"no pool shards (.parquet, .jsonl, .tar) found at {spec}")
    return [Shard(p, SUFFIXES[p.suffix], i) for i, p in enumerate(paths)]


def _kind(p: Path) -> str:
    mode = p.stat().st_mode
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]  # fmt: skip
    return next((what for test, what in kinds if test(mode)), "not a file")


@dataclass(frozen=True)
class Footer:
    """What a parquet shard's footer tells without reading its data."""

    rows: int
    decoded_bytes: int  # the row groups' uncompressed sizes, close to Arrow's


def read_footer(shard: Shard) -> Footer | None:
    """The footer of a parquet shard; None for other kinds or an unreadable footer."""
    if shard.kind != "parquet":
        return None
    try:
        meta = parquet_file(shard.path).metadata
    except Exception:
        return None
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return Footer(meta.num_rows, size)


def parquet_file(path: Path) -> pq.ParquetFile:
    """A parquet shard opened for reading, its data pages' checksums verified where the
    writer stored them (a corrupt page is an error, not wrong values; a few percent of
    the decode, see ``read_parquet``)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, page_checksum_verification=True)


def read_parquet(
    shard: Shard, columns: dict[str, str] | None = None, use_threads: bool = True
) -> pa.Table:
    """A parquet shard as stored (string columns holding invalid UTF-8 come back as
    binary), or only ``columns`` (name → what it is, e.g. "text"); a missing column or an
    unreadable file is an ``InputError``, and so is a data page whose checksum (written
    with ``write_page_checksum``) does not match its bytes."""
    import pyarrow.parquet as pq

    wanted = None if columns is None else list(columns)
    try:
        with parquet_file(shard.path) as f:
            if columns is not None:
                names = f.schema_arrow.names
                missing = [c for c in columns if c not in names]
                if missing and f.metadata.num_rows:
                    raise InputError(no_column(shard, missing[0], columns[missing[0]], names))
                wanted = [c for c in columns if c in names]
            # One chunk per row group: read_table cuts row groups into batches, which the
            # stages would then copy back into one array.
            return without_views(f.read(columns=wanted, use_threads=use_threads))
    except pa.ArrowInvalid as e:
        if "UTF8" not in str(e):
            raise InputError(f"{shard.path}: cannot read parquet ({e})") from None
    except OSError as e:
        raise InputError(f"{shard.path}: cannot read parquet ({e})") from None
    # Some string column holds invalid UTF-8: read strings as bytes; the text is checked
    # row by row later and bad rows are counted as skips.
    schema = pq.read_schema(shard.path)
    as_bytes = pa.schema(
        [f.with_type(pa.binary()) if pa.types.is_string(f.type) else f for f in schema]
    )
    try:
        table = pq.read_table(
            shard.path,
            schema=as_bytes,
            columns=wanted,
            use_threads=use_threads,
            page_checksum_verification=True,
        )
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{shard.path}: cannot read parquet ({e})") from None
    strings = [
        f.name for f in schema if pa.types.is_string(f.type) and f.name in table.column_names
    ]
    for name in strings:
        col = table.column(name)
        try:
            fixed = col.cast(pa.string())
        except pa.ArrowInvalid:
            continue  # keep as binary; the text column is cleaned per row
        table = table.set_column(table.schema.get_field_index(name), name, fixed)
    return without_views(table)


def without_views(table: pa.Table) -> pa.Table:
    """String and binary view columns (written by newer tools) as large string and binary
    ones: the same values, and Arrow (26) has no take or filter for views, which the
    stages need."""
    for i, field in enumerate(table.schema):
        plain = _unviewed(field.type)
        if plain != field.type:
            table = table.set_column(i, field.with_type(plain), table.column(i).cast(plain))
    return table


def _unviewed(t: pa.DataType) -> pa.DataType:
    if getattr(pa.types, "is_string_view", None) is None:  # pyarrow < 16: no views
        return t
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    return t


def read_shard(
    shard: Shard,
    cols: Columns,
    max_text_bytes: int,
    only_needed: bool = False,
    use_threads: bool = True,
) -> pa.Table:
    """The shard with the standard ``__`` columns added (see module docstring).
    ``only_needed``: read just the key/text/lang/image columns (parquet) for matching.
    ``use_threads``: decode parquet columns in parallel (off when shards already run in
    parallel: the extra threads only compete)."""
    if shard.kind == "parquet":
        # In the order standardize checks them, so that a missing column gets one error.
        roles = {"text": cols.text, "key": cols.key, "image": cols.image, "lang": cols.lang}
        wanted = {name: what for what, name in roles.items() if name}
        table = read_parquet(shard, wanted if only_needed else None, use_threads)
        return standard_parquet(table, shard, cols, max_text_bytes)
    if shard.kind == "jsonl":
        table = json_shards.read_jsonl(shard.path, cols, use_threads, max_text_bytes)
    else:
        table = tar_shards.read_tar(shard.path, cols, use_threads, max_text_bytes)
    return standardize(table, shard, cols, max_text_bytes)


def standard_parquet(table: pa.Table, shard: Shard, cols: Columns, max_text_bytes: int) -> pa.Table:
    """A table read from a parquet shard with the standard columns added (parquet rows
    are never skipped as unparsable: ``__skip`` is all null)."""
    table = table.append_column("__skip", pa.nulls(table.num_rows, pa.string()))
    return standardize(table, shard, cols, max_text_bytes)


def _require(table: pa.Table, name: str, shard: Shard, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        if table.num_rows == 0:
            return pa.chunked_array([pa.nulls(0, pa.large_string())])
        shown = [c for c in table.column_names if not c.startswith("__")]
        raise InputError(no_column(shard, name, what, shown))
    return table.column(name)


def no_column(shard: Shard, name: str, what: str, columns: list[str]) -> str:
    return (
        f"{shard.path}: no {what} column {name!r} (columns: {columns}); "
        f"name it with --{what}-column"
    )


def standardize(table: pa.Table, shard: Shard, cols: Columns, max_text_bytes: int) -> pa.Table:
    n = table.num_rows
    skip = contiguous(table.column("__skip"))
    text = contiguous(_require(table, cols.text, shard, "text"))
    key = contiguous(_require(table, cols.key, shard, "key"))
    key = key.cast(pa.large_string())
    if key.null_count:
        # Without a key a row has no coins: it is skipped (counted as null_key).
        nulls = key.is_null().to_numpy(zero_copy_only=False)
        skip = _mark(skip.cast(pa.string()), nulls, "null_key")
        filler = pa.array([f"__row{i}" for i in range(n)], pa.large_string())
        key = pc.if_else(pa.array(nulls), filler, key)
    image = key
    if cols.image:
        image = contiguous(_require(table, cols.image, shard, "image")).cast(pa.large_string())
        if image.null_count:  # no image key (e.g. a malformed row): the row is its own image
            image = pc.if_else(image.is_null(), key, image)
    if pa.types.is_list(text.type) or pa.types.is_large_list(text.type):
        # Several texts per image: one row per text, the image key shared.
        lengths = pc.fill_null(pc.list_value_length(text), 0).to_numpy(zero_copy_only=False)
        if (lengths == 0).any():
            # A null or empty list stays one row (with a null text, counted as skipped).
            text = pc.if_else(
                pc.greater(pc.fill_null(pc.list_value_length(text), 0), 0),
                text,
                pa.scalar([None], text.type),
            )
            lengths = np.maximum(lengths, 1)
        parent = np.repeat(np.arange(n), lengths)
        table = table.take(pa.array(parent))
        image = image.take(pa.array(parent))
        skip = skip.take(pa.array(parent))
        flat = pc.list_flatten(text)
        sub = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        key = pc.binary_join_element_wise(
            key.take(pa.array(parent)).cast(pa.string()), pa.array(sub.astype(str)), "#"
        ).cast(pa.large_string())
        text = flat
        # Each row now holds one of the image's texts (the one it was matched on).
        table = table.set_column(table.schema.get_field_index(cols.text), cols.text, flat)
        n = table.num_rows
    text, reasons = _clean_text(text, skip, shard, cols, max_text_bytes)
    out = table.drop_columns(["__skip"])
    out = out.append_column("__key", key)
    out = out.append_column("__image", image)
    out = out.append_column("__text", text)
    out = out.append_column("__skip", reasons)
    if cols.lang:
        lang = contiguous(_require(table, cols.lang, shard, "lang")).cast(pa.string())
        out = out.append_column("__lang", lang)
    return out


def _mark(reasons: pa.Array, where: np.ndarray, reason: str) -> pa.Array:
    """Set ``reason`` on rows in ``where`` that have no reason yet (vectorized)."""
    if not where.any():
        return reasons
    fresh = (
        pa.array(where)
        if reasons.null_count == len(reasons)
        else pc.and_(pa.array(where), reasons.is_null())
    )
    return pc.if_else(fresh, pa.scalar(reason, pa.string()), reasons)


def _clean_text(
    text: pa.Array, skip: pa.Array, shard: Shard, cols: Columns, max_text_bytes: int
) -> tuple[pa.Array, pa.Array]:
    """(text with unusable rows nulled, skip reason per row); no per-row Python work
    unless the column holds bytes that are not all valid UTF-8."""
    n = len(text)
    reasons = skip.cast(pa.string())
    text = _plain(text)
    if pa.types.is_null(text.type):
        text = pa.nulls(n, pa.large_string())
    elif pa.types.is_binary(text.type) or pa.types.is_large_binary(text.type):
        text = text.cast(pa.large_binary())
        try:
            text = text.cast(pa.large_string())  # validates UTF-8 in one pass
        except pa.ArrowInvalid:
            bad = np.array([v is not None and not _is_utf8(v) for v in text.to_pylist()])
            reasons = _mark(reasons, bad, "invalid_utf8")
            text = pc.if_else(pa.array(~bad), text, pa.nulls(n, pa.large_binary()))
            text = text.cast(pa.large_string())
    elif pa.types.is_string(text.type) or pa.types.is_large_string(text.type):
        text = text.cast(pa.large_string())
        # Arrow may hold unvalidated bytes read from parquet: check, don't trust.
        try:
            text.validate(full=True)
        except pa.ArrowInvalid:
            return _clean_text(text.view(pa.large_binary()), skip, shard, cols, max_text_bytes)
    else:
        raise InputError(
            f"{shard.path}: the text column {cols.text!r} has type {text.type}, not a string"
        )
    if text.null_count:
        reasons = _mark(reasons, text.is_null().to_numpy(zero_copy_only=False), "null_text")
    lengths = pc.fill_null(pc.binary_length(text), 0).to_numpy(zero_copy_only=False)
    reasons = _mark(reasons, lengths > max_text_bytes, "too_long")
    if reasons.null_count < n:
        text = pc.if_else(reasons.is_null(), text, pa.nulls(n, pa.large_string()))
    return text, reasons


def _plain(text: pa.Array) -> pa.Array:
    """A dictionary-encoded text column (e.g. from a pandas categorical) as the plain
    column of its values; views (in lists of texts) as large strings."""
    if pa.types.is_dictionary(text.type):
        return _plain(text.dictionary_decode())
    plain = _unviewed(text.type)
    return text if plain == text.type else text.cast(plain)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
