"""From a pool to a trained model: `metaclip-curate run` → `shards` (or img2dataset) → train.

The pool is generated here: coloured shapes with English or German captions, as WebDataset
tars holding the images, or as a parquet of URLs served by a `http.server` on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import synth
from conftest import HANG_GUARD_S, subprocess_env, tiny_config
from PIL import Image

from metaclip.train.config import config_from_dict
from metaclip.train.data import ShardStream, expand_shards
from metaclip.train.train import run as train

# Word entries in both languages (German colour adjectives take endings: "roter Kreis").
METADATA = sorted(
    {*synth.COLOURS, *synth.SHAPES, "photo", "Bild", "Rauschen", "noisy", "background"}
    | {n for n, _ in synth.DE_SHAPES.values()}
    | {synth.DE_COLOURS[c] + e for c in synth.COLOURS for e in ("er", "es")}
)


def _jpeg(png: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def make_images(root: Path, per_class: int, seed: int = 0) -> list[dict]:
    """Images ``root/img/KEY.jpg`` and one row per image (key, text, lang, url, label)."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for label, (c, s) in enumerate(synth.CLASSES):
        for i in range(per_class):
            key = f"k{label:02d}{i:04d}"
            (root / "img" / f"{key}.jpg").write_bytes(_jpeg(synth.draw(c, s, rng)))
            j = int(rng.integers(4))
            text = synth.captions(c, s)[j]
            rows.append({"key": key, "text": text, "lang": "en" if j < 2 else "de", "label": label})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def write_image_pool(root: Path, rows: list[dict], n_shards: int) -> Path:
    """WebDataset tars: ``KEY.jpg`` beside ``KEY.json`` (the MetaCLIP / img2dataset layout)."""
    pool = root / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for k in range(n_shards):
        with tarfile.open(pool / f"pool-{k:02d}.tar", "w") as tf:
            for r in rows[k::n_shards]:
                image = root / "img" / f"{r['key']}.jpg"
                for name, data in (
                    (f"{r['key']}.jpg", image.read_bytes() if image.exists() else None),
                    (f"{r['key']}.json", json.dumps(r).encode()),
                ):
                    if data is None:
                        continue  # a sample whose image the pool lacks
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return pool


def curate(pool: Path, root: Path, *extra: str) -> Path:
    md = root / "metadata.json"
    md.write_text(json.dumps(METADATA))
    out = root / "curated"
    cli(["run", str(pool), "-m", str(md), "-o", str(out), "--t", "40", "-q", *extra])
    return out


def cli(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "metaclip.cli", *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_tars(folder: Path) -> dict[str, dict]:
    """Every sample of the training tars: key → {"json": ..., "image": bytes, "tar": name}."""
    out: dict[str, dict] = {}
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                data = tf.extractfile(m).read()
                item = out.setdefault(key, {"tar": tar.name})
                if ext == "json":
                    item["json"] = json.loads(data)
                else:
                    item["image"], item["ext"] = data, ext
    return out


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def image_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagepool")
    rows = make_images(root, per_class=6)
    (root / "img" / f"{rows[0]['key']}.jpg").unlink()  # missing from the pool
    jpg = root / "img" / f"{rows[1]['key']}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])  # truncated
    pool = write_image_pool(root, rows, n_shards=3)
    return {"root": root, "rows": rows, "pool": pool, "out": curate(pool, root)}


def test_shards_of_the_subset(image_pool, tmp_path):
    out, rows = image_pool["out"], image_pool["rows"]
    cli(["shards", str(out), "-o", str(tmp_path / "a"), "--per-shard", "7", "-q"])
    subset = pq.read_table(out / "subset").to_pylist()
    got = read_tars(tmp_path / "a")
    summary = json.loads((tmp_path / "a" / "shards.json").read_text())
    bad = {rows[0]["key"], rows[1]["key"]} & {r["key"] for r in subset}
    assert len(bad) == 2, "both damaged samples are in the subset (t is above every count)"
    assert summary["samples"] == len(got) == len(subset) - 2
    assert summary["skipped"] == 2
    per_reason = Counter()
    for counts in summary["skipped_per_pool_shard"].values():
        per_reason.update(counts)
    assert per_reason == {"missing_image": 1, "bad_image": 1}
    by_key = {r["key"]: r for r in subset}
    for item in got.values():
        meta = item["json"]
        row = by_key[meta["key"]]
        assert meta["texts"] == [row["text"]] and meta["entry_ids"] == [row["entry_ids"]]
        assert meta["lang"] == [row["metaclip_lang"]] and meta["keep_prob"] == [row["keep_prob"]]
        assert meta["meta"] == {"key": row["key"], "lang": row["lang"], "label": row["label"]}
        assert item["image"] == (image_pool["root"] / "img" / f"{meta['key']}.jpg").read_bytes()
    assert all(Counter(i["tar"] for i in got.values())[t] <= 7 for t in summary["tars"])
    # shuffled across the pool: a tar holds samples of several pool shards
    first = [i["json"]["key"] for i in got.values() if i["tar"] == summary["tars"][0]]
    pool_of = {r["key"]: i % 3 for i, r in enumerate(rows)}
    assert len({pool_of[k] for k in first}) > 1

    # the same bytes again; and after losing tars (a killed run) the same bytes
    cli(["shards", str(out), "-o", str(tmp_path / "b"), "--per-shard", "7", "-q"])
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    for name in summary["tars"][1:3]:
        (tmp_path / "b" / name).unlink()
    cli(["shards", str(out), "-o", str(tmp_path / "b"), "--per-shard", "7", "-q"])
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")


def test_shards_refuse_a_folder_of_other_settings(image_pool, tmp_path):
    out = image_pool["out"]
    cli(["shards", str(out), "-o", str(tmp_path / "a"), "--per-shard", "7", "-q"])
    proc = subprocess.run(
        [sys.executable, "-m", "metaclip.cli", "shards", str(out), "-o", str(tmp_path / "a")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    cli(["shards", str(out), "-o", str(tmp_path / "a"), "--overwrite", "-q"])
    summary = json.loads((tmp_path / "a" / "shards.json").read_text())
    assert sorted(p.name for p in (tmp_path / "a").glob("*.tar")) == summary["tars"]


def test_online_shards_replay_the_curation(image_pool, tmp_path):
    """Every matched sample and probs.npy: the loader's pass 0 keeps what the run kept."""
    out = image_pool["out"]
    cli(["shards", str(out), "-o", str(tmp_path / "m"), "--online", "--per-shard", "20", "-q"])
    card = json.loads((out / "datacard.json").read_text())
    summary = json.loads((tmp_path / "m" / "shards.json").read_text())
    assert summary["samples"] == card["pool"]["matched"] - 2  # the two damaged images
    side = json.loads((tmp_path / "m" / "probs.json").read_text())
    assert side["language_offsets"] == card["metadata"]["language_offsets"]
    subset = pq.read_table(out / "subset").to_pylist()
    damaged = {image_pool["rows"][i]["key"] for i in (0, 1)}
    want = Counter(r["text"] for r in subset if r["key"] not in damaged)

    texts: list[str] = []
    ds = ShardStream(
        expand_shards(str(tmp_path / "m" / "*.tar")),
        rank=0,
        world=1,
        num_workers=0,
        batch_size=1,
        tokenizer=lambda t: (texts.extend(t), np.zeros((len(t), 4), np.int64))[1],
        image_size=32,
        seed=5,
        probs=np.load(tmp_path / "m" / "probs.npy"),
        curation_seed=card["seed"],
        language_offsets=side["language_offsets"],
    )
    it = iter(ds)
    for _ in range(sum(want.values())):
        next(it)
    assert Counter(texts) == want  # pass 0 = the curated subset


def _learn(shapes, train_shards: str, out: Path, **over) -> dict:
    cfg = tiny_config(
        shapes,
        out,
        steps=240,
        log_every=40,
        **{
            "data.train_shards": train_shards,
            "data.batch_size": 48,
            "optim.lr": 4e-3,
            "optim.warmup_steps": 10,
            "eval.zeroshot_shards": shapes["eval"],
            "eval.classnames": shapes["classnames"],
            **over,
        },
    )
    return train(config_from_dict(cfg))


@pytest.fixture(scope="module")
def learning_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    return root, make_images(root, per_class=50, seed=3)


def test_image_tars_to_shards_to_a_model_that_learned(shapes, learning_images, tmp_path):
    root, rows = learning_images
    out = curate(write_image_pool(root, rows, n_shards=4), tmp_path)
    cli(["shards", str(out), "-o", str(tmp_path / "s"), "--per-shard", "100", "-q"])
    summary = _learn(shapes, str(tmp_path / "s" / "*.tar"), tmp_path / "run")
    top1 = summary["eval"]["zeroshot/top1"]
    print(f"tar pool -> shards -> train: zero-shot top-1 {top1:.3f} (chance {1 / 12:.3f})")
    assert top1 >= 0.3  # 3.6x chance


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def image_server(learning_images):
    root, _ = learning_images
    handler = functools.partial(_Quiet, directory=str(root / "img"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_pool_to_img2dataset_to_a_model_that_learned(
    shapes, learning_images, image_server, tmp_path
):
    pytest.importorskip("img2dataset")
    _, rows = learning_images
    pool = tmp_path / "pool"
    pool.mkdir()
    table = pa.Table.from_pylist([{**r, "url": f"{image_server}/{r['key']}.jpg"} for r in rows])
    pq.write_table(table, pool / "urls.parquet")
    out = curate(pool, tmp_path)
    cli(["shards", str(out), "-o", str(tmp_path / "m"), "--online", "-q"])
    matched = sum(pq.read_metadata(p).num_rows for p in (tmp_path / "m").glob("*.parquet"))

    download = tmp_path / "download"
    cmd = [
        "img2dataset",
        "--url_list", str(tmp_path / "m"),
        "--input_format", "parquet",
        "--url_col", "url",
        "--caption_col", "text",
        "--save_additional_columns", '["entry_ids","lang","keep_prob"]',
        "--output_format", "webdataset",
        "--output_folder", str(download),
        "--number_sample_per_shard", "150",
        "--resize_mode", "no",
        "--processes_count", "1",
        "--thread_count", "1",  # more threads write samples in the order they arrive
        "--enable_wandb", "False",
        "--distributor", "multiprocessing",
    ]  # fmt: skip
    env = {**subprocess_env(), "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = [json.loads(p.read_text()) for p in download.glob("*_stats.json")]
    assert sum(s["successes"] for s in stats) == matched  # every matched image downloaded

    # img2dataset's tars are themselves a pool MetaCLIP can curate (captions in .json)
    again = tmp_path / "again"
    again.mkdir()
    md = tmp_path / "metadata.json"
    cli(["run", str(download / "*.tar"), "-m", str(md), "-o", str(again / "out"), "--t", "40",
         "--text-column", "caption", "-q"])  # fmt: skip
    cli(["shards", str(again / "out"), "-o", str(again / "s"), "-q"])
    card = json.loads((again / "out" / "datacard.json").read_text())
    assert card["pool"]["texts"] == matched
    assert (
        json.loads((again / "s" / "shards.json").read_text())["samples"] == card["subset"]["size"]
    )

    summary = _learn(
        shapes,
        str(download / "*.tar"),
        tmp_path / "run",
        **{"data.probabilities": str(tmp_path / "m" / "probs.npy")},
    )
    top1 = summary["eval"]["zeroshot/top1"]
    print(f"URL pool -> img2dataset -> online curation: zero-shot top-1 {top1:.3f}")
    assert top1 >= 0.3
