"""The Ray Data engine: the same curation as ``run.Engine``, scaled out over a Ray cluster.

Every stage is a Ray Data job over the pool's shards, with **one shard per work unit**
(``ray.data.from_items`` of shard descriptors, one block each), so the results are those of
the embedded engine by construction:

* match — ``map_batches`` over an actor pool; each actor gets the metadata once from the
  object store, builds its matchers on first use and keeps them; per shard it reads the
  shard with ``pool.read_shard`` and runs ``stages.match_table``.
* count — ``map_batches`` tasks, each summing a group of shards' counts into a sparse
  ``(entry, count)`` partial; the driver adds the partials exactly (uint64).
* balance — on the driver (``stages.probabilities``); ``probs`` goes to the object store.
* sample — ``map_batches`` over an actor pool running ``stages.sample_table`` per shard
  (from the match stage's files; the pool is not read again).
  Image-level sampling needs every row of an image in one shard — the same rule as the
  embedded engine, since the work unit is the shard.
* write — ``map_batches`` tasks, one per output file: file ``i`` holds kept rows
  ``[i·rows_per_file, (i+1)·rows_per_file)`` in input order, read from the pool shards
  it spans, so ``subset/part-*.parquet`` are byte for byte the embedded engine's files.
  (``Dataset.write_parquet`` names and splits files by Ray's blocks, which would not be.)

The per-shard outputs are the embedded engine's files in the same ``out/_work`` layout
(written atomically, ``.json`` last), so a killed run resumes, a retried task rewrites the
same bytes, and stages of the two engines can be mixed. On a cluster, the pool and
``--out`` must be paths every node sees (a shared filesystem) and metaclip must be
installed on every node.

Bad input (``MetaclipError``/``ValueError`` from reading or matching a shard) is returned
to the driver and raised there unchanged — it is deterministic, so it is never retried.
Any other error fails the task, and Ray reruns it (``max_retries`` times; actors are
restarted if they die).
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip.exceptions import MetaclipError
from metaclip.pipeline.memory import jemalloc_env, use_reusing_pool
from metaclip.pipeline.metadata import Metadata
from metaclip.pipeline.pool import Shard
from metaclip.pipeline.run import (
    Config,
    Engine,
    Progress,
    SchemaDrift,
    SubsetWriter,
    _lid_function,
    match_shard,
    sample_shard,
    save_global_counts,
)

RESULT_SCHEMA = pa.schema([("index", pa.int64()), ("rows", pa.int64()), ("error", pa.binary())])


def _shard_items(shards: list[Shard]) -> list[dict]:
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
        self.md = Metadata(ray.get(entries[0]), cfg.mode)
        self.dir = Path(work_dir)
        self.threads = threads

    def process(self, shard: Shard) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
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
        self.lid, _ = _lid_function(cfg)

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
            with np.load(Path(match_dir) / f"{name}.npz") as z:
                for lang in langs:
                    ids_by[lang].append(z[f"ids/{lang}"])
                    counts_by[lang].append(z[f"counts/{lang}"])
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
    rows, drift = [], []
    for part in batch.to_pylist():
        try:
            rows.append(writer.write_part(part, Path(tmp_dir), schema))
            drift.append([])
        except SchemaDrift as e:
            rows.append(0)
            drift.append(sorted(e.columns))
    return pa.table({"rows": rows, "drift": drift}, schema=WRITE_SCHEMA)


class RayEngine(Engine):
    """Runs the curation stages for one config as Ray Data jobs (same outputs as ``Engine``).

    ``address``: an existing Ray cluster (``"auto"``, ``"ray://host:10001"``, ...); without
    it (and without ``RAY_ADDRESS``) a local Ray with ``num_cpus`` CPUs (default: all) is
    started on first use and shut down by ``close()`` / at the end of ``run()``. A Ray
    already initialized in this process is used as is. ``cfg.workers`` (> 1) caps the
    actors per stage (default: one per CPU), ``cfg.threads`` sets the matching threads per
    actor (default 1); ``max_retries``: reruns of a failed task or a dead actor.
    """

    match_worker: type[ShardWorker] = MatchWorker
    sample_worker: type[ShardWorker] = SampleWorker

    def __init__(
        self,
        cfg: Config,
        address: str | None = None,
        md: Metadata | None = None,
        *,
        num_cpus: int | None = None,
        max_retries: int = 3,
    ) -> None:
        super().__init__(cfg, md)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self._started = False
        self._entries_ref: Any = None

    # -- Ray -----------------------------------------------------------------------------
    def _ray(self):
        import ray

        if not ray.is_initialized():
            level = logging.WARNING if self.cfg.quiet else logging.INFO
            common = {
                "log_to_driver": not self.cfg.quiet,
                "logging_level": level,
                # Workers load pyarrow with this set (see memory.keep_freed_pages).
                "runtime_env": {"env_vars": jemalloc_env()},
            }
            if self.address:
                ray.init(address=self.address, **common)
            else:
                cpus = self.num_cpus or os.cpu_count() or 1
                ray.init(num_cpus=cpus, include_dashboard=False, **common)
            self._started = True
        return ray

    def close(self) -> None:
        """Shut down the local Ray this engine started (a no-op otherwise)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._entries_ref = None

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cpus(self) -> float:
        return float(self._ray().cluster_resources().get("CPU", 1.0))

    def _entries(self) -> list:
        if self._entries_ref is None:
            self._entries_ref = self._ray().put(self.md.entries)
        return [self._entries_ref]

    def _pool(self, n_units: int) -> tuple[int, float]:
        """(actors, CPUs per actor). Actors together take at most all CPUs but one, so the
        tasks Ray Data also schedules are never starved (on a 2-core box Ray deadlocked
        when matching actors held every CPU); fractional CPUs keep every core busy."""
        cpus = self._cpus()
        actors = self.cfg.workers if self.cfg.workers > 1 else max(1, int(cpus))
        actors = max(1, min(actors, n_units))
        per_actor = min(1.0, max(cpus - 1.0, 0.5) / actors)
        return actors, round(per_actor, 4)

    @contextmanager
    def _data_context(self) -> Iterator[Any]:
        """Retry actor tasks on errors (bad input never reaches Ray as an error). Ray Data's
        own progress bars and INFO logs are off: each stage shows our texts/s bar."""
        from ray.data import DataContext

        ctx = DataContext.get_current()
        saved = (ctx.actor_task_retry_on_errors, ctx.enable_progress_bars)
        log = logging.getLogger("ray.data")
        saved_level = log.level
        ctx.actor_task_retry_on_errors = True
        ctx.enable_progress_bars = False
        log.setLevel(logging.WARNING)
        try:
            with warnings.catch_warnings():
                # Retry bounds (max_retries, max_task_retries, ...) can only be given as
                # ``**ray_remote_args``, which Ray >= 2.60 flags as deprecated.
                warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
                yield ctx
        finally:
            ctx.actor_task_retry_on_errors, ctx.enable_progress_bars = saved
            log.setLevel(saved_level)

    def _task_args(self) -> dict:
        return {"num_cpus": 0.5, "max_retries": self.max_retries, "retry_exceptions": True}

    # -- stages --------------------------------------------------------------------------
    def _stage(self, desc: str, worker: type[ShardWorker], work_dir: Path, **kwargs: Any) -> None:
        """Run ``worker`` over every shard whose output is not in ``work_dir`` (``done``)."""
        finished = [self.done(work_dir, s) for s in self.shards]
        done = [s for s, f in zip(self.shards, finished, strict=True) if f]
        todo = [s for s, f in zip(self.shards, finished, strict=True) if not f]
        ray = self._ray() if todo else None  # before the bar: Ray prints as it starts
        total, rows_done = self._known_rows(done)
        bar = Progress(desc, total, self.cfg.quiet)
        bar.update(rows_done)
        try:
            if ray is None:
                return
            actors, per_actor = self._pool(len(todo))
            threads = self.cfg.threads or 1
            work_dir.mkdir(parents=True, exist_ok=True)
            with self._data_context():
                ds = ray.data.from_items(_shard_items(todo), override_num_blocks=len(todo))
                ds = ds.map_batches(
                    worker,
                    fn_constructor_kwargs={
                        "entries": self._entries(), "cfg": self.cfg, "work_dir": str(work_dir),
                        "threads": threads, **kwargs,
                    },
                    batch_size=1, batch_format="pyarrow",
                    compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=per_actor,
                    max_restarts=self.max_retries, max_task_retries=self.max_retries,
                )  # fmt: skip
                for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    errors = [e for e in batch.column("error").to_pylist() if e is not None]
                    if errors:
                        raise pickle.loads(errors[0])
                    bar.update(int(pc.sum(batch.column("rows")).as_py() or 0))
        finally:
            bar.close()

    def match(self, read_ahead: bool = False) -> None:
        """Per shard, on an actor pool: (LID), match, per-shard counts and stats. The
        write stage runs on other actors, so nothing is read ahead (``read_ahead`` is
        ignored)."""
        self._stage("match", self.match_worker, self.match_dir)

    def count(self) -> dict[str, np.ndarray]:
        """Global counts: tasks sum groups of shards into sparse partials, the driver adds
        them (exact uint64; the result does not depend on the grouping)."""
        total = {lang: np.zeros(len(e), dtype=np.uint64) for lang, e in self.md.entries.items()}
        names = [s.name for s in self.shards]
        missing = [n for n in names if not (self.match_dir / f"{n}.npz").exists()]
        if missing:
            raise FileNotFoundError(f"{self.match_dir / missing[0]}.npz: run the match stage")
        ray = self._ray()
        groups = max(1, min(len(names), 4 * int(self._cpus())))
        items = [{"names": [str(x) for x in g]} for g in np.array_split(names, groups) if len(g)]
        with self._data_context():
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(
                partial_counts, batch_size=1, batch_format="pyarrow",
                fn_kwargs={"match_dir": str(self.match_dir), "langs": self.md.langs},
                **self._task_args(),
            )  # fmt: skip
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for lang, ids, counts in zip(
                    batch.column("lang").to_pylist(),
                    batch.column("ids").to_numpy(zero_copy_only=False),
                    batch.column("counts").to_numpy(zero_copy_only=False),
                    strict=True,
                ):
                    total[lang][ids] += counts.astype(np.uint64)  # ids unique per partial
        save_global_counts(self.match_dir / "counts.npz", total)
        return total

    def sample(self, probs: np.ndarray) -> None:
        """Per shard, on an actor pool: coins and kept rows (``probs`` shared once)."""
        ref = self._ray().put(np.ascontiguousarray(probs))
        self._stage(
            "sample", self.sample_worker, self.sample_dir,
            match_dir=str(self.match_dir), probs=[ref],
        )  # fmt: skip

    def _write_parts(
        self, writer: SubsetWriter, parts: list[dict], schema: pa.Schema, tmp: Path
    ) -> int:
        """The subset files, one task each; the same files as ``Engine.write``."""
        ray = self._ray()
        written, drift = 0, set()
        with self._data_context():
            ds = ray.data.from_items(parts, override_num_blocks=len(parts))
            ds = ds.map_batches(
                write_part, batch_size=1, batch_format="pyarrow",
                fn_kwargs={"writer": writer, "tmp_dir": str(tmp), "schema": schema},
                **self._task_args(),
            )  # fmt: skip
            for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                written += pc.sum(b.column("rows")).as_py() or 0
                for cols in b.column("drift").to_pylist():
                    drift.update(cols)
        if drift:
            raise SchemaDrift(drift)
        return written

    def run(self) -> dict:
        """All stages; returns the datacard. Shuts down a local Ray it started."""
        try:
            return super().run()
        finally:
            self.close()
