"""Worldwide matching: many languages, millions of entries, one matcher per language.

    python bench/worldwide_bench.py                       # 50 languages × 100k entries, 1M texts
    python bench/worldwide_bench.py --langs 10 --entries-per-lang 20000 --texts 200000

Per-language metadata and texts are generated: each language gets its own synthetic
vocabulary in its own script (Latin, Cyrillic, Greek, Arabic, Devanagari, Hangul — all
matched at the word level — and Han, Thai, Kana, which MC2 matches as substrings with an
Aho-Corasick automaton), Zipf-distributed, 60% single words and 40% two-word entries.
Texts are routed to their language's matcher through the pipeline's own
``stages.match_table`` (language column given, as after LID). Prints build time, resident
memory and bytes per entry for both kinds of language, and texts/s.

Then, per substring script (Han, Thai; ``--peer-texts`` texts of one generated language
each, best of ``--repeat``), our matcher on one thread beside the peers a user would pick
instead and the automaton crates themselves (``bench/peers.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
import peers

from metaclip.core import Matcher
from metaclip.pipeline import stages
from metaclip.pipeline.metadata import Metadata

SCRIPTS = {
    "latin": (0x61, 26, True),
    "cyrillic": (0x430, 32, True),
    "greek": (0x3B1, 24, True),
    "arabic": (0x627, 26, True),
    "devanagari": (0x915, 36, True),
    "hangul": (0xAC00, 400, True),
    "han": (0x4E00, 3000, False),  # written without spaces
    "thai": (0xE01, 46, False),
    "kana": (0x30A2, 80, False),  # not CJK-like in MC2: padded, so no match inside text
}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def language(i: int, n_entries: int, n_texts: int, rng) -> tuple[str, list[str], list[str], bool]:
    script = list(SCRIPTS)[i % len(SCRIPTS)]
    base, span, spaced = SCRIPTS[script]
    n_words = int(n_entries * 0.8)
    lengths = rng.integers(2 if spaced else 1, 9 if spaced else 4, size=n_words)
    chars = rng.integers(0, span, size=int(lengths.sum())) + base
    flat = "".join(map(chr, chars))
    words, at = [], 0
    for n in lengths:
        words.append(flat[at : at + n])
        at += n
    words = list(dict.fromkeys(words))
    zipf = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    zipf /= zipf.sum()
    sep = " " if spaced else ""
    entries = dict.fromkeys(words[: int(n_entries * 0.6)])
    pairs = rng.choice(len(words), size=(n_entries, 2), p=zipf)
    for a, b in pairs:
        if len(entries) >= n_entries:
            break
        entries.setdefault(words[a] + " " + words[b] if spaced else words[a] + words[b])
    draws = rng.choice(len(words), size=n_texts * 10, p=zipf)
    lens = rng.integers(4, 16, size=n_texts)
    texts, at = [], 0
    for n in lens:
        texts.append(sep.join(words[j] for j in draws[at : at + n]))
        at += n
    return f"l{i:02d}-{script}", list(entries), texts, spaced


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--langs", type=int, default=50)
    ap.add_argument("--entries-per-lang", type=int, default=110_000)
    ap.add_argument("--texts", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--peer-texts", type=int, default=200_000, help="per script (0: no peers)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    per_lang = args.texts // args.langs
    entries, texts, langs, spaced = {}, [], [], {}
    for i in range(args.langs):
        name, ents, txts, sp = language(i, args.entries_per_lang, per_lang, rng)
        entries[name], spaced[name] = ents, sp
        texts += txts
        langs += [name] * len(txts)
    n_entries = sum(len(v) for v in entries.values())
    print(f"generated {args.langs} languages, {n_entries:,} entries, {len(texts):,} texts "
          f"in {time.perf_counter() - t0:.0f}s", file=sys.stderr)  # fmt: skip

    md = Metadata(entries, mode="mc2")
    gc.collect()
    base = rss()
    build = {}
    mem = {}
    for lang in md.langs:
        before = rss()
        t = time.perf_counter()
        m = md.matcher(lang)
        build[lang] = time.perf_counter() - t
        mem[lang] = (m.memory_bytes(), rss() - before, m.n_substring_entries)
    total_rss = rss() - base
    table = pa.table(
        {
            "__text": pa.array(texts, pa.large_string()),
            "__lang": pa.array(langs, pa.string()),
            "__skip": pa.nulls(len(texts), pa.string()),
        }
    )
    t = time.perf_counter()
    _, st, _ = stages.match_table(table, md, threads=args.threads)
    secs = time.perf_counter() - t

    # Classified by what the matcher did: MC2 keeps the pads of kana entries (spec §2).
    sub = [k for k in md.langs if mem[k][2] * 2 > len(entries[k])]
    word = [k for k in md.langs if k not in sub]

    def per_entry(keys, field):
        n = sum(len(entries[k]) for k in keys)
        return sum(mem[k][field] for k in keys) / max(n, 1), n

    print(f"\n{'':34} {'entries':>11} {'heap B/entry':>13} {'RSS B/entry':>12} {'build s':>8}")
    for label, keys in [("word-level languages", word), ("substring (CJK/Thai/kana)", sub)]:
        heap, n = per_entry(keys, 0)
        rss_e, _ = per_entry(keys, 1)
        b = sum(build[k] for k in keys)
        print(f"{label:34} {n:>11,} {heap:>13.0f} {rss_e:>12.0f} {b:>8.1f}")
    print(f"{'all':34} {n_entries:>11,} {'':>13} {total_rss / n_entries:>12.0f} "
          f"{sum(build.values()):>8.1f}")  # fmt: skip
    print(f"\nmatching {len(texts):,} texts across {args.langs} languages: {secs:.2f}s = "
          f"{len(texts) / secs:,.0f} texts/s ({os.cpu_count()} threads); "
          f"{st.matched:,} texts matched; resident memory of all matchers "
          f"{total_rss / 2**20:,.0f} MiB")  # fmt: skip
    peer_rows = {}
    for script in ["han", "thai"] if args.peer_texts else []:
        i = list(SCRIPTS).index(script)
        rng = np.random.default_rng(100 + i)
        _, ents, txts, _ = language(i, args.entries_per_lang, args.peer_texts, rng)
        m = Matcher(ents, "mc2")
        res, best = None, float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            res = m.match(txts, threads=1)
            best = min(best, time.perf_counter() - t)
        print(f"\n{script}: ours through Python, 1 thread: {len(txts) / best:,.0f} texts/s")
        ours = res.lists()
        rows = peers.rust_peers(
            ents, txts, Path(__file__).parent / "out" / f"peers-{script}", "mc2", args.repeat
        )
        # The word-level floor means nothing here: a text is one token.
        rows = [r for r in rows if "floor" not in r["engine"]]
        py_n = min(len(txts), 50_000)
        rows += peers.python_peers(ents, txts[:py_n], ours[:py_n], "mc2", args.repeat)
        avg = sum(len(t.encode()) for t in txts) / len(txts)
        peers.print_table(
            rows,
            f"{script}: {len(ents):,} entries, {len(txts):,} texts ({avg:.0f} B avg; Python "
            f"peers on {py_n:,}), 1 thread, best of {args.repeat}",
        )
        peer_rows[script] = rows
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "languages": args.langs,
                    "entries": n_entries,
                    "texts": len(texts),
                    "seconds": secs,
                    "rss_bytes": total_rss,
                    "build_s": build,
                    "memory": mem,
                    "peers": peer_rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
