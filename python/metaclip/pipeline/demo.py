"""The embedded demo: bundled metadata and a small multilingual pool, curated in seconds."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metaclip.pipeline.io import atomic_write, write_bytes


def write_demo_pool(out: Path, texts_per_lang: int = 1000, shards: int = 3) -> Path:
    """Caption-like texts in five languages (from the metadata builder's demo lexicon) as
    parquet shards with columns key, text, lang, url."""
    from metaclip.metadata.demo import DEMO_LANGS, demo_captions

    rows: dict[str, list[str]] = {"key": [], "text": [], "lang": [], "url": []}
    for lang in DEMO_LANGS:
        for i, text in enumerate(demo_captions(lang, n=texts_per_lang, seed=0)):
            key = f"{lang}-{i:06d}"
            rows["key"].append(key)
            rows["text"].append(text)
            rows["lang"].append(lang)
            rows["url"].append(f"https://example.org/img/{key}.jpg")
    table = pa.table(rows)
    pool = out / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // shards)
    for s in range(shards):
        part = table.slice(s * step, step)
        atomic_write(pool / f"demo-{s:02d}.parquet", functools.partial(_write_parquet, part))
    return pool


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path)


def write_demo_metadata(out: Path) -> Path:
    from metaclip.metadata.demo import demo_metadata

    md_dir = out / "metadata"
    md_dir.mkdir(parents=True, exist_ok=True)
    for lang, entries in demo_metadata().items():
        write_bytes(md_dir / f"{lang}.json", json.dumps(entries, ensure_ascii=False).encode())
    return md_dir


def run_demo(out: Path, texts_per_lang: int = 1000, quiet: bool = False) -> dict:
    from metaclip.pipeline.config import Config
    from metaclip.pipeline.engine import Engine

    pool = write_demo_pool(out, texts_per_lang)
    md_dir = write_demo_metadata(out)
    cfg = Config(
        pool=(str(pool),),
        out=str(out / "curated"),
        metadata=str(md_dir),
        mode="mc2",
        lang_column="lang",
        t_en=max(5, texts_per_lang // 50),
        seed=0,
        quiet=quiet,
    )
    return Engine(cfg).run()
