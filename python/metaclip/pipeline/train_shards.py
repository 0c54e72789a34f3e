"""Training shards from a finished run: ``metaclip-curate shards OUT -o DIR``.

A pool of image tars (``KEY.jpg|png|webp`` beside ``KEY.json``): WebDataset tars of the
curated subset — or, with ``online``, of every matched sample plus ``probs.npy``, so the
trainer redraws the subset each epoch — ``KEY.<ext>`` + ``KEY.json`` (``key``, ``texts``,
and per text ``entry_ids``, ``lang``, ``keep_prob``; the pool's other fields under
``meta``). Samples are shuffled across the whole pool by a seeded permutation and written
``per_shard`` to a tar, each tar atomically, so a killed run resumes with the tars it
finished and ends with the same bytes. An image that is missing or cannot be decoded is
skipped and counted per pool shard.

A pool of URLs: the subset parquet is what img2dataset reads; with ``online``, the matched
rows are written as parquet for img2dataset instead, with ``probs.npy``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from metaclip._tar import IMAGE_EXTS, StrictTarInfo
from metaclip.exceptions import InputError
from metaclip.pipeline import stages
from metaclip.pipeline.config import Config
from metaclip.pipeline.engine import Engine
from metaclip.pipeline.io import atomic_write, fingerprint, read_json, save_npy, write_json
from metaclip.pipeline.progress import Progress
from metaclip.pipeline.workfiles import load_arrays

MANIFEST = ".metaclip-shards.json"
WORK = ".work"  # per-tar skip counts, so a resumed run reports the same totals


@dataclass
class Sample:
    """One sample to write: where its image is, and its JSON."""

    shard: int  # index of its pool shard
    member: str | None  # the image's member name in that tar
    meta: dict


@dataclass
class Plan:
    samples: list[Sample] = field(default_factory=list)
    pool: list[Path] = field(default_factory=list)
    index: list[dict[str, tuple[int, int]]] = field(default_factory=list)  # member → place


def open_run(out: str | Path, workers: int = 0, quiet: bool = False) -> Engine:
    """The engine of the finished run in ``out``, locked, with every shard's work present."""
    card_path = Path(out) / "datacard.json"
    if not card_path.is_file():
        raise InputError(f"{out}: no finished run here (no datacard.json); run it first")
    run = read_json(card_path).get("run")
    if not run:
        raise InputError(f"{card_path}: made by an older metaclip; run the curation again")
    engine = Engine(Config.reopen(str(out), run, workers=workers, quiet=quiet))
    for s in engine.shards:
        if not engine.done(engine.sample_dir, s):
            engine.close()
            raise InputError(
                f"{s.path}: not curated in {out} as it is now (the pool changed, or the run "
                "did not finish); run `metaclip-curate run` again first"
            )
    return engine


def _samples(engine: Engine, table: pa.Table, shard: int) -> list[Sample]:
    """The rows of one shard grouped into samples (an image and its texts)."""
    cfg = engine.cfg
    lang_c, ids_c, prob_c = table.column_names[-3:]  # appended by ``stages.subset_table``
    ours = {cfg.text_column, "image_member", lang_c, ids_c, prob_c}
    image_col = cfg.image_column or cfg.key_column
    groups: dict[str, Sample] = {}
    for row in table.to_pylist():
        image_key = str(row[image_col])
        s = groups.get(image_key)
        if s is None:
            meta: dict = {
                "key": image_key,
                "texts": [],
                "entry_ids": [],
                "lang": [],
                "keep_prob": [],
            }
            meta["meta"] = {
                k: v for k, v in row.items() if k not in ours and not isinstance(v, bytes)
            }
            s = groups[image_key] = Sample(shard, row.get("image_member"), meta)
        texts = row[cfg.text_column]
        for t in texts if isinstance(texts, list) else [texts]:
            s.meta["texts"].append(t)
            s.meta["entry_ids"].append(list(row[ids_c] or []))
            s.meta["lang"].append(row[lang_c])
            s.meta["keep_prob"].append(row[prob_c])
    return list(groups.values())


def _index(path: Path) -> dict[str, tuple[int, int]]:
    """Image member name → (data offset, size), from the tar's headers alone."""
    with tarfile.open(path, tarinfo=StrictTarInfo) as tf:
        return {
            m.name: (m.offset_data, m.size)
            for m in tf
            if m.isfile() and m.name.rpartition(".")[2].lower() in IMAGE_EXTS
        }


def plan(engine: Engine, online: bool) -> Plan:
    """Every sample to write, in pool order, and where the images are."""
    writer = engine.subset_writer()
    out = Plan()
    bar = Progress("plan", len(engine.shards), engine.cfg.quiet, unit="shard")
    try:
        for i, shard in enumerate(engine.shards):
            table = writer.shard_subset(shard.name, all_matched=online)
            out.samples += _samples(engine, table, i)
            out.pool.append(shard.path)
            out.index.append(_index(shard.path))
            bar.update(1)
    finally:
        bar.close()
    return out


def check_image(data: bytes) -> str | None:
    """None for bytes that decode as an image; else the reason to skip it. JPEGs decode in
    draft mode (1/8 scale): the check reads every scan without the full-size work."""
    if not data:
        return "bad_image"
    try:
        img = Image.open(io.BytesIO(data))
        if img.format == "JPEG":
            img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return "bad_image"
    return None


def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)  # mtime 0, owner 0: the bytes depend on the content only
    info.size, info.mode = len(data), 0o644
    return info, io.BytesIO(data)


def write_tar(path: Path, picked: list[tuple[int, Sample]], p: Plan) -> dict[str, dict]:
    """One training tar of ``(position, sample)``; returns its skips per pool shard. Each
    image goes from the pool tar into the temporary tar in turn (one image in memory)."""
    skipped: dict[str, Counter] = {}

    def write(tmp: Path) -> None:
        skipped.clear()  # counted again if the write is retried
        with contextlib.ExitStack() as stack:
            tf = stack.enter_context(tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT))
            files: dict[int, int] = {}  # pool shard -> descriptor, each opened once
            for pos, s in picked:
                where = p.index[s.shard].get(s.member) if s.member else None
                reason = "missing_image" if where is None else None
                if where is not None:
                    if s.shard not in files:
                        f = stack.enter_context(open(p.pool[s.shard], "rb"))
                        files[s.shard] = f.fileno()
                    data = os.pread(files[s.shard], where[1], where[0])
                    reason = check_image(data)
                if reason is not None:
                    skipped.setdefault(str(p.pool[s.shard]), Counter())[reason] += 1
                    continue
                ext = str(s.member).rpartition(".")[2].lower()
                key = f"{pos:09d}"
                tf.addfile(*_tar_member(f"{key}.{ext}", data))
                blob = json.dumps(s.meta, ensure_ascii=False, default=str).encode()
                tf.addfile(*_tar_member(f"{key}.json", blob))

    atomic_write(path, write)
    return {k: dict(sorted(v.items())) for k, v in sorted(skipped.items())}


def write_shards(
    out: str | Path,
    dest: str | Path,
    online: bool = False,
    per_shard: int = 10_000,
    seed: int = 0,
    workers: int = 0,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Write the training shards of the run in ``out`` to ``dest``; returns the summary
    (also ``dest/shards.json``)."""
    if per_shard < 1:
        raise InputError("--per-shard must be at least 1")
    dest = Path(dest)
    with open_run(out, workers, quiet) as engine:
        card = (Path(out) / "datacard.json").read_bytes()
        kinds = {s.kind for s in engine.shards}
        if kinds != {"tar"} and not online:
            raise InputError(
                "the pool holds no images (it is not WebDataset tars): give the subset to "
                "img2dataset (README, 'Curate and train'), or use --online for every "
                "matched row"
            )
        settings = [online, per_shard, seed] if kinds == {"tar"} else [online]
        key = fingerprint("shards", card.decode(), *settings)
        _claim(dest, key, overwrite)
        if kinds != {"tar"}:
            summary = _for_img2dataset(engine, dest)
        else:
            summary = _image_shards(engine, dest, online, per_shard, seed)
        if online:
            _probabilities(engine, dest)
        summary = {"run": str(out), "online": online, "seed": seed, **summary}
        write_json(dest / "shards.json", summary)
        return summary


def _claim(dest: Path, key: str, overwrite: bool) -> None:
    """Make ``dest`` ours for these settings: resume our own files of the same settings;
    files of other settings are replaced only with ``overwrite``."""
    manifest = dest / MANIFEST
    if manifest.exists():
        old = read_json(manifest)
        written = [n for n in old.get("files", []) if (dest / n).exists()]
        if old.get("key") == key or not written:
            if old.get("key") != key:
                write_json(manifest, {"tool": "metaclip", "key": key, "files": []})
            return
        if not overwrite:
            raise InputError(
                f"{dest}: holds training shards of another run or other settings; use "
                "--overwrite to replace them, or another folder"
            )
        for name in old.get("files", []):
            (dest / name).unlink(missing_ok=True)
        for f in (dest / WORK).glob("*") if (dest / WORK).exists() else []:
            f.unlink()
    elif dest.exists() and any(dest.glob("*.tar")) and not overwrite:
        raise InputError(f"{dest}: holds tars metaclip did not write; use another folder")
    write_json(manifest, {"tool": "metaclip", "key": key, "files": []})


def _record(dest: Path, files: list[str]) -> None:
    manifest = read_json(dest / MANIFEST)
    write_json(dest / MANIFEST, {**manifest, "files": files})


def _image_shards(engine: Engine, dest: Path, online: bool, per_shard: int, seed: int) -> dict:
    p = plan(engine, online)
    order = np.random.default_rng(seed).permutation(len(p.samples))
    tars = [order[i : i + per_shard] for i in range(0, len(order), per_shard)]
    names = [f"shard-{i:06d}.tar" for i in range(len(tars))]
    _record(dest, [*names, "shards.json", "probs.npy", "probs.json"])
    work = dest / WORK
    bar = Progress("shards", len(p.samples), engine.cfg.quiet, unit="sample")

    def one(i: int) -> dict:
        record = work / f"{names[i]}.json"
        if (dest / names[i]).exists() and record.exists():
            bar.update(len(tars[i]))
            return read_json(record)
        skips = write_tar(dest / names[i], [(int(j), p.samples[j]) for j in tars[i]], p)
        write_json(record, skips)
        bar.update(len(tars[i]))
        return skips

    try:
        with ThreadPoolExecutor(max(1, engine.cfg.workers)) as ex:
            results = list(ex.map(one, range(len(tars))))
    finally:
        bar.close()
    skipped: dict[str, Counter] = {}
    for r in results:
        for shard, counts in r.items():
            skipped.setdefault(shard, Counter()).update(counts)
    total = sum(sum(c.values()) for c in skipped.values())
    return {
        "samples": len(p.samples) - total,
        "skipped": total,
        "skipped_per_pool_shard": {k: dict(sorted(v.items())) for k, v in sorted(skipped.items())},
        "tars": names,
        "per_shard": per_shard,
    }


def _for_img2dataset(engine: Engine, dest: Path) -> dict:
    """A pool of URLs, ``online``: every matched row (one parquet per pool shard) for
    img2dataset, and the trainer redraws per epoch."""
    writer = engine.subset_writer()
    names, rows = [], 0
    for i, shard in enumerate(engine.shards):
        table = writer.shard_subset(shard.name, all_matched=True)
        name = f"matched-{i:05d}.parquet"
        _write_parquet(dest / name, table)
        names.append(name)
        rows += table.num_rows
    _record(dest, [*names, "shards.json", "probs.npy", "probs.json"])
    return {"matched_rows": rows, "parquet": names}


def _write_parquet(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _probabilities(engine: Engine, dest: Path) -> None:
    """``probs.npy`` (the run's entry probabilities, languages concatenated) and
    ``probs.json`` (each language's first index), which the trainer reads together."""
    (probs,) = load_arrays(engine.sample_dir / "probs.npy")
    save_npy(dest / "probs.npy", probs)
    cfg = engine.cfg
    info: dict[str, Any] = {
        "language_offsets": stages.lang_offsets(engine.md),
        "curation_seed": cfg.seed,
        "unit": cfg.unit,
    }
    write_json(dest / "probs.json", info)
