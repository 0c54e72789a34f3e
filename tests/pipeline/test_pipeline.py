"""End-to-end pipeline tests with real files in a temp dir (spec §7)."""

from __future__ import annotations

import itertools
import json
import random
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pools import count_matches, make_metadata, make_texts, run_cli, subset_bytes, write_pool

from metaclip import core
from metaclip.cli import main
from metaclip.pipeline import scheduling, stages
from metaclip.pipeline import shard as shard_mod
from metaclip.pipeline.config import Config
from metaclip.pipeline.engine import Engine
from metaclip.pipeline.pool import Shard, discover, read_footer
from metaclip.pipeline.subset import SubsetWriter
from metaclip.pipeline.tar_shards import write_tar_shard


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    base = tmp_path_factory.mktemp("pool")
    md = base / "metadata.json"
    entries = make_metadata(md)
    texts = make_texts(6000)
    return {
        "md": md,
        "entries": entries,
        "texts": texts,
        "one": write_pool(base / "one", texts, 1),
        "seven": write_pool(base / "seven", texts, 7),
    }


def test_pipeline_equals_core_api(pool, tmp_path):
    out = tmp_path / "out"
    run_cli("run", str(pool["one"]), "-m", str(pool["md"]), "-o", str(out), "--t", "50", "-q")
    subset = pq.read_table(out / "subset")
    # The same computation straight from the core API.
    m = core.Matcher(pool["entries"])
    res = m.match(pool["texts"])
    counts = core.count_entries(res.ids, len(pool["entries"]))
    probs = core.probabilities(counts, 50)
    keys = [f"k{i:06d}" for i in range(len(pool["texts"]))]
    keep = core.sample_pairs(keys, res, probs, seed=0)
    assert subset.column("key").to_pylist() == [keys[i] for i in np.flatnonzero(keep)]
    assert subset.column("url").num_chunks >= 1  # input columns kept
    want_ids = [res.row(i).tolist() for i in np.flatnonzero(keep)]
    assert subset.column("entry_ids").to_pylist() == want_ids
    kp = [1 - np.prod([1 - probs[e] for e in ids]) for ids in want_ids]
    assert np.allclose(subset.column("keep_prob").to_numpy(), kp, rtol=0, atol=1e-12)
    card = json.loads((out / "datacard.json").read_text())
    assert card["pool"]["identity_holds"]
    assert card["pool"]["matched"] == int(res.matched.sum())
    assert card["subset"]["size"] == int(keep.sum())
    assert 0 < keep.sum() < res.matched.sum()  # balancing dropped some head texts
    assert (out / "report" / "report.md").exists()


def test_output_independent_of_workers_and_sharding(pool, tmp_path):
    outs = {}
    for name, src, workers in [("w1", "one", "1"), ("w2", "one", "2"), ("s7", "seven", "2")]:
        out = tmp_path / name
        run_cli(
            "run", str(pool[src]), "-m", str(pool["md"]), "-o", str(out), "--t", "50",
            "--workers", workers, "--rows-per-file", "1000", "-q",
        )  # fmt: skip
        outs[name] = subset_bytes(out)
    assert len(outs["w1"]) > 1
    assert outs["w1"] == outs["w2"] == outs["s7"]


def test_shards_read_ahead_in_the_match_tail_give_the_same_subset(pool, tmp_path, monkeypatch):
    """Without memory to keep shards, ``run`` lets match workers left idle read the write
    stage's last shards; the write stage takes those tables instead of reading again,
    with the same bytes as a run without read-ahead."""
    ref = tmp_path / "ref"
    run_cli(
        "run", str(pool["seven"]), "-m", str(pool["md"]), "-o", str(ref), "--t", "50",
        "--workers", "1", "--pool-memory", "0", "-q",
    )  # fmt: skip
    taken = []
    real = scheduling.PoolTables.take

    def take(self, name):
        table = real(self, name)
        if table is not None:
            taken.append(name)
        return table

    monkeypatch.setattr(scheduling.PoolTables, "take", take)
    cfg = Config(
        pool=(str(pool["seven"]),), out=str(tmp_path / "ahead"), metadata=str(pool["md"]),
        t=50, workers=2, quiet=True, pool_memory_mb=0,
    )  # fmt: skip
    engine = Engine(cfg)
    engine.run()
    # The last two match tasks run together, so one worker goes idle and reads the last
    # shard (the shards are listed by path).
    assert engine.shards[-1].name in taken
    assert engine.tables is None  # released after the write
    assert subset_bytes(tmp_path / "ahead") == subset_bytes(ref)


def _count_reads(monkeypatch) -> list[tuple[str, bool]]:
    """Record (shard name, all columns?) for every parquet shard read from now on."""
    from metaclip.pipeline import pool as pool_mod

    reads: list[tuple[str, bool]] = []
    real = pool_mod.read_parquet

    def read_parquet(shard, columns=None, use_threads=True):
        reads.append((shard.name, columns is None))
        return real(shard, columns, use_threads)

    monkeypatch.setattr(pool_mod, "read_parquet", read_parquet)
    monkeypatch.setattr(shard_mod, "read_parquet", read_parquet)
    return reads


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_kept_in_memory_are_read_once(pool, tmp_path, monkeypatch, workers):
    """``run`` keeps the shards that fit its memory budget from the match stage for the
    write stage: each is read once, in full, with the same subset bytes as a run that
    reads every shard twice."""
    ref = tmp_path / "ref"
    run_cli(
        "run", str(pool["seven"]), "-m", str(pool["md"]), "-o", str(ref), "--t", "50",
        "--workers", str(workers), "--pool-memory", "0", "-q",
    )  # fmt: skip
    reads = _count_reads(monkeypatch)
    out = tmp_path / "kept"
    run_cli(
        "run", str(pool["seven"]), "-m", str(pool["md"]), "-o", str(out), "--t", "50",
        "--workers", str(workers), "-q",
    )  # fmt: skip
    names = sorted(s.name for s in discover([str(pool["seven"])]))
    assert sorted(reads) == [(n, True) for n in names]
    assert subset_bytes(out) == subset_bytes(ref)
    assert (out / "datacard.json").read_text() == (ref / "datacard.json").read_text()


def test_the_memory_budget_keeps_the_first_shards_that_fit(pool, tmp_path, monkeypatch):
    """A budget that fits 3 shards: the first 3 still to match are read once; the others
    are read for matching (key and text) and again in full to write."""
    shards = discover([str(pool["seven"])])
    # Planned by footer sizes, checked against the tables read: room for both.
    budget = sum(
        max(
            read_footer(s).decoded_bytes,
            shard_mod.read_for_write(s, Config((), "", "")).nbytes,
        )
        for s in shards[1:4]
    )
    monkeypatch.setattr(Engine, "pool_memory", property(lambda self: budget))
    out = tmp_path / "out"
    cfg = Config(
        pool=(str(pool["seven"]),), out=str(out), metadata=str(pool["md"]), t=50,
        workers=1, quiet=True,
    )  # fmt: skip
    engine = Engine(cfg)
    # Shard 0 is matched already (as in a resumed run): the budget goes to shards 1-3.
    engine.match_dir.mkdir(parents=True)
    shard_mod.match_shard(shards[0], cfg, engine.md, engine.match_dir, 1)
    reads = _count_reads(monkeypatch)
    engine.run()
    kept = {s.name for s in shards[1:4]}
    for s in shards:
        mine = [whole for name, whole in reads if name == s.name]
        want = [True] if s.name in kept or s == shards[0] else [False, True]  # 0: to write
        assert mine == want, (s.name, mine)
    ref = tmp_path / "ref"
    run_cli(
        "run", str(pool["seven"]), "-m", str(pool["md"]), "-o", str(ref), "--t", "50",
        "--pool-memory", "0", "-q",
    )  # fmt: skip
    assert subset_bytes(out) == subset_bytes(ref)


def test_a_shard_bigger_decoded_than_its_footer_says_is_not_kept(pool, tmp_path, monkeypatch):
    """A dictionary-encoded column is small in the footer but read dense: the budget is
    checked again on the table read, and a shard that does not fit is read again to
    write instead."""
    src = tmp_path / "pool"
    src.mkdir()
    texts = pool["texts"][:600]
    for s in range(2):
        rows = range(s * 300, (s + 1) * 300)
        pq.write_table(
            pa.table({"key": [f"k{i}" for i in rows], "text": [texts[i] for i in rows],
                      "source": ["x" * 2000] * 300}),
            src / f"{s}.parquet",
        )  # fmt: skip
    shards = discover([str(src)])
    footer = sum(read_footer(s).decoded_bytes for s in shards)
    monkeypatch.setattr(Engine, "pool_memory", property(lambda self: footer + 1000))
    cfg = Config(
        pool=(str(src),), out=str(tmp_path / "out"), metadata=str(pool["md"]), t=20,
        workers=1, quiet=True,
    )  # fmt: skip
    reads = _count_reads(monkeypatch)
    engine = Engine(cfg)
    engine.run()
    assert footer < 100_000 < pq.read_table(src / "0.parquet").nbytes
    assert sorted(reads) == sorted((s.name, whole) for s in shards for whole in (True, True))
    ref = tmp_path / "ref"
    run_cli("run", str(src), "-m", str(pool["md"]), "-o", str(ref), "--t", "20",
            "--pool-memory", "0", "-q")  # fmt: skip
    assert subset_bytes(tmp_path / "out") == subset_bytes(ref)


def test_a_failed_read_ahead_leaves_the_read_to_the_write_stage(tmp_path):
    shards = [Shard(tmp_path / f"{i}.parquet", "parquet", i) for i in range(3)]

    def read(shard):
        raise OSError("disk gone")

    tables = scheduling.PoolTables(read, shards, limit=2)
    tables.start()
    assert tables.take(shards[-1].name) is None  # waits for the read, then gives it up
    assert tables.take(shards[-1].name) is None  # taken once
    assert tables.take(shards[0].name) is None  # never read ahead (limit 2: 2 and 1)


def test_the_pool_memory_default_and_its_errors(tmp_path):
    from metaclip.pipeline.memory import available_memory

    cfg = Config(pool=(), out=str(tmp_path), metadata="m")
    assert cfg.pool_memory_mb is None  # a quarter of available_memory()
    assert available_memory() > 0  # Linux: /proc/meminfo
    r = CliRunner().invoke(
        main, ["run", str(tmp_path), "-m", str(tmp_path), "-o", str(tmp_path / "o"),
               "--pool-memory", "-1"],
    )  # fmt: skip
    assert r.exit_code == 2 and "--pool-memory must be 0 or more" in r.output


def test_parquet_bytes_depend_on_rows_not_on_how_they_were_chunked():
    """Subset files are made of slices of several shards. The parquet writer's bytes depend
    on where chunks start (here: when the text column's dictionary overflows), so the
    writer gets fixed chunk boundaries, and files do not depend on where slices fall."""
    import io

    from metaclip.pipeline.subset import canonical_chunks

    n, step = 30_000, 4096
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(3000)}" for _ in range(14)) for _ in range(n)]
    lists = pa.LargeListArray.from_arrays(
        pa.array(np.arange(0, 3 * n + 1, 3)), pa.array(np.arange(3 * n) % 97, pa.uint32())
    )
    table = pa.table(
        {
            "text": [t if i % 5 else None for i, t in enumerate(texts)],
            "entry_ids": lists,
            "keep_prob": np.linspace(0, 1, n),
        }
    )

    def parquet(t: pa.Table, canonical: bool = True) -> bytes:
        buf = io.BytesIO()
        pq.write_table(canonical_chunks(t, step) if canonical else t, buf, row_group_size=n)
        return buf.getvalue()

    def split(cuts: list[int]) -> pa.Table:
        bounds = [0, *cuts, n]
        return pa.concat_tables([table.slice(a, b - a) for a, b in itertools.pairwise(bounds)])

    want = parquet(table)
    for cuts in ([10_000, 20_000], [1, 7, n - 1], [step], [step - 1, step + 1], [12_345]):
        assert parquet(split(cuts)) == want, cuts
    assert parquet(split([10_000]), canonical=False) != parquet(table, canonical=False)


def test_killed_run_resumes_to_identical_output(pool, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    args = ["-m", str(pool["md"]), "--t", "50", "-q"]
    run_cli("run", str(pool["seven"]), "-o", str(ref), *args)

    out = tmp_path / "killed"
    args += ["--workers", "1"]  # shards one after the other: the kill lands after two
    real = stages.sample_table
    calls = {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed midway")
        return real(*a, **kw)

    monkeypatch.setattr(stages, "sample_table", dying)
    killed = CliRunner().invoke(main, ["run", str(pool["seven"]), "-o", str(out), *args])
    assert killed.exit_code == 1 and "Aborted" in killed.output  # click's Ctrl-C handling
    done = list((out / "_work").glob("sample-*/part-*.json"))
    assert len(done) == 2  # two shards finished before the kill; nothing half-written
    assert not list((out / "_work").rglob("*.tmp"))
    monkeypatch.setattr(stages, "sample_table", real)
    run_cli("run", str(pool["seven"]), "-o", str(out), *args)
    assert subset_bytes(out) == subset_bytes(ref)
    assert (out / "datacard.json").read_text() == (ref / "datacard.json").read_text().replace(
        str(ref), str(out)
    )


def test_report_is_drawn_while_the_subset_is_written(pool, tmp_path, monkeypatch):
    """``run`` draws the report during the write stage (it needs only the match and sample
    records) into a draft; a write that fails raises its error and leaves the earlier run's
    subset, datacard and report as they were."""
    from metaclip.pipeline import report

    cfg = Config(
        pool=(str(pool["seven"]),), out=str(tmp_path / "o"), metadata=str(pool["md"]),
        t=50, workers=2, quiet=True,
    )  # fmt: skip
    drawing, started = {}, threading.Event()
    real_draw, real_write = report.write_report, Engine.write

    def draw(*a, **kw):
        drawing["thread"] = threading.current_thread()
        started.set()
        return real_draw(*a, **kw)

    def write(self):
        # Drawn after the write (not during it), the report would never start here.
        drawing["during_write"] = started.wait(timeout=10)
        return real_write(self)

    monkeypatch.setattr(report, "write_report", draw)
    monkeypatch.setattr(Engine, "write", write)
    card = Engine(cfg).run()
    assert drawing["thread"] is not threading.main_thread() and drawing["during_write"]
    assert (tmp_path / "o" / "report" / "report.md").exists()
    assert card["subset"]["size"] == sum(
        pq.read_metadata(f).num_rows for f in (tmp_path / "o" / "subset").glob("*.parquet")
    )

    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and "_work" not in p.parts}  # fmt: skip

    before = files(tmp_path / "o")

    def broken(self):
        raise OSError("disk full")

    monkeypatch.setattr(Engine, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        Engine(replace(cfg, t=20)).run()  # another subset, so another datacard
    assert files(tmp_path / "o") == before
    assert not (tmp_path / "o" / "_work" / "report.tmp").exists()


def test_a_killed_write_resumes_with_the_files_it_finished(pool, tmp_path, monkeypatch):
    """Subset files are written into a draft kept per write setting: a rerun after a kill
    in the write stage writes only the missing files, and ends with the bytes of an
    uninterrupted run; a finished subset is not written again unless a setting changed or
    a file is missing."""
    args = ["-m", str(pool["md"]), "--t", "50", "--rows-per-file", "300", "-q"]
    ref = tmp_path / "ref"
    run_cli("run", str(pool["seven"]), "-o", str(ref), *args)
    assert len(subset_bytes(ref)) > 3

    out = tmp_path / "out"
    real = SubsetWriter.write_part
    wrote: list[int] = []

    def dying(self, part, *a, **kw):
        if die_at is not None and len(wrote) == die_at:
            raise KeyboardInterrupt("killed in the write stage")
        wrote.append(part["part"])
        return real(self, part, *a, **kw)

    monkeypatch.setattr(SubsetWriter, "write_part", dying)
    die_at = 2
    killed = CliRunner().invoke(main, ["run", str(pool["seven"]), "-o", str(out), *args,
                                       "--workers", "1"])  # fmt: skip
    assert killed.exit_code == 1 and wrote == [0, 1] and not (out / "subset").exists()
    die_at, wrote = None, []
    run_cli("run", str(pool["seven"]), "-o", str(out), *args)
    assert 0 not in wrote and 1 not in wrote and 2 in wrote  # only the missing files
    assert subset_bytes(out) == subset_bytes(ref)
    assert not list((out / "_work").rglob("subset-*.tmp"))

    wrote.clear()
    run_cli("run", str(pool["seven"]), "-o", str(out), *args)
    assert wrote == [] and subset_bytes(out) == subset_bytes(ref)  # already written
    first = sorted((out / "subset").glob("*.parquet"))[0]
    first.unlink()
    run_cli("run", str(pool["seven"]), "-o", str(out), *args)
    assert len(wrote) == len(subset_bytes(ref)) and subset_bytes(out) == subset_bytes(ref)
    # A file of the same size written since (e.g. by another setting) is not trusted.
    wrote.clear()
    first = sorted((out / "subset").glob("*.parquet"))[0]
    data = first.read_bytes()
    first.unlink()
    first.write_bytes(data)
    run_cli("run", str(pool["seven"]), "-o", str(out), *args)
    assert len(wrote) == len(subset_bytes(ref)) and subset_bytes(out) == subset_bytes(ref)
    wrote.clear()
    run_cli("run", str(pool["seven"]), "-o", str(out), *args[:-3], "--rows-per-file", "400")
    assert wrote and len(subset_bytes(out)) < len(subset_bytes(ref))


def test_a_rerun_on_a_changed_pool_equals_a_fresh_run(pool, tmp_path, monkeypatch):
    """Rerunning into the same folder after the pool changed: unchanged shards keep their
    matches, a shard added or rewritten is matched, and every shard is sampled again with
    the new counts' probabilities (old samples used to be kept: a wrong subset)."""
    src = pool["seven"]
    shards = sorted(src.glob("*.parquet"))
    grow = tmp_path / "pool"
    grow.mkdir()
    for f in shards[:-1]:
        (grow / f.name).write_bytes(f.read_bytes())
    args = ["-m", str(pool["md"]), "--t", "50", "-q"]
    out = tmp_path / "out"
    run_cli("run", str(grow), "-o", str(out), *args)

    matched = count_matches(monkeypatch)
    (grow / shards[-1].name).write_bytes(shards[-1].read_bytes())  # a shard added
    run_cli("run", str(grow), "-o", str(out), *args)
    assert matched == [shards[-1].name]
    run_cli("run", str(src), "-o", str(tmp_path / "fresh7"), *args)
    assert subset_bytes(out) == subset_bytes(tmp_path / "fresh7")

    table = pq.read_table(grow / shards[0].name)  # a shard rewritten: other texts
    texts = table.column("text").to_pylist()
    pq.write_table(table.set_column(1, "text", pa.array(texts[::-1])), grow / shards[0].name)
    matched.clear()
    run_cli("run", str(grow), "-o", str(out), *args)
    assert matched == [shards[0].name]
    run_cli("run", str(grow), "-o", str(tmp_path / "fresh"), *args)
    assert subset_bytes(out) == subset_bytes(tmp_path / "fresh")
    assert subset_bytes(out) != subset_bytes(tmp_path / "fresh7")


def test_jsonl_and_tar_pools_match_parquet(pool, tmp_path):
    texts = pool["texts"][:500]
    rows = [{"key": f"k{i:06d}", "text": t} for i, t in enumerate(texts)]
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "t").mkdir()
    write_tar_shard(tmp_path / "t" / "a.tar", rows)
    pq_dir = write_pool(tmp_path / "p", texts, 2, extra=False)
    keys = {}
    for name, src in [("j", tmp_path / "j"), ("t", tmp_path / "t"), ("p", pq_dir)]:
        out = tmp_path / f"out-{name}"
        run_cli("run", str(src), "-m", str(pool["md"]), "-o", str(out), "--t", "5", "-q")
        keys[name] = pq.read_table(out / "subset").column("key").to_pylist()
    assert keys["j"] == keys["t"] == keys["p"] and keys["p"]


def test_several_texts_per_image(pool, tmp_path):
    rows = [{"key": f"img{i}", "text": ["w1 w2", "nothing here", f"w{i % 50}"]} for i in range(300)]
    rows += [{"key": "empty", "text": []}, {"key": "none", "text": None}, {"key": "s", "text": "x"}]
    rows += [{"text": ["w7"]}]  # no key (so no image key): skipped and counted, no crash
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "pool"), "-m", str(pool["md"]), "-o", str(out)]
    run_cli(*args, "--unit", "image", "--image-column", "key", "--t", "20", "-q")
    subset = pq.read_table(out / "subset")
    card = json.loads((out / "datacard.json").read_text())
    assert card["pool"]["texts"] == 904 and card["pool"]["unmatched"] == 301
    assert card["pool"]["skipped_by_reason"] == {"null_text": 2, "null_key": 1}
    # One picked text per kept image, never the unmatched one.
    assert len(set(subset.column("key").to_pylist())) == subset.num_rows <= 300
    texts = subset.column("text").to_pylist()
    assert "nothing here" not in texts and len(set(texts)) > 10


@pytest.mark.parametrize("kind", ["jsonl", "tar", "parquet-lists"])
def test_other_shards_kept_in_memory_are_read_once(pool, tmp_path, monkeypatch, kind):
    """JSON-lines and tar shards (read in full to match) and parquet shards with several
    texts per row are kept as the match stage made their rows: each is read once, with
    the same subset as a run that reads them again."""
    from metaclip.pipeline import json_shards, tar_shards
    from metaclip.pipeline import pool as pool_mod

    src = tmp_path / "pool"
    src.mkdir()
    several = kind == "parquet-lists"
    rows = [
        {"key": f"k{i}", "text": [t, "w3 w4"] if several else t, "n": i}
        for i, t in enumerate(pool["texts"][:900])
    ]
    for s in range(3):
        part = rows[s * 300 : (s + 1) * 300]
        if kind == "jsonl":
            (src / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        elif kind == "tar":
            write_tar_shard(src / f"{s}.tar", part)
        else:
            pq.write_table(pa.Table.from_pylist(part), src / f"{s}.parquet")
    args = ["run", str(src), "-m", str(pool["md"]), "--t", "20", "--workers", "2", "-q"]
    if several:
        args += ["--unit", "image", "--image-column", "key"]
    run_cli(*args, "-o", str(tmp_path / "ref"), "--pool-memory", "0")
    reads: list[str] = []

    def counted(real):
        def read(path, *a, **k):
            reads.append(Path(getattr(path, "path", path)).name)  # a Shard or a path
            return real(path, *a, **k)

        return read

    for mod, name in [(pool_mod, "read_parquet"), (shard_mod, "read_parquet"),
                      (json_shards, "read_jsonl"), (tar_shards, "read_tar")]:  # fmt: skip
        monkeypatch.setattr(mod, name, counted(getattr(mod, name)))
    run_cli(*args, "-o", str(tmp_path / "kept"))
    assert sorted(reads) == sorted(p.name for p in src.iterdir())
    assert subset_bytes(tmp_path / "kept") == subset_bytes(tmp_path / "ref")


def test_demo_runs(tmp_path):
    output = run_cli("demo", "-o", str(tmp_path / "demo"), "--texts-per-lang", "200", "-q")
    assert "subset:" in output and "report:" in output
    card = json.loads((tmp_path / "demo" / "curated" / "datacard.json").read_text())
    assert set(card["subset"]["per_language"]) == {"de", "en", "es", "ja", "zh"}
    assert (tmp_path / "demo" / "curated" / "report" / "entry_counts.png").stat().st_size > 1000


CLI_WITHOUT_PANDAS = """
import sys
from click.testing import CliRunner
from metaclip.cli import main
pool, md, out = sys.argv[1:]
r = CliRunner().invoke(main, ["run", pool, "-m", md, "-o", out, "--t", "50", "-q"])
assert r.exit_code == 0, r.output
assert "pandas" not in sys.modules, "pyarrow imported pandas during the run"
import pandas  # still importable for anything else in the process
print(pandas.__name__)
"""


def test_a_cli_run_spares_pyarrow_its_pandas_import(pool, tmp_path):
    """pyarrow imports pandas, when installed, on its first conversion of Python values
    (0.25-0.3 s inside the first shard read); a curation run never needs it."""
    import subprocess
    import sys

    pytest.importorskip("pandas")
    args = [str(pool["seven"]), str(pool["md"]), str(tmp_path / "out")]
    res = subprocess.run(
        [sys.executable, "-c", CLI_WITHOUT_PANDAS, *args], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "pandas"


def test_the_console_command_exits_with_clicks_status_and_its_output_flushed(pool, tmp_path):
    """``metaclip-curate`` (``cli.console``) skips the interpreter's teardown: its exit
    status is still click's, and what it printed to a pipe is all there."""
    import subprocess
    import sys

    def console(*args: str) -> subprocess.CompletedProcess:
        code = "from metaclip.cli import console; console()"
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)

    out = tmp_path / "o"
    res = console("run", str(pool["seven"]), "-m", str(pool["md"]), "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith(f"report:   {out / 'report' / 'report.md'}")
    ref = tmp_path / "ref"
    run_cli("run", str(pool["seven"]), "-m", str(pool["md"]), "-o", str(ref), "-q")
    assert subset_bytes(out) == subset_bytes(ref)
    assert (out / "report" / "report.md").read_text() == (ref / "report" / "report.md").read_text()
    bad = console("run", str(tmp_path / "nothing"), "-m", str(pool["md"]), "-o", str(out))
    assert bad.returncode == 2 and "no pool shards" in bad.stderr
    assert console("nonsense").returncode == 2
    version = console("--version")
    assert version.returncode == 0 and "metaclip-curate, version" in version.stdout
    # A reader that stops early (`| head`): a quiet exit, not "error: Broken pipe".
    code = "from metaclip.cli import console; console()"
    args = ["run", str(pool["seven"]), "-m", str(pool["md"]), "-o", str(out), "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 1 and "error" not in err, err


def test_stage_by_stage_ends_with_the_datacard_of_run(pool, tmp_path):
    """``sample`` writes the subset and its datacard (no report, and an earlier run's
    report goes, since it describes another subset); ``stats`` then prints it."""
    args = [str(pool["one"]), "-m", str(pool["md"]), "-q"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    run_cli("run", *args, "--t", "50", "-o", str(ref))
    run_cli("run", *args, "--t", "80", "-o", str(out))
    assert (out / "report" / "report.md").exists()
    for stage in ["match", "count", "balance", "sample"]:
        run_cli(stage, *args, "--t", "50", "-o", str(out))
    assert subset_bytes(out) == subset_bytes(ref)
    card, want = (json.loads((d / "datacard.json").read_text()) for d in (out, ref))
    assert card == want
    assert not (out / "report").exists()
    shown = run_cli("stats", str(out))
    assert f"subset: {want['subset']['size']:,} texts" in shown and "report:" not in shown
    assert "report:" in run_cli("stats", str(ref))


def test_every_subcommand_has_help_with_example():
    for cmd in ["match", "count", "balance", "sample", "run", "stats", "demo"]:
        text = run_cli(cmd, "--help")
        assert "Usage:" in text
        if cmd != "demo":
            assert "Example:" in text


def test_sigkill_midway_then_resume_gives_identical_bytes(pool, tmp_path):
    """A real kill (SIGKILL: no cleanup at all) in the middle of the match stage."""
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "pool"
    write_pool(src, make_texts(240_000, seed=3), 60)
    args = [str(src), "-m", str(pool["md"]), "--t", "50", "-q", "--rows-per-file", "5000"]
    ref = tmp_path / "ref"
    run_cli("run", *args, "-o", str(ref))

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "metaclip.cli", "run", *args, "-o", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("_work/match-*/part-*.json"))) < 5:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    done = len(list(out.glob("_work/match-*/part-*.json")))
    assert 5 <= done < 60, done  # killed midway (a shard takes ~10 ms here)
    run_cli("run", *args, "-o", str(out))
    assert subset_bytes(out) == subset_bytes(ref)
    assert not list(out.rglob(".*.tmp"))  # leftovers of the killed run are cleaned up
