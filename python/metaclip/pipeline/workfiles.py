"""The files under ``out/_work/``: the resume points of a run.

Layout of ``out/``::

    _work/match-<hash>/<shard>.arrow     per row: language, entry ids, sample keys (Arrow IPC)
    _work/match-<hash>/<shard>.npz       the shard's entry counts (sparse) and the schema
                                         of its subset rows
    _work/match-<hash>/<shard>.json      stats (written last: the shard is done)
    _work/match-<hash>/counts.npz        global counts per language
    _work/sample-<hash>/<shard>.npz      kept rows (a bit per row, np.packbits) and their
                                         entry counts (sparse)
    _work/sample-<hash>/<shard>.json     sizes of the kept rows (written last)
    _work/sample-<hash>/balance.json, probs.npy     t per language, probabilities
    _work/sample-<hash>/subset-<hash>.tmp/  subset files being written (per write setting;
                                         renamed to subset/ when complete)
    _work/sample-<hash>/subset-<hash>.json  the subset files written for a setting (their
                                         file_id: still in place?)
    subset/part-00000.parquet ...        the curated subset (input order)
    datacard.json, report/               summary and human report

A stage's per-shard output is written atomically, its ``.json`` last; a shard whose
``.json`` exists and names the shard file as it is now is skipped on rerun, so a killed run
resumes. ``<hash>`` covers every setting the stage depends on (``Config.match_key``,
``Config.sample_key``), so a changed setting never reuses stale work; the sample folder's
hash also covers every shard's ``file_id`` (another pool has other counts). Bump
``config.WORK_LAYOUT`` when these files change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa

from metaclip.pipeline.io import file_id, save_npz
from metaclip.pipeline.metadata import Metadata

# Arrays that a shard's .npz holds besides its counts (match stage; sample stage).
SUBSET_SCHEMA = "subset_schema"
KEPT = "kept"


def write_arrow(table: pa.Table, path: Path) -> None:
    """Work tables are uncompressed Arrow IPC: written at memory speed, read memory-mapped."""
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)


# np.load parses each array's header with ast.literal_eval, and CPython 3.11 can fail that
# with "SystemError: AST constructor recursion depth mismatch" when two threads parse at
# once (the report is drawn on a thread while the write stage loads): one lock for all.
_NPY_LOCK = threading.Lock()


def load_arrays(path: Path, *names: str) -> list[np.ndarray]:
    """The named arrays of an ``.npz`` work file (or the one array of an ``.npy``)."""
    with _NPY_LOCK:
        if path.suffix == ".npy":
            return [np.load(path)]
        with np.load(path) as z:
            return [z[n] for n in names]


def read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as f:
        return pa.ipc.open_file(f).read_all()


def read_subset_schema(path: Path) -> pa.Schema:
    """The subset schema a match-stage ``.npz`` holds (see ``save_shard_counts``)."""
    (raw,) = load_arrays(path, SUBSET_SCHEMA)
    return pa.ipc.read_schema(pa.py_buffer(raw.tobytes()))


def save_shard_counts(
    path: Path,
    counts: dict[str, tuple[np.ndarray, np.ndarray]],
    schema: pa.Schema,
    extra: dict[str, np.ndarray],
) -> None:
    """A shard's counts, sparse: (ids, counts) of the entries it matched, per language
    (dense vectors would be 8 bytes × all entries per shard), with the schema of its
    subset rows and the ``extra`` arrays (one file, not several, per shard: creating files
    is slow on shared filesystems)."""
    raw = np.frombuffer(schema.serialize().to_pybytes(), dtype=np.uint8)
    save_sparse_counts(path, counts, {SUBSET_SCHEMA: raw, **extra})


def save_sparse_counts(
    path: Path,
    sparse: dict[str, tuple[np.ndarray, np.ndarray]],
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    arrays = dict(extra or {})
    for lang, (ids, counts) in sparse.items():
        arrays[f"ids/{lang}"] = np.asarray(ids, dtype=np.uint32)
        arrays[f"counts/{lang}"] = np.asarray(counts, dtype=np.uint64)
    save_npz(path, arrays)


def save_global_counts(path: Path, total: dict[str, np.ndarray]) -> None:
    """The global counts, dense uint64 per language (``lang_<lang>`` arrays)."""
    save_npz(path, {f"lang_{k}": v for k, v in total.items()})


def add_shard_counts(path: Path, total: dict[str, np.ndarray]) -> None:
    """Add a shard's sparse counts into dense per-language totals (exact uint64)."""
    langs = list(total)
    arrays = load_arrays(path, *(f"{k}/{lang}" for lang in langs for k in ("ids", "counts")))
    for i, lang in enumerate(langs):
        total[lang][arrays[2 * i]] += arrays[2 * i + 1]


def zero_counts(md: Metadata) -> dict[str, np.ndarray]:
    """A dense uint64 count per entry, per language, all zero."""
    return {lang: np.zeros(len(e), dtype=np.uint64) for lang, e in md.entries.items()}


def sum_shard_counts(work_dir: Path, names: Iterable[str], md: Metadata) -> dict[str, np.ndarray]:
    """The exact sum of the named shards' sparse counts in ``work_dir``."""
    total = zero_counts(md)
    for name in names:
        add_shard_counts(work_dir / f"{name}.npz", total)
    return total


def part_name(i: int) -> str:
    """The name of subset file ``i``."""
    return f"part-{i:05d}.parquet"


def file_ids(folder: Path) -> dict[str, list[int]]:
    """``file_id`` of each parquet file in ``folder`` (none if it is missing)."""
    return {f.name: file_id(f) for f in folder.glob("*.parquet")} if folder.is_dir() else {}
