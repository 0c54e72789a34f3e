"""Counting, thresholds (spec §4–§5) and deterministic sampling (spec §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metaclip import core
from metaclip.core import Matcher, MatchResult

from reference import coin as ref_coin
from reference import keep_pair


def csr(rows: list[list[int]]) -> MatchResult:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    ids = np.array([i for r in rows for i in r], dtype=np.uint32)
    empty = np.zeros(0, dtype=np.int64)
    return MatchResult(offsets, ids, empty, empty)


def test_counts_are_per_text_and_merge_exactly():
    m = Matcher(["a", "b", "c"])
    r1 = m.match(["a a b", "b", "x"])
    r2 = m.match(["c a"])
    c1 = core.count_entries(r1.ids, 3)
    c2 = core.count_entries(r2.ids, 3)
    assert c1.dtype == np.uint64 and c1.tolist() == [1, 2, 0]
    assert (c1 + c2).tolist() == core.count_entries(np.concatenate([r1.ids, r2.ids]), 3).tolist()


def test_count_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="out of range"):
        core.count_entries(np.array([5], dtype=np.uint32), 3)


def test_mc1_probabilities():
    p = core.probabilities(np.array([0, 5, 20, 40, 80_000], dtype=np.uint64), 20)
    assert p.tolist() == [0.0, 1.0, 1.0, 0.5, 20 / 80_000]


def test_mc2_threshold_by_hand():
    en = np.array([1, 2, 3, 10, 20], dtype=np.uint64)  # t_en = 10: tail = 6/36
    xx = np.array([8, 1, 4, 2, 1], dtype=np.uint64)  # shares .0625 .125 .25 .5 1
    th = core.mc2_thresholds({"en": en, "xx": xx}, t_en=10)
    assert math.isclose(th["en"].tail, 6 / 36)
    assert th["en"].t == 10
    assert th["xx"].t == 1  # |.125 - .1667| < |.25 - .1667|
    yy = np.array([10, 10, 10, 10, 10, 10], dtype=np.uint64)  # shares k/6: 1/6 hits exactly
    assert core.mc2_thresholds({"en": en, "yy": yy}, t_en=10)["yy"].t == 10


def test_tiny_language_never_gets_zero_or_nan():
    en = np.array([1, 100], dtype=np.uint64)
    th = core.mc2_thresholds(
        {"en": en, "tiny": np.zeros(4, dtype=np.uint64), "one": np.array([0, 0, 1], np.uint64)},
        t_en=50,
    )
    assert th["tiny"].t == 1 and th["one"].t == 1
    p = core.probabilities(np.zeros(4, dtype=np.uint64), th["tiny"].t)
    assert not np.isnan(p).any() and (p == 0).all()


def test_coin_matches_reference_definition():
    cases = [(0, "a", 0, 0), (7, "sample-42", 123_456, 3), (2**63, "é", 1, 9)]
    for seed, key, entry, epoch in cases:
        assert core.coin(seed, key, entry, epoch) == ref_coin(seed, key, entry, epoch)


def test_sample_pairs_matches_reference_and_is_deterministic():
    rng = np.random.default_rng(0)
    rows = [sorted(set(rng.integers(0, 50, size=rng.integers(0, 4)).tolist())) for _ in range(3000)]
    probs = rng.random(50)
    keys = [f"k{i}" for i in range(len(rows))]
    keep = core.sample_pairs(keys, csr(rows), probs, seed=11)
    want = [keep_pair(11, k, r, probs) for k, r in zip(keys, rows, strict=True)]
    assert keep.tolist() == want
    assert (core.sample_pairs(keys, csr(rows), probs, seed=11, threads=1) == keep).all()
    assert (core.sample_pairs(keys, csr(rows), probs, seed=12) != keep).any()
    assert (core.sample_pairs(keys, csr(rows), probs, seed=11, epoch=1) != keep).any()


def test_sample_is_independent_of_sharding_and_order():
    rng = np.random.default_rng(1)
    rows = [[int(x)] for x in rng.integers(0, 20, size=5000)]
    probs = rng.random(20)
    keys = [f"id-{i}" for i in range(len(rows))]
    whole = core.sample_pairs(keys, csr(rows), probs, seed=3)
    parts = []
    for lo, hi in [(0, 7), (7, 1234), (1234, 5000)]:
        parts.append(core.sample_pairs(keys[lo:hi], csr(rows[lo:hi]), probs, seed=3))
    assert (np.concatenate(parts) == whole).all()
    perm = rng.permutation(len(rows))
    shuffled = core.sample_pairs([keys[i] for i in perm], csr([rows[i] for i in perm]), probs, 3)
    assert (shuffled == whole[perm]).all()


def test_kept_fraction_is_one_minus_product():
    # Each pair matches entries 0 and 1 (p = .3, .5): P(keep) = 1 - .7 * .5 = .65.
    n = 200_000
    rows = [[0, 1]] * n
    keep = core.sample_pairs([str(i) for i in range(n)], csr(rows), np.array([0.3, 0.5]), seed=5)
    expect = 1 - 0.7 * 0.5
    tolerance = 5 * math.sqrt(expect * (1 - expect) / n)  # 5 standard errors
    assert abs(keep.mean() - expect) < tolerance
    # Not max(p) = .5, not a clipped sum = .8.
    assert abs(keep.mean() - 0.5) > 0.1 and abs(keep.mean() - 0.8) > 0.1


def test_image_level_pick_is_uniform_and_deterministic():
    # Each image has 4 texts; texts 0, 2, 3 matched (ids 0, 1, 2 with p = 1), text 1 not.
    n = 30_000
    rows = [[0], [], [1], [2]] * n
    image_offsets = np.arange(0, 4 * n + 1, 4, dtype=np.int64)
    keys = [f"img{i}" for i in range(n)]
    keep, picked = core.sample_images(keys, image_offsets, csr(rows), np.ones(3), seed=9)
    assert keep.all()
    local = picked - image_offsets[:-1]
    assert set(np.unique(local).tolist()) == {0, 2, 3}
    freq = np.bincount(local, minlength=4)[[0, 2, 3]] / n
    assert np.abs(freq - 1 / 3).max() < 5 * math.sqrt((1 / 3) * (2 / 3) / n)
    keep2, picked2 = core.sample_images(keys, image_offsets, csr(rows), np.ones(3), 9, threads=1)
    assert (picked2 == picked).all() and (keep2 == keep).all()


def test_image_without_matches_is_dropped():
    keep, picked = core.sample_images(
        ["a", "b"], np.array([0, 2, 3]), csr([[], [], [0]]), np.ones(1), seed=0
    )
    assert keep.tolist() == [False, True] and picked.tolist() == [-1, 2]
