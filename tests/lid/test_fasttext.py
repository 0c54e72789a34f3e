"""Our native fastText predictor against fastText itself, on lid.176.ftz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metaclip.lid import LanguageIdentifier

SENTENCES = [
    "Hello world, this is a test",
    "Bonjour tout le monde",
    "Привет мир",
    "日本語のテキスト",
    "中文文本测试",
    "hola amigos",
    "ÄÖÜ straße",
    "x",
    "Das ist gut",
    "این یک جمله فارسی است",
    "Dit is een Nederlandse zin",
]


def test_loads_and_identifies(lid176: Path) -> None:
    lid = LanguageIdentifier(backend="fasttext", model_path=lid176)
    assert lid.backend == "fasttext" and lid.model_path == lid176
    assert len(lid.codes) == 176
    assert 1 << 20 < lid.memory_bytes() < 16 << 20
    names = lid.identify_names(SENTENCES)
    assert names[:5] == ["en", "fr", "ru", "ja", "zh"]
    assert names[-2:] == ["fa", "nl"]
    assert LanguageIdentifier().backend == "fasttext"  # auto finds the wheel's model


def test_same_as_fasttext_cpp(lid176: Path, gettext_samples) -> None:
    fasttext = pytest.importorskip("fasttext", reason="fasttext-predict not installed")
    ref = fasttext.load_model(str(lid176))
    ours = LanguageIdentifier(backend="fasttext", model_path=lid176, script_shortcut=False)
    texts = SENTENCES + [s.text for s in gettext_samples[::7]]
    same = 0
    for t in texts:
        labels, probs = ref.predict(t)
        raw = ours.raw(t)
        assert raw is not None
        code, p = raw
        if code == labels[0].removeprefix("__label__"):
            same += 1
            assert p == pytest.approx(min(float(probs[0]), 1.0), abs=1e-4)
    # Identical but for near-ties (float sums are grouped differently).
    assert same / len(texts) > 0.999


def test_thread_counts_and_threshold(lid176: Path, gettext_samples) -> None:
    lid = LanguageIdentifier(backend="fasttext", model_path=lid176)
    texts = [s.text for s in gettext_samples]
    one = lid.identify(texts, threads=1)
    two = lid.identify(texts, threads=2)
    three = lid.identify(texts, threads=3)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    assert np.array_equal(one[0], three[0]) and np.array_equal(one[1], three[1])
    strict = LanguageIdentifier(backend="fasttext", model_path=lid176, threshold=0.5)
    lang, conf = strict.identify(texts)
    assert np.array_equal(lang == 0, (conf < 0.5) | (one[0] == 0))
    assert np.array_equal(conf, one[1])
