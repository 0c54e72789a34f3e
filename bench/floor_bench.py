"""The floor under the pipeline's time: the CPU seconds of the work every run must do, each
part measured alone on one thread, against what 1M texts/s allows on this machine.

    python bench/floor_bench.py                      # the pipeline bench's pool, t = 20 and 20,000
    python bench/floor_bench.py --t 20 --repeat 3

Uses the pool and metadata of ``pipeline_bench.py`` (made if missing). The parts:

- read: every shard, every column, with pyarrow (what a kept shard costs the match stage);
- match: every text against the metadata with our matcher; and against its first 2,000
  entries, which leaves tokenising, hashing and looking up words, not the entries' walks;
- encode: for each t, the subset files of one pipeline run, encoded again from memory with
  the pipeline's options (codec, encodings), per column and whole.

Not counted: saving the match files, sampling, building the subset rows, writing the files,
setup and idle cores. For comparison, the fastest of ``--runs`` pipeline runs of the same
process (the later ones are the steady state) is printed: its CPU s and wall s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from metaclip.pipeline.memory import keep_freed_pages, use_reusing_pool

if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
    keep_freed_pages()  # as metaclip-curate: before pyarrow loads

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_bench import make_pool, run_once, total

from metaclip.core import Matcher
from metaclip.pipeline.config import Config
from metaclip.pipeline.startup import pyarrow_without_pandas
from metaclip.pipeline.subset import canonical_chunks, parquet_options


def best_cpu(fn: Callable[[], object], repeat: int) -> float:
    """Fewest CPU seconds (all threads of this process) of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    return best


def pipeline_run(cfg: Config) -> tuple[float, float, int]:
    """``pipeline_bench``'s run of every stage: (CPU s, wall s, subset rows), its
    references left out as there."""
    times, cpu, card, _ = run_once(cfg)
    return (
        sum(v for k, v in cpu.items() if "reference" not in k),
        total(times),
        card["subset"]["size"],
    )


def encode_costs(files: list[Path], cfg: Config, repeat: int) -> dict[str, float]:
    """CPU s to encode ``files`` again from memory: the text column, the entry ids, the
    other columns, and whole files, with the pipeline's codec and per-column options."""
    costs = dict.fromkeys(["text", "entry_ids", "other columns", "whole files"], 0.0)
    for path in files:
        table = canonical_chunks(pq.read_table(path))
        options = parquet_options(table.schema, cfg)
        ids = table.schema.names[-2]  # see subset_table: lang, entry_ids, keep_prob
        groups = {
            "text": [cfg.text_column],
            "entry_ids": [ids],
            "other columns": [c for c in table.column_names if c not in (cfg.text_column, ids)],
            "whole files": table.column_names,
        }
        for name, columns in groups.items():
            part = table.select(columns)
            kept = {c.split(".")[0] for c in columns}
            opts = {
                "use_dictionary": [c for c in options["use_dictionary"] if c.split(".")[0] in kept],
                "column_encoding": {
                    k: v for k, v in (options["column_encoding"] or {}).items()
                    if k.split(".")[0] in kept
                } or None,
            }  # fmt: skip

            def write(part=part, opts=opts):
                pq.write_table(
                    part, pa.BufferOutputStream(), row_group_size=max(1, part.num_rows),
                    compression=cfg.compression, **opts,
                )  # fmt: skip

            costs[name] += best_cpu(write, repeat)
    return costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--texts", type=int, default=5_000_000)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--t", type=float, nargs="+", default=[20, 20_000])
    ap.add_argument("--repeat", type=int, default=2, help="each part: the fewest CPU s of these")
    ap.add_argument("--runs", type=int, default=2, help="pipeline runs per t; the fastest is shown")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--target", type=float, default=1e6, help="texts/s end to end")
    ap.add_argument("--root", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument(
        "--smoke", action="store_true", help="toy size (200k texts, 3k entries): checks it works"
    )
    args = ap.parse_args()
    if args.smoke:
        args.entries, args.texts, args.shards, args.t = 3_000, 200_000, 2, [1, 1e9]
        args.repeat = args.runs = 1
    use_reusing_pool()
    pyarrow_without_pandas()

    md_path, pool = make_pool(args.root, args.entries, args.texts, args.shards)
    shards = sorted(pool.glob("*.parquet"))
    entries = json.loads(md_path.read_text())
    n = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    budget = n / args.target * args.cores
    print(f"pool: {n:,} texts in {len(shards)} shards, {len(entries):,} entries; "
          f"{args.target:,.0f} texts/s on {args.cores} cores allows {n / args.target:.2f} s, "
          f"at most {budget:.2f} CPU s")  # fmt: skip

    read = sum(best_cpu(lambda s=s: pq.ParquetFile(s).read(use_threads=False), args.repeat)
               for s in shards)  # fmt: skip
    texts = [pq.read_table(s, columns=["text"]).column("text").combine_chunks() for s in shards]
    match = {}
    for k in (len(entries), min(2_000, len(entries))):
        matcher = Matcher(entries[:k])
        match[k] = sum(
            best_cpu(lambda t=t, m=matcher: m.match(t, threads=1), args.repeat) for t in texts
        )

    runs, encodes = {}, {}
    for t in args.t:
        cfg = Config(
            pool=(str(pool),), metadata=str(md_path), out=str(args.root / "floor-run"), t=t,
            workers=args.cores, quiet=True,
        )  # fmt: skip
        runs[t] = min((pipeline_run(cfg) for _ in range(args.runs)), key=lambda r: r[1])
        encodes[t] = encode_costs(sorted((Path(cfg.out) / "subset").glob("*.parquet")), cfg,
                                  args.repeat)  # fmt: skip

    width = 44
    heads = [f"t = {t:,g} ({runs[t][2] / n:.0%} kept)" for t in args.t]
    print(f"\n{'CPU seconds, each part alone':{width}}" + "".join(f"{h:>26}" for h in heads))

    def row(label: str, values: list[float]) -> None:
        print(f"{label:{width}}" + "".join(f"{v:26.2f}" for v in values))

    row("read the pool, every column (pyarrow)", [read] * len(args.t))
    row(f"match, {len(entries):,} entries", [match[len(entries)]] * len(args.t))
    row(f"  same texts, first {min(2_000, len(entries)):,} entries",
        [match[min(2_000, len(entries))]] * len(args.t))  # fmt: skip
    for part in ("text", "entry_ids", "other columns", "whole files"):
        row(f"encode the subset: {part}", [encodes[t][part] for t in args.t])
    floor = [read + match[len(entries)] + encodes[t]["whole files"] for t in args.t]
    row("read + match + encode", floor)
    row("budget for the target", [budget] * len(args.t))
    made = [f"{runs[t][0]:.2f} CPU s, {runs[t][1]:.2f} s" for t in args.t]
    print(f"{'the pipeline run that made the files':{width}}" + "".join(f"{m:>26}" for m in made))
    shutil.rmtree(args.root / "floor-run", ignore_errors=True)


if __name__ == "__main__":
    main()
