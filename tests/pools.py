"""Small pools and CLI helpers the pipeline tests share: generated captions over a word
list (Zipf-ish, so head entries exceed t and get balanced) in parquet shards."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from metaclip.cli import main

WORDS = [f"w{i}" for i in range(400)] + ["hot", "dog", "New", "York", "cat"]


def make_metadata(path: Path) -> list[str]:
    entries = [*WORDS[:300], "hot dog", "New York", "w1 w2", "w3 w4 w5"]
    path.write_text(json.dumps(entries))
    return entries


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        # A Zipf-ish draw so that head entries exceed t and get balanced.
        k = rng.randint(2, 9)
        toks = [WORDS[min(int(rng.paretovariate(0.8)) - 1, len(WORDS) - 1)] for _ in range(k)]
        if rng.random() < 0.3:
            toks.insert(rng.randint(0, len(toks)), rng.choice(["hot dog", "New York,", "x."]))
        out.append(" ".join(toks))
    return out


def write_pool(dirpath: Path, texts: list[str], shards: int, extra: bool = True) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "key": [f"k{i:06d}" for i in range(len(texts))],
            "text": texts,
            **({"url": [f"http://x/{i}.jpg" for i in range(len(texts))]} if extra else {}),
            **({"score": [None if i % 7 else i / 3 for i in range(len(texts))]} if extra else {}),
        }
    )
    step = -(-len(texts) // shards)
    for s in range(shards):
        pq.write_table(table.slice(s * step, step), dirpath / f"part-{s:03d}.parquet")
    return dirpath


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def subset_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "subset").glob("*.parquet"))}


def count_matches(monkeypatch) -> list[str]:
    """From now on, the file name of every shard the engine matches, in order."""
    from metaclip.pipeline import engine

    matched: list[str] = []
    real = engine.match_shard

    def counting(shard, *a, **kw):
        matched.append(shard.path.name)
        return real(shard, *a, **kw)

    monkeypatch.setattr(engine, "match_shard", counting)
    return matched
