"""What a user would pick instead of metaclip, run on the same texts and entries.

Python peers: pyahocorasick (the reference), ``ahocorasick_rs`` and polars
``str.extract_many(..., overlapping=True)``, each over the spec's spacing and patterns.
Rust peers (the ``aho-corasick`` and ``daachorse`` crates) and the floor under our matcher
(tokenise + hash, + one probe) run in the bench-only binary ``bench/peers-rs``, built with
``cargo build --release -p metaclip-peers``, on the files this module writes.

Every row reports texts/s on one core, MB/s, bytes/entry and how many texts' match sets
differ from ours.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from reference import pattern, spacing  # noqa: E402  (the spec's own statement)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _best(fn, repeat: int):
    """(result, best wall seconds, CPU seconds of that run)."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, cpu = wall, time.process_time() - c
    return out, best, cpu


def _row(engine, texts, wall, cpu, build, mem, entries, ours, got, note=""):
    nbytes = sum(len(t.encode()) for t in texts)
    differ = None if got is None else sum(g != o for g, o in zip(got, ours, strict=True))
    return {
        "engine": engine,
        "texts": len(texts),
        "texts_per_s": len(texts) / wall,
        "texts_per_cpu_s": len(texts) / max(cpu, 1e-9),
        "mb_per_s": nbytes / wall / 1e6,
        "build_s": build,
        "bytes_per_entry": None if mem is None else mem / len(entries),
        "differing_texts": differ,
        "note": note,
    }


def python_peers(entries, texts, ours, mode="mc1", repeat=3, skip=()):
    """Rows for pyahocorasick, ahocorasick_rs and polars; ``ours`` = our sorted id lists."""
    patterns = [pattern(e, mode) for e in entries]
    rows = []

    if "pyahocorasick" not in skip:
        import ahocorasick

        gc.collect()
        r0, t = _rss(), time.perf_counter()
        a = ahocorasick.Automaton()
        for i, p in enumerate(patterns):
            a.add_word(p, i)
        a.make_automaton()
        build, mem = time.perf_counter() - t, _rss() - r0

        def run_ref():
            return [sorted({v for _, v in a.iter(spacing(t.strip()))}) for t in texts]

        got, wall, cpu = _best(run_ref, repeat)
        name = "pyahocorasick + Python spacing (reference)"
        rows.append(_row(name, texts, wall, cpu, build, mem, entries, ours, got, "RSS delta"))
        del a

    try:
        import ahocorasick_rs
    except ImportError:
        print("ahocorasick_rs not installed (pip install ahocorasick-rs): skipped", file=sys.stderr)
    else:
        gc.collect()
        r0, t = _rss(), time.perf_counter()
        ac = ahocorasick_rs.AhoCorasick(
            patterns, matchkind=ahocorasick_rs.MatchKind.Standard, store_patterns=False
        )
        build, mem = time.perf_counter() - t, _rss() - r0

        def run_rs():
            find = ac.find_matches_as_indexes
            return [
                sorted({i for i, _, _ in find(spacing(t.strip()), overlapping=True)}) for t in texts
            ]

        got, wall, cpu = _best(run_rs, repeat)
        name = "ahocorasick_rs + Python spacing"
        rows.append(_row(name, texts, wall, cpu, build, mem, entries, ours, got, "RSS delta"))
        del ac

    try:
        import polars as pl
    except ImportError:
        print("polars not installed (pip install polars): skipped", file=sys.stderr)
        return rows

    ids_of = pl.DataFrame(
        {"m": patterns, "id": range(len(patterns))}, schema_overrides={"id": pl.UInt32}
    )

    def spaced_col() -> pl.Expr:
        # spacing() as polars expressions (strip_chars' whitespace set differs a little
        # from Python's str.strip; the generated texts have neither at their ends).
        e = pl.col("t").str.strip_chars()
        for p in [",", ".", ";", ":", "?", "!", "`"]:
            e = e.str.replace_all(p, f" {p} ", literal=True)
        for c in ["\t", "\n", "\r"]:
            e = e.str.replace_all(c, " ", literal=True)
        return pl.lit(" ") + e + pl.lit(" ")

    df = pl.DataFrame({"t": texts})

    def run_polars():
        return df.select(spaced_col().str.extract_many(patterns, overlapping=True).alias("m"))

    found, wall, cpu = _best(run_polars, repeat)
    # The automaton's build alone: the same call on one text.
    one = pl.DataFrame({"t": texts[:1]})
    t = time.perf_counter()
    one.select(spaced_col().str.extract_many(patterns, overlapping=True))
    build = time.perf_counter() - t
    # Patterns back to ids (not timed): explode, join, one sorted set per row.
    ex = found.with_row_index("row").explode("m").join(ids_of, on="m", how="left")
    per_row = ex.group_by("row").agg(pl.col("id").drop_nulls().unique().sort())
    got: list[list[int]] = [[] for _ in texts]  # explode drops rows with no match
    for row, ids in zip(per_row["row"].to_list(), per_row["id"].to_list(), strict=True):
        got[row] = ids
    rows.append(
        _row(
            "polars str.extract_many(overlapping=True)",
            texts,
            wall,
            cpu,
            build,
            None,
            entries,
            ours,
            got,
            "automaton built inside each call (build s = a call on one text); "
            "ids from patterns not timed",
        )
    )
    return rows


def rust_bin() -> Path | None:
    """bench/peers-rs, built or brought up to date first when cargo is here (a binary
    left from an older checkout would measure that checkout's matcher)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    exe = target / "release" / "metaclip-peers"
    if shutil.which("cargo"):
        print("building bench/peers-rs (cargo build --release -p metaclip-peers)", file=sys.stderr)
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "metaclip-peers"], cwd=ROOT, check=True
        )
    return exe if exe.exists() else None


def rust_peers(entries, texts, workdir: Path, mode="mc1", repeat=3):
    """Rows from bench/peers-rs on the same entries and texts (written as JSON)."""
    exe = rust_bin()
    if exe is None:
        print("no cargo: Rust peers skipped", file=sys.stderr)
        return []
    workdir.mkdir(parents=True, exist_ok=True)
    ep, tp = workdir / "entries.json", workdir / "texts.json"
    ep.write_text(json.dumps(entries))
    tp.write_text(json.dumps(texts))
    out = subprocess.run(
        [str(exe), str(ep), str(tp), mode, str(repeat)], check=True, capture_output=True, text=True
    )
    rows = json.loads(out.stdout)["rows"]
    for r in rows:
        r["texts"] = len(texts)
        r["engine"] = "Rust: " + r["engine"]
    return rows


def print_table(rows, title: str) -> None:
    print(f"\n{title}")
    print(
        f"{'engine':58} {'texts/s/core':>13} {'per CPU-s':>12} {'MB/s':>7} "
        f"{'B/entry':>8} {'build s':>8}  same sets as ours"
    )
    for r in rows:
        d = r["differing_texts"]
        same = "-" if d is None else ("yes" if d == 0 else f"NO: {d:,} of {r['texts']:,} texts")
        bpe = "-" if not r["bytes_per_entry"] else f"{r['bytes_per_entry']:.0f}"
        build = "-" if not r.get("build_s") else f"{r['build_s']:.2f}"
        print(
            f"{r['engine']:58} {r['texts_per_s']:>13,.0f} {r['texts_per_cpu_s']:>12,.0f} "
            f"{r['mb_per_s']:>7.1f} {bpe:>8} {build:>8}  {same}"
        )
    ours = next((r for r in rows if r["engine"] == "Rust: metaclip"), None)
    for r in rows:
        if ours and "floor" in r["engine"]:
            wall = ours["texts_per_s"] / r["texts_per_s"]
            cpu = ours["texts_per_cpu_s"] / r["texts_per_cpu_s"]
            name = r["engine"].removeprefix("Rust: ")
            print(f"our matcher = {cpu:.0%} of '{name}' per CPU-s ({wall:.0%} by wall time)")
