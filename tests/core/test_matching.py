"""The Rust matcher held against the naive statement of spec §2 (tests/reference.py)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaclip.core import Matcher, spaced
from metaclip.exceptions import MetadataError

from reference import naive_match, prepare

# Pieces that exercise every rule: the seven wrapped marks, tabs/newlines, CJK, kana,
# Hangul, Thai, Khmer, emoji, combining marks, RTL scripts, ASCII punctuation, spaces.
PIECES = [
    "dog", "hot", "Dog", "a", "St", "Louis", "Jr", "New", "York", "",
    ",", ".", ";", ":", "?", "!", "`", "'", "-", "(", ")", '"', "#",
    " ", "  ", "\t", "\n", "\r", "\u3000", "\u00a0", "\x1c", "\u200b",
    "相机", "中国", "猫", "カメラ", "ねこ", "한국", "사람", "แมว", "ไทย", "ខ្មែរ",
    "😀", "🐶", "e\u0301", "\u0301", "שלום", "مرحبا", "，", "。", "「", "」", "—",
]  # fmt: skip

piece = st.sampled_from(PIECES)
entry_st = st.lists(piece, min_size=1, max_size=4).map("".join).filter(bool)
# Entries often contain a single space between words, like real bigrams.
entry_st = st.one_of(entry_st, st.lists(piece, min_size=2, max_size=3).map(" ".join))
text_st = st.one_of(
    st.lists(piece, max_size=30).map("".join),
    st.lists(piece, max_size=12).map(" ".join),
    st.text(max_size=40),
)


@pytest.mark.parametrize("mode", ["mc1", "mc2", "fixed"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(entry_st, min_size=1, max_size=25, unique=True), data=st.data())
def test_matches_naive_reference(mode, entries, data):
    m = Matcher(entries, mode)
    # Texts built from entries so that matches are common, plus free texts.
    seps = st.sampled_from(["", " ", ",", "\t", "。"])
    from_entries = st.lists(st.one_of(st.sampled_from(entries), piece), max_size=10).flatmap(
        lambda parts: seps.map(lambda s: s.join(parts))
    )
    texts = data.draw(st.lists(st.one_of(text_st, from_entries), min_size=1, max_size=20))
    got = m.match(texts, threads=1).lists()
    want = [naive_match(t, entries, mode) for t in texts]
    assert got == want
    assert m.match(pa.array(texts), threads=2).lists() == want


# Substring-language pieces: single Han, Thai and Khmer characters (so entries overlap and
# nest inside running text), with the Latin, punctuation and space pieces that border them.
SUBSTRING_PIECES = [
    "相", "机", "中", "国", "猫", "很", "好", "，", "。", "「", "」",
    "แ", "ม", "ว", "ไ", "ท", "ย", "\u0e48", "ខ", "្", "ម", "ែ", "រ",
    "カ", "メ", "한", "a", "dog", " ", ",", ".", "\t", "-", "😀",
]  # fmt: skip
sub_piece = st.sampled_from(SUBSTRING_PIECES)


@pytest.mark.parametrize("mode", ["mc2", "fixed"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(
        st.lists(sub_piece, min_size=1, max_size=4).map("".join).filter(str.strip),
        min_size=1,
        max_size=30,
        unique=True,
    ),
    data=st.data(),
)
def test_substring_languages_match_naive_reference(mode, entries, data):
    """The character-level automaton (CJK, Thai, Khmer, mixed) gives the spec's matches."""
    m = Matcher(entries, mode)
    parts = st.lists(st.one_of(st.sampled_from(entries), sub_piece), max_size=16)
    texts = data.draw(st.lists(parts.map("".join), min_size=1, max_size=20))
    assert m.match(texts, threads=1).lists() == [naive_match(t, entries, mode) for t in texts]


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_spacing_matches_reference(text):
    assert spaced(text) == prepare(text, "mc1")
    assert spaced(text, fixed=True) == prepare(text, "fixed")


def ids(entries, text, mode="mc1"):
    return [entries[i] for i in Matcher(entries, mode).match_text(text)]


def test_hyphen_parenthesis_and_apostrophe_do_not_match():
    assert ids(["dog"], "hot-dog") == []
    assert ids(["dog"], "(dog)") == []
    assert ids(["dog"], "dog's") == []


def test_tab_is_a_space_and_case_matters():
    assert ids(["dog", "hot dog"], "Hot dog\tstand") == ["dog"]


def test_entry_with_glued_wrapped_mark_never_matches():
    entries = ["St. Louis", "Jr.", "a , b"]
    assert ids(entries, "St. Louis Jr.") == []
    assert ids(entries, "St . Louis Jr .") == []  # the pattern needs "St." glued: impossible


def test_spaced_comma_entry_matches_text_without_spaces():
    assert ids(["a , b"], "a,b") == ["a , b"]


def test_overlaps_all_count():
    assert ids(["a", "hot dog", "dog"], "a hot dog") == ["a", "hot dog", "dog"]


def test_entry_twice_in_text_is_recorded_once():
    m = Matcher(["dog"])
    assert m.match(["dog dog, dog"]).lists() == [[0]]


def test_ids_are_sorted_ascending():
    entries = ["z", "y", "x"]
    assert Matcher(entries).match_text("x y z") == [0, 1, 2]


def test_cjk_inside_running_text_mc2():
    entries = ["相机", "猫", "แมว", "カメラ"]
    assert ids(entries, "我的新相机很好", "mc2") == ["相机"]
    assert ids(entries, "ฉันรักแมวมาก", "mc2") == ["แมว"]
    # Japanese: a Kanji entry inside running text matches; its neighbours are kana.
    assert ids(["東京", "カメラ"], "私は東京に行った", "mc2") == ["東京"]
    # The kana quirk: Katakana is not CJK-like, so the entry keeps its pads.
    assert ids(entries, "新しいカメラを買った", "mc2") == []
    assert ids(entries, "新しいカメラを買った", "fixed") == ["カメラ"]
    # MC1 pads every pattern: no CJK entry matches inside running text.
    assert ids(entries, "我的新相机很好", "mc1") == []


def test_fixed_mode_treats_unicode_spaces_as_boundaries():
    assert ids(["dog"], "hot\u3000dog\u00a0stand", "mc2") == []
    assert ids(["dog"], "hot\u3000dog\u00a0stand", "fixed") == ["dog"]


def test_strip_uses_python_whitespace():
    # U+001C is whitespace for str.strip() (not for Rust's char::is_whitespace).
    assert ids(["dog"], "\x1cdog") == ["dog"]


def test_duplicates_are_named():
    with pytest.raises(MetadataError, match=r'"dog" \(ids 0 and 2\)'):
        Matcher(["dog", "cat", "dog"])


def test_empty_and_huge_texts():
    m = Matcher(["dog", "cat"])
    big = "cat " * 250_000 + "dog"
    r = m.match(["", "   ", big, "\n"])
    assert r.lists() == [[], [], [0, 1], []]


def test_nulls_and_invalid_utf8_are_counted_not_lost():
    m = Matcher(["dog"])
    r = m.match(pa.array(["dog", None, "a dog"]))
    assert r.lists() == [[0], [], [0]]
    assert r.null.tolist() == [1]
    binary = pa.array([b"dog", b"\xff dog", b"dog"], type=pa.binary())
    r = m.match(binary)
    assert r.lists() == [[0], [], [0]]
    assert r.invalid.tolist() == [1]


def test_polars_and_sliced_arrow_inputs():
    import polars as pl

    m = Matcher(["dog", "cat"])
    texts = ["a dog", "cat", "x", "cat dog"]
    want = m.match(texts).lists()
    assert m.match(pl.Series(texts)).lists() == want
    arr = pa.chunked_array([pa.array(texts[:2]), pa.array(texts[2:])])
    assert m.match(arr).lists() == want
    assert m.match(pa.array(texts).slice(1, 2)).lists() == want[1:3]


def test_thread_count_does_not_change_results():
    entries = [f"w{i}" for i in range(300)] + ["w1 w2"]
    m = Matcher(entries)
    texts = [f"w{i % 300} w{(i * 7) % 301}, w{i % 3}" for i in range(50_000)]
    a = m.match(texts, threads=1)
    b = m.match(texts, threads=2)
    assert (a.offsets == b.offsets).all() and (a.ids == b.ids).all()
