"""``--engine ray`` gives the embedded engine's results exactly, also when a task fails.

One local Ray (2 CPUs) serves the whole module. This folder has no ``__init__.py`` on
purpose: ``tests/`` is on ``sys.path`` (see conftest.py), and a ``tests/ray`` package
would shadow the real ``ray``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")

from metaclip.cli import main  # noqa: E402
from metaclip.pipeline.config import Config  # noqa: E402
from metaclip.pipeline.demo import write_demo_metadata, write_demo_pool  # noqa: E402
from metaclip.pipeline.ray_engine import RayEngine  # noqa: E402
from metaclip.pipeline.ray_tasks import MatchWorker, SampleWorker  # noqa: E402

WORDS = [f"w{i}" for i in range(200)]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def _image_pool(root: Path) -> tuple[Path, Path]:
    """JSON-lines shards, several texts per image, bad rows, a column only in one shard."""
    rng = random.Random(1)
    pool = root / "pool"
    pool.mkdir(parents=True)
    md = root / "md.json"
    md.write_text(json.dumps([*WORDS[:150], "w1 w2", "w3 w4"]))
    for s in range(3):
        lines = []
        for i in range(120):
            texts = [
                " ".join(WORDS[min(int(rng.paretovariate(0.7)) - 1, 199)] for _ in range(4))
                for _ in range(rng.randint(1, 3))
            ]
            row = {"key": f"img{s}-{i:04d}", "text": texts, "url": f"http://x/{s}/{i}"}
            if s == 1:
                row["source"] = "crawl"
            lines.append(json.dumps(row))
        lines[7] = "{broken json"
        lines[11] = json.dumps({"key": f"img{s}-null", "text": None})
        (pool / f"s{s}.jsonl").write_text("\n".join(lines) + "\n")
    return pool, md


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    base = tmp_path_factory.mktemp("pools")
    demo = base / "demo"
    pool = write_demo_pool(demo, texts_per_lang=300, shards=3)
    md = write_demo_metadata(demo)
    mc2 = ["-m", str(md), "--mode", "mc2", "--lang-column", "lang", "--t-en", "6"]
    img_pool, img_md = _image_pool(base / "img")
    image = ["-m", str(img_md), "--unit", "image", "--t", "8"]
    return {
        "mc2": (pool, [*mc2, "--rows-per-file", "400"]),
        "image": (img_pool, [*image, "--rows-per-file", "40", "--seed", "3"]),
    }


def run_cli(pool: Path, out: Path, args: list[str], *extra: str) -> str:
    argv = ["run", str(pool), "-o", str(out), "-q", *args, *extra]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def embedded(pools, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("embedded")
    outs = {}
    for name, (pool, args) in pools.items():
        outs[name] = base / name
        run_cli(pool, outs[name], args)
    return outs


def assert_same_results(ref: Path, out: Path) -> None:
    files = sorted(p.name for p in (ref / "subset").glob("*.parquet"))
    assert files == sorted(p.name for p in (out / "subset").glob("*.parquet"))
    for name in files:  # same rows, same order, same columns: the very same bytes
        assert (ref / "subset" / name).read_bytes() == (out / "subset" / name).read_bytes()
    assert pq.read_table(ref / "subset").equals(pq.read_table(out / "subset"))
    card = (ref / "datacard.json").read_text().replace(str(ref), "OUT")
    assert card == (out / "datacard.json").read_text().replace(str(out), "OUT")
    [a] = ref.glob("_work/match-*/counts.npz")
    [b] = out.glob("_work/match-*/counts.npz")
    assert a.relative_to(ref) == b.relative_to(out)  # same settings, same work folder
    with np.load(a) as za, np.load(b) as zb:
        assert sorted(za) == sorted(zb)
        for k in za:
            assert za[k].dtype == zb[k].dtype == np.uint64
            assert np.array_equal(za[k], zb[k])
    assert (ref / "report/report.md").read_text() == (out / "report/report.md").read_text()


@pytest.mark.parametrize("name", ["mc2", "image"])
def test_ray_engine_equals_embedded(pools, embedded, tmp_path, name):
    pool, args = pools[name]
    out = tmp_path / "ray"
    printed = run_cli(pool, out, args, "--engine", "ray")
    assert_same_results(embedded[name], out)
    assert list(out.glob("_work/matchers/*.mcm"))  # the actors mapped the node's files
    card = json.loads((out / "datacard.json").read_text())
    assert card["pool"]["identity_holds"] and 0 < card["subset"]["size"] < card["pool"]["matched"]
    assert f"subset: {card['subset']['size']:,} texts" in printed
    if name == "image":
        assert card["pool"]["skipped_by_reason"] == {"null_text": 3, "malformed_row": 3}
        assert len(list((out / "subset").glob("*.parquet"))) > 2  # parts span shards
        subset = pq.read_table(out / "subset")
        assert "source" in subset.column_names  # a column of one shard only, as embedded
        keys = [k.split("#")[0] for k in subset.column("key").to_pylist()]
        assert len(set(keys)) == len(keys)  # one text per kept image


def flaky(base: type, shard_index: int, marker: Path, after: bool) -> type:
    """``base`` failing once on one shard: the first attempt anywhere creates ``marker``
    and raises (before or ``after`` writing the shard's outputs); retries succeed."""

    def fire() -> None:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        raise RuntimeError(f"injected fault on shard {shard_index}")

    class Flaky(base):
        def process(self, shard):
            if shard.index == shard_index and not after:
                fire()
            rows = super().process(shard)
            if shard.index == shard_index and after:
                fire()
            return rows

    return Flaky  # defined here, so Ray ships it to its workers by value


@pytest.mark.parametrize("stage", ["match", "sample"])
def test_failed_task_is_retried_without_losing_rows(pools, embedded, tmp_path, stage):
    marker = tmp_path / "fault-fired"
    pool, _ = pools["mc2"]

    class Engine(RayEngine):
        if stage == "match":
            match_worker = flaky(MatchWorker, 1, marker, after=False)
        else:
            sample_worker = flaky(SampleWorker, 2, marker, after=True)

    cfg = Config(
        pool=(str(pool),), out=str(tmp_path / "ray"), metadata=str(pool.parent / "metadata"),
        mode="mc2", lang_column="lang", t_en=6.0, rows_per_file=400, quiet=True,
    )  # fmt: skip
    if stage == "sample":  # resume from the embedded engine's match outputs
        shutil.copytree(  # its match outputs only: the sample stage must run here
            embedded["mc2"] / "_work",
            tmp_path / "ray" / "_work",
            ignore=shutil.ignore_patterns("sample-*", "matchers"),
        )
        shard_files = (tmp_path / "ray").glob("_work/match-*/*-????????????.*")
        matched = {p: p.stat().st_mtime_ns for p in shard_files}
    card = Engine(cfg).run()
    if stage == "sample":  # ...which were used as they were, not redone
        assert len(matched) == 3 * 3  # 3 shards × (.arrow, .npz, .json)
        assert {p: p.stat().st_mtime_ns for p in matched} == matched
    assert marker.exists()  # the fault did fire, and Ray reran the task
    assert ray.is_initialized()  # a Ray the engine did not start is left running
    assert_same_results(embedded["mc2"], tmp_path / "ray")
    assert card["pool"]["texts"] == 1500 and card["pool"]["identity_holds"]


def test_bad_input_is_the_same_one_line_error(tmp_path):
    pq.write_table(pa.table({"key": ["a"], "caption": ["a dog"]}), tmp_path / "s.parquet")
    (tmp_path / "md.json").write_text(json.dumps(["dog"]))
    lines = {}
    for engine in ("embedded", "ray"):
        argv = ["run", str(tmp_path / "s.parquet"), "-m", str(tmp_path / "md.json"), "-q"]
        argv += ["-o", str(tmp_path / engine), "--engine", engine]
        r = CliRunner().invoke(main, argv, catch_exceptions=False)
        assert r.exit_code == 2, r.output
        lines[engine] = [x for x in r.output.splitlines() if x.startswith("error: ")]
    assert len(lines["ray"]) == 1 and lines["ray"] == lines["embedded"]
    assert "s.parquet" in lines["ray"][0] and "--text-column" in lines["ray"][0]
