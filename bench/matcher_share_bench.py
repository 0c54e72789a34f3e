"""One matcher per node: build vs load of a saved matcher file, and memory (PSS) of
worker processes that each map it.

    python bench/matcher_share_bench.py                          # 5M entries, one language
    python bench/matcher_share_bench.py --langs 300 --entries 27000000 --workers 1 8

Metadata is generated as in ``worldwide_bench.py`` (Zipf words in several scripts; Han and
Thai languages need the substring automaton). Prints, per setting:

- build time (``Matcher(entries)``, every language), save time, and load time
  (``Matcher.load``: map the file and check the header; every table, the substring
  automaton included, is used in place); the file is in the page cache (written just
  before), as on a node where a first process wrote it; split into languages with a
  substring automaton and languages that are all word tables;
- single-thread texts/s of the built and the loaded matcher on the same texts (best of
  ``--repeat``), and whether their results are identical;
- for 1 and N worker processes that each load the file (or, as the baseline, each build
  its own matchers) and match ``--texts`` texts: the sum of their PSS (proportional set
  size, from ``/proc/<pid>/smaps_rollup``; pages shared by k processes count 1/k each)
  read while all of them are alive. RSS would count the shared file pages once per process.
  "no matcher" workers run the same code with a one-entry matcher per language: the
  floor (interpreter, imports, texts, match outputs) under the others.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from worldwide_bench import language

from metaclip.core import Matcher


def smaps_rollup(pid: int | str = "self") -> dict[str, int]:
    """Bytes per field of ``/proc/<pid>/smaps_rollup`` (Rss, Pss, Pss_Anon, Pss_File...)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def generate(n_langs: int, n_entries: int, n_texts: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    per = n_entries // n_langs
    entries, texts = {}, {}
    for i in range(n_langs):
        name, ents, txts, _ = language(i, per, max(1, n_texts // n_langs), rng)
        entries[name], texts[name] = ents, txts
    return entries, texts


def worker(job: dict, barrier, results) -> None:
    """Load (or build) every language's matcher, match its texts, then report PSS while
    every worker is still alive."""
    with open(job["texts"], "rb") as f:
        texts = pickle.load(f)
    t = time.perf_counter()
    if job["build"] is None:  # the floor: imports, texts and match outputs, no tables
        ms = {k: Matcher(["\x00"], job["mode"]) for k in job["files"]}
    elif job["build"]:
        with open(job["entries"], "rb") as f:
            entries = pickle.load(f)
        ms = {k: Matcher(v, job["mode"]) for k, v in entries.items()}
        del entries
    else:
        ms = {k: Matcher.load(p) for k, p in job["files"].items()}
    ready = time.perf_counter() - t
    n = sum(len(ms[k].match(texts[k], threads=1).ids) for k in ms)
    n = n if job["build"] is not None else None  # the floor matches nothing
    gc.collect()
    barrier.wait()
    mem = smaps_rollup()
    results.put((os.getpid(), ready, n, mem))
    barrier.wait()  # stay mapped until every worker has read its own figures


def run_workers(k: int, job: dict) -> dict:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(job, barrier, results)) for _ in range(k)]
    for p in procs:
        p.start()
    got = [results.get() for _ in range(k)]
    for p in procs:
        p.join()
    assert len({g[2] for g in got}) == 1, "workers disagree"
    mem = [g[3] for g in got]
    return {
        "workers": k,
        "ready_s": max(g[1] for g in got),
        "pss": sum(m["Pss"] for m in mem),
        "pss_anon": sum(m.get("Pss_Anon", 0) for m in mem),
        "pss_file": sum(m.get("Pss_File", 0) for m in mem),
        "rss": sum(m["Rss"] for m in mem),
    }


def best(f, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--langs", type=int, default=1)
    ap.add_argument("--entries", type=int, default=5_000_000)
    ap.add_argument("--texts", type=int, default=200_000, help="matched per worker")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--baseline", action="store_true", help="also: every worker builds")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where the files go (a temp dir)")
    args = ap.parse_args()
    mode = "mc2"
    t = time.perf_counter()
    entries, texts = generate(args.langs, args.entries, args.texts)
    n_entries = sum(map(len, entries.values()))
    print(f"generated {args.langs} languages, {n_entries:,} entries, "
          f"{sum(map(len, texts.values())):,} texts in {time.perf_counter() - t:.0f}s")  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="matcher-share-", dir=args.dir))
    built, files = {}, {}
    t = time.perf_counter()
    for k, v in entries.items():
        built[k] = Matcher(v, mode)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    for k, m in built.items():
        files[k] = tmp / f"{k}.mcm"
        m.save(files[k])
    save_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in files.values())
    # Per language, so that the languages with a substring automaton can be told from
    # those that are all word tables.
    per_lang = {k: float("inf") for k in files}
    for _ in range(args.repeat):
        for k, p in files.items():
            t = time.perf_counter()
            Matcher.load(p)
            per_lang[k] = min(per_lang[k], time.perf_counter() - t)
    loaded = {k: Matcher.load(p) for k, p in files.items()}
    load_s = sum(per_lang.values())
    has_sub = {k for k, m in built.items() if m.n_substring_entries}
    heap = sum(m.memory_bytes() for m in built.values())
    sub = sum(m.n_substring_entries for m in built.values())

    print(f"\n{n_entries:,} entries ({sub:,} substring), {args.langs} languages, mode {mode}")
    print(f"{'':28}{'seconds':>10}{'vs build':>10}")
    print(f"{'build (in memory)':28}{build_s:10.2f}{1.0:10.2f}")
    print(f"{'save (write + rename)':28}{save_s:10.2f}{save_s / build_s:10.3f}")
    print(f"{'load (mmap, best of ' + str(args.repeat) + ')':28}{load_s:10.4f}"
          f"{load_s / build_s:10.5f}   ({load_s * 1e3:.2f} ms)")  # fmt: skip
    for what, keys in (("with", has_sub), ("without", set(files) - has_sub)):
        if keys:
            ms = sum(per_lang[k] for k in keys) * 1e3
            n = sum(built[k].n_entries for k in keys)
            print(f"  load, {len(keys)} languages {what} substring entries: {ms:.2f} ms "
                  f"({n:,} entries, {ms * 1e6 / max(n, 1):.0f} ns/entry)")  # fmt: skip
    auto = sum(m.automaton_bytes() for m in built.values())
    print(f"tables {heap / 1e6:.0f} MB in memory ({heap / n_entries:.0f} B/entry); "
          f"file {size / 1e6:.0f} MB; substring automata {auto / 1e6:.1f} MB of it")  # fmt: skip

    n_texts = sum(map(len, texts.values()))
    same = all(
        np.array_equal(built[k].match(texts[k]).ids, loaded[k].match(texts[k]).ids)
        and np.array_equal(built[k].match(texts[k]).offsets, loaded[k].match(texts[k]).offsets)
        for k in built
    )
    rates = {}
    for name, ms in (("built", built), ("loaded", loaded)):
        secs = best(lambda ms=ms: [ms[k].match(texts[k], threads=1) for k in ms], args.repeat)
        rates[name] = n_texts / secs
    print(f"\nmatch, 1 thread, {n_texts:,} texts: built {rates['built']:,.0f}/s, loaded "
          f"{rates['loaded']:,.0f}/s ({rates['loaded'] / rates['built']:.2f}x); "
          f"identical: {same}")  # fmt: skip
    del built, loaded
    gc.collect()

    data = [tmp / "entries.pkl", tmp / "texts.pkl"]
    for p, obj in zip(data, (entries, texts), strict=True):
        with open(p, "wb") as f:
            pickle.dump(obj, f)
    del entries
    gc.collect()
    job = {
        "entries": str(data[0]),
        "texts": str(data[1]),
        "files": {k: str(p) for k, p in files.items()},
        "mode": mode,
    }
    rows = []
    names = {None: "no matcher", False: "load file", True: "build each"}
    for build in [None, False, True] if args.baseline else [None, False]:
        for k in args.workers:
            rows.append((names[build], run_workers(k, {**job, "build": build})))
    print(f"\nworker processes, each matching {args.texts // args.langs * args.langs:,} texts"
          " (sums over the workers, MB)")  # fmt: skip
    print(f"{'matchers':12}{'workers':>8}{'PSS':>10}{'PSS anon':>10}{'PSS file':>10}"
          f"{'RSS':>10}{'PSS/worker':>12}{'ready ms':>10}")  # fmt: skip
    for how, r in rows:
        print(f"{how:12}{r['workers']:8}{r['pss'] / 1e6:10.0f}{r['pss_anon'] / 1e6:10.0f}"
              f"{r['pss_file'] / 1e6:10.0f}{r['rss'] / 1e6:10.0f}"
              f"{r['pss'] / r['workers'] / 1e6:12.0f}{r['ready_s'] * 1e3:10.1f}")  # fmt: skip
    for p in [*files.values(), *data]:
        p.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
