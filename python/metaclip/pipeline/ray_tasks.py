"""What the Ray engine runs on its workers, one shard or one subset file per call: the
match and sample actors (the embedded engine's per-shard functions), the count partials
and the subset file writes. Results come back as small Arrow tables; bad input comes back
as a pickled exception, raised on the driver."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip.exceptions import MetaclipError
from metaclip.pipeline.config import Config
from metaclip.pipeline.memory import use_reusing_pool
from metaclip.pipeline.metadata import Metadata, matcher_cache
from metaclip.pipeline.pool import Shard
from metaclip.pipeline.shard import lid_function, match_shard, sample_shard
from metaclip.pipeline.subset import SchemaDrift, SubsetWriter
from metaclip.pipeline.workfiles import load_arrays

RESULT_SCHEMA = pa.schema([("index", pa.int64()), ("rows", pa.int64()), ("error", pa.binary())])


def shard_items(shards: list[Shard]) -> list[dict]:
    return [{"index": s.index, "path": str(s.path), "kind": s.kind} for s in shards]


def _shard(row: dict) -> Shard:
    return Shard(Path(row["path"]), row["kind"], row["index"])


def _error(e: BaseException) -> bytes:
    try:
        return pickle.dumps(e)
    except Exception:  # an unpicklable exception still gets its message through
        return pickle.dumps(MetaclipError(str(e)))


class ShardWorker:
    """A Ray Data actor running one stage on whole shards (one result row per shard).

    Subclasses implement ``process(shard) -> rows read``. The metadata arrives through the
    object store (wrapped in a list so that Ray does not resolve the reference early)."""

    def __init__(self, entries: list, cfg: Config, work_dir: str, threads: int) -> None:
        import ray

        use_reusing_pool()  # the actor's process is this job's (as metaclip-curate's is)
        self.cfg = cfg
        self.dir = Path(work_dir)
        # work_dir is out/_work/<stage>-<hash>: the actors of a node map one matcher file.
        cache = matcher_cache(cfg.matcher_cache, self.dir.parent.parent)
        self.md = Metadata(ray.get(entries[0]), cfg.mode, cache)
        self.threads = threads

    def process(self, shard: Shard) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: list[dict[str, Any]] = []
        for row in batch.to_pylist():
            shard = _shard(row)
            try:
                out.append({"index": shard.index, "rows": self.process(shard), "error": None})
            except (MetaclipError, ValueError) as e:  # bad input: deterministic, no retry
                out.append({"index": shard.index, "rows": 0, "error": _error(e)})
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


class MatchWorker(ShardWorker):
    """Read, (LID), match; writes the shard's matches, counts and stats (as ``Engine``)."""

    def __init__(self, entries: list, cfg: Config, work_dir: str, threads: int) -> None:
        super().__init__(entries, cfg, work_dir, threads)
        self.lid, _ = lid_function(cfg)

    def process(self, shard: Shard) -> int:
        return match_shard(shard, self.cfg, self.md, self.dir, self.threads, self.lid)


class SampleWorker(ShardWorker):
    """Coins and kept rows of a shard; writes which rows are kept and their sizes (as
    ``Engine``)."""

    def __init__(
        self, entries: list, cfg: Config, work_dir: str, threads: int, match_dir: str, probs: list
    ) -> None:
        import ray

        super().__init__(entries, cfg, work_dir, threads)
        self.match_dir = Path(match_dir)
        self.probs = ray.get(probs[0])  # zero-copy from the node's object store

    def process(self, shard: Shard) -> int:
        return sample_shard(
            shard, self.cfg, self.md, self.match_dir, self.dir, self.probs, self.threads
        )


PARTIAL_SCHEMA = pa.schema(
    [
        ("lang", pa.string()),
        ("ids", pa.large_list(pa.int64())),
        ("counts", pa.large_list(pa.uint64())),
    ]
)


def partial_counts(batch: pa.Table, match_dir: str, langs: list[str]) -> pa.Table:
    """Sum the counts of a group of shards; emit them sparse, one row per language."""
    ids_by: dict[str, list] = {lang: [] for lang in langs}
    counts_by: dict[str, list] = {lang: [] for lang in langs}
    for names in batch.column("names").to_pylist():
        for name in names:
            wanted = [f"{k}/{lang}" for lang in langs for k in ("ids", "counts")]
            arrays = load_arrays(Path(match_dir) / f"{name}.npz", *wanted)
            for i, lang in enumerate(langs):
                ids_by[lang].append(arrays[2 * i])
                counts_by[lang].append(arrays[2 * i + 1])
    total: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for lang in langs:
        ids = np.concatenate(ids_by[lang]) if ids_by[lang] else np.zeros(0, np.uint32)
        if not len(ids):
            continue
        uniq, inv = np.unique(ids, return_inverse=True)
        sums = np.zeros(len(uniq), dtype=np.uint64)
        np.add.at(sums, inv, np.concatenate(counts_by[lang]))  # exact, unlike bincount
        total[lang] = (uniq, sums)
    rows: dict[str, list] = {"lang": [], "ids": [], "counts": []}
    for lang, (ids, sums) in total.items():
        rows["lang"].append(lang)
        rows["ids"].append(pa.array(ids.astype(np.int64), pa.int64()))
        rows["counts"].append(pa.array(sums, pa.uint64()))
    return pa.table(
        {
            "lang": pa.array(rows["lang"], pa.string()),
            "ids": _lists(rows["ids"], pa.int64()),
            "counts": _lists(rows["counts"], pa.uint64()),
        },
        schema=PARTIAL_SCHEMA,
    )


def _lists(arrays: list[pa.Array], typ: pa.DataType) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    values = pa.concat_arrays(arrays) if arrays else pa.array([], typ)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)


WRITE_SCHEMA = pa.schema([("rows", pa.int64()), ("drift", pa.list_(pa.string()))])


def write_part(batch: pa.Table, writer: SubsetWriter, tmp_dir: str, schema: pa.Schema) -> pa.Table:
    """Write output file(s) ``part-{i:05d}.parquet`` (one per planned part in the batch).
    A schema drift (see ``SchemaDrift``) is returned to the driver, which starts over."""
    use_reusing_pool()
    rows: list[int] = []
    drift: list[list[str]] = []
    for part in batch.to_pylist():
        try:
            rows.append(writer.write_part(part, Path(tmp_dir), schema))
            drift.append([])
        except SchemaDrift as e:
            rows.append(0)
            drift.append(sorted(e.columns))
    return pa.table({"rows": rows, "drift": drift}, schema=WRITE_SCHEMA)
