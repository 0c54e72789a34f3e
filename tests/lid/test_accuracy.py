"""Accuracy on real translated strings (Debian gettext catalogues), short vs long texts."""

from __future__ import annotations

from pathlib import Path

import gettext_set
import pytest

from metaclip.lid import OTHER, LanguageIdentifier, default_mapping


def _score(lid: LanguageIdentifier, samples) -> dict[str, float]:
    mapping = default_mapping()
    kept = [s for s in samples if mapping.get(s.lang, OTHER) != OTHER]
    truth = [mapping[s.lang] for s in kept]
    pred = lid.identify_names([s.text for s in kept])
    table = gettext_set.accuracy_table(kept, pred, truth)
    summary = gettext_set.summarize(table)
    worst = sorted(
        (r["ok_short"] + r["ok_long"]) / (r["n_short"] + r["n_long"]) for r in table.values()
    )
    print(
        f"\n{lid.backend}: {len(kept)} texts, {len(table)} languages; "
        f"short {summary['short_micro']:.3f}, long {summary['long_micro']:.3f}, "
        f"all {summary['all_micro']:.3f} (macro {summary['all_macro']:.3f}); "
        f"worst languages {[round(w, 2) for w in worst[:5]]}"
    )
    return summary


def test_fasttext_accuracy_floor(lid176: Path, gettext_samples) -> None:
    s = _score(LanguageIdentifier(backend="fasttext", model_path=lid176), gettext_samples)
    # Measured with a desktop's catalogues: short 0.54, long 0.83, all 0.61; with iso-codes
    # alone (country and language names, nearly all short): short 0.48, long 0.68.
    assert s["short_n"] > 5000
    assert s["short_micro"] > 0.45
    assert s["all_micro"] > 0.45
    if s["long_n"] >= 300:
        assert s["long_micro"] > 0.65


def test_fasttext_no_worse_than_bare_fasttext(lid176: Path, gettext_samples) -> None:
    ours = _score(LanguageIdentifier(backend="fasttext", model_path=lid176), gettext_samples)
    bare = _score(
        LanguageIdentifier(backend="fasttext", model_path=lid176, script_shortcut=False),
        gettext_samples,
    )
    assert ours["all_micro"] >= bare["all_micro"] - 1e-9
    assert ours["short_micro"] >= bare["short_micro"] - 1e-9
    whatlang = _score(LanguageIdentifier(backend="whatlang"), gettext_samples)
    assert ours["all_micro"] > whatlang["all_micro"] + 0.05


def test_whatlang_accuracy_floor(gettext_samples) -> None:
    s = _score(LanguageIdentifier(backend="whatlang"), gettext_samples)
    # Measured: short 0.41, long 0.67; iso-codes alone: 0.36, 0.46 (69 languages only).
    assert s["all_micro"] > 0.33
    if s["long_n"] >= 300:
        assert s["long_micro"] > 0.42


@pytest.mark.benchmark
def test_fasttext_throughput(lid176: Path, gettext_samples) -> None:
    import time

    lid = LanguageIdentifier(backend="fasttext", model_path=lid176)
    texts = [s.text for s in gettext_samples] * 3
    t0 = time.process_time()
    lid.identify(texts, threads=1)
    rate = len(texts) / (time.process_time() - t0)
    print(f"\n{rate:,.0f} texts per CPU-second")
    assert rate > 200_000
