"""Online curation: the keep decision against a scalar statement of the rule (spec §6)."""

import numpy as np
import pytest

from metaclip.train.data import keep_mask

from reference import keep_pair, splitmix64

pytest.importorskip("xxhash")


def keep_scalar(keys, lists, probs, seed, epoch):
    return np.array(
        [keep_pair(seed, k, ids, probs, epoch) for k, ids in zip(keys, lists, strict=True)]
    )


def test_the_reference_coin_uses_splitmix64():
    assert splitmix64(0) == 0xE220A8397B1DCDAF  # first output of SplitMix64(seed 0)


def _csr(lists):
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    flat = np.array([e for x in lists for e in x], dtype=np.uint32)
    return offsets, flat


def _random_case(n=500, n_entries=40, seed=0):
    rng = np.random.default_rng(seed)
    lists = [sorted(set(rng.integers(0, n_entries, rng.integers(0, 4)).tolist())) for _ in range(n)]
    keys = [f"shard-{i // 100:03d}/{i:06d}_ü" for i in range(n)]
    return keys, lists, rng.random(n_entries)


@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_keep_mask_matches_the_rule(epoch):
    keys, lists, probs = _random_case()
    offsets, flat = _csr(lists)
    got = keep_mask(keys, offsets, flat, probs, seed=7, epoch=epoch)
    assert got.dtype == bool
    assert got.tolist() == keep_scalar(keys, lists, probs, 7, epoch).tolist()


def test_keep_rate_is_one_minus_product_and_epochs_redraw():
    n = 20000
    keys = [str(i) for i in range(n)]
    lists = [[0, 1]] * n
    probs = np.array([0.3, 0.5])
    offsets, flat = _csr(lists)
    a = keep_mask(keys, offsets, flat, probs, seed=1, epoch=0)
    b = keep_mask(keys, offsets, flat, probs, seed=1, epoch=1)
    expected = 1 - 0.7 * 0.5  # any entry passes, not the max (0.5) nor the sum (0.8)
    assert abs(a.mean() - expected) < 0.015 and abs(b.mean() - expected) < 0.015
    assert 0.1 < (a != b).mean() < 0.9  # a new epoch redraws
    assert np.array_equal(a, keep_mask(keys, offsets, flat, probs, seed=1, epoch=0))
    assert not np.array_equal(a, keep_mask(keys, offsets, flat, probs, seed=2, epoch=0))


def test_edges_and_errors():
    keys = ["a", "b", "c"]
    offsets, flat = _csr([[0], [1], []])
    got = keep_mask(keys, offsets, flat, np.array([1.0, 0.0]), seed=0, epoch=0)
    assert got.tolist() == [True, False, False]  # p=1 always, p=0 never, no match never
    with pytest.raises(ValueError, match="outside the probabilities"):
        keep_mask(keys, *_csr([[0], [5], []]), np.array([1.0, 0.0]), seed=0, epoch=0)
    with pytest.raises(ValueError, match="CSR"):
        keep_mask(keys, np.array([0, 1]), flat, np.array([1.0, 0.0]), seed=0, epoch=0)
