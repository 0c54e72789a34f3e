"""Repeated and empty sample keys: counted, shown, and with --strict-keys an error (the
coins depend on the key, so rows sharing one are kept or dropped together)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip.cli import main
from metaclip.pipeline import keys


def shard(path, keys_, texts=None):
    texts = texts or [f"a dog number {i}" for i in range(len(keys_))]
    pq.write_table(pa.table({"key": keys_, "text": texts}), path)


@pytest.fixture
def md(tmp_path):
    p = tmp_path / "md.json"
    p.write_text(json.dumps(["dog", "number"]))
    return p


def run(pool, md, out, *extra):
    r = CliRunner().invoke(
        main, ["run", str(pool), "-m", str(md), "-o", str(out), "--t", "1", "-q", *extra]
    )
    return r, (json.loads((out / "datacard.json").read_text()) if r.exit_code == 0 else None)


def test_repeats_within_and_across_shards_and_empty_keys_are_counted(tmp_path, md):
    pool = tmp_path / "pool"
    pool.mkdir()
    shard(pool / "a.parquet", ["k1", "k2", "k1", "", "k3"])  # k1 twice, one empty
    shard(pool / "b.parquet", ["k3", "k4", "k5"])  # k3 again, in another shard
    r, card = run(pool, md, tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert card["pool"]["duplicate_keys"] == 2 and card["pool"]["empty_keys"] == 1
    assert "warning: 2 rows repeat a sample key" in r.output
    assert "warning: 1 rows have an empty sample key" in r.output
    assert "'k1'" in card["pool"]["duplicate_key_example"]


def test_a_repeat_across_shards_is_named_with_both_shards(tmp_path, md):
    pool = tmp_path / "pool"
    pool.mkdir()
    shard(pool / "a.parquet", ["x1", "x2"])
    shard(pool / "b.parquet", ["x3", "x2"])
    r, _ = run(pool, md, tmp_path / "out", "--strict-keys")
    assert r.exit_code == 2, r.output
    assert "'x2'" in r.output and "a.parquet" in r.output and "b.parquet" in r.output


def test_unique_keys_pass_strict_keys_and_rows_without_a_key_are_not_repeats(tmp_path, md):
    pool = tmp_path / "pool"
    pool.mkdir()
    shard(pool / "a.parquet", ["u1", None, None, "u2"])  # null keys: skipped rows
    r, card = run(pool, md, tmp_path / "out", "--strict-keys")
    assert r.exit_code == 0, r.output
    assert card["pool"]["duplicate_keys"] == 0 and card["pool"]["skipped"] == 2


def test_the_merge_in_slices_counts_what_one_pass_counts(tmp_path, monkeypatch, md):
    pool = tmp_path / "pool"
    pool.mkdir()
    for s in range(4):  # keys 0..2999 in every shard once, plus repeats inside shard 0
        ks = [f"k{i}" for i in range(s * 500, s * 500 + 1500)]
        shard(pool / f"{s}.parquet", ks, [f"dog {k}" for k in ks])
    _, one = run(pool, md, tmp_path / "one")
    monkeypatch.setattr(keys, "BUDGET", 64)  # 8 hashes a slice: many passes
    _, sliced = run(pool, md, tmp_path / "sliced")
    # key k_i is in shards max(0, ⌈(i-1499)/500⌉)..⌊i/500⌋: 4 * 1500 rows, 3000 keys
    assert one["pool"]["duplicate_keys"] == sliced["pool"]["duplicate_keys"] == 3000
