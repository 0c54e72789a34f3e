"""The embedded engine: runs the stages over the pool's shards on this machine, with
resumable, atomic outputs (the work files are described in ``workfiles``).

In ``run``, the parquet shards that fit the memory budget (``pool_memory_mb``) are read
once, in full, by the match stage and kept for the write stage (``PoolTables``); other
shards are read twice: key and text columns to match, then every column to write the
subset. Sampling works from the match-stage files alone. The write stage resumes with the
subset files it finished.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from metaclip.pipeline import datacard, keys, stages
from metaclip.pipeline.config import AUTO_WORKERS, Config
from metaclip.pipeline.io import file_id, fingerprint, read_json, save_npy, write_json
from metaclip.pipeline.memory import available_memory
from metaclip.pipeline.metadata import Metadata, matcher_cache
from metaclip.pipeline.metadata import load as load_metadata
from metaclip.pipeline.outdir import OutputFolder
from metaclip.pipeline.pool import Footer, Shard, discover, read_footer
from metaclip.pipeline.progress import Progress
from metaclip.pipeline.scheduling import PoolTables, WriteTasks
from metaclip.pipeline.shard import lid_function, match_shard, read_for_write, sample_shard
from metaclip.pipeline.subset import SchemaDrift, SubsetWriter
from metaclip.pipeline.workfiles import file_ids, part_name, save_global_counts, sum_shard_counts


class Engine:
    """Runs the curation stages for one config on this machine."""

    def __init__(self, cfg: Config, md: Metadata | None = None) -> None:
        if cfg.workers == 0:
            cfg = replace(cfg, workers=self.auto_workers())
        if cfg.matcher_cache not in (None, "off"):  # Ray actors may run in another folder
            cfg = replace(cfg, matcher_cache=os.path.abspath(cfg.matcher_cache))
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.md = md or Metadata(load_metadata(cfg.metadata, cfg.metadata_lang), cfg.mode)
        self.md.cache_dir = matcher_cache(cfg.matcher_cache, self.out)
        self.shards = discover(list(cfg.pool))
        self.match_dir = self.out / "_work" / f"match-{cfg.match_key(self.md)}"
        # Sampling depends on every shard's counts: another pool (a shard added, removed or
        # changed) gets other probabilities, so its samples go to another folder.
        pool_key = fingerprint([[s.name, *file_id(s.path)] for s in self.shards])
        sample_key = fingerprint(cfg.sample_key(self.md), pool_key)
        self.sample_dir = self.out / "_work" / f"sample-{sample_key}"
        self.lid, self.lid_info = lid_function(cfg)
        self.tables: PoolTables | None = None  # see match(read_ahead=True)
        cores = os.cpu_count() or 1
        self.threads = cfg.threads or max(1, cores // max(1, cfg.workers))
        self.folder = OutputFolder(self.out, cfg.overwrite)  # locked until close()
        self.clean_leftovers()

    def close(self) -> None:
        """Release the output folder for other runs."""
        self.folder.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def auto_workers() -> int:
        """Workers when ``Config.workers`` is 0: one per core, at most ``AUTO_WORKERS``."""
        return min(os.cpu_count() or 1, AUTO_WORKERS)

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
        total = sum_shard_counts(self.match_dir, (s.name for s in self.shards), self.md)
        save_global_counts(self.match_dir / "counts.npz", total)
        self.check_keys()
        return total

    def check_keys(self) -> dict:
        """Repeated and empty sample keys over the pool (an error with ``strict_keys``)."""
        paths = {s.name: str(s.path) for s in self.shards}
        return keys.check(self.match_dir, list(paths), paths, self.cfg.strict_keys)

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

    @property
    def _subset_key(self) -> str:
        """Names the subset drafts and record of this write setting."""
        return fingerprint("subset", self.cfg.rows_per_file, self.cfg.compression)

    @property
    def _subset_record(self) -> Path:
        return self.sample_dir / f"subset-{self._subset_key}.json"

    def write(self) -> Path | None:
        """The subset files: the kept rows in input order, ``rows_per_file`` per file.
        Returns the folder holding them, complete, for ``publish`` to put in place; None
        when ``subset/`` holds them already (recorded in ``subset-<hash>.json``).

        The folder is a draft per write setting, so a killed write resumes with the files
        it finished (each is written atomically)."""
        record = self._subset_record
        if record.exists() and read_json(record)["files"] == file_ids(self.out / "subset"):
            return None
        key = self._subset_key
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
                return tmp
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
        return sum_shard_counts(self.sample_dir, (s.name for s in self.shards), self.md)

    def datacard(self, counts: dict[str, np.ndarray], per_lang: dict[str, dict]) -> dict:
        """The datacard (from the match and sample records)."""
        names = [s.name for s in self.shards]
        return datacard.build(
            self.cfg,
            self.md,
            names,
            self.match_dir,
            self.sample_dir,
            per_lang,
            self.lid_info,
            [str(s.path) for s in self.shards],
        )

    def publish(self, card: dict, subset: Path | None, report: Path | None = None) -> None:
        """Put the new subset (a folder from ``write``; None: the one in place), datacard
        and report (a folder; None: none) in place of the earlier ones, as one state."""
        staged = self.out / "_work" / "publish-new"
        shutil.rmtree(staged, ignore_errors=True)
        write_json(staged / "datacard.json", card)
        self.folder.publish(staged / "datacard.json", subset, report)
        write_json(self._subset_record, {"files": file_ids(self.out / "subset")})
        for path in [staged, *self.sample_dir.glob("subset-*.tmp")]:  # drafts of others
            shutil.rmtree(path, ignore_errors=True)

    def clean_leftovers(self) -> None:
        """Remove temp files a killed run left in the work folders (outputs are only ever
        renamed into place, so a temp file is never a valid output)."""
        for d in (self.match_dir, self.sample_dir):
            for tmp in d.glob(".*.tmp") if d.exists() else []:
                tmp.unlink(missing_ok=True)

    def run(self) -> dict:
        """All stages; returns the datacard."""
        self.match(read_ahead=True)
        counts = self.count()
        probs, per_lang = self.balance(counts)
        self.sample(probs)
        # The datacard and report come from the match and sample records alone, so the
        # report is drawn (into a draft) while the subset is written (docs/performance.md,
        # "The report"); the three replace an earlier run's together, in ``publish``.
        card = self.datacard(counts, per_lang)
        from metaclip.pipeline import report

        draft = self.out / "_work" / "report.tmp"
        shutil.rmtree(draft, ignore_errors=True)
        with ThreadPoolExecutor(1) as ex:
            after = self.subset_counts
            drawn = ex.submit(lambda: report.write_report(draft, card, counts, after()))
            try:
                subset = self.write()
            except BaseException:
                wait([drawn])
                shutil.rmtree(draft, ignore_errors=True)
                raise
            drawn.result()
        self.publish(card, subset, draft / "report")
        shutil.rmtree(draft, ignore_errors=True)
        return card
