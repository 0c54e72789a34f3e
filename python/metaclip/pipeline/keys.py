"""Sample keys that repeat or are empty. The coins are a function of the key, so rows that
share a key are kept or dropped together: such keys are counted (and, with
``strict_keys``, an error), never silently accepted.

Each shard's match stage saves the sorted, distinct 64-bit hashes of its keys (rows without
a key, which are skipped, left out) with its duplicate and empty counts. Across shards the
hashes are merged in slices of the hash range, each within a memory budget, so a pool of
billions of rows is checked in bounded memory. A repeat is found by its 64-bit hash: among
a billion distinct keys, a false repeat has a chance of about 3%.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip import core
from metaclip.pipeline.io import read_json, write_json
from metaclip.pipeline.workfiles import load_arrays

KEY_HASHES = "key_hashes"  # the array in a shard's match-stage .npz
SEED = 0  # key hashes here only find repeats; any fixed seed does
BUDGET = 256 << 20  # bytes of hashes merged at once


def shard_keys(table: pa.Table) -> tuple[np.ndarray, dict]:
    """(sorted distinct key hashes, stats) of a standardized shard: ``duplicate_keys``
    (rows whose key an earlier row of the shard has), ``empty_keys`` and the first
    repeated key."""
    keys = table.column("__key")
    skip = table.column("__skip")
    keys = keys.filter(pc.invert(pc.fill_null(pc.equal(skip, "null_key"), False)))
    hashes = core.hash_keys(keys, SEED) if len(keys) else np.zeros(0, np.uint64)
    ordered = np.sort(hashes)
    new = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    stats: dict = {
        "duplicate_keys": int(len(ordered) - np.count_nonzero(new)),
        "empty_keys": int(pc.sum(pc.equal(keys, "")).as_py() or 0) if len(keys) else 0,
    }
    if stats["duplicate_keys"]:
        repeated = ordered[1:][~new[1:]][0]
        stats["duplicate_key_example"] = keys[int(np.flatnonzero(hashes == repeated)[1])].as_py()
    return ordered[new], stats


def check(match_dir: Path, names: list[str], paths: dict[str, str], strict: bool) -> dict:
    """Count repeated and empty keys over the pool (saved as ``keys.json`` in
    ``match_dir``); with ``strict``, either is an ``InputError`` naming an example."""
    from metaclip.exceptions import InputError

    within = sum(read_json(match_dir / f"{n}.json").get("duplicate_keys", 0) for n in names)
    empty = sum(read_json(match_dir / f"{n}.json").get("empty_keys", 0) for n in names)
    across, example_hash = _across(match_dir, names)
    example = None
    for n in names:  # a repeat within a shard names its key at no cost
        example = read_json(match_dir / f"{n}.json").get("duplicate_key_example")
        if example is not None:
            example = f"{example!r} in {paths[n]}"
            break
    if example is None and example_hash is not None:
        where = [n for n in names if _holds(match_dir / f"{n}.npz", example_hash)]
        key = _key_of(match_dir / f"{where[0]}.arrow", example_hash)
        example = f"{key!r} in {paths[where[0]]} and {paths[where[1]]}"
    found = {"duplicate_keys": within + across, "empty_keys": empty, "example": example}
    write_json(match_dir / "keys.json", found)
    if strict and (found["duplicate_keys"] or empty):
        what = (
            f"{found['duplicate_keys']:,} rows repeat a key (e.g. {example})"
            if (found["duplicate_keys"])
            else f"{empty:,} rows have an empty key"
        )
        raise InputError(f"--strict-keys: {what}; sample keys must be unique")
    return found


def _across(match_dir: Path, names: list[str]) -> tuple[int, int | None]:
    """(hashes found in more than one shard, counted once per extra shard; one of them)."""
    held: list[np.ndarray] | None = []
    size = 0
    for n in names:  # one pass when the pool's hashes fit the budget (the common case)
        (h,) = load_arrays(match_dir / f"{n}.npz", KEY_HASHES)
        size += len(h)
        if held is not None and size * 8 <= BUDGET:
            held.append(h)
        else:
            held = None
    passes = 1 if held is not None else -(-size * 8 // BUDGET)
    bounds = [(2**64 * i) // passes for i in range(passes + 1)]
    repeats, example = 0, None
    for lo, hi in itertools.pairwise(bounds):
        parts = []
        for i, n in enumerate(names):
            h = held[i] if held is not None else load_arrays(match_dir / f"{n}.npz", KEY_HASHES)[0]
            a = int(np.searchsorted(h, np.uint64(lo)))
            b = len(h) if hi == 2**64 else int(np.searchsorted(h, np.uint64(hi)))
            parts.append(h[a:b])
        # Sorted runs, one per shard: a stable sort (timsort) merges them in near-linear time.
        merged = np.sort(np.concatenate(parts), kind="stable") if parts else np.zeros(0, np.uint64)
        same = np.flatnonzero(merged[1:] == merged[:-1])
        repeats += len(same)
        if len(same) and example is None:
            example = int(merged[same[0]])
    return repeats, example


def _holds(npz: Path, h: int) -> bool:
    (keys,) = load_arrays(npz, KEY_HASHES)
    i = int(np.searchsorted(keys, np.uint64(h)))
    return i < len(keys) and int(keys[i]) == h


def _key_of(arrow: Path, h: int) -> str | None:
    from metaclip.pipeline.workfiles import read_arrow

    keys = read_arrow(arrow).column("__key")
    at = np.flatnonzero(core.hash_keys(keys, SEED) == np.uint64(h))
    return keys[int(at[0])].as_py() if len(at) else None
