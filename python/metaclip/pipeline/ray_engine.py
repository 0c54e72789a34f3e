"""The Ray Data engine: the same curation as ``engine.Engine``, scaled out over a Ray cluster.

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
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip.pipeline.config import Config
from metaclip.pipeline.engine import Engine
from metaclip.pipeline.memory import jemalloc_env
from metaclip.pipeline.metadata import Metadata
from metaclip.pipeline.progress import Progress
from metaclip.pipeline.ray_tasks import (
    MatchWorker,
    SampleWorker,
    ShardWorker,
    partial_counts,
    shard_items,
    write_part,
)
from metaclip.pipeline.ray_watchdog import OWNER_ENV
from metaclip.pipeline.subset import SchemaDrift, SubsetWriter
from metaclip.pipeline.workfiles import save_global_counts


def start_watchdog(ray: Any, owner: str) -> subprocess.Popen:
    """A process that stops this local Ray session's processes once this process is gone,
    however it ended: Ray stops its head processes when the driver is killed, but not its
    agents and idle workers (``ray_watchdog``)."""
    session = ray._private.worker._global_node.session_name
    return subprocess.Popen(
        [sys.executable, "-m", "metaclip.pipeline.ray_watchdog", session, owner],
        stdin=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


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
        self._watchdog: subprocess.Popen | None = None
        self._saved_stderr: int | None = None

    @staticmethod
    def auto_workers() -> int:
        """Workers when ``Config.workers`` is 0: stays 0, one actor per CPU (``_pool``)."""
        return 0

    # -- Ray -----------------------------------------------------------------------------
    def _ray(self):
        import ray

        if not ray.is_initialized():
            level = logging.ERROR if self.cfg.quiet else logging.INFO
            if self.cfg.quiet:
                self._stderr_to_log()
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
                # Every process of the session inherits this, so the watchdog finds them.
                os.environ[OWNER_ENV] = owner = f"{os.getpid()}-{uuid.uuid4().hex}"
                try:
                    ray.init(num_cpus=cpus, include_dashboard=False, **common)
                finally:
                    del os.environ[OWNER_ENV]  # Ray's processes have it; later ones need not
                self._watchdog = start_watchdog(ray, owner)
            self._started = True
        return ray

    def stop_ray(self) -> None:
        """Shut down the local Ray this engine started (a no-op otherwise)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._entries_ref = None
            if self._watchdog is not None:
                self._watchdog.stdin.close()  # type: ignore[union-attr]
                self._watchdog.wait()
                self._watchdog = None
        self._stderr_back()

    def _stderr_to_log(self) -> None:
        """Quiet: what Ray writes to this process's stderr (its C++ core logs there, beyond
        the reach of ``logging``) goes to ``_work/ray-stderr.log`` until ``stop_ray``."""
        if self._saved_stderr is not None:
            return
        log = self.out / "_work" / "ray-stderr.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        sys.stderr.flush()
        self._saved_stderr = os.dup(2)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)

    def _stderr_back(self) -> None:
        if self._saved_stderr is not None:
            sys.stderr.flush()
            os.dup2(self._saved_stderr, 2)
            os.close(self._saved_stderr)
            self._saved_stderr = None

    def close(self) -> None:
        """Shut down the local Ray this engine started and release the output folder."""
        self.stop_ray()
        super().close()

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
        log.setLevel(logging.ERROR if self.cfg.quiet else logging.WARNING)
        ctx.actor_task_retry_on_errors = True
        ctx.enable_progress_bars = False
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
                ds = ray.data.from_items(shard_items(todo), override_num_blocks=len(todo))
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
        self.check_keys()
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
            self.stop_ray()
