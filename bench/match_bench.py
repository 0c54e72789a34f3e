"""Matching throughput: our matcher vs the reference approach (pyahocorasick) vs naive.

    python bench/match_bench.py                      # 500k entries, 1M texts
    python bench/match_bench.py --entries 50000 --texts 100000 --json out.json

Prints one table from one run: texts/s per core and MB/s for our matcher on 1 thread and
on all threads, the reference approach (pyahocorasick automaton over ``" " + entry + " "``,
spacing done in Python as the reference does) on a subsample, and the naive
``pattern in spacing(text)`` scan on a small subsample; plus build time and memory.
Match sets are compared across all three on the shared subsamples.

A second table (``--peer-texts`` texts, best of ``--repeat``) puts the peers a user would
pick instead beside ours, and the floor under our matcher; see ``bench/peers.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import peers
import workload

from metaclip.core import Matcher

PUNCTS = [",", ".", ";", ":", "?", "!", "`"]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def spacing(text: str) -> str:
    s = f" {text} "
    for p in PUNCTS:
        s = s.replace(p, f" {p} ")
    for c in ("\t", "\n", "\r"):
        s = s.replace(c, " ")
    return s


CPU = {}


def timed(fn, repeat: int = 1):
    """(result, best wall seconds); the CPU seconds of that best run go to CPU[fn]."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if wall < best:
            best, CPU["last"] = wall, cpu
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--texts", type=int, default=1_000_000)
    ap.add_argument("--ref-texts", type=int, default=100_000, help="pyahocorasick subsample")
    ap.add_argument("--naive-texts", type=int, default=50, help="naive-scan subsample")
    ap.add_argument("--peer-texts", type=int, default=200_000, help="peers' subsample (0: none)")
    ap.add_argument("--repeat", type=int, default=3, help="peers: best of this many runs")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    cores = os.cpu_count() or 1

    t0 = time.perf_counter()
    words, probs, source = workload.vocabulary()
    entries = workload.metadata(args.entries, words, probs)
    texts = workload.texts(args.texts, words, probs)
    nbytes = sum(len(t.encode()) for t in texts)
    print(
        f"workload: {len(entries):,} entries, {len(texts):,} texts, {nbytes / len(texts):.0f} B"
        f"/text avg, words from {source} (generated in {time.perf_counter() - t0:.1f}s)"
    )

    gc.collect()
    rss0 = rss_bytes()
    m, build = timed(lambda: Matcher(entries))
    rss_ours = rss_bytes() - rss0
    heap_ours = m.memory_bytes()

    rows = []

    def row(name, n, secs, threads):
        rate = n / secs
        rows.append(
            {
                "engine": name,
                "texts": n,
                "seconds": round(secs, 3),
                "threads": threads,
                "texts_per_s": round(rate),
                "texts_per_s_per_core": round(rate / threads),
                # Robust on a shared machine: texts per second of CPU this process used.
                "texts_per_cpu_s": round(n / max(CPU["last"], 1e-9)),
                "mb_per_s": round(nbytes / len(texts) * rate / 1e6, 1),
            }
        )

    ours1, s1 = timed(lambda: m.match(texts, threads=1), repeat=2)
    row("metaclip (1 thread, list[str] input)", len(texts), s1, 1)
    import pyarrow as pa

    arrow = pa.array(texts, pa.large_string())
    _, sa = timed(lambda: m.match(arrow, threads=1), repeat=2)
    row("metaclip (1 thread, Arrow column input)", len(texts), sa, 1)
    oursn, sn = timed(lambda: m.match(texts, threads=0), repeat=2)
    row(f"metaclip ({cores} threads)", len(texts), sn, cores)
    assert (ours1.ids == oursn.ids).all() and (ours1.offsets == oursn.offsets).all()

    import ahocorasick

    gc.collect()
    rss1 = rss_bytes()

    def build_ref():
        a = ahocorasick.Automaton()
        for i, e in enumerate(entries):
            a.add_word(f" {e} ", i)
        a.make_automaton()
        return a

    auto, build_ref_s = timed(build_ref)
    rss_ref = rss_bytes() - rss1
    sub = texts[: args.ref_texts]

    def run_ref():
        return [sorted({v for _, v in auto.iter(spacing(t.strip()))}) for t in sub]

    ref, s_ref = timed(run_ref)
    row("reference: pyahocorasick + Python spacing", len(sub), s_ref, 1)
    ours_sub = [ours1.row(i).tolist() for i in range(len(sub))]
    same_ref = ours_sub == ref

    tiny = texts[: args.naive_texts]
    patterns = [f" {e} " for e in entries]

    def run_naive():
        out = []
        for t in tiny:
            s = spacing(t.strip())
            out.append([i for i, p in enumerate(patterns) if p in s])
        return out

    naive, s_naive = timed(run_naive)
    row("naive: pattern in spacing(text)", len(tiny), s_naive, 1)
    same_naive = naive == ours_sub[: len(tiny)]

    nnz = len(ours1.ids)
    print(f"matches: {nnz:,} (text, entry) pairs, {ours1.matched.mean():.1%} of texts matched")
    print(f"identical match sets: ours vs pyahocorasick {same_ref}, ours vs naive {same_naive}\n")
    print(
        f"{'engine':44} {'texts':>9} {'texts/s':>12} {'per core':>12} {'per CPU-s':>12} {'MB/s':>8}"
    )
    for r in rows:
        print(
            f"{r['engine']:44} {r['texts']:>9,} {r['texts_per_s']:>12,} "
            f"{r['texts_per_s_per_core']:>12,} {r['texts_per_cpu_s']:>12,} {r['mb_per_s']:>8}"
        )
    base = rows[3]["texts_per_s_per_core"]
    cpu_base = rows[3]["texts_per_cpu_s"]
    print(
        f"\nspeed-up per core vs pyahocorasick: {rows[0]['texts_per_s_per_core'] / base:.1f}x "
        f"(1 thread, wall), {rows[0]['texts_per_cpu_s'] / cpu_base:.1f}x (CPU time), "
        f"{rows[1]['texts_per_cpu_s'] / cpu_base:.1f}x (Arrow input, CPU time); "
        f"all threads vs 1 reference core: {rows[2]['texts_per_s'] / base:.1f}x"
    )
    n = len(entries)
    print(
        f"build: ours {build:.2f}s, heap {heap_ours / 1e6:.1f} MB ({heap_ours / n:.0f} B/entry), "
        f"RSS delta {rss_ours / 1e6:.1f} MB ({rss_ours / n:.0f} B/entry)\n"
        f"       pyahocorasick {build_ref_s:.2f}s, RSS delta {rss_ref / 1e6:.1f} MB "
        f"({rss_ref / n:.0f} B/entry)"
    )
    peer_rows = []
    if args.peer_texts:
        sub = texts[: args.peer_texts]
        peer_rows = peers.rust_peers(
            entries, sub, Path(__file__).parent / "out" / "peers-en", repeat=args.repeat
        )
        ours_peer = ours1.lists()[: len(sub)]
        py_sub = sub[: args.ref_texts]
        peer_rows += peers.python_peers(
            entries, py_sub, ours_peer[: len(py_sub)], repeat=args.repeat, skip=("pyahocorasick",)
        )
        peers.print_table(
            peer_rows,
            f"peers, 1 thread, best of {args.repeat} (Rust: {len(sub):,} texts; "
            f"Python: {len(py_sub):,})",
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "entries": n,
                    "texts": len(texts),
                    "bytes_per_text": nbytes / len(texts),
                    "word_source": source,
                    "rows": rows,
                    "identical_to_reference": same_ref,
                    "identical_to_naive": same_naive,
                    "build_s": build,
                    "heap_bytes": heap_ours,
                    "rss_delta_bytes": rss_ours,
                    "ref_build_s": build_ref_s,
                    "ref_rss_delta_bytes": rss_ref,
                    "peers": peer_rows,
                },
                indent=2,
            )
        )
    if not (same_ref and same_naive):
        sys.exit("match sets differ")


if __name__ == "__main__":
    main()
