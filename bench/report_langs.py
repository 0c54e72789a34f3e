"""The report at 1, 30 and 300 languages: generated multilingual pools, curated in MC2 mode,
and the time the report takes to draw.

    python bench/report_langs.py                          # 1, 30 and 300 languages
    python bench/report_langs.py --langs 30 300 --repeat 5 --baseline OLD_REPORT.py

Each pool (parquet shards with columns key, text, lang, url) and its metadata (a folder of
``{lang}.json`` lists) are generated under ``bench/out/report_langs/<n>/``: languages
``en``, ``l001``, ``l002``, … with Zipf-shaped sizes (English the largest, a long tail of
small languages, as in MetaCLIP 2's pool), synthetic words drawn Zipf-wise per language.
``metaclip-curate run --mode mc2 --lang-column lang`` curates it into ``<n>/curated/``;
open ``<n>/curated/report/report.html`` in a browser.

Timing: the report's inputs (datacard and entry counts) are captured during the run, then
``write_report`` is timed in fresh processes (matplotlib's import included, as in a one-shot
run) and again warm in the same process; the fastest of ``--repeat`` runs of each is shown.
``--baseline FILE`` times another ``report.py`` (e.g. ``git show HEAD:python/metaclip/
pipeline/report.py > old.py``) on the same inputs, alternating with the current one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).parent / "out" / "report_langs"
_SYLL = ["ka", "to", "ri", "mon", "sel", "ba", "dre", "lu", "vi", "nor", "es", "ti", "gu", "pa"]


def _word(i: int) -> str:
    parts = []
    i += len(_SYLL)  # at least two syllables
    while i:
        i, r = divmod(i, len(_SYLL))
        parts.append(_SYLL[r])
    return "".join(parts)


def languages(n: int) -> list[str]:
    return ["en"] + [f"l{i:03d}" for i in range(1, n)]


def generate(
    base: Path, n_langs: int, texts: int, entries: int, seed: int = 0
) -> tuple[Path, Path]:
    """(pool, metadata) folders for ``n_langs`` languages; ``texts`` and ``entries`` are
    totals over the pool and English's list size."""
    pool, md_dir = base / "pool", base / "metadata"
    stamp = base / "generated.json"
    want = {"langs": n_langs, "texts": texts, "entries": entries, "seed": seed, "v": 2}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return pool, md_dir
    rng = np.random.default_rng(seed)
    langs = languages(n_langs)
    share = 1.0 / np.arange(1, n_langs + 1) ** 1.1
    share /= share.sum()
    n_texts = np.maximum(30, (share * texts).astype(np.int64))
    rel = (share / share[0]) ** 0.5
    n_entries = np.maximum(300, (rel * entries).astype(np.int64))
    vocab = [_word(i) for i in range(2 * int(n_entries.max()))]
    md_dir.mkdir(parents=True, exist_ok=True)
    cols: dict[str, list[str]] = {"key": [], "text": [], "lang": [], "url": []}
    for lang, nt, ne in zip(langs, n_texts, n_entries, strict=True):
        words = np.array(vocab[: 2 * ne], dtype=object)
        rng.shuffle(words)  # a language-specific frequency order
        # Entries: the 2/3 most frequent words and a third of the rarer ones.
        head = words[: int(ne * 2 // 3)].tolist()
        rest = words[int(ne * 2 // 3) :]
        entries_lang = sorted(set(head + rng.choice(rest, ne - len(head), replace=False).tolist()))
        (md_dir / f"{lang}.json").write_text(json.dumps(entries_lang))
        p = 1.0 / np.arange(1, len(words) + 1) ** 1.05
        lens = rng.integers(1, 6, size=nt)
        drawn = rng.choice(words, size=int(lens.sum()), p=p / p.sum())
        ends = np.cumsum(lens)
        for i, (a, b) in enumerate(zip(ends - lens, ends, strict=True)):
            key = f"{lang}-{i:07d}"
            cols["key"].append(key)
            cols["text"].append(" ".join(drawn[a:b]))
            cols["lang"].append(lang)
            cols["url"].append(f"https://example.org/{key}.jpg")
    table = pa.table(cols)
    order = np.random.default_rng(seed + 1).permutation(table.num_rows)  # languages mixed
    table = table.take(pa.array(order))
    pool.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // 4)
    for s in range(4):
        pq.write_table(table.slice(s * step, step), pool / f"part-{s:02d}.parquet")
    stamp.write_text(json.dumps(want))
    return pool, md_dir


def curate(base: Path, pool: Path, md_dir: Path, t_en: float) -> tuple[Path, float]:
    """Curate ``pool`` (MC2, languages from the ``lang`` column) into ``base/curated``, and
    save the report's inputs in ``base/report_inputs``; returns (that folder, the run's
    seconds)."""
    from metaclip.pipeline import report
    from metaclip.pipeline.config import Config
    from metaclip.pipeline.engine import Engine

    captured: dict = {}
    real = report.write_report

    def capture(out, card, counts, after):
        captured.update(card=card, counts=counts, after=after)
        return real(out, card, counts, after)

    cfg = Config(
        pool=(str(pool),),
        out=str(base / "curated"),
        metadata=str(md_dir),
        mode="mc2",
        lang_column="lang",
        t_en=t_en,
        seed=0,
        quiet=True,
        overwrite=True,
    )
    report.write_report = capture  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        Engine(cfg).run()
        took = time.perf_counter() - t0
    finally:
        report.write_report = real  # type: ignore[assignment]
    inputs = base / "report_inputs"
    inputs.mkdir(exist_ok=True)
    (inputs / "card.json").write_text(json.dumps(captured["card"]))
    for name in ("counts", "after"):
        arrays = {k: np.asarray(v) for k, v in captured[name].items()}
        np.savez(inputs / f"{name}.npz", **arrays)  # type: ignore[arg-type]
    return inputs, took


def _load_inputs(inputs: Path) -> tuple[dict, dict, dict]:
    card = json.loads((inputs / "card.json").read_text())
    with np.load(inputs / "counts.npz") as c, np.load(inputs / "after.npz") as a:
        return card, {k: c[k] for k in c.files}, {k: a[k] for k in a.files}


def _time_in_process(inputs: Path, impl: str, repeat: int) -> dict:
    """Run inside a fresh process: the first ``write_report`` (imports included), then
    the fastest of ``repeat`` more."""
    card, counts, after = _load_inputs(inputs)
    t0 = time.perf_counter()
    if impl == "current":
        from metaclip.pipeline import report as mod
    else:
        spec = importlib.util.spec_from_file_location("report_under_test", impl)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    with tempfile.TemporaryDirectory() as tmp:
        mod.write_report(Path(tmp) / "a", card, counts, after)
        first = time.perf_counter() - t0
        warm = []
        for i in range(repeat):
            t0 = time.perf_counter()
            mod.write_report(Path(tmp) / f"w{i}", card, counts, after)
            warm.append(time.perf_counter() - t0)
    return {"fresh": first, "warm": min(warm) if warm else None}


def time_report(inputs: Path, impls: list[str], repeat: int) -> dict[str, dict]:
    """Fastest fresh-process and warm times of each ``write_report`` implementation,
    alternating between them."""
    runs: dict[str, list[dict]] = {i: [] for i in impls}
    for _ in range(repeat):
        for impl in impls:
            args = [sys.executable, __file__, "--time-inputs", str(inputs), "--impl", impl]
            res = subprocess.run(args, capture_output=True, text=True, check=True)
            runs[impl].append(json.loads(res.stdout.strip().splitlines()[-1]))
    return {
        impl: {
            "fresh_s": round(min(r["fresh"] for r in rs), 3),
            "warm_s": round(min(r["warm"] for r in rs), 3),
        }
        for impl, rs in runs.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--langs", type=int, nargs="+", default=[1, 30, 300])
    ap.add_argument("--texts", type=int, default=300_000, help="pool texts, all languages")
    ap.add_argument("--entries", type=int, default=50_000, help="English metadata entries")
    ap.add_argument("--t-en", type=float, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", help="another report.py to time on the same inputs")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--time-inputs", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="current", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.time_inputs:  # a child process of time_report
        print(json.dumps(_time_in_process(args.time_inputs, args.impl, 2)))
        return
    impls = ["current"] + ([str(Path(args.baseline).resolve())] if args.baseline else [])
    results = {}
    for n in args.langs:
        base = args.out / f"{n}"
        pool, md_dir = generate(base, n, args.texts, args.entries)
        inputs, run_s = curate(base, pool, md_dir, args.t_en)
        times = time_report(inputs, impls, args.repeat)
        results[n] = {"run_s": round(run_s, 2), **times}
        report = base / "curated" / "report"
        print(f"{n} languages: run {run_s:.2f} s; report {report / 'report.html'}")
        for impl, t in times.items():
            name = "current" if impl == "current" else f"baseline {Path(impl).name}"
            print(f"  {name}: fresh process {t['fresh_s']:.3f} s, warm {t['warm_s']:.3f} s")
    (args.out / "times.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
