"""The Python API over the Rust LID core (whatlang backend: needs no model file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from metaclip.lid import LanguageIdentifier, default_mapping, default_mapping_tsv, load_mapping

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank",
    "Der schnelle braune Fuchs springt über den faulen Hund am Flussufer",
    "안녕하세요 여러분",
    "ひらがなのテキスト",
    "สวัสดีครับ",
    "12345 !!",
    "",
]


@pytest.fixture(scope="module")
def wl() -> LanguageIdentifier:
    return LanguageIdentifier(backend="whatlang")


def test_identify_types_and_names(wl: LanguageIdentifier) -> None:
    lang, conf = wl.identify(TEXTS)
    assert lang.dtype == np.int16 and conf.dtype == np.float32
    assert lang.shape == conf.shape == (len(TEXTS),)
    assert wl.languages[0] == "other"
    names = [wl.languages[i] for i in lang]
    assert names == ["en", "de", "ko", "ja", "th", "other", "other"]
    assert conf[2] == conf[3] == conf[4] == 1.0  # script shortcut
    assert conf[5] == conf[6] == 0.0  # no letters


def test_arrow_input_with_nulls(wl: LanguageIdentifier) -> None:
    arr = pa.array([*TEXTS, None], type=pa.string())
    lang, _ = wl.identify(arr)
    ref, _ = wl.identify(TEXTS)
    assert lang[:-1].tolist() == ref.tolist()
    assert wl.languages[lang[-1]] == "other"
    chunked = pa.chunked_array([arr[:3], arr[3:]])
    assert wl.identify(chunked)[0].tolist() == lang.tolist()


def test_threads_do_not_change_results(wl: LanguageIdentifier) -> None:
    texts = [f"{TEXTS[i % 5]} {i}" for i in range(6000)]
    one = wl.identify(texts, threads=1)
    two = wl.identify(texts, threads=2)
    four = wl.identify(texts, threads=4)
    for a, b in ((one, two), (one, four)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_threshold_sends_to_other() -> None:
    strict = LanguageIdentifier(backend="whatlang", threshold=1.0)
    names = strict.identify_names(TEXTS[:3])
    assert names == ["other", "other", "ko"]
    with pytest.raises(ValueError):
        LanguageIdentifier(backend="whatlang", threshold=2.0)


def test_mapping_dict_tsv_json(tmp_path) -> None:
    m = {"eng": "english", "deu": "german"}
    a = LanguageIdentifier(backend="whatlang", mapping=m)
    assert a.languages == ("other", "english", "german")
    assert a.identify_names(TEXTS[:3]) == ["english", "german", "other"]
    tsv = tmp_path / "m.tsv"
    tsv.write_text("# comment\neng\tenglish\ndeu\tgerman\n")
    js = tmp_path / "m.json"
    js.write_text(json.dumps(m))
    for path in (tsv, js, str(tsv)):
        b = LanguageIdentifier(backend="whatlang", mapping=path)
        assert b.languages == a.languages and b.mapping == m
    assert load_mapping(tsv) == m


def test_bad_mapping_and_backend(tmp_path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("eng english\n")
    from metaclip.exceptions import MetadataError, ModelError

    with pytest.raises(MetadataError):
        LanguageIdentifier(backend="whatlang", mapping=bad)
    with pytest.raises(ValueError):
        LanguageIdentifier(backend="whatlang", mapping={"a": "x", " a": "y"})
    with pytest.raises(OSError):
        LanguageIdentifier(backend="whatlang", mapping=tmp_path / "missing.tsv")
    with pytest.raises(ValueError):
        LanguageIdentifier(backend="nope")
    with pytest.raises(OSError):
        LanguageIdentifier(backend="fasttext", model_path=tmp_path / "missing.ftz")
    junk = tmp_path / "junk.ftz"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ModelError, match=r"junk\.ftz"):
        LanguageIdentifier(backend="fasttext", model_path=junk)


def test_the_printed_mapping_reads_back_as_the_builtin_one(tmp_path: Path) -> None:
    (tmp_path / "m.tsv").write_text(default_mapping_tsv(), encoding="utf-8")
    assert load_mapping(tmp_path / "m.tsv") == default_mapping()
    m = default_mapping()
    assert m["yue"] == m["zh_yue"] == m["zh_classical"] == "zh"
    assert m["eng"] == "en" and m["cmn"] == "zh" and m["nob"] == "no"
    assert LanguageIdentifier(backend="whatlang").mapping == m


def test_map_existing_language_column(wl: LanguageIdentifier) -> None:
    codes = pa.array(["en", "yue", None, "xx", "deu"])
    got = [wl.languages[i] for i in wl.map_codes(codes)]
    assert got == ["en", "zh", "other", "other", "de"]
    assert wl.map_codes(["zh_classical"]).tolist() == [wl.languages.index("zh")]


def test_the_cli_prints_the_builtin_mapping() -> None:
    from click.testing import CliRunner

    from metaclip.cli import main

    r = CliRunner().invoke(main, ["lid-mapping"])
    assert r.exit_code == 0 and r.output == default_mapping_tsv()
    assert "zh_yue\tzh" in r.output
