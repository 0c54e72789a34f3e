"""Ray Data engine vs the embedded engine on the same pool: seconds per stage, texts/s and
the overhead ratio, measured in the same run (and the two subsets checked identical).

    python bench/ray_bench.py                          # 100k entries, 1M texts, 16 shards
    python bench/ray_bench.py --texts 200000 --json out.json
    python bench/ray_bench.py --ray-address auto       # an existing cluster

The pool (alt-text-like captions, see workload.py) is generated once and cached under
bench/out/. Both engines get the same CPUs: the embedded one ``--workers`` shards at once
with one matching thread each, Ray a local instance of ``--workers`` CPUs (one actor per
CPU, one thread each) unless ``--ray-address`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_bench import make_pool  # sets Arrow's jemalloc up before pyarrow loads

from metaclip.pipeline.config import Config
from metaclip.pipeline.engine import Engine
from metaclip.pipeline.memory import use_reusing_pool

STAGES = ["setup", "match", "count", "balance", "sample", "write", "datacard"]


def timed_run(engine_factory) -> tuple[dict[str, float], dict]:
    times: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        r = fn()
        times[name] = time.perf_counter() - t
        return r

    engine = timed("setup", engine_factory)
    timed("match", engine.match)
    counts = timed("count", engine.count)
    probs, per_lang = timed("balance", lambda: engine.balance(counts))
    timed("sample", lambda: engine.sample(probs))
    draft = timed("write", engine.write)
    card = timed("datacard", lambda: engine.datacard(counts, per_lang))
    timed("publish", lambda: engine.publish(card, draft))
    engine.close()
    return times, card


def subset_bytes(out: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((out / "subset").glob("*.parquet"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--texts", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="CPUs for each engine")
    ap.add_argument("--t", type=float, default=100)
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--root", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    use_reusing_pool()  # as metaclip-curate (and the Ray engine's workers) set it

    import ray

    from metaclip.pipeline.ray_engine import RayEngine

    md, pool = make_pool(args.root, args.entries, args.texts, args.shards)
    results = {}
    for name in ("embedded", "ray"):
        out = args.root / f"ray-bench-{name}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = Config(
            pool=(str(pool),), out=str(out), metadata=str(md), t=args.t, workers=args.workers,
            threads=1, quiet=True,
        )  # fmt: skip
        if name == "embedded":
            results[name] = timed_run(lambda cfg=cfg: Engine(cfg))
        else:
            t = time.perf_counter()
            if args.ray_address:
                ray.init(address=args.ray_address, log_to_driver=False)
            else:
                ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
            start = time.perf_counter() - t
            # Warm-up on one shard: Ray's first task workers and each stage's actor pool
            # cost seconds to start, whatever the pool size (reported as fixed cost).
            one = replace(cfg, pool=(str(sorted(pool.glob("*.parquet"))[0]),), out=str(out) + "-1")
            shutil.rmtree(one.out, ignore_errors=True)
            warm, _ = timed_run(lambda one=one: RayEngine(one))
            times, card = timed_run(lambda cfg=cfg: RayEngine(cfg))
            results[name] = ({"ray.init": start, **times}, card)
            results["ray-1-shard"] = (warm, None)
            ray.shutdown()
    same = subset_bytes(args.root / "ray-bench-embedded") == subset_bytes(
        args.root / "ray-bench-ray"
    )

    (emb, card), (ray_t, _) = results["embedded"], results["ray"]
    n = card["pool"]["texts"]
    where = args.ray_address or f"local Ray, {args.workers} CPUs"
    print(
        f"\npool: {n:,} texts in {args.shards} shards, {args.entries:,} entries; "
        f"subset {card['subset']['size']:,}; embedded: {args.workers} workers; ray: {where}"
    )
    print(f"subsets identical: {same}")
    print(f"{'stage':12} {'embedded s':>11} {'ray s':>9} {'ray/emb':>8} {'emb texts/s':>12} "
          f"{'ray texts/s':>12}")  # fmt: skip
    rows = [*(["ray.init"] if "ray.init" in ray_t else []), *STAGES]
    for k in rows:
        e, r = emb.get(k, 0.0), ray_t.get(k, 0.0)
        ratio = f"{r / e:8.2f}" if e > 0.001 else f"{'-':>8}"
        print(f"{k:12} {e:11.2f} {r:9.2f} {ratio} {n / e if e > 0.001 else 0:12,.0f} "
              f"{n / r if r > 0.001 else 0:12,.0f}")  # fmt: skip
    te = sum(emb.values())
    tr = sum(v for k, v in ray_t.items() if k != "ray.init")
    print(f"{'end to end':12} {te:11.2f} {tr:9.2f} {tr / te:8.2f} {n / te:12,.0f} {n / tr:12,.0f}")
    warm = sum(results["ray-1-shard"][0].values())
    print("(end to end: every stage, without ray.init; Ray's workers warmed up beforehand)")
    print(f"Ray's first run on one shard ({n // args.shards:,} texts, cold workers): {warm:.2f} s")
    if args.json:
        figures = {
            "texts": n, "shards": args.shards, "entries": args.entries, "workers": args.workers,
            "embedded_s": emb, "ray_s": ray_t, "identical": same,
            "texts_per_s": {"embedded": n / te, "ray": n / tr}, "overhead_ratio": tr / te,
            "ray_cold_one_shard_s": warm,
        }  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
