"""The embedded engine: runs the stages over pool shards with resumable, atomic outputs.

Layout of ``out/``::

    _work/match-<hash>/<shard>.arrow     per row: language, entry ids, sample keys (Arrow IPC)
    _work/match-<hash>/<shard>.npz       the shard's entry counts (sparse) and the schema
                                         of its subset rows
    _work/match-<hash>/<shard>.json      stats (written last: the shard is done)
    _work/match-<hash>/counts.npz        global counts per language
    _work/sample-<hash>/<shard>.npz      kept rows (a bit per row, np.packbits) and their
                                         entry counts (sparse)
    _work/sample-<hash>/<shard>.json     sizes of the kept rows (written last)
    _work/sample-<hash>/balance.json, probs.npy     t per language, probabilities
    _work/sample-<hash>/subset-<hash>.tmp/  subset files being written (per write setting;
                                         renamed to subset/ when complete)
    _work/sample-<hash>/subset-<hash>.json  the subset files written for a setting (their
                                         file_id: still in place?)
    subset/part-00000.parquet ...        the curated subset (input order)
    datacard.json, report/               summary and human report

In ``run``, the parquet shards that fit the memory budget (``pool_memory_mb``) are read
once, in full, by the match stage and kept for the write stage; other shards are read
twice: key and text columns to match, then every column to write the subset. Sampling
works from the match-stage files alone.

A stage's per-shard output is written atomically, its ``.json`` last; a shard whose
``.json`` exists is skipped on rerun, so a killed run resumes. The write stage resumes
with the subset files it finished. ``<hash>`` covers every setting the stage depends on, so
a changed setting never reuses stale work; a record names its shard file's size, mtime and
inode (a changed file is done again), and the sample folder's hash covers every shard's
(another pool has other counts, so it is sampled again).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip import __version__, core
from metaclip.exceptions import InputError
from metaclip.pipeline import stages
from metaclip.pipeline.io import (
    atomic_write,
    file_id,
    fingerprint,
    read_json,
    save_npy,
    save_npz,
    write_json,
)
from metaclip.pipeline.memory import available_memory
from metaclip.pipeline.metadata import Metadata
from metaclip.pipeline.metadata import load as load_metadata
from metaclip.pipeline.pool import (
    Columns,
    Footer,
    Shard,
    discover,
    read_footer,
    read_parquet,
    read_shard,
    standard_parquet,
    standardize,
    without_views,
)

# Bumped whenever the files under _work/ change, so older work is never reused.
WORK_LAYOUT = 4
# Arrays that a shard's .npz holds besides its counts (match stage; sample stage).
SUBSET_SCHEMA = "subset_schema"
KEPT = "kept"


@dataclass(frozen=True)
class Config:
    """Everything a curation run depends on (see ``metaclip-curate run --help``)."""

    pool: tuple[str, ...]
    out: str
    metadata: str
    metadata_lang: str = "en"
    mode: str = "mc1"
    key_column: str = "key"
    text_column: str = "text"
    lang_column: str | None = None
    image_column: str | None = None
    t: float = 20_000
    t_en: float | None = None
    unit: str = "pair"
    seed: int = 0
    epoch: int = 0
    lid: bool = False
    lid_threshold: float = 0.0
    lid_mapping: str | None = None
    max_text_bytes: int = 1 << 20
    workers: int = 1
    threads: int = 0
    # One worker encodes a file: 1M-row files left one worker encoding alone for ~0.6 s at
    # the end of a 5M-row subset on two workers (the CLI default is the same).
    rows_per_file: int = 500_000
    compression: str = "snappy"
    # MB of decoded pool shards that ``run`` keeps from the match stage for the write
    # stage (None: a quarter of the memory available; 0: the write stage reads them again).
    pool_memory_mb: int | None = None
    quiet: bool = False

    @property
    def columns(self) -> Columns:
        return Columns(self.key_column, self.text_column, self.lang_column, self.image_column)

    def match_key(self, md: Metadata) -> str:
        return fingerprint(
            "match", WORK_LAYOUT, md.digest(), self.mode, asdict(self.columns), self.lid,
            self.lid_threshold, self.lid_mapping, self.max_text_bytes,
        )  # fmt: skip

    def sample_key(self, md: Metadata) -> str:
        return fingerprint(
            "sample", self.match_key(md), self.t, self.t_en, self.unit, self.seed, self.epoch
        )


def write_arrow(table: pa.Table, path: Path) -> None:
    """Work tables are uncompressed Arrow IPC: written at memory speed, read memory-mapped."""
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)


def read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as f:
        return pa.ipc.open_file(f).read_all()


def read_subset_schema(path: Path) -> pa.Schema:
    """The subset schema a match-stage ``.npz`` holds (see ``save_shard_counts``)."""
    with np.load(path) as z:
        return pa.ipc.read_schema(pa.py_buffer(z[SUBSET_SCHEMA].tobytes()))


def save_shard_counts(
    path: Path, counts: dict[str, tuple[np.ndarray, np.ndarray]], schema: pa.Schema
) -> None:
    """A shard's counts, sparse: (ids, counts) of the entries it matched, per language
    (dense vectors would be 8 bytes × all entries per shard), with the schema of its
    subset rows (one file fewer per shard: creating files is slow on shared filesystems)."""
    raw = np.frombuffer(schema.serialize().to_pybytes(), dtype=np.uint8)
    save_sparse_counts(path, counts, {SUBSET_SCHEMA: raw})


def save_sparse_counts(
    path: Path,
    sparse: dict[str, tuple[np.ndarray, np.ndarray]],
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    arrays = dict(extra or {})
    for lang, (ids, counts) in sparse.items():
        arrays[f"ids/{lang}"] = np.asarray(ids, dtype=np.uint32)
        arrays[f"counts/{lang}"] = np.asarray(counts, dtype=np.uint64)
    save_npz(path, arrays)


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


def save_global_counts(path: Path, total: dict[str, np.ndarray]) -> None:
    """The global counts, dense uint64 per language (``lang_<lang>`` arrays)."""
    save_npz(path, {f"lang_{k}": v for k, v in total.items()})


def add_shard_counts(path: Path, total: dict[str, np.ndarray]) -> None:
    """Add a shard's sparse counts into dense per-language totals (exact uint64)."""
    with np.load(path) as z:
        for lang, acc in total.items():
            acc[z[f"ids/{lang}"]] += z[f"counts/{lang}"]


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
    base = match_dir / shard.name
    atomic_write(base.with_suffix(".arrow"), lambda p: write_arrow(matches, p))
    save_shard_counts(base.with_suffix(".npz"), counts, output_schema(shard, cfg, md, table))
    info = stats.to_json() | {"shard": str(shard.path), "file": file, "rows": table.num_rows}
    write_json(base.with_suffix(".json"), info)
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
    save_sparse_counts(base.with_suffix(".npz"), counts, {KEPT: np.packbits(mask)})
    info = {"kept": len(rows), "lang_kept": sizes, "file": file_id(shard.path)}
    write_json(base.with_suffix(".json"), info)
    return matches.num_rows


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

    def shard_subset(self, name: str) -> pa.Table:
        """All kept rows of one shard: from the table the match stage kept, else the shard
        read in full (the only time after the match stage that texts are read)."""
        cfg, shard = self.cfg, self.shards[name]
        table = self.tables.take(name) if self.tables else None
        if table is None:
            table = read_for_write(shard, cfg)
        matches = read_arrow(self.match_dir / f"{name}.arrow")
        if table.num_rows != matches.num_rows:
            raise InputError(
                f"{shard.path}: has {table.num_rows} rows, the match stage saw "
                f"{matches.num_rows}; the pool changed during the run (delete {self.cfg.out})"
            )
        with np.load(self.sample_dir / f"{name}.npz") as z:
            mask = np.unpackbits(z[KEPT], count=len(table))
        mask = mask.astype(bool)
        kept = stages.select_matches(matches, mask)
        # Row by row in Rust: the same value the whole shard's computation gives each row.
        prob = stages.keep_probability(*stages.global_csr(kept, self.offsets), self.probs)
        table = stages.select_rows(table, mask)
        return stages.subset_table(table, kept, prob, list(self.offsets))

    @functools.cached_property
    def probs(self) -> np.ndarray:
        return np.load(self.sample_dir / "probs.npy")

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
                if field.type != want and _is_bytes(field.type) and not _is_bytes(want):
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


def part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def _file_ids(folder: Path) -> dict[str, list[int]]:
    """``file_id`` of each parquet file in ``folder`` (none if it is missing)."""
    return {f.name: file_id(f) for f in folder.glob("*.parquet")} if folder.is_dir() else {}


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
    return {"use_dictionary": dictionary, "column_encoding": delta}


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


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


class WriteTasks:
    """The write stage's work for a pool of threads: load a shard's subset rows (shards in
    the order the parts need them) or write a part whose shards are all loaded.

    A thread writes a ready part before it loads another shard, and loads the next shard
    rather than wait for a part that another thread's load will make ready: no thread
    waits while work is left, and a shard is dropped once its last part is written."""

    def __init__(
        self, load: Callable[[str], pa.Table], write: Callable[[dict, Callable], int], parts
    ) -> None:
        self.load, self.write = load, write
        self.waiting = list(parts)  # parts not yet taken, in order
        self.uses: dict[str, int] = {}
        for p in parts:
            for n in p["names"]:
                self.uses[n] = self.uses.get(n, 0) + 1
        self.order = list(self.uses)  # loads in order of first use
        self.rank = {n: i for i, n in enumerate(self.order)}
        self.started = 0  # loads taken
        self.loaded: dict[str, pa.Table] = {}
        self.failed = False
        self.cond = threading.Condition()

    def _next(self) -> tuple[str, object] | None:
        with self.cond:
            while not self.failed:
                for i, p in enumerate(self.waiting):
                    names = p["names"]
                    if names and self.rank[names[-1]] >= self.started:
                        break  # parts' shards run in order: no later part is ready either
                    if all(n in self.loaded for n in names):
                        return "write", self.waiting.pop(i)
                if self.started < len(self.order):
                    self.started += 1
                    return "load", self.order[self.started - 1]
                if not self.waiting:
                    return None
                self.cond.wait()
            return None

    def _finish(self, kind: str, item, result) -> None:
        with self.cond:
            if kind == "load":
                self.loaded[item] = result
            else:
                for n in item["names"]:
                    self.uses[n] -= 1
                    if self.uses[n] == 0:
                        self.loaded.pop(n)
            self.cond.notify_all()

    def stop(self) -> None:
        """No thread takes another task (one failed, or the run was interrupted)."""
        with self.cond:
            self.failed = True
            self.cond.notify_all()

    def run(self, on_written: Callable[[int], None]) -> int:
        """One thread's share: take tasks until none is left (or ``stop``); returns the
        rows this thread wrote."""
        rows = 0
        while (task := self._next()) is not None:
            kind, item = task
            try:
                if kind == "load":
                    result = self.load(item)
                else:
                    result = self.write(item, self.loaded.__getitem__)
            except BaseException:
                self.stop()
                raise
            self._finish(kind, item, result)
            if kind == "write":
                rows += result
                on_written(result)
        return rows


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
    if not _is_list(whole.schema.field(cfg.text_column).type):
        return whole
    if rows is None:
        rows = standard_parquet(whole, shard, cfg.columns, cfg.max_text_bytes)
    return rows


class PoolTables:
    """Decoded pool shards that the match stage hands to the write stage of the same run,
    so that fewer shards are read twice.

    - Kept shards: the match stage reads these parquet shards in full and keeps them. They
      are the first shards in pool order whose decoded sizes (from their footers) fit
      ``budget`` bytes together; a pool that fits is read once in all. A shard that turns
      out bigger decoded (a dictionary-encoded column is read dense) is kept only if the
      budget still holds it. JSON-lines and tar shards are read in full to match anyway:
      each is kept if the budget left holds it.
    - Tail reads: a match worker that finds no shard left while others still match reads
      the shards the write stage needs last (its last file is written by one thread, so
      those reads are on the critical path); at most ``limit`` (a worker's share of
      memory each).

    The write stage takes each table once, waiting for a read in flight."""

    def __init__(
        self,
        read: Callable[[Shard], pa.Table],
        shards: list[Shard],
        limit: int,
        budget: int = 0,
        keep_from: list[Shard] | None = None,
        footers: dict[str, Footer | None] | None = None,
    ):
        self.read = read
        self.planned: dict[str, int] = {}  # parquet shards to read in full and keep
        self.kept: list[str] = []  # shards kept (as offered)
        self.left = budget
        for s in keep_from or []:
            if s.kind != "parquet":
                continue
            footer = (footers or {}).get(s.name)
            if footer is None or footer.decoded_bytes > self.left:
                break  # the first shards in pool order, as the write stage needs them
            self.planned[s.name] = footer.decoded_bytes
            self.left -= footer.decoded_bytes
        tail = [s for s in reversed(shards) if s.kind == "parquet" and not self.keeps(s.name)]
        self.queue = tail[:limit]
        self.items: dict[str, Future] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()  # set when the match stage ends

    def keeps(self, name: str) -> bool:
        """Whether the match stage should read this shard in full and ``offer`` it."""
        return name in self.planned

    def offer(self, name: str, table: pa.Table) -> None:
        """A shard's table as the write stage needs it (see ``read_for_write``), kept if
        the budget (with what was planned for it) holds it."""
        fut: Future = Future()
        fut.set_result(table)
        with self.lock:
            room = self.left + self.planned.pop(name, 0)
            if table.nbytes > room:
                self.left = room
                return
            self.left = room - table.nbytes
            self.items[name] = fut
            self.kept.append(name)

    def start(self) -> None:
        """Start the tail reads (on a worker's thread)."""
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            with self.lock:
                if not self.queue:
                    return
                shard = self.queue.pop(0)
                fut = self.items[shard.name] = Future()
            try:
                fut.set_result(self.read(shard))
            except BaseException:  # the write stage reads the shard again and reports it
                fut.set_result(None)

    def take(self, name: str) -> pa.Table | None:
        """The shard's table if it was kept or read ahead (waits for a read in flight),
        else None."""
        with self.lock:
            fut = self.items.pop(name, None)
        return None if fut is None else fut.result()


class Progress:
    """A tqdm bar over texts (rate and ETA), silent when quiet or tqdm is missing.

    Where the texts are not known up front (JSON-lines and tar shards before they are
    matched), ``left_bytes`` (the bytes of the shards to do) gives an estimate instead:
    the texts per byte of the shards done so far, corrected as each shard finishes."""

    def __init__(
        self, desc: str, total: int | None, quiet: bool, left_bytes: int | None = None
    ) -> None:
        self.bar = None
        self.left_bytes = left_bytes if total is None else None
        self.done = [0, 0]  # texts and bytes of the shards done here
        if not quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total, desc=desc, unit="text", unit_scale=True, file=sys.stderr,
                    dynamic_ncols=True, leave=True,
                )  # fmt: skip
            except ImportError:
                pass

    def update(self, n: int, nbytes: int = 0) -> None:
        """``n`` texts more, from a shard of ``nbytes`` bytes (for the estimate)."""
        if self.bar is None:
            return
        self.bar.update(n)
        if self.left_bytes is not None and nbytes > 0:
            self.done[0] += n
            self.done[1] += nbytes
            self.left_bytes = max(0, self.left_bytes - nbytes)
            self.bar.total = self.bar.n + round(self.left_bytes * self.done[0] / self.done[1])
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _lid_function(cfg: Config) -> tuple[Callable | None, dict]:
    """The language identifier for texts without a language column, and its description
    for the datacard."""
    if not cfg.lid:
        return None, {}
    from metaclip.lid import LanguageIdentifier

    ident = LanguageIdentifier(threshold=cfg.lid_threshold, mapping=cfg.lid_mapping)
    names = pa.array(ident.languages, pa.string())

    def identify(texts: pa.ChunkedArray) -> pa.Array:
        idx, _ = ident.identify(core.contiguous(texts), threads=cfg.threads)
        return pa.DictionaryArray.from_arrays(pa.array(idx, pa.int16()), names)

    info = {
        "backend": ident.backend,
        "model": str(ident.model_path) if ident.model_path else None,
        "threshold": cfg.lid_threshold,
        "mapping": cfg.lid_mapping or "default",
    }
    return identify, info


class Engine:
    """Runs the curation stages for one config on this machine."""

    def __init__(self, cfg: Config, md: Metadata | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.md = md or Metadata(load_metadata(cfg.metadata, cfg.metadata_lang), cfg.mode)
        self.shards = discover(list(cfg.pool))
        self.match_dir = self.out / "_work" / f"match-{cfg.match_key(self.md)}"
        # Sampling depends on every shard's counts: another pool (a shard added, removed or
        # changed) gets other probabilities, so its samples go to another folder.
        pool_key = fingerprint([[s.name, *file_id(s.path)] for s in self.shards])
        sample_key = fingerprint(cfg.sample_key(self.md), pool_key)
        self.sample_dir = self.out / "_work" / f"sample-{sample_key}"
        self.lid, self.lid_info = _lid_function(cfg)
        self.tables: PoolTables | None = None  # see match(read_ahead=True)
        cores = os.cpu_count() or 1
        self.threads = cfg.threads or max(1, cores // max(1, cfg.workers))
        self.clean_leftovers()

    # -- helpers -------------------------------------------------------------------------
    @property
    def pool_memory(self) -> int:
        """Bytes of decoded shards the match stage may keep for the write stage."""
        mb = self.cfg.pool_memory_mb
        return available_memory() // 4 if mb is None else max(0, mb) << 20

    @functools.cached_property
    def footers(self) -> dict[str, Footer | None]:
        """Each shard's parquet footer (rows, decoded size), read once per engine."""
        return {s.name: read_footer(s) for s in self.shards}

    def done(self, work_dir: Path, shard: Shard) -> bool:
        """Whether a stage's output for ``shard`` is in ``work_dir``: its record exists and
        names the shard file as it is now (a rewritten shard is done again)."""
        info = work_dir / f"{shard.name}.json"
        return info.exists() and read_json(info).get("file") == file_id(shard.path)

    def _known_rows(self, done: list[Shard]) -> tuple[int | None, int]:
        """(texts in the pool where known, texts of the ``done`` shards), from the parquet
        footers or else the match stage's records (each read once)."""
        rows = {name: f.rows if f else None for name, f in self.footers.items()}
        for name, n in rows.items():
            info = self.match_dir / f"{name}.json"
            if n is None and info.exists():
                rows[name] = read_json(info)["rows"]
        known = list(rows.values())
        total = None if None in known else sum(known)  # type: ignore[arg-type]
        return total, sum(rows[s.name] or 0 for s in done)

    def _each_shard(
        self,
        desc: str,
        fn: Callable[[Shard], int],
        done: Callable[[Shard], bool],
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        """``fn`` on every shard not ``done``; ``on_idle()`` once per worker that finds no
        shard left while others still work."""
        finished_before = [done(s) for s in self.shards]
        todo = [s for s, f in zip(self.shards, finished_before, strict=True) if not f]
        started, finished, lock = [0], [0], threading.Lock()

        def watched(s: Shard) -> int:
            with lock:
                started[0] += 1
            try:
                return fn(s)
            finally:
                with lock:
                    finished[0] += 1
                    idle = started[0] == len(todo) and finished[0] < len(todo)
                if idle and on_idle is not None:
                    on_idle()

        earlier = [s for s, f in zip(self.shards, finished_before, strict=True) if f]
        total, rows_done = self._known_rows(earlier)
        size = {s.name: s.path.stat().st_size for s in todo} if total is None else {}
        bar = Progress(desc, total, self.cfg.quiet, sum(size.values()))
        bar.update(rows_done)
        try:
            if self.cfg.workers <= 1:
                for s in todo:
                    bar.update(fn(s), size.get(s.name, 0))
            else:
                with ThreadPoolExecutor(self.cfg.workers) as ex:
                    done_rows = ex.map(fn if on_idle is None else watched, todo)
                    for s, n in zip(todo, done_rows, strict=True):
                        bar.update(n, size.get(s.name, 0))
        finally:
            bar.close()

    # -- stages --------------------------------------------------------------------------
    def match(self, read_ahead: bool = False) -> None:
        """Per shard: (LID), match, per-shard counts and stats. ``read_ahead``: the write
        stage follows in this process, so shards within the memory budget are kept for it
        and workers left idle at the end read its last shards (``PoolTables``)."""

        def run(shard: Shard) -> int:
            return match_shard(
                shard, self.cfg, self.md, self.match_dir, self.threads, self.lid, self.tables
            )

        finished = {s.name: self.done(self.match_dir, s) for s in self.shards}

        def done(shard: Shard) -> bool:
            return finished[shard.name]

        if self.md.single and self.cfg.workers > 1 and not all(finished.values()):
            # Build the matcher while the workers read their first shards (the build
            # releases the GIL); else every worker would wait for it after its read.
            threading.Thread(target=self.md.prebuild, daemon=True).start()
        on_idle = None
        if read_ahead:
            workers, cfg = self.cfg.workers, self.cfg
            todo = [s for s in self.shards if not finished[s.name]]
            self.tables = PoolTables(
                lambda s: read_for_write(s, cfg), self.shards, workers if workers > 1 else 0,
                self.pool_memory, todo, self.footers,
            )  # fmt: skip
            on_idle = self.tables.start
        try:
            self._each_shard("match", run, done, on_idle)
        finally:
            if self.tables is not None:
                self.tables.stopped.set()

    def count(self) -> dict[str, np.ndarray]:
        """Global counts = exact sum of the per-shard counts."""
        total = {lang: np.zeros(len(e), dtype=np.uint64) for lang, e in self.md.entries.items()}
        for s in self.shards:
            add_shard_counts(self.match_dir / f"{s.name}.npz", total)
        save_global_counts(self.match_dir / "counts.npz", total)
        return total

    def balance(self, counts: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, dict]]:
        probs, per_lang = stages.probabilities(counts, self.md, self.cfg.t, self.cfg.t_en)
        save_npy(self.sample_dir / "probs.npy", probs)
        write_json(self.sample_dir / "balance.json", per_lang)
        return probs, per_lang

    def sample(self, probs: np.ndarray) -> None:
        def run(shard: Shard) -> int:
            return sample_shard(
                shard, self.cfg, self.md, self.match_dir, self.sample_dir, probs, self.threads
            )

        self._each_shard("sample", run, lambda s: self.done(self.sample_dir, s))

    def subset_writer(self, binary: frozenset[str] = frozenset()) -> SubsetWriter:
        shards = {s.name: s for s in self.shards}
        offsets = stages.lang_offsets(self.md)
        return SubsetWriter(
            self.cfg, offsets, shards, self.match_dir, self.sample_dir, binary, self.tables
        )

    def write(self) -> list[Path]:
        """The subset files: the kept rows in input order, ``rows_per_file`` per file.

        Files are written into a temp folder that replaces ``subset/`` only when complete.
        The folder is kept per write setting, so a killed write resumes with the files it
        finished (each is written atomically); a subset already written for these settings
        (recorded in ``subset-<hash>.json``) is not written again."""
        key = fingerprint("subset", self.cfg.rows_per_file, self.cfg.compression)
        record, final = self.sample_dir / f"subset-{key}.json", self.out / "subset"
        if record.exists() and read_json(record)["files"] == _file_ids(final):
            return sorted(final.glob("*.parquet"))
        binary: frozenset[str] = frozenset()
        try:
            while True:
                writer = self.subset_writer(binary)
                parts, schema, total = writer.plan()
                tmp = self.sample_dir / f"subset-{fingerprint(key, sorted(binary))}.tmp"
                tmp.mkdir(parents=True, exist_ok=True)
                for leftover in tmp.glob(".*.tmp"):  # a file a killed write left half done
                    leftover.unlink()
                done = {p["part"] for p in parts if (tmp / part_name(p["part"])).exists()}
                todo = [p for p in parts if p["part"] not in done]
                written = sum(sum(p["lengths"]) for p in parts if p["part"] in done)
                try:
                    written += self._write_parts(writer, todo, schema, tmp) if todo else 0
                except SchemaDrift as e:
                    shutil.rmtree(tmp)  # its files lack the binary columns
                    binary |= e.columns
                    continue
                if written != total:
                    raise RuntimeError(f"wrote {written} subset rows, expected {total}")
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
                write_json(record, {"files": _file_ids(final)})
                for other in self.sample_dir.glob("subset-*.tmp"):  # other settings' drafts
                    shutil.rmtree(other, ignore_errors=True)
                return sorted(final.glob("*.parquet"))
        finally:
            self.tables = None  # shards kept or read ahead but not needed (no kept rows)

    def _write_parts(
        self, writer: SubsetWriter, parts: list[dict], schema: pa.Schema, tmp: Path
    ) -> int:
        """Write every part into ``tmp`` on a thread pool; returns the rows written."""
        tasks = WriteTasks(
            writer.shard_subset, lambda p, get: writer.write_part(p, tmp, schema, get), parts
        )
        bar = Progress("write", sum(sum(p["lengths"]) for p in parts), self.cfg.quiet)
        lock = threading.Lock()

        def on_written(n: int) -> None:
            with lock:
                bar.update(n)

        try:
            with ThreadPoolExecutor(max(1, self.cfg.workers)) as ex:
                runs = [ex.submit(tasks.run, on_written) for _ in range(max(1, self.cfg.workers))]
                try:
                    return sum(r.result() for r in runs)
                except BaseException:  # Ctrl-C here: the threads finish their task, no more
                    tasks.stop()
                    raise
        finally:
            bar.close()

    def subset_counts(self) -> dict[str, np.ndarray]:
        """Entry counts inside the curated subset (the sum of the per-shard kept counts)."""
        total = {lang: np.zeros(len(e), dtype=np.uint64) for lang, e in self.md.entries.items()}
        for s in self.shards:
            add_shard_counts(self.sample_dir / f"{s.name}.npz", total)
        return total

    def datacard(
        self, counts: dict[str, np.ndarray], per_lang: dict[str, dict], save: bool = True
    ) -> dict:
        """The datacard (from the match and sample records); ``save``: also write
        ``datacard.json``."""
        match = stages.MatchStats()
        for s in self.shards:
            match.add(read_json(self.match_dir / f"{s.name}.json"))
        kept, lang_kept = 0, {}
        for s in self.shards:
            info = read_json(self.sample_dir / f"{s.name}.json")
            kept += info["kept"]
            for k, v in info["lang_kept"].items():
                lang_kept[k] = lang_kept.get(k, 0) + v
        skipped = sum(match.skipped.values())
        cfg = self.cfg
        card = {
            "tool": "metaclip",
            "version": __version__,
            "mode": cfg.mode,
            "unit": cfg.unit,
            "seed": cfg.seed,
            "epoch": cfg.epoch,
            "t": cfg.t if cfg.t_en is None else None,
            "t_en": cfg.t_en,
            "t_per_language": {k: v["t"] for k, v in per_lang.items()},
            "metadata": {
                "source": str(cfg.metadata),
                "digest": self.md.digest(),
                "entries_per_language": {k: len(v) for k, v in self.md.entries.items()},
                "language_offsets": stages.lang_offsets(self.md),
            },
            "languages": per_lang,
            "language_identification": self.lid_info or None,
            "pool": {
                "shards": len(self.shards),
                "texts": match.texts,
                "matched": match.matched,
                "unmatched": match.unmatched,
                "skipped": skipped,
                "skipped_by_reason": match.skipped,
                "skipped_examples": {k: v[:5] for k, v in match.skipped_rows.items()},
                "identity_holds": match.texts == match.matched + match.unmatched + skipped,
                "texts_per_language": match.lang_texts,
                "matched_per_language": match.lang_matched,
            },
            "subset": {"size": kept, "per_language": dict(sorted(lang_kept.items()))},
        }
        if save:
            write_json(self.out / "datacard.json", card)
        return card

    def clean_leftovers(self) -> None:
        """Remove temp files a killed run left behind (outputs are only ever renamed into
        place, so a temp file is never a valid output)."""
        for d in (self.match_dir, self.sample_dir, self.out):
            for tmp in d.glob(".*.tmp") if d.exists() else []:
                tmp.unlink(missing_ok=True)

    def run(self) -> dict:
        """All stages; returns the datacard."""
        self.match(read_ahead=True)
        counts = self.count()
        probs, per_lang = self.balance(counts)
        self.sample(probs)
        # The datacard and report come from the match and sample records alone, so the
        # report is drawn (into a draft) while the subset is written: a one-shot run ends
        # ~0.25 s sooner. Both replace an earlier run's only once the subset is in place.
        card = self.datacard(counts, per_lang, save=False)
        from metaclip.pipeline import report

        draft = self.out / "_work" / "report.tmp"
        shutil.rmtree(draft, ignore_errors=True)
        with ThreadPoolExecutor(1) as ex:
            after = self.subset_counts
            drawn = ex.submit(lambda: report.write_report(draft, card, counts, after()))
            try:
                self.write()
            except BaseException:
                wait([drawn])
                shutil.rmtree(draft, ignore_errors=True)
                raise
            drawn.result()
        write_json(self.out / "datacard.json", card)
        shutil.rmtree(self.out / "report", ignore_errors=True)
        os.replace(draft / "report", self.out / "report")
        shutil.rmtree(draft, ignore_errors=True)
        return card
