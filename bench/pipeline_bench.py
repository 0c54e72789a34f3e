"""End-to-end parquet → parquet throughput of the embedded engine, split by stage.

    python bench/pipeline_bench.py                   # 500k entries, 5M texts
    python bench/pipeline_bench.py --texts 500000 --json out.json

The pool (alt-text-like captions, see workload.py) is generated once and cached under
bench/out/; ``--format jsonl|tar`` runs on the same rows as JSON-lines or WebDataset tar
shards. Stages: setup (load the metadata), match (the matcher built in the background as
metaclip-curate builds it; read key and text, match, per-shard match files), count, balance, sample
(coins from the match files; the pool is not read), write (read every column once, keep
the sampled rows, write the subset files). References, not in the total: the matcher build
alone and a read of every shard. Each run starts from an empty output folder;
the fastest of ``--repeat`` runs is shown (this machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from metaclip.pipeline.memory import keep_freed_pages, use_reusing_pool

if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:  # else use_reusing_pool leaves the pool
    keep_freed_pages()  # as metaclip-curate: before pyarrow loads

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
import workload

from metaclip.pipeline.config import Config
from metaclip.pipeline.engine import Engine
from metaclip.pipeline.metadata import Metadata
from metaclip.pipeline.pool import read_shard
from metaclip.pipeline.startup import pyarrow_without_pandas
from metaclip.pipeline.tar_shards import write_tar_shard


def make_pool(root: Path, n_entries: int, n_texts: int, shards: int) -> tuple[Path, Path]:
    tag = root / f"pool-{n_entries}-{n_texts}-{shards}"
    md, pool = tag / "metadata.json", tag / "pool"
    if (tag / "done").exists():
        return md, pool
    shutil.rmtree(tag, ignore_errors=True)
    pool.mkdir(parents=True)
    words, probs, source = workload.vocabulary()
    md.write_text(json.dumps(workload.metadata(n_entries, words, probs)))
    per = -(-n_texts // shards)
    for s in range(shards):
        n = min(per, n_texts - s * per)
        texts = workload.texts(n, words, probs, seed=100 + s)
        keys = [f"s{s:03d}-{i:08d}" for i in range(n)]
        urls = [f"https://img.example/{k}.jpg" for k in keys]
        table = pa.table({"key": keys, "text": texts, "url": urls})
        pq.write_table(table, pool / f"{s:03d}.parquet")
        print(f"  wrote shard {s + 1}/{shards} ({source})", file=sys.stderr)
    (tag / "done").touch()
    return md, pool


def as_format(pool: Path, fmt: str) -> Path:
    """The parquet pool as JSON-lines or WebDataset tar shards (made once, cached beside it;
    tar members are ``{key}.json``)."""
    if fmt == "parquet":
        return pool
    out = pool.with_name(f"pool-{fmt}")
    if (out / "done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for src in sorted(pool.glob("*.parquet")):
        rows = pq.read_table(src).to_pylist()
        if fmt == "jsonl":
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            (out / f"{src.stem}.jsonl").write_text(lines, encoding="utf-8")
        else:
            write_tar_shard(out / f"{src.stem}.tar", rows)
        print(f"  wrote {src.stem} as {fmt}", file=sys.stderr)
    (out / "done").touch()
    return out


def run_once(cfg: Config) -> tuple[dict[str, float], dict[str, float], dict, int]:
    """One full run from an empty output folder; (wall s, CPU s) per stage, datacard,
    shards kept in memory for the write stage."""
    shutil.rmtree(cfg.out, ignore_errors=True)
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(name, fn):
        t, c = time.perf_counter(), time.process_time()
        r = fn()
        times[name] = time.perf_counter() - t
        cpu[name] = time.process_time() - c
        return r

    engine = timed("setup (load metadata)", lambda: Engine(cfg))
    timed("build matcher only (reference)", lambda: Metadata(engine.md.entries).prebuild())
    timed("read only, all shards (reference)", lambda: [
        read_shard(s, cfg.columns, cfg.max_text_bytes) for s in engine.shards
    ])  # fmt: skip
    # The matcher is built inside, as metaclip-curate builds it (in the background).
    # read_ahead as in metaclip-curate run: shards within the memory budget are read in
    # full and kept for the write stage; idle workers read its last shards of the others.
    timed("match (build matcher; read, match, save)", lambda: engine.match(True))
    kept = len(engine.tables.kept) if engine.tables else 0
    counts = timed("count", engine.count)
    probs, per_lang = timed("balance", lambda: engine.balance(counts))
    timed("sample (coins from the match files)", lambda: engine.sample(probs))
    draft = timed("write subset (kept or read again; write files)", engine.write)
    card = timed("datacard", lambda: engine.datacard(counts, per_lang))
    timed("publish (subset and datacard in place)", lambda: engine.publish(card, draft))
    engine.close()
    return times, cpu, card, kept


def total(times: dict[str, float]) -> float:
    return sum(v for k, v in times.items() if "reference" not in k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--texts", type=int, default=5_000_000)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--threads", type=int, default=0, help="as the CLI's: matching threads per shard "
        "(0: cores / workers)",
    )  # fmt: skip
    ap.add_argument("--t", type=float, default=20_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the fastest is shown")
    ap.add_argument(
        "--arrow-pool", choices=["reusing", "default"], default="reusing",
        help="reusing: jemalloc keeping freed pages, as metaclip-curate sets it; "
        "default: pyarrow's default pool",
    )  # fmt: skip
    ap.add_argument("--compression", default="snappy", help="of the subset files (as the CLI's)")
    ap.add_argument(
        "--rows-per-file", type=int, default=Config.rows_per_file, help="(as the CLI's)"
    )
    ap.add_argument(
        "--format", choices=["parquet", "jsonl", "tar"], default="parquet",
        help="pool shards: parquet, or the same rows as JSON-lines / WebDataset tars",
    )  # fmt: skip
    ap.add_argument(
        "--pool-memory-mb", type=int, default=None,
        help="as the CLI's --pool-memory: decoded shards kept from the match stage for the "
        "write stage (default: a quarter of the available memory; 0: all read twice)",
    )  # fmt: skip
    ap.add_argument("--root", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pool_name = use_reusing_pool() if args.arrow_pool == "reusing" else "default"
    pyarrow_without_pandas()  # as metaclip-curate

    md, pool = make_pool(args.root, args.entries, args.texts, args.shards)
    pool = as_format(pool, args.format)
    cfg = Config(
        pool=(str(pool),), out=str(args.root / "pipeline-run"), metadata=str(md), t=args.t,
        workers=args.workers, threads=args.threads, quiet=True, compression=args.compression,
        rows_per_file=args.rows_per_file, pool_memory_mb=args.pool_memory_mb,
    )  # fmt: skip
    runs = [run_once(cfg) for _ in range(max(1, args.repeat))]
    print(f"end to end per run (s): {[round(total(r[0]), 2) for r in runs]}")
    times, cpu, card, kept = min(runs, key=lambda r: total(r[0]))

    n = card["pool"]["texts"]
    size = card["subset"]["size"]
    print(f"\npool: {n:,} texts in {args.shards} shards, {args.entries:,} entries, "
          f"{args.format}, workers={args.workers}, t={args.t:g}; "
          f"subset {size:,} ({size / n:.0%} kept); "
          f"fastest of {len(runs)} runs; Arrow pool {pool_name}; {args.compression}; "
          f"{kept} of {args.shards} shards kept in memory for the write "
          "stage")  # fmt: skip
    print(f"{'stage':48} {'seconds':>9} {'texts/s':>12} {'CPU s':>8}")
    for k, v in times.items():
        print(f"{k:48} {v:9.2f} {n / v if v > 0 else 0:12,.0f} {cpu[k]:8.2f}")
    end = total(times)
    total_cpu = sum(v for k, v in cpu.items() if "reference" not in k)
    print(f"{'end to end (all but references)':48} {end:9.2f} {n / end:12,.0f} {total_cpu:8.2f}")
    print(f"texts per CPU-second end to end: {n / total_cpu:,.0f}")
    if args.json:
        figures = {
            "texts": n, "subset": size, "t": args.t, "stages_s": times, "stages_cpu_s": cpu,
            "total_s": end, "runs_total_s": [total(r[0]) for r in runs],
        }  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
