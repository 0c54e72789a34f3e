"""Helpers the stages rely on for speed: they must give what the plain Arrow calls give."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip._arrow import contiguous
from metaclip.cli import main
from metaclip.pipeline import stages


def random_matches(rng: np.random.Generator, n: int, chunks: int) -> pa.Table:
    lists = [rng.integers(0, 1000, rng.integers(0, 6)).tolist() for _ in range(n)]
    lang = rng.integers(-1, 3, n).tolist()
    cut = sorted(rng.integers(0, n + 1, chunks - 1).tolist())
    bounds = [0, *cut, n]
    batches = [
        pa.record_batch(
            [pa.array(lang[a:b], pa.int16()), pa.array(lists[a:b], pa.large_list(pa.uint32()))],
            schema=stages.MATCH_SCHEMA,
        )
        for a, b in itertools.pairwise(bounds)
    ]
    return pa.Table.from_batches(batches, schema=stages.MATCH_SCHEMA)


@pytest.mark.parametrize("chunks", [1, 3])
def test_select_matches_equals_arrow_filter(chunks):
    rng = np.random.default_rng(chunks)
    table = random_matches(rng, 500, chunks)
    for sliced in (table, table.slice(17, 400)):
        n = sliced.num_rows
        for mask in (rng.random(n) < 0.4, np.ones(n, bool), np.zeros(n, bool)):
            got = stages.select_matches(sliced, mask)
            want = sliced.filter(pa.array(mask))
            assert got.schema == stages.MATCH_SCHEMA
            assert got.column("lang").to_pylist() == want.column("lang").to_pylist()
            assert got.column("entry_ids").to_pylist() == want.column("entry_ids").to_pylist()


def test_flat_lists_of_a_slice_start_at_zero():
    table = random_matches(np.random.default_rng(0), 50, 1).slice(5, 20)
    offsets, ids = stages.flat_lists(table.column("entry_ids"))
    lists = table.column("entry_ids").to_pylist()
    assert offsets[0] == 0 and len(offsets) == 21
    assert [ids[a:b].tolist() for a, b in itertools.pairwise(offsets)] == lists


def test_contiguous_does_not_copy_a_single_chunk():
    one = pa.chunked_array([pa.array(["a", "bb", None])])
    assert contiguous(one).buffers()[2].address == one.chunk(0).buffers()[2].address
    many = pa.chunked_array([pa.array(["a"]), pa.array(["bb", None])])
    assert contiguous(many).to_pylist() == ["a", "bb", None]
    assert contiguous(pa.chunked_array([], pa.string())).to_pylist() == []


@pytest.mark.parametrize("clash", [False, True])
def test_subset_encodings(tmp_path, clash):
    """Distinct-valued columns get no dictionary, entry ids are delta-encoded, a repeated
    user column keeps its dictionary; with the pool holding its own ``entry_ids`` column,
    ours (``metaclip_entry_ids``) is the delta-encoded one."""
    md = tmp_path / "md.json"
    md.write_text(json.dumps(["dog", "cat", "hot dog"]))
    n = 200
    cols = {
        "key": [f"k{i}" for i in range(n)],
        "text": [f"a hot dog {i}" if i % 2 else f"cat {i}" for i in range(n)],
        "source": ["web" if i % 3 else "book" for i in range(n)],
    }
    if clash:
        cols["entry_ids"] = [str(i) for i in range(n)]
    pool = tmp_path / "pool"
    pool.mkdir()
    pq.write_table(pa.table(cols), pool / "a.parquet")
    out = tmp_path / "o"
    r = CliRunner().invoke(
        main, ["run", str(pool), "-m", str(md), "-o", str(out), "--t", "1000", "-q"]
    )
    assert r.exit_code == 0, r.output
    meta = pq.ParquetFile(out / "subset" / "part-00000.parquet").metadata
    enc = {}
    for i in range(meta.num_columns):
        c = meta.row_group(0).column(i)
        enc[c.path_in_schema] = set(c.encodings)
    ids = "metaclip_entry_ids" if clash else "entry_ids"
    assert "DELTA_BINARY_PACKED" in enc[f"{ids}.list.element"]
    for col in ("key", "text", "keep_prob"):
        assert not any("DICTIONARY" in e for e in enc[col]), (col, enc[col])
    for col in ("source", "lang"):
        assert "RLE_DICTIONARY" in enc[col], (col, enc[col])
    if clash:  # the pool's own column is an ordinary user column
        assert "RLE_DICTIONARY" in enc["entry_ids"]
    table = pq.read_table(out / "subset")
    kept = table.column(ids).to_pylist()
    assert all(row == sorted(set(row)) and row for row in kept)
    assert pc.all(pc.greater(table.column("keep_prob"), 0)).as_py()


def test_ranked_curve_keeps_both_ends_and_the_values_at_its_ranks():
    from metaclip.pipeline.report_plots import _ranked

    counts = np.sort(np.random.default_rng(0).zipf(1.3, 500_000))[::-1]
    ranks, values = _ranked(counts, points=2048)
    assert ranks[0] == 1 and ranks[-1] == len(counts)
    assert np.all(np.diff(ranks) > 0) and len(ranks) <= 2048
    assert np.array_equal(values, counts[ranks - 1])
    # A short curve keeps every rank.
    ranks, values = _ranked(counts[:100], points=2048)
    assert np.array_equal(ranks, np.arange(1, 101)) and np.array_equal(values, counts[:100])


def test_short_log_axis_labels():
    from metaclip.pipeline.report_plots import _short

    labels = [_short(x) for x in (1, 10, 100, 1e3, 1e4, 2.5e5, 1e6, 3e9, 0.1)]
    assert labels == ["1", "10", "100", "1k", "10k", "250k", "1M", "3G", "0.1"]


def test_progress_estimates_texts_from_bytes_where_unknown(monkeypatch):
    """JSON-lines and tar shards have no row count up front: the bar's total is estimated
    from the bytes of the shards done so far and is exact once all are done."""
    import io

    from metaclip.pipeline.progress import Progress

    monkeypatch.setattr("sys.stderr", io.StringIO())
    bar = Progress("match", None, False, left_bytes=400)
    bar.update(7)  # texts of shards done in an earlier run: no bytes, no estimate
    bar.update(10, 100)
    assert bar.bar.total == 7 + 10 + 30  # 300 bytes left at 10 texts per 100 bytes
    bar.update(30, 200)
    assert bar.bar.total == 47 + 13  # 100 bytes left at 40 texts per 300 bytes
    bar.update(9, 100)
    assert bar.bar.total == bar.bar.n == 56
    bar.close()
    known = Progress("write", 50, False, left_bytes=400)
    known.update(10, 100)
    assert known.bar.total == 50
    known.close()


def _write_tasks(parts, fail=None):
    from metaclip.pipeline.scheduling import WriteTasks

    log, lock = [], threading.Lock()

    def load(name):
        with lock:
            log.append(("load", name))
        if name == fail:
            raise ValueError(f"cannot read {name}")
        time.sleep(0.01)
        return pa.table({"shard": [name]})

    def write(part, get):
        tables = {n: get(n).column("shard")[0].as_py() for n in part["names"]}
        with lock:
            log.append(("write", part["part"], sorted(tasks.loaded)))
        assert tables == {n: n for n in part["names"]}
        return len(part["names"])

    tasks = WriteTasks(load, write, parts)
    return tasks, log


WRITE_PARTS = [
    {"part": 0, "names": ["a", "b"]},
    {"part": 1, "names": ["b", "c"]},
    {"part": 2, "names": ["c"]},
    {"part": 3, "names": ["d", "e"]},
]


def test_write_tasks_write_a_ready_part_before_loading_and_drop_shards_after_use():
    tasks, log = _write_tasks(WRITE_PARTS)
    written = []
    tasks.run(written.append)
    assert log == [
        ("load", "a"),
        ("load", "b"),
        ("write", 0, ["a", "b"]),
        ("load", "c"),
        ("write", 1, ["b", "c"]),
        ("write", 2, ["c"]),
        ("load", "d"),
        ("load", "e"),
        ("write", 3, ["d", "e"]),
    ]
    assert written == [2, 2, 1, 2] and tasks.loaded == {}


def test_write_tasks_on_threads_load_each_shard_once_and_write_each_part_once():
    tasks, log = _write_tasks(WRITE_PARTS)
    written = []
    with ThreadPoolExecutor(3) as ex:
        for f in [ex.submit(tasks.run, written.append) for _ in range(3)]:
            f.result()
    assert sorted(x[1] for x in log if x[0] == "load") == ["a", "b", "c", "d", "e"]
    assert sorted(x[1] for x in log if x[0] == "write") == [0, 1, 2, 3]
    assert sum(written) == 7 and tasks.loaded == {}


def test_write_tasks_stop_taking_tasks_when_stopped_from_outside():
    """Ctrl-C in the main thread stops the write stage's threads after their current task
    (they used to write every remaining file first)."""
    parts = [{"part": i, "names": [f"s{i}"]} for i in range(20)]
    tasks, log = _write_tasks(parts)
    stopped_at = []

    def on_written(n):
        if not stopped_at:
            tasks.stop()
            stopped_at.append(len(log))

    with ThreadPoolExecutor(2) as ex:
        for f in [ex.submit(tasks.run, on_written) for _ in range(2)]:
            f.result()
    assert stopped_at and len(log) <= stopped_at[0] + 1  # at most the other thread's task
    assert sum(1 for x in log if x[0] == "write") < len(parts)


def test_write_tasks_stop_every_thread_after_a_failure():
    # The first load fails at once; the other thread's load (if it took one) takes 10 ms,
    # so it sees the failure when it asks for its next task.
    tasks, log = _write_tasks(WRITE_PARTS, fail="a")
    with ThreadPoolExecutor(2) as ex:
        runs = [ex.submit(tasks.run, lambda n: None) for _ in range(2)]
        with pytest.raises(ValueError, match="cannot read a"):
            for f in runs:
                f.result()
    assert ("load", "a") in log and set(log) <= {("load", "a"), ("load", "b")}


def test_report_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    """The report draws on Figures without pyplot: a notebook or script that runs the
    engine keeps its backend (and pyplot is not imported for it)."""
    import subprocess
    import sys

    code = """
import sys
from pathlib import Path
import numpy as np
import matplotlib
from metaclip.pipeline import report
card = {"mode": "mc1", "unit": "pair", "seed": 0, "version": "x", "t_per_language": {"en": 2.0},
        "languages": {"en": {"t": 2.0, "tail_mass": 0.5, "entries": 4, "matched_entries": 3,
                             "matches": 9}},
        "subset": {"size": 3, "per_language": {"en": 3}},
        "pool": {"texts": 5, "matched": 4, "unmatched": 1, "skipped": 0,
                 "identity_holds": True, "skipped_by_reason": {}, "skipped_examples": {}}}
counts = {"en": np.array([5, 3, 1, 0], np.uint64)}
report.write_report(Path(sys.argv[1]), card, counts, {"en": np.array([2, 2, 1, 0], np.uint64)})
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "False"]
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == ["entry_counts.png", "head_tail.png", "subset_per_language.png"]


def test_cli_loads_metadata_and_builds_the_matcher_while_it_imports(tmp_path):
    """``metaclip-curate`` starts loading the metadata (and building a single language's
    matcher) before it imports the pipeline; the engine gets the same metadata, and a
    metadata error still reaches the caller."""
    from metaclip.cli import _metadata_early
    from metaclip.exceptions import MetadataError
    from metaclip.pipeline.metadata import Metadata, load

    path = tmp_path / "md.json"
    path.write_text(json.dumps(["dog", "hot dog", "cat"]))
    kw = {"metadata": str(path), "metadata_lang": "en", "mode": "mc1"}
    md = _metadata_early(kw, build=True).result(timeout=30)
    want = Metadata(load(path), "mc1")
    assert md.entries == want.entries and md.digest() == want.digest()
    for _ in range(300):  # the build goes on after the entries are handed over
        if "en" in md._matchers:
            break
        time.sleep(0.01)
    assert "en" in md._matchers
    texts = pa.array(["a hot dog", "no match"])
    got, ref = md.matcher("en").match(texts), want.matcher("en").match(texts)
    assert got.ids.tolist() == ref.ids.tolist() and got.offsets.tolist() == ref.offsets.tolist()
    assert "en" not in _metadata_early(kw, build=False).result(timeout=30)._matchers

    path.write_text(json.dumps(["dog", "dog"]))
    with pytest.raises(MetadataError, match="ids 0 and 1"):
        _metadata_early(kw, build=True).result(timeout=30)


def test_report_of_a_pool_where_nothing_matched_draws_without_warnings(tmp_path):
    import warnings

    from metaclip.pipeline import report

    card = {
        "mode": "mc1", "unit": "pair", "seed": 0, "version": "x", "t_per_language": {"en": 5.0},
        "languages": {"en": {"t": 5.0, "tail_mass": 0.0, "entries": 3, "matched_entries": 0,
                             "matches": 0}},
        "subset": {"size": 0, "per_language": {}},
        "pool": {"texts": 2, "matched": 0, "unmatched": 2, "skipped": 0, "identity_holds": True,
                 "skipped_by_reason": {}, "skipped_examples": {}},
    }  # fmt: skip
    zeros = {"en": np.zeros(3, np.uint64)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned of a legend without lines
        path = report.write_report(tmp_path, card, zeros, zeros)
    assert "curated subset: 0 texts" in path.read_text()
    assert (tmp_path / "report" / "entry_counts.png").stat().st_size > 0


def test_available_memory_follows_the_cgroup_limit(tmp_path):
    """A container's cgroup limit (v2 or v1, at its own path or the root) caps the memory
    the pipeline budgets with; "max" means no limit."""
    from metaclip.pipeline.memory import available_memory

    system = available_memory(tmp_path / "none", str(tmp_path / "none"))
    assert system > 0  # /proc/meminfo
    root = tmp_path / "cgroup"
    own = tmp_path / "self-cgroup"
    own.write_text("4:memory:/job/7\n0::/slurm/job7\n")
    v2 = root / "slurm" / "job7"
    v2.mkdir(parents=True)
    (v2 / "memory.max").write_text("max\n")
    (v2 / "memory.current").write_text("1000\n")
    assert abs(available_memory(root, str(own)) - system) < 1 << 30  # no limit
    (v2 / "memory.max").write_text(f"{3 << 20}\n")
    assert available_memory(root, str(own)) == (3 << 20) - 1000
    v1 = root / "memory" / "job" / "7"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2 << 20}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{3 << 20}\n")  # over the limit: no room
    assert available_memory(root, str(own)) == 0
