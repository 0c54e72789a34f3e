"""N-gram counting throughput and memory of the metadata builder's Rust counter.

Generates a Zipf-distributed synthetic corpus (``--gb`` GB, ~20 words a line, vocabulary
``--vocab`` words), then, each in a fresh subprocess so peak RSS is its own:

* ``rust``: ``metaclip._core.NgramCounter.add_file`` over the whole corpus (bigram table
  bounded by ``--mem-mb``, spilling sorted runs to disk beyond it), then the MC2 selections
  (top unigrams; bigrams by PMI, top 100,646);
* ``ref-python``: the MetaCLIP 2 reference algorithm (``simple_tokenizer`` +
  ``count_ngrams`` with dicts, char-by-char Python) on the first ``--baseline-mb`` MB;
* ``split+Counter``: an optimistic pure-Python baseline (``str.split`` + ``Counter``) on
  the same slice.

Prints MB/s, ratios to the reference, and peak RSS; ``--json`` writes the figures.

    python bench/ngram_bench.py            # 0.25 GB, < 2 minutes on 2 cores
    python bench/ngram_bench.py --gb 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD_RUST = r"""
import json, sys, time
from metaclip._core import NgramCounter
path, budget, spill = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = NgramCounter(mem_budget_bytes=budget, spill_dir=spill)
t0 = time.perf_counter()
c.add_file(path)
t1 = time.perf_counter()
uni = c.top_unigrams(1, 25146)
rows, st = c.bigrams_by_pmi(30.0, inclusive=False, top_k=100646)
t2 = time.perf_counter()
s = c.stats()
print(json.dumps({"count_s": t1 - t0, "select_s": t2 - t1, "stats": s, "pmi": st,
    "bigram_capacity": c.bigram_capacity,
    "rss_mb": int(next(l.split()[1] for l in open("/proc/self/status")
    if l.startswith("VmHWM"))) / 1024}))
"""

CHILD_REF = r"""
import json, string, sys, time
from collections import Counter, defaultdict
path, nbytes, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, encoding="utf-8") as f:
    text = f.read(nbytes)
punct = set(string.punctuation)
def is_cjk_or_similar(ch):
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x0E00 <= cp <= 0x0E7F
            or 0x1000 <= cp <= 0x109F or ch in punct)
def simple_tokenizer(text):
    tokens, cur = [], []
    for ch in text:
        if is_cjk_or_similar(ch):
            if cur:
                tokens.append("".join(cur)); cur = []
            tokens.append(ch)
        elif ch.isspace():
            if cur:
                tokens.append("".join(cur)); cur = []
        else:
            cur.append(ch)
    if cur:
        tokens.append("".join(cur))
    return tokens
t0 = time.perf_counter()
if mode == "ref":
    uni, bi = defaultdict(int), defaultdict(int)
    prev = None
    for tok in simple_tokenizer(text):
        if all(c in punct for c in tok):
            prev = None; continue
        uni[tok] += 1
        if prev is not None:
            bi[f"{prev} {tok}"] += 1
        prev = tok
else:
    uni, bi = Counter(), Counter()
    for line in text.splitlines():
        w = line.split()
        uni.update(w)
        bi.update(zip(w, w[1:]))
t1 = time.perf_counter()
print(json.dumps({"count_s": t1 - t0, "bytes": len(text.encode()), "unigrams": len(uni),
    "bigrams": len(bi), "rss_mb": int(next(l.split()[1] for l in open("/proc/self/status")
    if l.startswith("VmHWM"))) / 1024}))
"""


def generate(path: Path, gb: float, vocab: int, seed: int = 0) -> int:
    """Write ~gb·1e9 bytes of Zipf text; returns bytes written."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(2, 12, size=vocab)
    chars = (rng.integers(0, 26, size=int(lens.sum())) + 97).astype(np.uint8).tobytes().decode()
    offs = np.concatenate([[0], np.cumsum(lens)]).tolist()
    words = [chars[offs[i] : offs[i + 1]] for i in range(vocab)]
    sp = np.array([w + " " for w in words], dtype=object)
    nl = np.array([w + "\n" for w in words], dtype=object)
    target = int(gb * 1e9)
    written = 0
    chunk = 4_000_000
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            ranks = rng.zipf(1.15, size=chunk * 2)
            ids = ranks[ranks <= vocab][:chunk] - 1
            end = (np.arange(len(ids)) % 20) == 19
            toks = np.where(end, nl[ids], sp[ids])
            s = "".join(toks.tolist())
            f.write(s)
            written += len(s)
    return written


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=0.25, help="corpus size in GB (default 0.25)")
    ap.add_argument("--vocab", type=int, default=2_000_000, help="vocabulary size")
    ap.add_argument("--mem-mb", type=int, default=1024, help="bigram table budget (MiB)")
    ap.add_argument("--baseline-mb", type=float, default=20.0, help="slice for Python baselines")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the corpus")
    ap.add_argument("--json", type=Path, default=None, help="write figures as JSON")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=a.dir, prefix="ngram-bench-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        t0 = time.perf_counter()
        nbytes = generate(corpus, a.gb, a.vocab)
        gen_s = time.perf_counter() - t0
        print(f"generated {nbytes / 1e9:.2f} GB in {gen_s:.0f} s ({corpus})", flush=True)
        spill = Path(tmp) / "spill"
        spill.mkdir()
        rust = run_child(CHILD_RUST, str(corpus), str(a.mem_mb << 20), str(spill))
        sl = int(a.baseline_mb * 1e6)
        ref = run_child(CHILD_REF, str(corpus), str(sl), "ref")
        cnt = run_child(CHILD_REF, str(corpus), str(sl), "counter")

    rust_mbs = nbytes / 1e6 / rust["count_s"]
    ref_mbs = ref["bytes"] / 1e6 / ref["count_s"]
    cnt_mbs = cnt["bytes"] / 1e6 / cnt["count_s"]
    st = rust["stats"]
    print()
    print(f"{'engine':<16}{'MB':>10}{'seconds':>10}{'MB/s':>10}{'× ref':>8}{'peak RSS MB':>14}")
    rows = [
        ("rust (1 thread)", nbytes / 1e6, rust["count_s"], rust_mbs, rust["rss_mb"]),
        ("ref-python", ref["bytes"] / 1e6, ref["count_s"], ref_mbs, ref["rss_mb"]),
        ("split+Counter", cnt["bytes"] / 1e6, cnt["count_s"], cnt_mbs, cnt["rss_mb"]),
    ]
    for name, mb, s, mbs, rss in rows:
        print(f"{name:<16}{mb:>10.0f}{s:>10.1f}{mbs:>10.1f}{mbs / ref_mbs:>8.1f}{rss:>14.0f}")
    print()
    print(
        f"tokens {st['total_tokens']:,}  distinct unigrams {st['distinct_unigrams']:,}  "
        f"distinct bigrams {rust['pmi']['distinct_bigrams']:,}  spill runs {st['runs']} "
        f"({st['spilled_bytes'] / 1e6:.0f} MB)  bigram capacity {rust['bigram_capacity']:,}  "
        f"selection {rust['select_s']:.1f} s"
    )
    if a.json:
        fig = {"gb": nbytes / 1e9, "mem_mb": a.mem_mb, "rust": rust, "ref": ref, "counter": cnt}
        fig |= {"rust_mb_s": rust_mbs, "ref_mb_s": ref_mbs, "counter_mb_s": cnt_mbs}
        a.json.write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
