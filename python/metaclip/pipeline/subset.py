"""The subset files: kept rows in input order, ``rows_per_file`` per file, one type per
column across files, and parquet options chosen per column. Their bytes do not depend on
the pool's sharding, the worker count or the engine."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaclip._arrow import is_binary_type
from metaclip.exceptions import InputError
from metaclip.pipeline import stages
from metaclip.pipeline.config import Config
from metaclip.pipeline.io import atomic_write, file_id, read_json
from metaclip.pipeline.pool import Shard
from metaclip.pipeline.scheduling import PoolTables
from metaclip.pipeline.shard import read_for_write
from metaclip.pipeline.workfiles import (
    KEPT,
    load_arrays,
    part_name,
    read_arrow,
    read_subset_schema,
)


class SchemaDrift(Exception):
    """A string column held invalid UTF-8 in kept rows (its parquet footer said string):
    the subset must store it as binary, in every file, so the write starts over."""

    def __init__(self, columns: set[str]) -> None:
        super().__init__(f"columns stored as binary: {sorted(columns)}")
        self.columns = columns


@dataclass
class SubsetWriter:
    """Writes the subset files: kept rows in input order, ``rows_per_file`` per file, so
    the files do not depend on how the pool was sharded or on the worker count.

    Part ``i`` holds kept rows ``[i·step, (i+1)·step)``; it is made from slices of the
    shards' subset rows (each shard read once per process while its parts are written)."""

    cfg: Config
    offsets: dict[str, int]  # language → its first global entry id (languages in order)
    shards: dict[str, Shard]
    match_dir: Path
    sample_dir: Path
    binary: frozenset[str] = frozenset()
    tables: PoolTables | None = None

    def plan(self) -> tuple[list[dict], pa.Schema, int]:
        """(parts, unified schema, total rows). Each part lists (shard, start, length)
        slices of the shards' kept rows."""
        names = list(self.shards)
        kept = np.array([read_json(self.sample_dir / f"{n}.json")["kept"] for n in names])
        schemas = [read_subset_schema(self.match_dir / f"{n}.npz") for n in names]
        schema = self.unify(schemas)
        for col in self.binary:
            i = schema.get_field_index(col)
            big = pa.types.is_large_string(schema.field(i).type)
            typ = pa.large_binary() if big else pa.binary()
            schema = schema.set(i, schema.field(i).with_type(typ))
        step = max(1, self.cfg.rows_per_file)
        total = int(kept.sum())
        starts = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
        parts = []
        for i, lo in enumerate(range(0, max(total, 1), step)):
            hi = min(total, lo + step)
            part: dict = {"part": i, "step": step, "names": [], "starts": [], "lengths": []}
            for j in np.flatnonzero((starts[:-1] < hi) & (starts[1:] > lo)):
                a, b = max(lo, starts[j]), min(hi, starts[j + 1])
                part["names"].append(names[j])
                part["starts"].append(int(a - starts[j]))
                part["lengths"].append(int(b - a))
            parts.append(part)
        return parts, schema, total

    def unify(self, schemas: list[pa.Schema]) -> pa.Schema:
        """One schema for every subset file (a column that is null in one shard and int in
        another is int; string in one and binary in another is binary). Types that cannot
        be reconciled are an ``InputError`` naming two shards and the column."""
        try:
            return pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        seen: dict[str, tuple[pa.DataType, str]] = {}
        for shard, schema in zip(self.shards.values(), schemas, strict=True):
            for field in schema:
                typ, where = seen.setdefault(field.name, (field.type, str(shard.path)))
                try:
                    pa.unify_schemas(
                        [pa.schema([(field.name, typ)]), pa.schema([field])],
                        promote_options="permissive",
                    )
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    raise InputError(
                        f"column {field.name!r} is {typ} in {where} but {field.type} in "
                        f"{shard.path}: the subset files need one type per column"
                    ) from None
        raise InputError("the pool shards have columns of incompatible types")

    def shard_subset(self, name: str, all_matched: bool = False) -> pa.Table:
        """All kept rows of one shard (``all_matched``: every row that matched an entry, for
        online curation): from the table the match stage kept, else the shard read in full
        (the only time after the match stage that texts are read). A shard whose file is
        no longer the one the match stage read is an ``InputError``: its rows would get the
        entry ids of other texts."""
        cfg, shard = self.cfg, self.shards[name]
        matched = read_json(self.match_dir / f"{name}.json")["file"]
        table = self.tables.take(name) if self.tables else None
        if table is None:
            self._check_unchanged(shard, matched)
            table = read_for_write(shard, cfg)
        self._check_unchanged(shard, matched)
        matches = read_arrow(self.match_dir / f"{name}.arrow")
        if table.num_rows != matches.num_rows:
            raise InputError(
                f"{shard.path}: has {table.num_rows} rows, the match stage saw "
                f"{matches.num_rows}; the pool changed during the run (delete {self.cfg.out})"
            )
        if all_matched:
            lengths = pc.list_value_length(matches.column("entry_ids")).fill_null(0)
            mask = lengths.to_numpy() > 0
        else:
            (bits,) = load_arrays(self.sample_dir / f"{name}.npz", KEPT)
            mask = np.unpackbits(bits, count=len(table)).astype(bool)
        kept = stages.select_matches(matches, mask)
        # Row by row in Rust: the same value the whole shard's computation gives each row.
        prob = stages.keep_probability(*stages.global_csr(kept, self.offsets), self.probs)
        table = stages.select_rows(table, mask)
        return stages.subset_table(table, kept, prob, list(self.offsets))

    def _check_unchanged(self, shard: Shard, matched: list[int]) -> None:
        if file_id(shard.path) != matched:
            raise InputError(
                f"{shard.path}: changed since the match stage read it (the pool changed "
                "during the run); run again to match it anew"
            )

    @functools.cached_property
    def probs(self) -> np.ndarray:
        return load_arrays(self.sample_dir / "probs.npy")[0]

    def write_part(
        self, part: dict, out_dir: Path, schema: pa.Schema, get: Callable | None = None
    ) -> int:
        """Write ``part-{i:05d}.parquet``; returns its rows. ``get(name)`` gives a shard's
        subset rows (a shared cache in the embedded engine)."""
        get = get or self.shard_subset
        slices, drift = [], set()
        for name, start, length in zip(part["names"], part["starts"], part["lengths"], strict=True):
            piece = get(name).slice(start, length)
            for i, field in enumerate(piece.schema):
                want = schema.field(field.name).type
                if field.type != want and is_binary_type(field.type) and not is_binary_type(want):
                    try:
                        piece = piece.set_column(i, field.name, piece.column(i).cast(want))
                    except pa.ArrowInvalid:
                        drift.add(field.name)
            slices.append(piece)
        if drift:
            raise SchemaDrift(drift)
        chunk = pa.concat_tables([schema.empty_table(), *slices], promote_options="permissive")
        chunk = canonical_chunks(chunk.cast(schema))
        path = out_dir / part_name(part["part"])
        step = max(1, part["step"])
        options = parquet_options(schema, self.cfg)
        atomic_write(
            path,
            lambda p: pq.write_table(
                chunk, p, row_group_size=step, compression=self.cfg.compression, **options
            ),
        )
        return chunk.num_rows


def parquet_options(schema: pa.Schema, cfg: Config) -> dict:
    """Per-column encodings of the subset files. A dictionary pays off on repeated values
    (the language, a source column) but only costs time on columns whose values are
    (nearly) all distinct (keys, texts, image keys, entry-id lists, keep probabilities):
    there the writer builds a dictionary, then falls back to plain. Entry ids are sorted
    within a row, so delta encoding packs them about as tight as a dictionary, faster."""
    ours = {n.removeprefix("metaclip_"): n for n in schema.names[-3:]}  # see subset_table
    ids, prob = ours.get("entry_ids"), ours.get("keep_prob")
    distinct = {c for c in (cfg.key_column, cfg.text_column, cfg.image_column, ids, prob) if c}
    buf = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buf)
    leaves = pq.ParquetFile(pa.BufferReader(buf.getvalue())).schema  # parquet column paths
    dictionary = [
        path
        for path in (leaves.column(i).path for i in range(len(leaves)))
        if not any(path == d or path.startswith(f"{d}.") for d in distinct)
    ]
    delta = {f"{ids}.list.element": "DELTA_BINARY_PACKED"} if ids else None
    # Page checksums let a reader detect a corrupted page (the user's integrity promise).
    return {"use_dictionary": dictionary, "column_encoding": delta, "write_page_checksum": True}


# Rows per Arrow chunk handed to the parquet writer (see ``canonical_chunks``). Small, so
# that few rows are copied: only a chunk that straddles two input chunks is.
WRITE_CHUNK = 1 << 12


def canonical_chunks(table: pa.Table, step: int = WRITE_CHUNK) -> pa.Table:
    """The table re-chunked at every ``step`` rows. The parquet writer's bytes depend on
    where chunks start, so fixed boundaries make a file's bytes independent of the shard
    slices it was made from; only chunks that straddle a slice boundary are copied."""
    columns = []
    for col in table.columns:
        out = []
        for lo in range(0, len(col), step):
            parts = [c for c in col.slice(lo, step).chunks if len(c)]
            out.append(parts[0] if len(parts) == 1 else pa.concat_arrays(parts))
        columns.append(pa.chunked_array(out, type=col.type))
    return pa.table(columns, schema=table.schema)
