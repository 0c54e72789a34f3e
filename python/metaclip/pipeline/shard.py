"""The per-shard work of the match and sample stages, with their work files (see
``workfiles``): what both engines run for one shard, so their outputs are the same files.
Also what the write stage reads of a shard (``read_for_write``) and the LID glue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip import core
from metaclip._arrow import contiguous, is_list_type
from metaclip.pipeline import keys, stages
from metaclip.pipeline.config import Config
from metaclip.pipeline.io import atomic_write, file_id, write_json
from metaclip.pipeline.metadata import Metadata
from metaclip.pipeline.pool import (
    Shard,
    read_parquet,
    read_shard,
    standard_parquet,
    standardize,
    without_views,
)
from metaclip.pipeline.workfiles import (
    KEPT,
    read_arrow,
    save_shard_counts,
    save_sparse_counts,
    write_arrow,
)

if TYPE_CHECKING:
    from metaclip.pipeline.scheduling import PoolTables


def output_schema(shard: Shard, cfg: Config, md: Metadata, read: pa.Table) -> pa.Schema:
    """The schema of a shard's subset rows. ``read``: the table the match stage read (all
    columns except for parquet, whose full schema comes from the footer)."""
    if shard.kind == "parquet":
        empty = without_views(pq.read_schema(shard.path).empty_table())
        empty = empty.append_column("__skip", pa.nulls(0, pa.string()))
        read = standardize(empty, shard, cfg.columns, cfg.max_text_bytes)
    empty = stages.MATCH_SCHEMA.empty_table()
    return stages.subset_table(read.slice(0, 0), empty, np.zeros(0), md.langs).schema


def match_shard(
    shard: Shard,
    cfg: Config,
    md: Metadata,
    match_dir: Path,
    threads: int,
    lid=None,
    tables: PoolTables | None = None,
) -> int:
    """The match stage for one shard: read, (LID), match; writes the shard's matches with
    its sample keys, sparse counts, subset schema and stats (its ``.json`` last). Returns
    the rows read. A parquet shard that ``tables`` keeps is read in full and handed to it;
    other kinds are offered to it as read."""
    file = file_id(shard.path)  # before the read: a file changed meanwhile is read again
    whole = None
    if tables is not None and tables.keeps(shard.name):
        whole = read_parquet(shard, None, threads != 1)
        table = standard_parquet(whole, shard, cfg.columns, cfg.max_text_bytes)
    else:
        table = read_shard(shard, cfg.columns, cfg.max_text_bytes, True, threads != 1)
    matches, stats, counts = stages.match_table(table, md, threads, lid)
    matches = matches.append_column("__key", table.column("__key"))
    if not table.column("__image").equals(table.column("__key")):  # else image = key
        matches = matches.append_column("__image", table.column("__image"))
    key_hashes, key_stats = keys.shard_keys(table)
    base = match_dir / shard.name  # names may hold dots: suffixes are appended, not replaced
    atomic_write(Path(f"{base}.arrow"), lambda p: write_arrow(matches, p))
    schema = output_schema(shard, cfg, md, table)
    save_shard_counts(Path(f"{base}.npz"), counts, schema, {keys.KEY_HASHES: key_hashes})
    info = stats.to_json() | key_stats
    info |= {"shard": str(shard.path), "file": file, "rows": table.num_rows}
    write_json(Path(f"{base}.json"), info)
    if whole is not None:
        tables.offer(shard.name, for_write(whole, shard, cfg, table))  # type: ignore[union-attr]
    elif tables is not None and shard.kind != "parquet":
        tables.offer(shard.name, table)  # as read_for_write gives it
    return table.num_rows


def sample_shard(
    shard: Shard,
    cfg: Config,
    md: Metadata,
    match_dir: Path,
    sample_dir: Path,
    probs: np.ndarray,
    threads: int,
) -> int:
    """The sample stage for one shard, from its match-stage output alone (the pool is not
    read): coins, then the kept rows (a bit per row), their entry counts and sizes per
    language (its ``.json`` last). Returns the rows sampled."""
    matches = read_arrow(match_dir / f"{shard.name}.arrow")
    rows = stages.sample_table(matches, md, probs, cfg.seed, cfg.unit, cfg.epoch, threads)
    base = sample_dir / shard.name
    mask = np.zeros(matches.num_rows, dtype=bool)
    mask[rows] = True
    lang = matches.column("lang").to_numpy()[mask]  # kept rows have ids, so a language
    freq = np.bincount(lang[lang >= 0], minlength=len(md.langs))
    sizes = {md.langs[i]: int(c) for i, c in enumerate(freq) if c}
    counts = kept_counts(matches, mask, md)
    save_sparse_counts(Path(f"{base}.npz"), counts, {KEPT: np.packbits(mask)})
    info = {"kept": len(rows), "lang_kept": sizes, "file": file_id(shard.path)}
    write_json(Path(f"{base}.json"), info)
    return matches.num_rows


def kept_counts(
    matches: pa.Table, mask: np.ndarray, md: Metadata
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Sparse entry counts of the rows in ``mask`` (of a shard's ``MATCH_SCHEMA`` rows),
    per language (for the report's 'after')."""
    offsets = stages.lang_offsets(md)
    rows, ids = stages.global_csr(matches, offsets)
    n = sum(len(md.entries[lang]) for lang in md.langs)
    entries, counts = core.count_entries_sparse(ids, n, rows, mask)
    # Global ids ascend, so each language's entries are one run.
    bounds = np.searchsorted(entries, [*offsets.values(), n])
    return {
        lang: (entries[lo:hi] - np.uint32(at), counts[lo:hi])
        for (lang, at), lo, hi in zip(offsets.items(), bounds[:-1], bounds[1:], strict=True)
    }


def read_for_write(shard: Shard, cfg: Config) -> pa.Table:
    """A shard as the write stage needs it (and ``PoolTables``' tail reads for it), read
    once: see ``for_write``; a shard that is not parquet, as the match stage makes its
    rows. Columns are decoded on threads only when shards are not read in parallel."""
    threads = cfg.workers <= 1
    if shard.kind == "parquet":
        return for_write(read_parquet(shard, None, threads), shard, cfg)
    return read_shard(shard, cfg.columns, cfg.max_text_bytes, False, threads)


def for_write(whole: pa.Table, shard: Shard, cfg: Config, rows: pa.Table | None = None) -> pa.Table:
    """What the write stage needs of a parquet shard read in full: its columns as stored,
    or where a row holds several texts the rows as the match stage makes them (``rows``
    when already made)."""
    if not is_list_type(whole.schema.field(cfg.text_column).type):
        return whole
    if rows is None:
        rows = standard_parquet(whole, shard, cfg.columns, cfg.max_text_bytes)
    return rows


def lid_function(cfg: Config) -> tuple[Callable | None, dict]:
    """The language identifier for texts without a language column, and its description
    for the datacard."""
    if not cfg.lid:
        return None, {}
    from metaclip.lid import LanguageIdentifier

    ident = LanguageIdentifier(threshold=cfg.lid_threshold, mapping=cfg.lid_mapping)
    names = pa.array(ident.languages, pa.string())

    def identify(texts: pa.ChunkedArray) -> pa.Array:
        idx, _ = ident.identify(contiguous(texts), threads=cfg.threads)
        return pa.DictionaryArray.from_arrays(pa.array(idx, pa.int16()), names)

    info = {
        "backend": ident.backend,
        "model": str(ident.model_path) if ident.model_path else None,
        "threshold": cfg.lid_threshold,
        "mapping": cfg.lid_mapping or "default",
    }
    return identify, info
